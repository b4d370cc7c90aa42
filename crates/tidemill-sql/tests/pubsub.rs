//! The database as a pub/sub: groups, competing consumers, nacks, queue mode, delays, topic
//! validation, on every database.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{next, nothing, unique, Db};
use tidemill::components::delay::{Delay, DELAY_FOR_KEY};
use tidemill::{Message, Publisher, Subscriber};
use tidemill_sql::{Backend, ConsumeMode, SubscriberOverrides};

per_backend!(
    round_trip_keeps_id_payload_metadata,
    groups_each_get_all_and_resume_at_their_offset,
    group_less_subscriber_gets_only_new_messages,
    competing_members_never_share_a_message,
    nack_brings_the_message_back_first,
    queue_mode_splits_and_deletes_on_ack,
    queue_nack_comes_back,
    delayed_messages_wait,
    delayed_messages_in_queue_mode_do_not_block_others,
    hostile_topic_names_are_rejected,
);

async fn round_trip_keeps_id_payload_metadata(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("rt");
    let msg = Message::with_id("id-1", vec![0u8, 159, 146, 150])
        .with_metadata("k", "v")
        .with_metadata("quote\"", "ü");
    ps.publisher()
        .publish(&topic, vec![msg.clone()])
        .await
        .unwrap();
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    let d = next(&mut s, 10).await;
    assert!(d.message().same_content(&msg));
    d.ack();
    sub.close().await.unwrap();
}

async fn groups_each_get_all_and_resume_at_their_offset(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("groups");
    let publisher = ps.publisher();
    let msgs: Vec<Message> = (0..20).map(|i| Message::new(format!("m{i}"))).collect();
    publisher.publish(&topic, msgs.clone()).await.unwrap();
    let (a, b) = (unique("a"), unique("b"));
    for group in [&a, &b] {
        let sub = ps
            .subscriber_with(SubscriberOverrides::new().group(group))
            .unwrap();
        let mut s = sub.subscribe(&topic).await.unwrap();
        for m in &msgs[..10] {
            let d = next(&mut s, 10).await;
            assert_eq!(d.message().id(), m.id());
            d.ack();
        }
        sub.close().await.unwrap();
    }
    // A new member of the group resumes after what was acked.
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(&a))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    for m in &msgs[10..] {
        let d = next(&mut s, 10).await;
        assert_eq!(d.message().id(), m.id());
        d.ack();
    }
    nothing(&mut s, 300).await;
    sub.close().await.unwrap();
}

async fn group_less_subscriber_gets_only_new_messages(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("nogroup");
    ps.publisher()
        .publish(&topic, vec![Message::new("old")])
        .await
        .unwrap();
    let sub = ps.subscriber().unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    ps.publisher()
        .publish(&topic, vec![Message::new("new")])
        .await
        .unwrap();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().payload().as_ref(), b"new");
    d.ack();
    nothing(&mut s, 300).await;
    sub.close().await.unwrap();
}

async fn competing_members_never_share_a_message(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("compete");
    let group = unique("g");
    let n = 300;
    let mut subs = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..3 {
        let sub = ps
            .subscriber_with(SubscriberOverrides::new().group(&group))
            .unwrap();
        let mut s = sub.subscribe(&topic).await.unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = s.next().await {
                let _ = tx.send(d.message().id().to_owned());
                d.ack();
            }
        });
        subs.push(sub);
    }
    let publisher = ps.publisher();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let msgs = chunk
            .iter()
            .map(|i| Message::with_id(format!("{i}"), "x"))
            .collect();
        publisher.publish(&topic, msgs).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < n {
        let id = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("timed out")
            .unwrap();
        assert!(seen.insert(id.clone()), "{id} delivered twice");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "extra delivery");
    for s in subs {
        s.close().await.unwrap();
    }
}

async fn nack_brings_the_message_back_first(backend: Backend) {
    let db = Db::new(backend);
    let ps = db
        .pubsub_with(|c| c.nack_delay(Duration::from_millis(50)))
        .await;
    let topic = unique("nack");
    ps.publisher()
        .publish(
            &topic,
            vec![Message::with_id("1", "a"), Message::with_id("2", "b")],
        )
        .await
        .unwrap();
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "1");
    d.nack();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "1");
    d.ack();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "2");
    drop(d); // dropped unsettled = nack
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "2");
    d.ack();
    sub.close().await.unwrap();
}

