//! What the router does when things go wrong outside a handler's happy path: a loop that dies,
//! outputs that cannot be published, a rejected message with no poison queue, settings that
//! cannot take effect.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use parking_lot::Mutex;
use tidemill::in_process::{InProcessConfig, InProcessPubSub};
use tidemill::middleware::{PoisonQueueLayer, RetryLayer, POISON_REASON_KEY, POISON_TOPIC_KEY};
use tidemill::router::{
    HandlerContext, HandlerError, RestartPolicy, RouterConfig, RouterError, RouterEvent,
    DEFAULT_DEAD_LETTER_TOPIC,
};
use tidemill::{
    Backoff, Error, Message, Publisher, PublisherExt, Router, Subscriber, Subscription,
};

fn events(router: &Router) -> Arc<Mutex<Vec<String>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    router.on_event(move |event: &RouterEvent<'_>| {
        let line = match event {
            RouterEvent::HandlerDied { restart_in, .. } => {
                format!("died restart={}", restart_in.is_some())
            }
            RouterEvent::HandlerRestarted { restarts, .. } => format!("restarted {restarts}"),
            RouterEvent::DeadLettered { message_id, .. } => format!("dead-lettered {message_id}"),
            RouterEvent::RejectNotDeadLettered { message_id, .. } => {
                format!("kept {message_id}")
            }
            RouterEvent::OutputPublishFailed { permanent, .. } => {
                format!("output failed permanent={permanent}")
            }
            _ => "other".into(),
        };
        l.lock().push(line);
    });
    log
}

fn quick_restarts(n: u32) -> RouterConfig {
    RouterConfig::default().restart_policy(RestartPolicy::restart(
        n,
        Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
    ))
}

#[tokio::test]
async fn a_panicking_loop_is_reported_restarted_and_loses_nothing() {
    let ps = InProcessPubSub::new().with_group("g");
    let router = Router::with_config(quick_restarts(5));
    let log = events(&router);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // No recoverer layer: the panic unwinds the handler's loop.
    router
        .handler("fragile")
        .subscribe("in", ps.clone())
        .handle(move |msg| {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    panic!("boom on {}", msg.id());
                }
                Ok(())
            }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("m1", ""))
        .await
        .unwrap();
    until(|| calls.load(Ordering::SeqCst) >= 2).await;
    until(|| log.lock().iter().any(|l| l.starts_with("restarted"))).await;
    assert_eq!(log.lock()[0], "died restart=true");
    // The message held when the loop died was nacked and handled after the restart.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    running.close().await.unwrap();
}

#[tokio::test]
async fn a_loop_that_keeps_dying_fails_the_router_loudly() {
    let ps = InProcessPubSub::new().with_group("g");
    let router = Router::with_config(
        RouterConfig::default()
            .restart_policy(RestartPolicy::Never)
            .close_pubsubs(false),
    );
    let log = events(&router);
    router
        .handler("always-panics")
        .subscribe("in", ps.clone())
        .handle(|_msg| async move {
            if true {
                panic!("always");
            }
            Ok(())
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish_one("in", Message::with_id("m1", ""))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, RouterError::HandlerFailed { handler, reason }
            if handler == "always-panics" && reason.contains("always")),
        "{err}"
    );
    assert_eq!(log.lock().as_slice(), ["died restart=false"]);
    // Nothing was lost: the message is still there for the next consumer of the group.
    let mut again = ps.subscribe("in").await.unwrap();
    assert_eq!(take(&mut again, 1).await[0].id(), "m1");
}

