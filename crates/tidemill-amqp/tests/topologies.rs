//! The topology presets on the real broker: durable pub/sub with consumer groups, the work
//! queue, and the non-durable variants.

mod common;

use std::time::Duration;

use tidemill::{Message, Publisher, SubscribeInitializer, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber, Topology};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(400);

fn config() -> AmqpConfig {
    AmqpConfig::from_url(&common::url()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_pubsub_groups_each_get_all_and_members_share() {
    let topic = common::fresh("orders");
    let billing_1 = AmqpSubscriber::connect(config().group("billing"))
        .await
        .unwrap();
    let billing_2 = AmqpSubscriber::connect(config().group("billing"))
        .await
        .unwrap();
    let shipping = AmqpSubscriber::connect(config().group("shipping"))
        .await
        .unwrap();
    let mut b1 = billing_1.subscribe(&topic).await.unwrap();
    let mut b2 = billing_2.subscribe(&topic).await.unwrap();
    let mut s = shipping.subscribe(&topic).await.unwrap();
    assert_eq!(
        billing_1.queue_for(&topic),
        Some(format!("{topic}.billing"))
    );

    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    let messages: Vec<Message> = (0..6)
        .map(|i| Message::with_id(format!("m{i}"), "x"))
        .collect();
    publisher.publish(&topic, messages).await.unwrap();

    for i in 0..6 {
        let d = common::next(&mut s, WAIT).await;
        assert_eq!(d.message().id(), format!("m{i}"));
        d.ack();
    }
    let (mut n1, mut n2) = (0, 0);
    while n1 + n2 < 6 {
        tokio::select! {
            d = common::next(&mut b1, WAIT) => { n1 += 1; d.ack(); }
            d = common::next(&mut b2, WAIT) => { n2 += 1; d.ack(); }
        }
    }
    // Which member gets the next one depends on who acked first; both get some.
    assert!(
        n1 > 0 && n2 > 0,
        "the group's members share the messages: {n1} and {n2}"
    );
    common::quiet(&mut b1, QUIET).await;

    // The group's queue is durable and keeps messages while the group has no member.
    drop((b1, b2));
    billing_1.close().await.unwrap();
    billing_2.close().await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("later", "x")])
        .await
        .unwrap();
    let queue = format!("{topic}.billing");
    assert_eq!(common::queue_depth(&queue).await, Some(1));
    let again = AmqpSubscriber::connect(config().group("billing"))
        .await
        .unwrap();
    let mut sub = again.subscribe(&topic).await.unwrap();
    let d = common::next(&mut sub, WAIT).await;
    assert_eq!(d.message().id(), "later");
    d.ack();

    publisher.close().await.unwrap();
    again.close().await.unwrap();
    shipping.close().await.unwrap();
    cleanup(&[&queue, &format!("{topic}.shipping")], &[&topic]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_without_group_gets_what_is_published_after_it_subscribed() {
    let topic = common::fresh("news");
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    let subscriber = AmqpSubscriber::connect(config()).await.unwrap();
    subscriber.initialize_topic(&topic).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("before", "x")])
        .await
        .unwrap();
    let mut one = subscriber.subscribe(&topic).await.unwrap();
    let mut two = subscriber.subscribe(&topic).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("after", "x")])
        .await
        .unwrap();
    for sub in [&mut one, &mut two] {
        let d = common::next(sub, WAIT).await;
        assert_eq!(d.message().id(), "after");
        d.ack();
        common::quiet(sub, QUIET).await;
    }
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
    cleanup(&[], &[&topic]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_keeps_messages_for_competing_workers() {
    let topic = common::fresh("jobs");
    let config = config().topology(Topology::work_queue());
    let publisher = AmqpPublisher::connect(config.clone()).await.unwrap();
    // Published before any worker exists: the queue is declared by the publisher.
    let jobs: Vec<Message> = (0..4)
        .map(|i| Message::with_id(format!("job{i}"), "x"))
        .collect();
    publisher.publish(&topic, jobs).await.unwrap();
    assert_eq!(common::queue_depth(&topic).await, Some(4));

    // Groups do not matter: every worker competes for the one queue.
    let w1 = AmqpSubscriber::connect(config.clone().group("a"))
        .await
        .unwrap();
    let w2 = AmqpSubscriber::connect(config.clone().group("b"))
        .await
        .unwrap();
    let mut s1 = w1.subscribe(&topic).await.unwrap();
    let mut s2 = w2.subscribe(&topic).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 4 {
        tokio::select! {
            d = common::next(&mut s1, WAIT) => { seen.insert(d.message().id().to_owned()); d.ack(); }
            d = common::next(&mut s2, WAIT) => { seen.insert(d.message().id().to_owned()); d.ack(); }
        }
    }
    common::quiet(&mut s1, QUIET).await;
    common::quiet(&mut s2, QUIET).await;
    publisher.close().await.unwrap();
    w1.close().await.unwrap();
    w2.close().await.unwrap();
    cleanup(&[&topic], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_durable_variant_is_transient_and_cleans_up() {
    let topic = common::fresh("transient");
    let config = config().topology(Topology::durable_pubsub().durable(false));
    let subscriber = AmqpSubscriber::connect(config.clone().group("g"))
        .await
        .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let queue = format!("{topic}.g");
    assert!(common::queue_depth(&queue).await.is_some());

    let publisher = AmqpPublisher::connect(config).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("t1", "x")])
        .await
        .unwrap();
    let d = common::next(&mut sub, WAIT).await;
    d.ack();

    // Read the raw delivery mode: transient messages are mode 1.
    let (conn, channel) = common::raw().await;
    let probe = common::fresh("probe");
    channel
        .queue_declare(
            probe.as_str().into(),
            lapin::options::QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            probe.as_str().into(),
            topic.as_str().into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("t2", "x")])
        .await
        .unwrap();
    let got = common::get_one(&probe, WAIT)
        .await
        .expect("a message in the probe queue");
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(1));
    channel
        .queue_delete(probe.as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;

    // The group queue is auto-delete: gone once its last consumer left.
    drop(sub);
    subscriber.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::queue_depth(&queue).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transient group queue outlived its consumers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.close().await.unwrap();
    cleanup(&[&queue], &[&topic]).await;
}

async fn cleanup(queues: &[&str], exchanges: &[&str]) {
    // A channel per deletion: a failed one closes its channel.
    let (conn, _) = common::raw().await;
    for q in queues {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel.queue_delete((*q).into(), Default::default()).await;
        }
    }
    for e in exchanges {
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .exchange_delete((*e).into(), Default::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}
