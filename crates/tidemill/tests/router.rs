//! The router on the in-process pub/sub: outputs, settlement, middleware order, concurrency,
//! ordering by key, batches, decorators, plugins, adding and stopping handlers, and close.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::in_process::InProcessConfig;
use tidemill::router::{Disposition, Plugin, RouterConfig, RouterError};
use tidemill::{
    BoxError, HandlerError, HandlerResult, InProcessPubSub, Message, Publisher, Router, Subscriber,
    Subscription,
};
use tokio::time::timeout;
use tower::{Layer, Service};

const WAIT: Duration = Duration::from_secs(10);

fn start(router: &Router) -> tokio::task::JoinHandle<Result<(), RouterError>> {
    let r = router.clone();
    tokio::spawn(async move { r.run().await })
}

async fn take(sub: &mut Subscription, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .expect("stream ended")
            .unwrap();
        out.push(d.message().clone());
        d.ack();
    }
    out
}

async fn publish_ids(ps: &InProcessPubSub, topic: &str, ids: impl IntoIterator<Item = usize>) {
    let msgs = ids
        .into_iter()
        .map(|i| Message::with_id(i.to_string(), format!("payload {i}")))
        .collect();
    ps.publish(topic, msgs).await.unwrap();
}

fn ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.id().to_owned()).collect()
}