/// A publisher that refuses every message, as a broker refuses a metadata key it cannot carry.
#[derive(Clone, Default)]
struct Refusing {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Publisher for Refusing {
    async fn publish(&self, _topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Error::InvalidMetadata {
            message_id: messages[0].id().to_owned(),
            key: "ключ".into(),
            reason: "test broker refuses it".into(),
        })
    }
    async fn close(&self) -> tidemill::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_permanent_output_failure_reaches_the_poison_queue() {
    let ps = InProcessPubSub::new();
    let mut poison = ps.subscribe("poison").await.unwrap();
    let refusing = Refusing::default();
    let router = Router::new();
    let log = events(&router);
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", refusing.clone())
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .layer(RetryLayer::new().max_retries(3))
        .handle(|msg| async move { Ok(Message::new(msg.payload().clone())) })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("m1", "x"))
        .await
        .unwrap();
    let poisoned = take(&mut poison, 1).await;
    assert_eq!(poisoned[0].id(), "m1");
    assert_eq!(poisoned[0].metadata().get(POISON_TOPIC_KEY), Some("in"));
    assert!(poisoned[0]
        .metadata()
        .get(POISON_REASON_KEY)
        .unwrap()
        .contains("ключ"));
    // Permanent: not retried by the retry layer, published once.
    assert_eq!(refusing.calls.load(Ordering::SeqCst), 1);
    assert_eq!(log.lock().as_slice(), ["output failed permanent=true"]);
    running.close().await.unwrap();
}

#[tokio::test]
async fn a_transient_output_failure_is_retried_by_the_retry_layer() {
    let ps = InProcessPubSub::new();
    let mut out = ps.subscribe("out").await.unwrap();
    let flaky = FlakyPublisher::new(ps.clone(), 2);
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", flaky.clone())
        .layer(
            RetryLayer::new()
                .max_retries(5)
                .initial_interval(Duration::from_millis(5)),
        )
        .handle(|msg| async move { Ok(Message::with_id(format!("{}-out", msg.id()), "")) })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("m1", ""))
        .await
        .unwrap();
    assert_eq!(take(&mut out, 1).await[0].id(), "m1-out");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    running.close().await.unwrap();
}

#[tokio::test]
async fn a_permanent_output_failure_without_middleware_is_dead_lettered_not_looped() {
    let ps = InProcessPubSub::new();
    let mut dead = ps.subscribe(DEFAULT_DEAD_LETTER_TOPIC).await.unwrap();
    let refusing = Refusing::default();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", refusing.clone())
        .handle(|msg| async move { Ok(msg) })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("m1", ""))
        .await
        .unwrap();
    assert_eq!(take(&mut dead, 1).await[0].id(), "m1");
    nothing_within(&mut dead, Duration::from_millis(200)).await;
    assert_eq!(
        refusing.calls.load(Ordering::SeqCst),
        1,
        "tried once, not looped"
    );
    running.close().await.unwrap();
}

#[tokio::test]
async fn a_rejected_message_without_poison_queue_goes_to_the_dead_letter_topic() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let mut dead = ps.subscribe(DEFAULT_DEAD_LETTER_TOPIC).await.unwrap();
    let router = Router::new();
    let log = events(&router);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    router
        .handler("strict")
        .subscribe("in", sub.clone())
        .handle(move |msg| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if msg.id() == "bad" {
                    return Err(HandlerError::reject("not JSON"));
                }
                Ok(())
            }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish(
        "in",
        vec![Message::with_id("bad", "{"), Message::with_id("good", "{}")],
    )
    .await
    .unwrap();
    let dl = take(&mut dead, 1).await;
    assert_eq!(dl[0].id(), "bad");
    assert_eq!(dl[0].metadata().get(POISON_REASON_KEY), Some("not JSON"));
    until(|| sub.log.acks() == 2).await;
    // Handled once each: the rejected one was not redelivered ahead of the good one.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(log.lock().as_slice(), ["dead-lettered bad"]);
    running.close().await.unwrap();
}

/// A subscriber with no dead-letter publisher of its own.
#[derive(Clone)]
struct Plain(InProcessPubSub);

#[async_trait]
impl Subscriber for Plain {
    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        self.0.subscribe(topic).await
    }
    async fn close(&self) -> tidemill::Result<()> {
        Subscriber::close(&self.0).await
    }
}

