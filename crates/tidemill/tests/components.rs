//! Components on the in-process pub/sub: forwarder, fan-in, fan-out, delay, requeuer.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tidemill::components::delay::{Delay, DelayedPublisher, DELAY_FOR_KEY, DELAY_UNTIL_KEY};
use tidemill::components::fan::{FanIn, FanOut};
use tidemill::components::forwarder::{
    Envelope, Forwarder, ForwarderConfig, ForwarderError, ForwarderPublisher,
};
use tidemill::components::requeuer::{Requeuer, REQUEUE_COUNT_KEY};
use tidemill::in_process::{InProcessConfig, WhenFull};
use tidemill::middleware::PoisonQueueLayer;
use tidemill::middleware::{
    POISON_HANDLER_KEY, POISON_REASON_KEY, POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
use tidemill::{HandlerError, HandlerResult, Router};
use tidemill::{InProcessPubSub, Message, Publisher, Subscriber};
use tokio::time::Instant;

fn spawn_forwarder(forwarder: &Forwarder) -> tokio::task::JoinHandle<Result<(), ForwarderError>> {
    let f = forwarder.clone();
    tokio::spawn(async move { f.run().await })
}

#[tokio::test]
async fn forwarder_delivers_each_message_to_its_destination_unchanged() {
    let ps = InProcessPubSub::new();
    let config = ForwarderConfig::new("outbox");
    let forwarder = Forwarder::new(ps.clone(), ps.clone(), config.clone());
    let run = spawn_forwarder(&forwarder);
    forwarder.running().await;
    let mut orders = ps.subscribe("orders").await.unwrap();
    let mut invoices = ps.subscribe("invoices").await.unwrap();

    let publisher = ForwarderPublisher::new(ps.clone(), config);
    let binary: Vec<u8> = (0..=255).collect();
    publisher
        .publish(
            "orders",
            vec![
                Message::with_id("o-1", binary.clone()).with_metadata("k", "v"),
                Message::with_id("o-2", "second"),
            ],
        )
        .await
        .unwrap();
    publisher
        .publish("invoices", vec![Message::with_id("i-1", "inv")])
        .await
        .unwrap();

    let got = take(&mut orders, 2).await;
    assert_eq!(ids(&got), ["o-1", "o-2"]);
    assert_eq!(got[0].payload().as_ref(), &binary[..]);
    assert_eq!(got[0].metadata().get("k"), Some("v"));
    assert_eq!(ids(&take(&mut invoices, 1).await), ["i-1"]);

    forwarder.close().await;
    run.await.unwrap().unwrap();
    assert!(matches!(
        forwarder.run().await,
        Err(ForwarderError::AlreadyRunning)
    ));
}

#[tokio::test(start_paused = true)]
async fn forwarder_acks_only_after_the_republish_succeeded() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let flaky = FlakyPublisher::new(ps.clone(), 2);
    let config = ForwarderConfig::new("outbox");
    let forwarder = Forwarder::new(sub.clone(), flaky.clone(), config.clone());
    let run = spawn_forwarder(&forwarder);
    forwarder.running().await;
    let mut dest = ps.subscribe("dest").await.unwrap();

    ForwarderPublisher::new(ps.clone(), config)
        .publish("dest", vec![Message::with_id("m", "x")])
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut dest, 1).await), ["m"]);
    until(|| sub.log.len() == 3).await;
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    assert_eq!((sub.log.nacks(), sub.log.acks()), (2, 1));
    assert_eq!(
        sub.log.all().last().unwrap().1,
        tidemill::Settlement::Ack,
        "acked after the successful republish, not before"
    );
    nothing_within(&mut dest, Duration::from_secs(1)).await;
    forwarder.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn malformed_envelopes_go_to_the_poison_topic() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let config = ForwarderConfig::new("outbox").poison_topic("outbox.poison");
    let forwarder = Forwarder::new(sub.clone(), ps.clone(), config);
    let run = spawn_forwarder(&forwarder);
    forwarder.running().await;
    let mut poison = ps.subscribe("outbox.poison").await.unwrap();

    ps.publish("outbox", vec![Message::with_id("bad", "not an envelope")])
        .await
        .unwrap();
    let got = take(&mut poison, 1).await;
    assert_eq!(got[0].id(), "bad");
    assert_eq!(got[0].payload().as_ref(), b"not an envelope");
    let md = got[0].metadata();
    assert!(md
        .get(POISON_REASON_KEY)
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(md.get(POISON_TOPIC_KEY), Some("outbox"));
    assert_eq!(md.get(POISON_HANDLER_KEY), Some("forwarder"));
    assert!(md
        .get(POISON_SUBSCRIBER_KEY)
        .unwrap()
        .contains("RecordingSubscriber"));
    until(|| sub.log.acks() == 1).await;
    forwarder.close().await;
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn malformed_envelopes_are_nacked_without_a_poison_topic() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let forwarder = Forwarder::new(sub.clone(), ps.clone(), ForwarderConfig::new("outbox"));
    let run = spawn_forwarder(&forwarder);
    forwarder.running().await;
    let unsupported = br#"{"v":2,"destination_topic":"t","id":"1","payload":""}"#;
    ps.publish("outbox", vec![Message::with_id("bad", &unsupported[..])])
        .await
        .unwrap();
    until(|| sub.log.nacks() >= 3).await;
    assert_eq!(sub.log.acks(), 0, "never acked silently");
    forwarder.close().await;
    run.await.unwrap().unwrap();
}

