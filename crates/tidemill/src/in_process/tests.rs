//! Unit tests of the in-process pub/sub.

use super::*;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

#[tokio::test]
async fn fan_out_to_every_subscription() {
    let ps = InProcessPubSub::new();
    let mut a = ps.subscribe("t").await.unwrap();
    let mut b = ps.subscribe("t").await.unwrap();
    ps.publish("t", vec![Message::with_id("1", "x")])
        .await
        .unwrap();
    assert_eq!(a.next().await.unwrap().unwrap().message().id(), "1");
    assert_eq!(b.next().await.unwrap().unwrap().message().id(), "1");
}

#[tokio::test]
async fn no_subscriber_drops_unless_persistent() {
    let ps = InProcessPubSub::new();
    ps.publish("t", vec![Message::with_id("1", "")])
        .await
        .unwrap();
    let mut s = ps.subscribe("t").await.unwrap();
    ps.publish("t", vec![Message::with_id("2", "")])
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().message().id(), "2");

    let ps = InProcessPubSub::with_config(InProcessConfig::default().persistent(true));
    ps.publish("t", vec![Message::with_id("1", "")])
        .await
        .unwrap();
    let mut s = ps.subscribe("t").await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().message().id(), "1");
}

#[tokio::test(start_paused = true)]
async fn nack_comes_back_first_after_the_delay() {
    let ps = InProcessPubSub::new();
    let mut s = ps.subscribe("t").await.unwrap();
    ps.publish(
        "t",
        vec![Message::with_id("1", ""), Message::with_id("2", "")],
    )
    .await
    .unwrap();
    let start = Instant::now();
    s.next().await.unwrap().unwrap().nack();
    let again = s.next().await.unwrap().unwrap();
    assert_eq!(again.message().id(), "1");
    assert_eq!(start.elapsed(), crate::options::DEFAULT_NACK_DELAY);
    again.ack();
    assert_eq!(s.next().await.unwrap().unwrap().message().id(), "2");
}

#[tokio::test(start_paused = true)]
async fn nack_with_a_delay_lets_the_others_pass() {
    let ps = InProcessPubSub::new();
    let mut s = ps.subscribe("t").await.unwrap();
    ps.publish(
        "t",
        vec![Message::with_id("1", ""), Message::with_id("2", "")],
    )
    .await
    .unwrap();
    let start = Instant::now();
    s.next()
        .await
        .unwrap()
        .unwrap()
        .nack_after(Duration::from_secs(1));
    let next = s.next().await.unwrap().unwrap();
    assert_eq!(
        (next.message().id(), start.elapsed()),
        ("2", Duration::ZERO)
    );
    next.ack();
    let again = s.next().await.unwrap().unwrap();
    assert_eq!(
        (again.message().id(), start.elapsed()),
        ("1", Duration::from_secs(1))
    );
}

#[tokio::test]
async fn a_slow_subscriber_does_not_block_other_topics() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(2));
    // Nobody reads "slow": its buffer fills and its publisher waits.
    let _slow = ps.subscribe("slow").await.unwrap();
    let blocked = tokio::spawn({
        let ps = ps.clone();
        async move {
            let msgs = (0..10).map(|_| Message::new("")).collect();
            ps.publish("slow", msgs).await
        }
    });
    let mut fast = ps.subscribe("fast").await.unwrap();
    for i in 0..100 {
        ps.publish("fast", vec![Message::with_id(i.to_string(), "")])
            .await
            .unwrap();
        let d = fast.next().await.unwrap().unwrap();
        assert_eq!(d.message().id(), i.to_string());
        d.ack();
    }
    assert!(
        !blocked.is_finished(),
        "the slow topic's publisher still waits"
    );
    blocked.abort();
}

#[tokio::test]
async fn full_buffer_fails_when_configured() {
    let ps = InProcessPubSub::with_config(
        InProcessConfig::default()
            .buffer_size(2)
            .when_full(WhenFull::Fail),
    );
    let _s = ps.subscribe("t").await.unwrap();
    ps.publish("t", vec![Message::new(""), Message::new("")])
        .await
        .unwrap();
    let err = ps.publish("t", vec![Message::new("")]).await.unwrap_err();
    assert!(matches!(err, Error::Full { capacity: 2, .. }), "{err}");
}

#[tokio::test]
async fn full_buffer_waits_by_default() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(2));
    let mut s = ps.subscribe("t").await.unwrap();
    let publisher = ps.clone();
    let task = tokio::spawn(async move {
        let msgs = (0..10)
            .map(|i| Message::with_id(i.to_string(), ""))
            .collect();
        publisher.publish("t", msgs).await
    });
    for i in 0..10 {
        let d = s.next().await.unwrap().unwrap();
        assert_eq!(d.message().id(), i.to_string());
        d.ack();
    }
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn window_holds_back_the_next_message() {
    let ps = InProcessPubSub::new();
    let mut s = ps.subscribe("t").await.unwrap();
    ps.publish("t", vec![Message::new(""), Message::new("")])
        .await
        .unwrap();
    let first = s.next().await.unwrap().unwrap();
    let held = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
    assert!(
        held.is_err(),
        "a second delivery while the first is unsettled"
    );
    first.ack();
    assert!(s.next().await.is_some());
}

#[tokio::test]
async fn block_until_acked() {
    let ps =
        InProcessPubSub::with_config(InProcessConfig::default().block_publish_until_acked(true));
    let mut s = ps.subscribe("t").await.unwrap();
    let publisher = ps.clone();
    let task = tokio::spawn(async move { publisher.publish("t", vec![Message::new("")]).await });
    let d = s.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished());
    d.ack();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropped_subscription_unblocks_publisher() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(1));
    let s = ps.subscribe("t").await.unwrap();
    let publisher = ps.clone();
    let task = tokio::spawn(async move {
        publisher
            .publish("t", vec![Message::new(""), Message::new("")])
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(s);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn close_ends_streams_and_rejects_publish() {
    let ps = InProcessPubSub::new();
    let mut s = ps.subscribe("t").await.unwrap();
    Publisher::close(&ps).await.unwrap();
    assert!(s.next().await.is_none());
    assert!(ps
        .publish("t", vec![Message::new("")])
        .await
        .unwrap_err()
        .is_closed());
}

#[tokio::test]
async fn group_nack_goes_to_another_member() {
    let ps = InProcessPubSub::new().with_group("g");
    let mut a = ps.subscribe("t").await.unwrap();
    let mut b = ps.subscribe("t").await.unwrap();
    ps.publish("t", vec![Message::with_id("1", "")])
        .await
        .unwrap();
    let d = a.next().await.unwrap().unwrap();
    drop(d); // dropped unsettled: a nack
    drop(a);
    assert_eq!(b.next().await.unwrap().unwrap().message().id(), "1");
}
