//! Messages left by consumers that died are claimed (`XAUTOCLAIM`), and dead consumers are
//! removed from the group.

mod common;

use std::time::Duration;

use futures::StreamExt;
use redis::Value;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_redis::{RedisPublisher, RedisSubscriber};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A consumer that reads `count` entries of the group and then dies without acking them.
async fn dead_consumer_reads(topic: &str, group: &str, name: &str, count: usize) {
    let mut conn = common::raw().await;
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(topic)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(name)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(topic)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn consumers(topic: &str, group: &str) -> Vec<String> {
    let reply: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(topic)
        .arg(group)
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let Value::Array(list) = reply else {
        panic!("{reply:?}")
    };
    list.into_iter()
        .map(|c| match c {
            Value::Array(fields) => match &fields[1] {
                Value::BulkString(name) => String::from_utf8(name.clone()).unwrap(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn messages_of_a_dead_consumer_are_claimed_after_the_idle_time() {
    let (topic, group) = (common::topic(), common::group());
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    let messages = (0..5)
        .map(|i| Message::with_id(i.to_string(), "x"))
        .collect();
    publisher.publish(&topic, messages).await.unwrap();
    dead_consumer_reads(&topic, &group, "dead", 3).await;

    let subscriber = RedisSubscriber::connect(
        common::config()
            .group(group.clone())
            .claim_idle(Duration::from_millis(500))
            .claim_interval(Duration::from_millis(100))
            .block_time(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
        ids.push(d.message().id().to_owned());
        d.ack();
    }
    // The two nobody had read come first; the dead consumer's three once they idled long enough.
    assert_eq!(ids, ["3", "4", "0", "1", "2"]);
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn dead_consumers_are_removed_once_their_messages_are_claimed() {
    let (topic, group) = (common::topic(), common::group());
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("held", "x")])
        .await
        .unwrap();
    // One dead consumer holds a message, another holds nothing.
    dead_consumer_reads(&topic, &group, "dead-with-message", 1).await;
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&topic)
        .arg(&group)
        .arg("dead-empty")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let mut names = consumers(&topic, &group).await;
    names.sort();
    assert_eq!(names, ["dead-empty", "dead-with-message"]);

    let subscriber = RedisSubscriber::connect(
        common::config()
            .group(group.clone())
            .consumer_name("alive")
            .claim_idle(Duration::from_millis(300))
            .claim_interval(Duration::from_millis(100))
            .consumer_timeout(Some(Duration::from_millis(300)))
            .consumer_check_interval(Duration::from_millis(100))
            .block_time(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(d.message().id(), "held");
    d.ack();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let names = consumers(&topic, &group).await;
        if names == ["alive"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumers left: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn consumers_are_kept_without_a_timeout() {
    let (topic, group) = (common::topic(), common::group());
    dead_consumer_reads(&topic, &group, "reader", 1).await;
    // Idle with nothing pending: what a timeout would remove.
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&topic)
        .arg(&group)
        .arg("idle")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let subscriber = RedisSubscriber::connect(
        common::config()
            .group(group.clone())
            .consumer_name("alive")
            .consumer_timeout(None)
            .consumer_check_interval(Duration::from_millis(50))
            .block_time(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let _sub = subscriber.subscribe(&topic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut names = consumers(&topic, &group).await;
    names.sort();
    assert_eq!(names, ["alive", "idle"]);
    subscriber.close().await.unwrap();
}