#[tokio::test]
async fn handler_publishes_its_outputs_and_consumers_see_them() {
    let ps = InProcessPubSub::new();
    let router = Router::new();
    router
        .handler("shout")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .handle(|msg: Message| async move {
            let text = String::from_utf8_lossy(msg.payload()).to_uppercase();
            HandlerResult::Ok(Message::with_id(msg.id().to_owned(), text))
        })
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    router
        .handler("print")
        .subscribe("in", ps.clone())
        .handle(move |msg: Message| {
            let s = s.clone();
            async move {
                s.lock().push(msg.id().to_owned());
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    // Subscriptions are made as the router starts; give them a moment to exist.
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "in", 0..10).await;
    let got = take(&mut out, 10).await;
    assert_eq!(
        ids(&got),
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(got[3].payload().as_ref(), b"PAYLOAD 3");
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(
        seen.lock().len(),
        10,
        "both handlers of the topic got every message"
    );
}

#[tokio::test]
async fn duplicate_names_and_missing_subscription_are_errors() {
    let ps = InProcessPubSub::new();
    let router = Router::new();
    let h = |_: Message| async { HandlerResult::Ok(()) };
    router
        .handler("a")
        .subscribe("t", ps.clone())
        .handle(h)
        .unwrap();
    let err = router
        .handler("a")
        .subscribe("t", ps.clone())
        .handle(h)
        .unwrap_err();
    assert!(
        matches!(err, RouterError::DuplicateHandler(ref n) if n == "a"),
        "{err}"
    );
    let err = router.handler("b").handle(h).unwrap_err();
    assert!(matches!(err, RouterError::MissingSubscription(_)), "{err}");
}

/// Records the order in which layers see a message.
#[derive(Clone)]
struct Trace {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<S> Layer<S> for Trace {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            trace: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Traced<S> {
    inner: S,
    trace: Trace,
}

impl<S: tidemill::router::Handler> Service<Message> for Traced<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, msg: Message) -> S::Future {
        self.trace.log.lock().push(self.trace.name);
        self.inner.call(msg)
    }
}

#[tokio::test]
async fn middleware_first_added_is_outermost() {
    let ps = InProcessPubSub::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let t = |name| Trace {
        name,
        log: log.clone(),
    };
    let router = Router::new();
    router.layer(t("router 1")).layer(t("router 2"));
    let l = log.clone();
    router
        .handler("h")
        .subscribe("t", ps.clone())
        .layer(t("handler 1"))
        .layer(t("handler 2"))
        .handle(move |msg: Message| {
            let l = l.clone();
            let context = tidemill::router::HandlerContext::of(&msg).cloned();
            async move {
                let context = context.expect("the router sets the context for middleware");
                assert_eq!((context.handler(), context.topic()), ("h", "t"));
                assert!(context.subscriber().contains("InProcessPubSub"));
                l.lock().push("handler");
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "t", 0..1).await;
    timeout(WAIT, async {
        while log.lock().len() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        *log.lock(),
        ["router 1", "router 2", "handler 1", "handler 2", "handler"]
    );
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn tower_timeout_and_concurrency_limit_wrap_a_handler() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(16));
    let router = Router::new();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    router
        .handler("limited")
        .subscribe("t", ps.clone())
        .concurrency(8)
        // tower's own layers, unchanged: errors convert into HandlerError.
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(3))
        .handle(move |_: Message| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "t", 0..30).await;
    timeout(WAIT, async {
        while done.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 3, "the concurrency limit held");
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn tower_timeout_cancels_and_nacks() {
    let ps = InProcessPubSub::new();
    let router = Router::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    router
        .handler("slow first")
        .subscribe("t", ps.clone())
        .publish_to("out", ps.clone())
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
        .handle(move |msg: Message| {
            let a = a.clone();
            async move {
                if a.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                HandlerResult::Ok(msg)
            }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "t", 0..1).await;
    let got = take(&mut out, 1).await;
    assert_eq!(got[0].id(), "0");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "timed out once, then redelivered"
    );
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn ordering_by_key_keeps_each_key_in_order_and_runs_keys_in_parallel() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(64));
    let router = Router::new();
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (s, r, p) = (seen.clone(), running.clone(), peak.clone());
    router
        .handler("keyed")
        .subscribe("t", ps.clone())
        .concurrency(8)
        .order_by_metadata("key")
        .handle(move |msg: Message| {
            let (s, r, p) = (s.clone(), r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let seq: usize = msg.metadata().get("seq").unwrap().parse().unwrap();
                // Later messages finish sooner, to tempt reordering.
                tokio::time::sleep(Duration::from_millis(((50 - seq % 50) / 10) as u64)).await;
                s.lock()
                    .push((msg.metadata().get("key").unwrap().to_owned(), seq));
                r.fetch_sub(1, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let msgs = (0..400)
        .map(|i| {
            Message::new("")
                .with_metadata("key", format!("k{}", i % 16))
                .with_metadata("seq", i.to_string())
        })
        .collect();
    ps.publish("t", msgs).await.unwrap();
    timeout(WAIT, async {
        while seen.lock().len() < 400 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let seen = seen.lock().clone();
    for k in 0..16 {
        let key = format!("k{k}");
        let seqs: Vec<usize> = seen
            .iter()
            .filter(|(x, _)| *x == key)
            .map(|x| x.1)
            .collect();
        assert_eq!(seqs.len(), 25);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {seqs:?}"
        );
    }
    assert!(peak.load(Ordering::SeqCst) > 1, "keys ran in parallel");
    assert!(peak.load(Ordering::SeqCst) <= 8, "concurrency held");
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn batches_are_settled_together() {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(100));
    let router = Router::new();
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let failed_once = Arc::new(AtomicBool::new(false));
    let (s, f) = (sizes.clone(), failed_once.clone());
    router
        .handler("batch")
        .subscribe("t", ps.clone())
        .publish_to("out", ps.clone())
        .batch(10, Duration::from_millis(50))
        .handle_batch(move |msgs: Vec<Message>| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.lock().push(msgs.len());
                if !f.swap(true, Ordering::SeqCst) {
                    return Err(HandlerError::new("the first batch fails"));
                }
                HandlerResult::Ok(msgs)
            }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "t", 0..25).await;
    let got = take(&mut out, 25).await;
    let mut got = ids(&got);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 25, "every message of the failed batch came back");
    let sizes = sizes.lock().clone();
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    assert_eq!(sizes[0], 10);
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

/// A publisher that fails its first `fail` publishes and records closes.
struct Flaky {
    inner: InProcessPubSub,
    fail: AtomicUsize,
    closed: AtomicBool,
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(tidemill::Error::publish(
                topic,
                messages[0].id(),
                "broker down",
            ));
        }
        self.inner.publish(topic, messages).await
    }
    async fn close(&self) -> tidemill::Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_message_is_acked_only_after_its_outputs_were_published() {
    let ps = InProcessPubSub::new();
    let flaky = Arc::new(Flaky {
        inner: ps.clone(),
        fail: AtomicUsize::new(2),
        closed: AtomicBool::new(false),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", flaky.clone())
        .handle(move |msg: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { HandlerResult::Ok(msg) }
        })
        .unwrap();
    let mut out = ps.with_group("g").subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "in", 0..1).await;
    assert_eq!(take(&mut out, 1).await[0].id(), "0");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "nacked twice, handled three times"
    );
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    assert!(
        flaky.closed.load(Ordering::SeqCst),
        "the router closed its publisher"
    );
}

#[tokio::test]
async fn dispositions_are_honoured() {
    let ps = InProcessPubSub::new();
    let router = Router::new();
    let calls: Arc<Mutex<Vec<(String, tokio::time::Instant)>>> = Arc::default();
    let c = calls.clone();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .handle(move |msg: Message| {
            let c = c.clone();
            async move {
                let n = {
                    let mut c = c.lock();
                    c.push((msg.id().to_owned(), tokio::time::Instant::now()));
                    c.iter().filter(|(id, _)| id == msg.id()).count()
                };
                match (msg.id(), n) {
                    ("drop", _) => Err(HandlerError::drop_message("not for us")),
                    ("later", 1) => Err(HandlerError::retry_after(
                        Duration::from_millis(200),
                        "not yet",
                    )),
                    _ => HandlerResult::Ok(()),
                }
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    ps.publish(
        "in",
        vec![Message::with_id("drop", ""), Message::with_id("later", "")],
    )
    .await
    .unwrap();
    timeout(WAIT, async {
        while calls.lock().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = calls.lock().clone();
    assert_eq!(
        calls.len(),
        3,
        "dropped once, retried later once: {calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.0 == "drop").count(), 1);
    let later: Vec<_> = calls
        .iter()
        .filter(|c| c.0 == "later")
        .map(|c| c.1)
        .collect();
    assert!(later[1] - later[0] >= Duration::from_millis(200));
    assert_eq!(HandlerError::reject("x").disposition(), Disposition::Reject);
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

/// Counts what passes through a decorated publisher.
struct Counting {
    inner: Arc<dyn Publisher>,
    count: Arc<AtomicUsize>,
}

#[async_trait]
impl Publisher for Counting {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        self.count.fetch_add(messages.len(), Ordering::SeqCst);
        self.inner.publish(topic, messages).await
    }
    async fn close(&self) -> tidemill::Result<()> {
        self.inner.close().await
    }
}

struct Started(Arc<AtomicBool>);

impl Plugin for Started {
    fn name(&self) -> &str {
        "started"
    }
    fn on_start(&self, _: &Router) -> Result<(), BoxError> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

struct Failing;

impl Plugin for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    fn on_start(&self, _: &Router) -> Result<(), BoxError> {
        Err("no config".into())
    }
}

#[tokio::test]
async fn decorators_and_plugins() {
    let ps = InProcessPubSub::new();
    let count = Arc::new(AtomicUsize::new(0));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let router = Router::with_config(RouterConfig::default().close_pubsubs(false));
    let c = count.clone();
    router.decorate_publishers(move |inner| {
        Arc::new(Counting {
            inner,
            count: c.clone(),
        })
    });
    let s = subscribed.clone();
    router.decorate_subscribers(move |inner| {
        s.fetch_add(1, Ordering::SeqCst);
        inner
    });
    router.add_plugin(Started(started.clone()));
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .handle(|msg: Message| async move { HandlerResult::Ok(vec![msg.clone(), msg]) })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(started.load(Ordering::SeqCst));
    publish_ids(&ps, "in", 0..3).await;
    take(&mut out, 6).await;
    assert_eq!(count.load(Ordering::SeqCst), 6);
    assert_eq!(subscribed.load(Ordering::SeqCst), 1);
    router.close().await.unwrap();
    run.await.unwrap().unwrap();

    let router = Router::new();
    router.add_plugin(Failing);
    let err = router.run().await.unwrap_err();
    assert!(
        matches!(err, RouterError::Plugin { ref plugin, .. } if plugin == "failing"),
        "{err}"
    );
}

#[tokio::test]
async fn handlers_can_be_added_and_stopped_while_running() {
    let ps = InProcessPubSub::new();
    let router = Router::with_config(RouterConfig::default().close_pubsubs(false));
    let run = start(&router);
    router.running().await;
    assert!(router.is_running());
    router
        .handler("late")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .handle(|msg: Message| async move { HandlerResult::Ok(msg) })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish_ids(&ps, "in", 0..2).await;
    take(&mut out, 2).await;
    router.stop_handler("late").await.unwrap();
    assert!(router.handler_names().is_empty());
    publish_ids(&ps, "in", 2..3).await;
    let nothing = timeout(Duration::from_millis(100), out.next()).await;
    assert!(nothing.is_err(), "a stopped handler handles nothing");
    assert!(matches!(
        router.stop_handler("late").await,
        Err(RouterError::UnknownHandler(_))
    ));
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn close_waits_for_in_flight_work_before_closing_publishers() {
    let ps = InProcessPubSub::new();
    // Outputs go to another instance: the router closes the input's pub/sub.
    let out_ps = InProcessPubSub::new();
    let flaky = Arc::new(Flaky {
        inner: out_ps.clone(),
        fail: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    });
    let finished = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let (f, s, fl) = (finished.clone(), started.clone(), flaky.clone());
    let router = Router::new();
    router
        .handler("slow")
        .subscribe("in", ps.clone())
        .publish_to("out", flaky.clone())
        .handle(move |msg: Message| {
            let (f, s, fl) = (f.clone(), s.clone(), fl.clone());
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(
                    !fl.closed.load(Ordering::SeqCst),
                    "publisher closed under a handler"
                );
                f.store(true, Ordering::SeqCst);
                HandlerResult::Ok(msg)
            }
        })
        .unwrap();
    let mut out = out_ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "in", 0..1).await;
    started.notified().await;
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert!(flaky.closed.load(Ordering::SeqCst));
    assert_eq!(
        take(&mut out, 1).await[0].id(),
        "0",
        "its output was published"
    );
}

#[tokio::test]
async fn close_timeout_is_reported_and_the_message_comes_back() {
    let ps = InProcessPubSub::new().with_group("g");
    let router = Router::with_config(
        RouterConfig::default()
            .close_timeout(Duration::from_millis(100))
            .close_pubsubs(false),
    );
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    router
        .handler("stuck")
        .subscribe("in", ps.clone())
        .handle(move |_: Message| {
            let s = s.clone();
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_ids(&ps, "in", 0..1).await;
    started.notified().await;
    // `close` says so as well as `run`.
    let closed = router.close().await.unwrap_err();
    assert!(
        matches!(closed, RouterError::CloseTimeout { .. }),
        "{closed}"
    );
    let err = run.await.unwrap().unwrap_err();
    assert!(
        matches!(err, RouterError::CloseTimeout { ref handlers, .. } if handlers == &["stuck"]),
        "{err}"
    );
    // The abandoned delivery was nacked: the next member of the group gets it.
    let mut again = ps.subscribe("in").await.unwrap();
    assert_eq!(take(&mut again, 1).await[0].id(), "0");
}

#[tokio::test]
async fn run_twice_and_add_after_close_are_errors() {
    let router = Router::new();
    let run = start(&router);
    router.running().await;
    assert!(matches!(
        router.run().await,
        Err(RouterError::AlreadyRunning)
    ));
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    let err = router
        .handler("h")
        .subscribe("t", InProcessPubSub::new())
        .handle(|_: Message| async { HandlerResult::Ok(()) })
        .unwrap_err();
    assert!(matches!(err, RouterError::Closed));
    assert!(matches!(router.run().await, Err(RouterError::Closed)));
}
