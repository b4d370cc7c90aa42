//! Consumer groups (`XREADGROUP`/`XACK`) and fan-out without a group (`XREAD`).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use redis::Value;
use tidemill::StartPosition;
use tidemill::{Message, Publisher, Subscriber, Subscription};
use tidemill_redis::{RedisPublisher, RedisSubscriber};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn numbered(range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| Message::with_id(i.to_string(), format!("{i}")))
        .collect()
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
        ids.push(d.message().id().to_owned());
        d.ack();
    }
    ids
}

async fn quiet(sub: &mut Subscription) {
    if let Ok(Some(Ok(d))) = timeout(Duration::from_millis(300), sub.next()).await {
        panic!("unexpected delivery {}", d.message().id());
    }
}

async fn pending_count(topic: &str, group: &str) -> i64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(topic)
        .arg(group)
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    match reply {
        Value::Array(parts) => match parts[0] {
            Value::Int(n) => n,
            _ => panic!("{parts:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn group_is_created_on_subscribe_from_the_start_or_from_new_messages() {
    let topic = common::topic();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher.publish(&topic, numbered(0..3)).await.unwrap();

    let from_start = RedisSubscriber::connect(
        common::config()
            .group(common::group())
            .start_position(StartPosition::Beginning),
    )
    .await
    .unwrap();
    let from_now = RedisSubscriber::connect(
        common::config()
            .group(common::group())
            .start_position(StartPosition::End),
    )
    .await
    .unwrap();
    let mut a = from_start.subscribe(&topic).await.unwrap();
    let mut b = from_now.subscribe(&topic).await.unwrap();
    publisher.publish(&topic, numbered(3..5)).await.unwrap();

    assert_eq!(take(&mut a, 5).await, ["0", "1", "2", "3", "4"]);
    assert_eq!(take(&mut b, 2).await, ["3", "4"]);
    quiet(&mut b).await;
    from_start.close().await.unwrap();
    from_now.close().await.unwrap();
}

#[tokio::test]
async fn acks_are_xacks_and_members_of_a_group_split_the_messages() {
    let (topic, group) = (common::topic(), common::group());
    let config = common::config().group(group.clone());
    let s1 = RedisSubscriber::connect(config.clone().batch_size(10))
        .await
        .unwrap();
    let s2 = RedisSubscriber::connect(config.batch_size(10))
        .await
        .unwrap();
    let mut a = s1.subscribe(&topic).await.unwrap();
    let mut b = s2.subscribe(&topic).await.unwrap();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    // One publish per message, so both members are waiting for entries while they come in.
    for m in numbered(0..200) {
        publisher.publish(&topic, vec![m]).await.unwrap();
    }
    let (mut got_a, mut got_b) = (HashSet::new(), HashSet::new());
    while got_a.len() + got_b.len() < 200 {
        tokio::select! {
            Some(Ok(d)) = a.next() => { assert!(got_a.insert(d.message().id().to_owned())); d.ack(); }
            Some(Ok(d)) = b.next() => { assert!(got_b.insert(d.message().id().to_owned())); d.ack(); }
            _ = tokio::time::sleep(WAIT) => panic!("stalled at {} + {}", got_a.len(), got_b.len()),
        }
    }
    assert!(got_a.is_disjoint(&got_b));
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "one member got everything"
    );
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    // Closing flushed the acks: nothing is pending in the group.
    assert_eq!(pending_count(&topic, &group).await, 0);
}

#[tokio::test]
async fn without_a_group_every_subscriber_reads_every_message() {
    let topic = common::topic();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher.publish(&topic, numbered(0..2)).await.unwrap();
    let from_now = RedisSubscriber::connect(common::config()).await.unwrap();
    let from_start =
        RedisSubscriber::connect(common::config().start_position(StartPosition::Beginning))
            .await
            .unwrap();
    let mut now_1 = from_now.subscribe(&topic).await.unwrap();
    let mut now_2 = from_now.subscribe(&topic).await.unwrap();
    let mut start = from_start.subscribe(&topic).await.unwrap();
    publisher.publish(&topic, numbered(2..4)).await.unwrap();
    assert_eq!(take(&mut now_1, 2).await, ["2", "3"]);
    assert_eq!(take(&mut now_2, 2).await, ["2", "3"]);
    assert_eq!(take(&mut start, 4).await, ["0", "1", "2", "3"]);
    quiet(&mut now_1).await;
    // Without a group nothing is created on the server but the stream.
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&topic)
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    assert_eq!(groups, Value::Array(vec![]));
}

#[tokio::test]
async fn a_nacked_message_comes_back_after_the_configured_delay() {
    let topic = common::topic();
    let subscriber = RedisSubscriber::connect(
        common::config()
            .group(common::group())
            .nack_delay(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher.publish(&topic, numbered(0..2)).await.unwrap();

    let first = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.message().id(), "0");
    let nacked_at = tokio::time::Instant::now();
    first.nack();
    let again = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        again.message().id(),
        "0",
        "the nacked message comes back first"
    );
    assert!(nacked_at.elapsed() >= Duration::from_millis(300));
    again.nack_after(Duration::ZERO);
    let third = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(third.message().id(), "0");
    third.ack();
    assert_eq!(take(&mut sub, 1).await, ["1"]);
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn close_gives_fetched_messages_back_to_the_group_at_once() {
    let (topic, group) = (common::topic(), common::group());
    // A claim idle time far beyond the test: only giving back can explain a quick handover.
    let config = common::config()
        .group(group.clone())
        .claim_idle(Duration::from_secs(3600));
    let first = RedisSubscriber::connect(config.clone()).await.unwrap();
    let mut sub = first.subscribe(&topic).await.unwrap();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher.publish(&topic, numbered(0..20)).await.unwrap();
    // The first member fetched all 20, delivers one and keeps it unsettled.
    let held = timeout(WAIT, sub.next()).await.unwrap().unwrap().unwrap();
    first.close().await.unwrap();
    assert!(
        timeout(WAIT, sub.next()).await.unwrap().is_none(),
        "the stream ends on close"
    );
    drop(held); // unsettled after close: given back too

    let second = RedisSubscriber::connect(config).await.unwrap();
    let mut sub = second.subscribe(&topic).await.unwrap();
    let mut ids = take(&mut sub, 20).await;
    ids.sort_by_key(|id| id.parse::<u32>().unwrap());
    assert_eq!(ids, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    second.close().await.unwrap();
    second.close().await.unwrap();
    assert_eq!(pending_count(&topic, &group).await, 0);
}

#[tokio::test]
async fn a_restarted_consumer_with_a_stable_name_takes_back_its_pending_messages() {
    let (topic, group) = (common::topic(), common::group());
    let config = common::config()
        .group(group.clone())
        .consumer_name("worker-a")
        .claim_idle(Duration::from_secs(3600));
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher.publish(&topic, numbered(0..3)).await.unwrap();
    // A consumer named worker-a read the entries and died without acking them.
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&topic)
        .arg(&group)
        .arg("0")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("worker-a")
        .arg("STREAMS")
        .arg(&topic)
        .arg(">")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let subscriber = RedisSubscriber::connect(config).await.unwrap();
    assert_eq!(subscriber.consumer_name(), "worker-a");
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    assert_eq!(take(&mut sub, 3).await, ["0", "1", "2"]);
    subscriber.close().await.unwrap();
}