#[tokio::test]
async fn a_rejected_message_with_nowhere_to_go_is_kept_and_delayed() {
    let ps = InProcessPubSub::new().with_group("g");
    let router =
        Router::with_config(RouterConfig::default().reject_delay(Duration::from_millis(300)));
    let log = events(&router);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    router
        .handler("strict")
        .subscribe("in", Plain(ps.clone()))
        .handle(move |_msg| {
            c.lock().push(tokio::time::Instant::now());
            async move { Err::<(), _>(HandlerError::reject("never")) }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("m1", ""))
        .await
        .unwrap();
    until(|| calls.lock().len() >= 2).await;
    let calls = calls.lock().clone();
    assert!(
        calls[1] - calls[0] >= Duration::from_millis(290),
        "waited the reject delay"
    );
    assert_eq!(log.lock()[0], "kept m1");
    running.close().await.unwrap();
}

#[tokio::test]
async fn settings_that_cannot_take_effect_are_refused() {
    let ps = InProcessPubSub::new();
    // Layers on a batch handler.
    let router = Router::new();
    let err = router
        .handler("batch")
        .subscribe("in", ps.clone())
        .layer(RetryLayer::new())
        .handle_batch(|_msgs| async move { Ok(()) })
        .unwrap_err();
    assert!(
        matches!(err, RouterError::LayersOnBatchHandler(ref h) if h == "batch"),
        "{err}"
    );

    // A concurrency the subscriber would not feed.
    router
        .handler("wide")
        .subscribe("in", ps.clone())
        .concurrency(8)
        .handle(|_msg| async move { Ok(()) })
        .unwrap();
    let err = router.run().await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Config { handler, reason }
        if handler == "wide" && reason.contains("max_in_flight")),
        "{err}"
    );

    // Made to fit, it runs.
    let wide = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(8));
    let router = Router::new();
    router
        .handler("wide")
        .subscribe("in", wide)
        .concurrency(8)
        .handle(|_msg| async move { Ok(()) })
        .unwrap();
    router.start().await.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn the_handler_context_is_there_without_middleware() {
    let ps = InProcessPubSub::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let router = Router::new();
    router
        .handler("plain")
        .subscribe("in", ps.clone())
        .handle(move |msg| {
            *s.lock() =
                HandlerContext::of(&msg).map(|c| (c.handler().to_owned(), c.topic().to_owned()));
            async move { Ok(()) }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::new("")).await.unwrap();
    until(|| seen.lock().is_some()).await;
    assert_eq!(*seen.lock(), Some(("plain".to_owned(), "in".to_owned())));
    running.close().await.unwrap();
}

/// Counts closes of the subscriber it wraps.
#[derive(Clone)]
struct CountingCloses {
    inner: InProcessPubSub,
    closes: Arc<AtomicUsize>,
}

#[async_trait]
impl Subscriber for CountingCloses {
    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        self.inner.subscribe(topic).await
    }
    async fn close(&self) -> tidemill::Result<()> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        Subscriber::close(&self.inner).await
    }
    fn instance_id(&self) -> usize {
        Arc::as_ptr(&self.closes) as usize
    }
}

#[tokio::test]
async fn a_subscriber_shared_by_handlers_is_closed_once() {
    let sub = CountingCloses {
        inner: InProcessPubSub::new(),
        closes: Arc::default(),
    };
    let router = Router::new();
    for name in ["a", "b", "c"] {
        router
            .handler(name)
            .subscribe(name, sub.clone())
            .handle(|_msg| async move { Ok(()) })
            .unwrap();
    }
    router.start().await.unwrap().close().await.unwrap();
    assert_eq!(sub.closes.load(Ordering::SeqCst), 1);
}

/// A subscriber that cannot subscribe.
struct Broken;

#[async_trait]
impl Subscriber for Broken {
    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        Err(Error::subscribe(topic, "no such stream"))
    }
    async fn close(&self) -> tidemill::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_handler_added_while_running_reports_its_failed_subscription() {
    let ps = InProcessPubSub::new();
    let router = Router::new();
    router
        .handler("first")
        .subscribe("in", ps.clone())
        .handle(|_msg| async move { Ok(()) })
        .unwrap();
    let running = router.start().await.unwrap();
    router
        .handler("late")
        .subscribe("in", Broken)
        .handle(|_msg| async move { Ok(()) })
        .unwrap();
    let err = router.handler_ready("late").await.unwrap_err();
    assert!(err.to_string().contains("no such stream"), "{err}");
    router
        .handler("later")
        .subscribe("in", ps.clone())
        .handle(|_msg| async move { Ok(()) })
        .unwrap();
    router.handler_ready("later").await.unwrap();
    running.close().await.unwrap();
}