async fn queue_mode_splits_and_deletes_on_ack(backend: Backend) {
    let db = Db::new(backend);
    let ps = db
        .pubsub_with(|c| c.consume_mode(ConsumeMode::Queue).max_in_flight(4))
        .await;
    let topic = unique("queue");
    let n = 200;
    let msgs: Vec<Message> = (0..n)
        .map(|i| Message::with_id(format!("{i}"), "x"))
        .collect();
    ps.publisher().publish(&topic, msgs).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut subs = Vec::new();
    for w in 0..3 {
        let sub = ps.subscriber().unwrap();
        let mut s = sub.subscribe(&topic).await.unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = s.next().await {
                let id = d.message().id().to_owned();
                tokio::time::sleep(Duration::from_millis(1)).await;
                d.ack();
                let _ = tx.send((w, id));
            }
        });
        subs.push(sub);
    }
    let mut seen = HashSet::new();
    let mut workers = HashSet::new();
    while seen.len() < n {
        let (w, id) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("timed out")
            .unwrap();
        workers.insert(w);
        assert!(seen.insert(id.clone()), "{id} delivered twice");
    }
    assert!(workers.len() > 1, "members worked in parallel");
    for s in subs {
        s.close().await.unwrap();
    }
    // Acked rows are gone: a new member finds nothing.
    let sub = ps.subscriber().unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    nothing(&mut s, 300).await;
    sub.close().await.unwrap();
}

async fn queue_nack_comes_back(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub_with(|c| c.consume_mode(ConsumeMode::Queue)).await;
    let topic = unique("qnack");
    ps.publisher()
        .publish(&topic, vec![Message::with_id("1", "a")])
        .await
        .unwrap();
    let sub = ps.subscriber().unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    let d = next(&mut s, 10).await;
    d.nack_after(Duration::from_millis(200));
    let started = Instant::now();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "1");
    assert!(started.elapsed() >= Duration::from_millis(150));
    d.ack();
    sub.close().await.unwrap();
}

async fn delayed_messages_wait(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let topic = unique("delay");
    let mut later = Message::with_id("later", "x").with_metadata("k", "v");
    Delay::For(Duration::from_millis(700)).apply(&mut later);
    let started = Instant::now();
    ps.publisher()
        .publish(&topic, vec![later, Message::with_id("after", "y")])
        .await
        .unwrap();
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "later");
    // Delivered without the delay metadata, the rest intact.
    assert_eq!(d.message().metadata().get(DELAY_FOR_KEY), None);
    assert_eq!(d.message().metadata().get("k"), Some("v"));
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "{:?}",
        started.elapsed()
    );
    d.ack();
    // Log mode keeps order: the message after it waited too.
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "after");
    d.ack();
    sub.close().await.unwrap();
}

async fn delayed_messages_in_queue_mode_do_not_block_others(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub_with(|c| c.consume_mode(ConsumeMode::Queue)).await;
    let topic = unique("qdelay");
    let mut later = Message::with_id("later", "x");
    Delay::Until(std::time::SystemTime::now() + Duration::from_millis(700)).apply(&mut later);
    let started = Instant::now();
    ps.publisher()
        .publish(&topic, vec![later, Message::with_id("now", "y")])
        .await
        .unwrap();
    let sub = ps.subscriber().unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "now");
    assert!(started.elapsed() < Duration::from_millis(600));
    d.ack();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "later");
    assert!(started.elapsed() >= Duration::from_millis(650));
    d.ack();
    sub.close().await.unwrap();
}

async fn hostile_topic_names_are_rejected(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let bad = "x\"; DROP TABLE y; --";
    let err = ps
        .publisher()
        .publish(bad, vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, tidemill::Error::InvalidTopic { .. }), "{err}");
    let sub = ps.subscriber().unwrap();
    let err = sub.subscribe("a'; DELETE FROM t; --").await.unwrap_err();
    assert!(matches!(err, tidemill::Error::InvalidTopic { .. }), "{err}");
    assert!(ps
        .subscriber_with(SubscriberOverrides::new().group("g\"; --"))
        .is_err());
}