/// A publisher that takes its time, to show close waits for the envelope in hand.
#[derive(Clone)]
struct SlowPublisher(InProcessPubSub);

#[async_trait::async_trait]
impl Publisher for SlowPublisher {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        self.0.publish(topic, messages).await
    }
    async fn close(&self) -> tidemill::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn forwarder_close_finishes_the_envelope_in_hand() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let forwarder = Forwarder::new(
        sub.clone(),
        SlowPublisher(ps.clone()),
        ForwarderConfig::new("outbox"),
    );
    let run = spawn_forwarder(&forwarder);
    forwarder.running().await;
    let mut dest = ps.subscribe("dest").await.unwrap();
    let envelope = Envelope::new("dest", Message::with_id("m", "x")).into_message();
    ps.publish("outbox", vec![envelope]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = tokio::time::Instant::now();
    forwarder.close().await;
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    run.await.unwrap().unwrap();
    assert_eq!(sub.log.acks(), 1);
    assert_eq!(ids(&take(&mut dest, 1).await), ["m"]);
}

#[tokio::test]
async fn fan_in_moves_several_topics_into_one() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let router = Router::new();
    FanIn::new("all", ps.clone())
        .source("orders", sub.clone())
        .source("payments", sub.clone())
        .register(&router)
        .unwrap();
    let mut all = ps.subscribe("all").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish(
        "orders",
        vec![Message::with_id("o", "1").with_metadata("k", "v")],
    )
    .await
    .unwrap();
    ps.publish("payments", vec![Message::with_id("p", "2")])
        .await
        .unwrap();
    let mut got = take(&mut all, 2).await;
    got.sort_by(|a, b| a.id().cmp(b.id()));
    assert_eq!(ids(&got), ["o", "p"]);
    assert_eq!(got[0].metadata().get("k"), Some("v"));
    until(|| sub.log.acks() == 2).await;
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn fan_out_gives_every_local_subscriber_each_message_and_acks_upstream_after_all() {
    let upstream = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(upstream.clone());
    let router = Router::new();
    let fan_out = FanOut::new();
    fan_out.add_topic(&router, "prices", sub.clone()).unwrap();
    let mut a = fan_out.subscribe("prices").await.unwrap();
    let mut b = fan_out.subscribe("prices").await.unwrap();
    let run = start(&router);
    router.running().await;
    upstream
        .publish("prices", vec![Message::with_id("1", "42")])
        .await
        .unwrap();
    let da = tokio::time::timeout(WAIT, a.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let db = tokio::time::timeout(WAIT, b.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((da.message().id(), db.message().id()), ("1", "1"));
    da.ack();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        sub.log.len(),
        0,
        "upstream waits for every local subscriber"
    );
    db.ack();
    until(|| sub.log.acks() == 1).await;
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn delayed_messages_wait_without_holding_back_the_others() {
    let ps = InProcessPubSub::new();
    let mut sub = ps.subscribe("t").await.unwrap();
    let delayed = DelayedPublisher::new(ps.clone()).default_delay(Duration::from_secs(5));
    let t0 = Instant::now();
    delayed
        .publish("t", vec![Message::with_id("late", "")])
        .await
        .unwrap();
    let mut sooner = Message::with_id("sooner", "");
    Delay::For(Duration::from_secs(2)).apply(&mut sooner);
    ps.publish("t", vec![sooner, Message::with_id("now", "")])
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = sub.next().await.unwrap().unwrap();
        let md = d.message().metadata();
        assert!(!md.contains_key(DELAY_FOR_KEY) && !md.contains_key(DELAY_UNTIL_KEY));
        seen.push((d.message().id().to_owned(), t0.elapsed()));
        d.ack();
    }
    assert_eq!(
        seen,
        [
            ("now".to_owned(), Duration::ZERO),
            ("sooner".to_owned(), Duration::from_secs(2)),
            ("late".to_owned(), Duration::from_secs(5)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn delay_until_a_time_and_parked_messages_are_bounded() {
    let ps = InProcessPubSub::with_config(
        InProcessConfig::default()
            .buffer_size(2)
            .when_full(WhenFull::Fail),
    );
    let mut sub = ps.subscribe("t").await.unwrap();
    let t0 = Instant::now();
    let mut msg = Message::with_id("at", "");
    Delay::Until(std::time::SystemTime::now() + Duration::from_secs(3)).apply(&mut msg);
    ps.publish("t", vec![msg, Message::with_id("x", "")])
        .await
        .unwrap();
    let err = ps.publish("t", vec![Message::new("")]).await.unwrap_err();
    assert!(
        matches!(err, tidemill::Error::Full { .. }),
        "parked messages count: {err}"
    );
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first.message().id(), "x");
    first.ack();
    let at = sub.next().await.unwrap().unwrap();
    assert_eq!(at.message().id(), "at");
    let waited = t0.elapsed();
    // Wall-clock milliseconds, converted once at publish time.
    assert!(
        waited > Duration::from_millis(2900) && waited <= Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requeuer_moves_poisoned_messages_back_later_with_a_count() {
    let ps = InProcessPubSub::new();
    let seen: std::sync::Arc<parking_lot::Mutex<Vec<(Message, Instant)>>> = Default::default();
    let s = seen.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .handle(move |msg: Message| {
            let first = {
                let mut s = s.lock();
                s.push((msg.clone(), Instant::now()));
                s.len() == 1
            };
            async move {
                if first {
                    return Err(HandlerError::new(std::io::Error::other("down")));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    Requeuer::new(ps.clone())
        .delay(Duration::from_secs(5))
        .register(&router, "requeuer", "poison", ps.clone())
        .unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish(
        "in",
        vec![Message::with_id("m", "p").with_metadata("k", "v")],
    )
    .await
    .unwrap();
    until(|| seen.lock().len() == 2).await;
    let seen = seen.lock().clone();
    assert_eq!(seen[1].1 - seen[0].1, Duration::from_secs(5));
    let back = &seen[1].0;
    assert_eq!((back.id(), back.payload().as_ref()), ("m", &b"p"[..]));
    assert_eq!(back.metadata().get(REQUEUE_COUNT_KEY), Some("1"));
    assert_eq!(back.metadata().get("k"), Some("v"));
    assert!(back.metadata().get(POISON_TOPIC_KEY).is_none());
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn requeuer_gives_up_after_max_requeues() {
    let ps = InProcessPubSub::new();
    let calls: std::sync::Arc<parking_lot::Mutex<Vec<Instant>>> = Default::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .handle(move |_: Message| {
            c.lock().push(Instant::now());
            async { Err::<(), _>(HandlerError::new(std::io::Error::other("always"))) }
        })
        .unwrap();
    Requeuer::new(ps.clone())
        .delay(Duration::from_secs(1))
        .backoff(2.0)
        .max_requeues(2)
        .exhausted_topic("dead")
        .register(&router, "requeuer", "poison", ps.clone())
        .unwrap();
    let mut dead = ps.subscribe("dead").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish("in", vec![Message::with_id("m", "")])
        .await
        .unwrap();
    let gone = take(&mut dead, 1).await.remove(0);
    assert_eq!(gone.metadata().get(REQUEUE_COUNT_KEY), Some("2"));
    assert_eq!(gone.metadata().get(POISON_TOPIC_KEY), Some("in"));
    let calls = calls.lock().clone();
    let at: Vec<_> = calls.iter().map(|t| *t - calls[0]).collect();
    assert_eq!(at, [0, 1, 3].map(Duration::from_secs));
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}
