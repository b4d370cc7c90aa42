//! Settling: nack with a delay, ack wait kept alive for long handlers, double acks, and the
//! dead-letter subject after the maximum number of deliveries.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use tidemill::{Delivery, Message, Publisher, Subscriber, Subscription};
use tidemill_nats::{topology::encode_name, NatsPublisher, NatsSubscriber};

async fn next(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the stream goes on")
        .expect("no error")
}

async fn quiet(subscription: &mut Subscription, wait: Duration) -> bool {
    tokio::time::timeout(wait, subscription.next())
        .await
        .is_err()
}

#[tokio::test]
async fn a_nack_with_delay_comes_back_after_it() {
    let topic = common::topic();
    let subscriber = NatsSubscriber::connect(common::config().group(common::group()))
        .await
        .unwrap();
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("m", "")])
        .await
        .unwrap();
    next(&mut subscription)
        .await
        .nack_after(Duration::from_millis(800));
    let nacked = Instant::now();
    let again = next(&mut subscription).await;
    assert_eq!(again.message().id(), "m");
    assert!(
        nacked.elapsed() >= Duration::from_millis(600),
        "back after {:?}",
        nacked.elapsed()
    );
    again.ack();
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn in_progress_signals_keep_a_long_handler_s_delivery() {
    let topic = common::topic();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("slow", "")])
        .await
        .unwrap();

    // With keepalive: held for three ack waits, not delivered again.
    let config = common::config().ack_wait(Duration::from_secs(1));
    let kept = NatsSubscriber::connect(config.clone().group(common::group()))
        .await
        .unwrap();
    let mut subscription = kept.subscribe(&topic).await.unwrap();
    let held = next(&mut subscription).await;
    assert!(
        quiet(&mut subscription, Duration::from_secs(3)).await,
        "redelivered despite in-progress signals"
    );
    held.ack();
    kept.close().await.unwrap();

    // Without: the ack wait runs out and the message comes again.
    let bare = NatsSubscriber::connect(config.group(common::group()).progress_keepalive(false))
        .await
        .unwrap();
    let mut subscription = bare.subscribe(&topic).await.unwrap();
    let held = next(&mut subscription).await;
    let again = next(&mut subscription).await;
    assert_eq!(again.message().id(), "slow");
    drop(held);
    again.ack();
    bare.close().await.unwrap();
}

#[tokio::test]
async fn double_acks_are_confirmed_before_close_returns() {
    let (topic, group) = (common::topic(), common::group());
    let subscriber = NatsSubscriber::connect(common::config().group(&group).double_ack(true))
        .await
        .unwrap();
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    let messages: Vec<Message> = (0..50).map(|i| Message::new(format!("{i}"))).collect();
    publisher.publish(&topic, messages).await.unwrap();
    for _ in 0..50 {
        next(&mut subscription).await.ack();
    }
    drop(subscription);
    subscriber.close().await.unwrap();
    let js = async_nats::jetstream::new(publisher.client().clone());
    let stream = js.get_stream(encode_name(&topic)).await.unwrap();
    let info = stream.consumer_info(encode_name(&group)).await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 50);
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test]
async fn after_max_deliveries_a_message_goes_to_the_dead_letter_subject() {
    let (topic, dead) = (common::topic(), common::topic());
    let config = common::config()
        .max_deliveries(2)
        .dead_letter_subject(&dead)
        .nack_delay(Duration::from_millis(10));
    let subscriber = NatsSubscriber::connect(config.clone().group(common::group()))
        .await
        .unwrap();
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(
            &topic,
            vec![
                Message::with_id("poison", "p").with_metadata("k", "v"),
                Message::with_id("fine", ""),
            ],
        )
        .await
        .unwrap();
    let mut nacks = 0;
    let mut fine = false;
    while nacks < 2 || !fine {
        let d = next(&mut subscription).await;
        if d.message().id() == "poison" {
            nacks += 1;
            d.nack();
        } else {
            fine = true;
            d.ack();
        }
    }
    let watcher = NatsSubscriber::connect(common::config().group(common::group()))
        .await
        .unwrap();
    let mut dead_letters = watcher.subscribe(&dead).await.unwrap();
    let letter = next(&mut dead_letters).await;
    let m = letter.message();
    assert_eq!(m.id(), "poison");
    assert_eq!(m.payload().as_ref(), b"p");
    assert_eq!(m.metadata().get("k"), Some("v"));
    assert_eq!(
        m.metadata().get("Tidemill-Dead-Letter-Topic"),
        Some(topic.as_str())
    );
    assert!(m
        .metadata()
        .get("Tidemill-Dead-Letter-Reason")
        .unwrap()
        .contains("delivery 2 of at most 2"));
    letter.ack();
    assert!(
        quiet(&mut subscription, Duration::from_millis(500)).await,
        "the poison message came back"
    );

    // A last delivery whose ack wait runs out is dead-lettered too, with that reason.
    let slow = NatsSubscriber::connect(
        config
            .group(common::group())
            .max_deliveries(1)
            .ack_wait(Duration::from_millis(500))
            .progress_keepalive(false),
    )
    .await
    .unwrap();
    let topic2 = common::topic();
    let mut s2 = slow.subscribe(&topic2).await.unwrap();
    publisher
        .publish(&topic2, vec![Message::with_id("stuck", "")])
        .await
        .unwrap();
    let held = next(&mut s2).await;
    // The redelivery after the ack wait is not handed out: it goes to the dead-letter subject.
    assert!(
        quiet(&mut s2, Duration::from_secs(2)).await,
        "delivered beyond max deliveries"
    );
    let letter = loop {
        let l = next(&mut dead_letters).await;
        if l.message().id() == "stuck" {
            break l;
        }
        l.ack();
    };
    assert!(letter
        .message()
        .metadata()
        .get("Tidemill-Dead-Letter-Reason")
        .unwrap()
        .contains("ack wait"));
    letter.ack();
    drop(held);
}

/// What a closing subscriber returns reaches the server before `close` returns, even when the
/// process ends right after (the runtime is dropped here), and returning it costs one delivery,
/// not one per round trip through the pull request still open at the server: with at most
/// three deliveries the next member of the group still gets the message, at once.
#[test]
fn returned_on_close_before_the_process_ends_and_at_the_cost_of_one_delivery() {
    let topic = common::topic();
    let group = common::group();
    let config = common::config().group(group.as_str()).max_deliveries(3);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(async {
        let subscriber = NatsSubscriber::connect(config.clone()).await.unwrap();
        let mut subscription = subscriber.subscribe(&topic).await.unwrap();
        let publisher = NatsPublisher::connect(common::config()).await.unwrap();
        publisher
            .publish(&topic, vec![Message::with_id("m", "")])
            .await
            .unwrap();
        // Nacked with the default delay while the subscription's pull request is still open:
        // the message comes back into that request after the subscription is gone.
        next(&mut subscription).await.nack();
        drop(subscription);
        subscriber.close().await.unwrap();
        publisher.close().await.unwrap();
    });
    drop(first);
    runtime().block_on(async {
        let subscriber = NatsSubscriber::connect(config).await.unwrap();
        let mut subscription = subscriber.subscribe(&topic).await.unwrap();
        // Well within the 30 s ack wait that a lost return would have to run out.
        let again = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("the returned message comes to the next member at once")
            .unwrap()
            .unwrap();
        assert_eq!(again.message().id(), "m");
        again.ack();
        subscriber.close().await.unwrap();
    });
}
