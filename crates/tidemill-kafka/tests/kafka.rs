//! What is particular to Kafka: commits only after acks and never past an unacked message,
//! order per key under concurrency, replay without a group, topic validation, delivery reports.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::StartPosition;
use tidemill::{HandlerResult, Message, Publisher, Router, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber, Partitioning};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

fn config() -> KafkaConfig {
    common::broker("start");
    KafkaConfig::new(common::BROKERS)
}

/// Publishes one message per call, so each is a record batch of its own: the test broker
/// cannot fetch from inside a batch (see the crate docs).
async fn publish_numbered(publisher: &KafkaPublisher, topic: &str, n: usize) {
    for i in 0..n {
        let msg = Message::with_id(i.to_string(), format!("payload {i}"))
            .with_metadata("n", i.to_string());
        publisher.publish(topic, vec![msg]).await.unwrap();
    }
}

/// The offset the broker holds for `group` on partition 0 of `topic`.
fn committed(group: &str, topic: &str) -> rdkafka::Offset {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::BROKERS)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed.elements()[0].offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_up_to_the_lowest_unacked_message() {
    let topic = common::topic("commit");
    let config = config();
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    publish_numbered(&publisher, &topic, 10).await;

    let group = common::topic("group");
    let subscriber = KafkaSubscriber::new(config.clone().group(&group)).unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let mut held = None;
    for i in 0..10 {
        let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(d.message().id(), i.to_string());
        if i == 5 {
            held = Some(d); // neither acked nor nacked
        } else {
            d.ack();
        }
    }
    // Give the committer time to commit what it may.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::mem::forget(held); // a crash: the message is never settled
    drop(sub);
    subscriber.close().await.unwrap();
    let offset = tokio::task::spawn_blocking({
        let (group, topic) = (group.clone(), topic.clone());
        move || committed(&group, &topic)
    })
    .await
    .unwrap();
    assert_eq!(
        offset,
        rdkafka::Offset::Offset(5),
        "committed up to the unacked message"
    );

    let again = KafkaSubscriber::new(config.group(&group)).unwrap();
    let mut sub = again.subscribe(&topic).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
        ids.push(d.message().id().to_owned());
        d.ack();
    }
    assert_eq!(
        ids,
        ["5", "6", "7", "8", "9"],
        "resumed at the unacked message, not after it"
    );
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_comes_back() {
    let topic = common::topic("nack");
    let config = config().nack_delay(Duration::from_millis(50));
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    publish_numbered(&publisher, &topic, 3).await;
    let subscriber = KafkaSubscriber::new(config.group(common::topic("g"))).unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let mut seen = Vec::new();
    let mut nacked = false;
    while seen.len() < 4 {
        let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
        seen.push(d.message().id().to_owned());
        if d.message().id() == "1" && !nacked {
            nacked = true;
            d.nack();
        } else {
            d.ack();
        }
    }
    assert_eq!(seen.iter().filter(|id| *id == "1").count(), 2, "{seen:?}");
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_stays_in_order_while_keys_run_concurrently() {
    let topic = common::topic("keys");
    let config = config()
        .partitions(4)
        .partitioning(Partitioning::MetadataKey("key".into()));
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    let n = 800;
    let msgs = (0..n)
        .map(|i| {
            Message::new("")
                .with_metadata("key", format!("k{}", i % 16))
                .with_metadata("seq", i.to_string())
        })
        .collect();
    publisher.publish(&topic, msgs).await.unwrap();

    let subscriber = KafkaSubscriber::new(config.group(common::topic("g"))).unwrap();
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let s = seen.clone();
    let router = Router::new();
    router
        .handler("keyed")
        .subscribe(&topic, subscriber)
        .concurrency(8)
        .order_by_metadata("key")
        .handle(move |msg: Message| {
            let s = s.clone();
            async move {
                let seq: usize = msg.metadata().get("seq").unwrap().parse().unwrap();
                // Uneven work, to tempt reordering.
                tokio::time::sleep(Duration::from_micros((seq % 7) as u64 * 300)).await;
                s.lock()
                    .entry(msg.metadata().get("key").unwrap().to_owned())
                    .or_default()
                    .push(seq);
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    timeout(Duration::from_secs(60), async {
        while seen.lock().values().map(Vec::len).sum::<usize>() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all messages handled");
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    for (key, seqs) in seen.lock().iter() {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {seqs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_group_the_log_is_replayed_from_the_start_or_read_from_the_end() {
    let topic = common::topic("replay");
    let config = config();
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    publish_numbered(&publisher, &topic, 5).await;

    for _ in 0..2 {
        // Every reader without a group gets the whole log, again and again.
        let replay =
            KafkaSubscriber::new(config.clone().start_position(StartPosition::Beginning)).unwrap();
        let mut sub = replay.subscribe(&topic).await.unwrap();
        for i in 0..5 {
            let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(d.message().id(), i.to_string());
            assert_eq!(
                d.message().metadata().get("n"),
                Some(i.to_string().as_str())
            );
            d.ack();
        }
        replay.close().await.unwrap();
    }

    let tail = KafkaSubscriber::new(config.clone().start_position(StartPosition::End)).unwrap();
    let mut sub = tail.subscribe(&topic).await.unwrap();
    // The end is resolved when the partition is first fetched: let that happen.
    assert!(
        timeout(Duration::from_secs(2), sub.next()).await.is_err(),
        "nothing old"
    );
    publisher
        .publish(&topic, vec![Message::with_id("new", "")])
        .await
        .unwrap();
    let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(d.message().id(), "new");
    tail.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_names_are_rejected_before_anything_is_sent() {
    let config = config();
    let publisher = KafkaPublisher::new(config.clone()).unwrap();
    for bad in ["", "a/b", "x\"; DROP TABLE y; --", "..", &"x".repeat(250)] {
        let err = publisher
            .publish(bad, vec![Message::new("")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, tidemill::Error::InvalidTopic { .. }),
            "{bad}: {err}"
        );
    }
    let subscriber = KafkaSubscriber::new(config).unwrap();
    assert!(matches!(
        subscriber.subscribe("a b").await.unwrap_err(),
        tidemill::Error::InvalidTopic { .. }
    ));
}
