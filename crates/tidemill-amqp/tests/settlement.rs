//! Prefetch, explicit acks, nack with requeue, delayed redelivery through a TTL queue, and the
//! dead-letter queue after N deliveries.

mod common;

use std::time::Duration;

use tidemill::{Message, Publisher, Subscriber};
use tidemill_amqp::codec::DELIVERIES_HEADER;
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn config() -> AmqpConfig {
    AmqpConfig::from_url(&common::url()).unwrap()
}

fn numbered(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::with_id(format!("m{i}"), format!("{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bounds_unsettled_deliveries() {
    let topic = common::fresh("prefetch");
    let subscriber = AmqpSubscriber::connect(config().group("g").max_in_flight(3))
        .await
        .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let queue = subscriber.queue_for(&topic).unwrap();
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    publisher.publish(&topic, numbered(10)).await.unwrap();

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(common::next(&mut sub, WAIT).await);
    }
    common::quiet(&mut sub, Duration::from_millis(500)).await;
    // The broker holds back the other seven until something is settled.
    assert_eq!(common::queue_depth(&queue).await, Some(7));
    for d in held {
        d.ack();
    }
    for _ in 3..10 {
        common::next(&mut sub, WAIT).await.ack();
    }
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_the_broker_only_when_acked() {
    let topic = common::fresh("acks");
    let subscriber = AmqpSubscriber::connect(config().group("g")).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    publisher.publish(&topic, numbered(1)).await.unwrap();
    let d = common::next(&mut sub, WAIT).await;
    // Closing with the delivery unsettled gives it back to the broker...
    let closing = tokio::spawn({
        let subscriber = subscriber.clone();
        async move { subscriber.close().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(d);
    closing.await.unwrap().unwrap();
    // ...so the next member of the group gets it.
    let next = AmqpSubscriber::connect(config().group("g")).await.unwrap();
    let mut sub = next.subscribe(&topic).await.unwrap();
    let d = common::next(&mut sub, WAIT).await;
    assert_eq!(d.message().id(), "m0");
    d.ack();
    common::quiet(&mut sub, Duration::from_millis(300)).await;
    publisher.close().await.unwrap();
    next.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_nack_delay_is_held_in_place() {
    let topic = common::fresh("held");
    let subscriber = AmqpSubscriber::connect(config().group("g")).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    publisher.publish(&topic, numbered(3)).await.unwrap();

    let first = common::next(&mut sub, WAIT).await;
    let nacked_at = Instant::now();
    first.nack_after(Duration::from_millis(300));
    let again = common::next(&mut sub, WAIT).await;
    assert_eq!(
        again.message().id(),
        "m0",
        "the held message comes back before the next"
    );
    assert!(nacked_at.elapsed() >= Duration::from_millis(300));
    again.ack();
    for i in 1..3 {
        let d = common::next(&mut sub, WAIT).await;
        assert_eq!(d.message().id(), format!("m{i}"));
        d.ack();
    }
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_nack_delay_goes_through_a_ttl_queue() {
    let topic = common::fresh("delayed");
    let config = config()
        .group("g")
        .max_held_nack_delay(Duration::from_millis(100));
    let subscriber = AmqpSubscriber::connect(config.clone()).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let queue = subscriber.queue_for(&topic).unwrap();
    let publisher = AmqpPublisher::connect(config).await.unwrap();
    publisher.publish(&topic, numbered(2)).await.unwrap();

    let first = common::next(&mut sub, WAIT).await;
    assert_eq!(first.message().id(), "m0");
    let nacked_at = Instant::now();
    first.nack_after(Duration::from_millis(1500));
    // The prefetch slot is free at once: m1 arrives while m0 waits in the delay queue.
    let second = common::next(&mut sub, WAIT).await;
    assert_eq!(second.message().id(), "m1");
    assert!(nacked_at.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        common::queue_depth(&format!("{queue}.delay.1500")).await,
        Some(1)
    );
    second.ack();
    let back = common::next(&mut sub, WAIT).await;
    assert_eq!(back.message().id(), "m0");
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        nacked_at.elapsed()
    );
    assert_eq!(back.message().payload().as_ref(), b"0");
    assert!(
        back.message().metadata().is_empty(),
        "{:?}",
        back.message().metadata()
    );
    back.ack();
    common::quiet(&mut sub, Duration::from_millis(300)).await;
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_queue_after_max_deliveries() {
    let topic = common::fresh("poison");
    let config = config()
        .group("g")
        .max_deliveries(3)
        .nack_delay(Duration::ZERO);
    let subscriber = AmqpSubscriber::connect(config.clone()).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let queue = subscriber.queue_for(&topic).unwrap();
    let dlq = config.dead_letter_queue_for(&queue);
    assert_eq!(dlq, format!("{queue}.dead"));
    let publisher = AmqpPublisher::connect(config).await.unwrap();
    let poison = Message::with_id("poison", "boom").with_metadata("kind", "bad");
    publisher
        .publish(&topic, vec![poison, Message::with_id("fine", "ok")])
        .await
        .unwrap();

    let mut poison_deliveries = 0;
    let mut fine = false;
    while !(fine && poison_deliveries == 3) {
        let d = common::next(&mut sub, WAIT).await;
        if d.message().id() == "poison" {
            poison_deliveries += 1;
            assert_eq!(d.message().metadata().get("kind"), Some("bad"));
            d.nack();
        } else {
            fine = true;
            d.ack();
        }
    }
    common::quiet(&mut sub, Duration::from_millis(500)).await;
    let dead = common::get_one(&dlq, WAIT)
        .await
        .expect("the poison message in the DLQ");
    let props = &dead.delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("poison")
    );
    assert_eq!(dead.delivery.data, b"boom");
    let count = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DELIVERIES_HEADER).cloned());
    assert_eq!(count, Some(lapin::types::AMQPValue::LongUInt(3)));
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}
