//! Middleware through the router on the in-process pub/sub: retry, timeout, poison queue,
//! recoverer, correlation id, throttle, circuit breaker, deduplicator, delay on error, instant
//! ack, ignore errors, duplicator and chaos. Timing is checked on tokio's paused clock.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use tidemill::middleware::*;
use tidemill::router::{Disposition, Permanent};
use tidemill::{
    HandlerError, HandlerResult, InProcessPubSub, Message, Publisher, Router, Subscriber,
};
use tokio::time::Instant;

type Calls = Arc<Mutex<Vec<(String, Instant)>>>;

fn record(calls: &Calls, msg: &Message) -> usize {
    let mut c = calls.lock();
    c.push((msg.id().to_owned(), Instant::now()));
    c.iter().filter(|(id, _)| id == msg.id()).count()
}

/// Times of the calls for `id`, relative to the first call of all.
fn offsets(calls: &Calls, id: &str) -> Vec<Duration> {
    let c = calls.lock();
    let t0 = c[0].1;
    c.iter()
        .filter(|(i, _)| i == id)
        .map(|(_, t)| *t - t0)
        .collect()
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

fn io_error(text: &str) -> HandlerError {
    HandlerError::new(std::io::Error::other(text.to_owned()))
}

async fn stop(
    router: &Router,
    run: tokio::task::JoinHandle<Result<(), tidemill::router::RouterError>>,
) {
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_waits_exactly_the_configured_delays() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let hooks: Arc<Mutex<Vec<(u32, Duration)>>> = Arc::default();
    let (c, h) = (calls.clone(), hooks.clone());
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(
            RetryLayer::new()
                .max_retries(4)
                .initial_interval(Duration::from_millis(100))
                .multiplier(2.0)
                .max_interval(Duration::from_millis(300))
                .on_retry(move |_, _, n, delay| h.lock().push((n, delay))),
        )
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                if n <= 4 {
                    return Err(io_error("not yet"));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", [1]).await;
    until(|| sub.log.len() == 1).await;
    assert_eq!(sub.log.acks(), 1, "succeeded on the last retry");
    assert_eq!(offsets(&calls, "1"), ms(&[0, 100, 300, 600, 900]));
    assert_eq!(
        *hooks.lock(),
        vec![
            (1, Duration::from_millis(100)),
            (2, Duration::from_millis(200)),
            (3, Duration::from_millis(300)),
            (4, Duration::from_millis(300)),
        ]
    );
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_max_elapsed_and_skips_permanent_and_unmatched_errors() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(
            RetryLayer::new()
                .max_retries(10)
                .initial_interval(Duration::from_millis(100))
                .max_elapsed(Duration::from_millis(350))
                .retry_if(|err| !err.to_string().contains("fatal")),
        )
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                match (msg.id(), n) {
                    ("elapsed", 1..=3) => Err(io_error("slow")),
                    ("permanent", 1) => Err(Permanent::new("never"))?,
                    ("unmatched", 1) => Err(io_error("fatal")),
                    _ => HandlerResult::Ok(()),
                }
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", []).await;
    ps.publish("in", vec![Message::with_id("elapsed", "")])
        .await
        .unwrap();
    until(|| sub.log.acks() == 1).await;
    // 0, +100, +200 (elapsed 300); the next wait of 400 would pass 350: nacked, back after 100.
    assert_eq!(offsets(&calls, "elapsed"), ms(&[0, 100, 300, 400]));

    ps.publish("in", vec![Message::with_id("permanent", "")])
        .await
        .unwrap();
    until(|| sub.log.acks() == 2).await;
    assert_eq!(
        offsets(&calls, "permanent").len(),
        1,
        "a permanent error is not retried: the message goes to the dead-letter topic"
    );

    ps.publish("in", vec![Message::with_id("unmatched", "")])
        .await
        .unwrap();
    until(|| sub.log.acks() == 3).await;
    assert_eq!(
        offsets(&calls, "unmatched").len(),
        2,
        "not retried in place, only redelivered after the nack"
    );
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn timeout_inside_retry_limits_each_attempt() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .layer(RetryLayer::new().initial_interval(Duration::from_millis(100)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)));
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", [1]).await;
    until(|| sub.log.len() == 1).await;
    assert_eq!(sub.log.acks(), 1);
    assert_eq!(offsets(&calls, "1"), ms(&[0, 1100]));
    stop(&router, run).await;
}

/// A router whose handler "h" on "in" fails for good on message "bad", with the given layers.
fn failing_router(
    ps: &InProcessPubSub,
    sub: &RecordingSubscriber,
    calls: &Calls,
    layers: impl FnOnce(tidemill::router::HandlerBuilder) -> tidemill::router::HandlerBuilder,
) -> Router {
    let router = Router::new();
    let c = calls.clone();
    let builder = router
        .handler("h")
        .subscribe("in", sub.clone())
        .publish_to("out", ps.clone());
    layers(builder)
        .handle(move |msg: Message| {
            record(&c, &msg);
            async move {
                if msg.id() == "bad" {
                    return Err(io_error("the database is down"));
                }
                HandlerResult::Ok(msg)
            }
        })
        .unwrap();
    router
}

#[tokio::test(start_paused = true)]
async fn a_failing_message_ends_in_the_poison_queue_with_its_metadata_and_nothing_is_lost() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let router = failing_router(&ps, &sub, &calls, |b| {
        b.layer(PoisonQueueLayer::new(ps.clone(), "poison")).layer(
            RetryLayer::new()
                .max_retries(2)
                .initial_interval(Duration::from_millis(10)),
        )
    });
    let mut poison = ps.subscribe("poison").await.unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    let msgs = ["a", "b", "bad", "c", "d"]
        .map(|id| Message::with_id(id, format!("payload {id}")).with_metadata("k", id));
    ps.publish("in", msgs.to_vec()).await.unwrap();

    assert_eq!(ids(&take(&mut out, 4).await), ["a", "b", "c", "d"]);
    let poisoned = take(&mut poison, 1).await.remove(0);
    assert_eq!(poisoned.id(), "bad");
    assert_eq!(poisoned.payload().as_ref(), b"payload bad");
    let md = poisoned.metadata();
    assert_eq!(md.get("k"), Some("bad"), "the original metadata is kept");
    assert!(md
        .get(POISON_REASON_KEY)
        .unwrap()
        .contains("the database is down"));
    assert_eq!(md.get(POISON_TOPIC_KEY), Some("in"));
    assert_eq!(md.get(POISON_HANDLER_KEY), Some("h"));
    assert!(md
        .get(POISON_SUBSCRIBER_KEY)
        .unwrap()
        .contains("RecordingSubscriber"));
    until(|| sub.log.len() == 5).await;
    assert_eq!(
        (sub.log.acks(), sub.log.nacks()),
        (5, 0),
        "every message acked once"
    );
    nothing_within(&mut poison, Duration::from_secs(1)).await;
    nothing_within(&mut out, Duration::from_secs(1)).await;
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn retry_inside_the_poison_queue_retries_first_then_poisons() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    // Poison queue added first: it is outside the retry.
    let router = failing_router(&ps, &sub, &calls, |b| b);
    router
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .layer(
            RetryLayer::new()
                .max_retries(3)
                .initial_interval(Duration::from_millis(100)),
        );
    let mut poison = ps.subscribe("poison").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish("in", vec![Message::with_id("bad", "")])
        .await
        .unwrap();
    let poisoned = take(&mut poison, 1).await;
    assert_eq!(ids(&poisoned), ["bad"]);
    assert_eq!(
        offsets(&calls, "bad"),
        ms(&[0, 100, 300, 700]),
        "all retries, then poison"
    );
    until(|| sub.log.acks() == 1).await;
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn retry_outside_the_poison_queue_never_retries_because_the_poison_queue_acks() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let r = retries.clone();
    // Retry added first: it is outside the poison queue, which turns the failure into success.
    let router = failing_router(&ps, &sub, &calls, |b| {
        b.layer(
            RetryLayer::new()
                .max_retries(3)
                .on_retry(move |_, _, _, _| {
                    r.fetch_add(1, Ordering::SeqCst);
                }),
        )
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
    });
    let mut poison = ps.subscribe("poison").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish("in", vec![Message::with_id("bad", "")])
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut poison, 1).await), ["bad"]);
    until(|| sub.log.acks() == 1).await;
    assert_eq!(
        offsets(&calls, "bad"),
        ms(&[0]),
        "poisoned at the first failure"
    );
    assert_eq!(retries.load(Ordering::SeqCst), 0);
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn the_poison_filter_decides_and_reject_and_drop_are_honoured() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(
            PoisonQueueLayer::new(ps.clone(), "poison")
                .filter(|err| err.downcast_ref::<std::io::Error>().is_some()),
        )
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                match (msg.id(), n) {
                    ("io", _) => Err(io_error("disk")),
                    ("fmt", 1) => Err(HandlerError::new(std::fmt::Error)),
                    ("reject", _) => Err(HandlerError::reject("malformed")),
                    ("drop", _) => Err(HandlerError::drop_message("not ours")),
                    _ => HandlerResult::Ok(()),
                }
            }
        })
        .unwrap();
    let mut poison = ps.subscribe("poison").await.unwrap();
    let run = start(&router);
    router.running().await;
    let msgs = ["io", "fmt", "reject", "drop"].map(|id| Message::with_id(id, ""));
    ps.publish("in", msgs.to_vec()).await.unwrap();
    let poisoned = take(&mut poison, 2).await;
    assert_eq!(ids(&poisoned), ["io", "reject"]);
    until(|| sub.log.acks() == 4).await;
    assert_eq!(
        sub.log.nacks(),
        1,
        "the unfiltered error was nacked and retried"
    );
    assert_eq!(offsets(&calls, "fmt").len(), 2);
    nothing_within(&mut poison, Duration::from_secs(1)).await;
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn by_default_the_poison_queue_leaves_errors_that_ask_to_come_back_later() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                if n == 1 {
                    return Err(HandlerError::retry_after(Duration::from_secs(1), "busy"));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let mut poison = ps.subscribe("poison").await.unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", [1]).await;
    until(|| sub.log.acks() == 1).await;
    assert_eq!(offsets(&calls, "1"), ms(&[0, 1000]));
    nothing_within(&mut poison, Duration::from_secs(1)).await;
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_poison_publish_nacks_the_message() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let flaky = FlakyPublisher::new(ps.clone(), 1);
    let router = failing_router(&ps, &sub, &calls, |b| {
        b.layer(PoisonQueueLayer::new(flaky.clone(), "poison"))
    });
    let mut poison = ps.subscribe("poison").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish("in", vec![Message::with_id("bad", "")])
        .await
        .unwrap();
    assert_eq!(ids(&take(&mut poison, 1).await), ["bad"]);
    until(|| sub.log.len() == 2).await;
    assert_eq!((sub.log.nacks(), sub.log.acks()), (1, 1));
    stop(&router, run).await;
}

#[tokio::test]
async fn a_panicking_handler_does_not_kill_the_router() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let panics: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let p = panics.clone();
    let router = Router::new();
    router
        .layer(PoisonQueueLayer::new(ps.clone(), "poison"))
        .layer(IgnoreErrorsLayer::new().when(move |err| {
            if let Some(panic) = err.downcast_ref::<PanicError>() {
                p.lock()
                    .push((panic.message.clone(), panic.backtrace.clone()));
            }
            false
        }))
        .layer(RecovererLayer::new());
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .publish_to("out", ps.clone())
        .handle(|msg: Message| async move {
            if msg.id() == "boom" {
                panic!("kaboom");
            }
            HandlerResult::Ok(msg)
        })
        .unwrap();
    let mut poison = ps.subscribe("poison").await.unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    let msgs = ["a", "boom", "b"].map(|id| Message::with_id(id, ""));
    ps.publish("in", msgs.to_vec()).await.unwrap();
    assert_eq!(ids(&take(&mut out, 2).await), ["a", "b"]);
    let poisoned = take(&mut poison, 1).await.remove(0);
    assert!(poisoned
        .metadata()
        .get(POISON_REASON_KEY)
        .unwrap()
        .contains("the handler panicked: kaboom"));
    let (message, backtrace) = panics.lock()[0].clone();
    assert_eq!(message, "kaboom");
    assert!(!backtrace.is_empty(), "the backtrace is captured");
    assert!(router.is_running());
    stop(&router, run).await;
}

#[tokio::test]
async fn correlation_id_reaches_outputs_and_messages_published_during_the_handling() {
    let ps = InProcessPubSub::new();
    let side = CorrelationIdPublisher::new(ps.clone());
    let router = Router::new();
    router.layer(CorrelationIdLayer::new());
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .handle(move |msg: Message| {
            let side = side.clone();
            async move {
                side.publish("side", vec![Message::with_id(msg.id().to_owned(), "")])
                    .await?;
                HandlerResult::Ok(Message::with_id(msg.id().to_owned(), ""))
            }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let mut side_sub = ps.subscribe("side").await.unwrap();
    let run = start(&router);
    router.running().await;
    let mut given = Message::with_id("given", "");
    set_correlation_id(&mut given, "c-1");
    ps.publish("in", vec![given, Message::with_id("missing", "")])
        .await
        .unwrap();
    let outs = take(&mut out, 2).await;
    let sides = take(&mut side_sub, 2).await;
    assert_eq!(correlation_id(&outs[0]), Some("c-1"));
    assert_eq!(correlation_id(&sides[0]), Some("c-1"));
    let generated = correlation_id(&outs[1]).expect("generated").to_owned();
    assert_eq!(generated.len(), 36);
    assert_eq!(correlation_id(&sides[1]), Some(generated.as_str()));
    // Outside a handling, the decorator sets nothing.
    let mut plain = ps.subscribe("plain").await.unwrap();
    CorrelationIdPublisher::new(ps.clone())
        .publish("plain", vec![Message::new("")])
        .await
        .unwrap();
    assert_eq!(correlation_id(&take(&mut plain, 1).await[0]), None);
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn throttle_spaces_messages_evenly() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(ThrottleLayer::new(2, Duration::from_secs(1)))
        .handle(move |msg: Message| {
            record(&c, &msg);
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", 0..5).await;
    until(|| sub.log.acks() == 5).await;
    let at: Vec<Duration> = {
        let c = calls.lock();
        c.iter().map(|(_, t)| *t - c[0].1).collect()
    };
    assert_eq!(at, ms(&[0, 500, 1000, 1500, 2000]));
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn throttle_lets_bursts_through() {
    let ps = InProcessPubSub::with_config(
        tidemill::in_process::InProcessConfig::default().max_in_flight(8),
    );
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .concurrency(8)
        .layer(ThrottleLayer::new(4, Duration::from_secs(1)).burst(3))
        .handle(move |msg: Message| {
            record(&c, &msg);
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", 0..5).await;
    until(|| sub.log.acks() == 5).await;
    let at: Vec<Duration> = {
        let c = calls.lock();
        c.iter().map(|(_, t)| *t - c[0].1).collect()
    };
    assert_eq!(at, ms(&[0, 0, 0, 250, 500]));
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_opens_fails_fast_and_half_opens_after_the_period() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let changes: Arc<Mutex<Vec<(CircuitState, CircuitState, Instant)>>> = Arc::default();
    let ch = changes.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(
            CircuitBreakerLayer::new()
                .consecutive_failures(3)
                .open_for(Duration::from_secs(10))
                .on_state_change(move |from, to| ch.lock().push((from, to, Instant::now()))),
        )
        .handle(move |msg: Message| {
            record(&c, &msg);
            let healthy = h.load(Ordering::SeqCst);
            async move {
                if healthy {
                    HandlerResult::Ok(())
                } else {
                    Err(io_error("the payment service is down"))
                }
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    let t0 = Instant::now();
    ps.publish("in", vec![Message::with_id("a", "")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ps.publish("in", vec![Message::with_id("b", "")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        calls.lock().len(),
        3,
        "no call reaches the handler while open"
    );
    healthy.store(true, Ordering::SeqCst);
    until(|| sub.log.acks() == 2).await;

    let at = |id| -> Vec<Duration> {
        calls
            .lock()
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, t)| *t - t0)
            .collect()
    };
    // Three failures 100 ms apart (the nack delay) open it at 200 ms; it half-opens 10 s later.
    assert_eq!(at("a"), ms(&[0, 100, 200, 10_200]));
    assert_eq!(at("b"), ms(&[10_200]));
    let changes: Vec<_> = changes
        .lock()
        .iter()
        .map(|(f, t, when)| (*f, *t, *when - t0))
        .collect();
    use CircuitState::*;
    assert_eq!(
        changes,
        vec![
            (Closed, Open, Duration::from_millis(200)),
            (Open, HalfOpen, Duration::from_millis(10_200)),
            (HalfOpen, Closed, Duration::from_millis(10_200)),
        ]
    );
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_reopens_when_the_trial_fails_and_counts_the_failure_rate() {
    use tower::{Layer, Service, ServiceExt};
    let fail = Arc::new(AtomicBool::new(true));
    let f = fail.clone();
    let svc = tidemill::router::handler_fn(move |_: Message| {
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                Err(io_error("down"))
            } else {
                HandlerResult::Ok(())
            }
        }
    });
    let mut breaker = CircuitBreakerLayer::new()
        .consecutive_failures(100)
        .failure_rate(0.5, 4)
        .open_for(Duration::from_secs(1))
        .layer(svc);
    let call = |breaker: &mut CircuitBreaker<_>| breaker.call(Message::new(""));
    breaker.ready().await.unwrap();
    fail.store(false, Ordering::SeqCst);
    call(&mut breaker).await.unwrap();
    call(&mut breaker).await.unwrap();
    fail.store(true, Ordering::SeqCst);
    assert!(call(&mut breaker).await.is_err());
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "3 calls: the window is not full"
    );
    assert!(call(&mut breaker).await.is_err());
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "2 of the last 4 failed"
    );
    let err = call(&mut breaker).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some());
    assert_eq!(
        err.disposition(),
        Disposition::RetryAfter(Duration::from_secs(1))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert!(call(&mut breaker).await.is_err(), "the trial fails");
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn deduplicator_drops_repeats_within_the_window_only() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(DeduplicatorLayer::new(
            InMemoryDeduplicationStore::new(),
            Duration::from_secs(60),
        ))
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                if msg.id() == "flaky" && n == 1 {
                    return Err(io_error("once"));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", [1, 1, 2, 1]).await;
    until(|| sub.log.acks() == 4).await;
    assert_eq!(offsets(&calls, "1").len(), 1);
    assert_eq!(offsets(&calls, "2").len(), 1);

    ps.publish("in", vec![Message::with_id("flaky", "")])
        .await
        .unwrap();
    until(|| sub.log.acks() == 5).await;
    assert_eq!(
        offsets(&calls, "flaky").len(),
        2,
        "a failed message is not a duplicate"
    );

    tokio::time::sleep(Duration::from_secs(61)).await;
    publish_ids(&ps, "in", [1]).await;
    until(|| sub.log.acks() == 6).await;
    assert_eq!(offsets(&calls, "1").len(), 2, "the window passed");
    stop(&router, run).await;
}

#[tokio::test]
async fn deduplicator_by_payload_hash_and_metadata() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let store = InMemoryDeduplicationStore::new();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(
            DeduplicatorLayer::new(store.clone(), Duration::from_secs(60))
                .key(DedupKey::PayloadHash)
                .prefix("by-payload:"),
        )
        .layer(
            DeduplicatorLayer::new(store.clone(), Duration::from_secs(60))
                .key(DedupKey::Metadata("idempotency_key".into())),
        )
        .handle(move |msg: Message| {
            record(&c, &msg);
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    let msgs = vec![
        Message::with_id("1", "same"),
        Message::with_id("2", "same"),
        Message::with_id("3", "x").with_metadata("idempotency_key", "k"),
        Message::with_id("4", "y").with_metadata("idempotency_key", "k"),
        Message::with_id("5", "z"),
    ];
    ps.publish("in", msgs).await.unwrap();
    until(|| sub.log.acks() == 5).await;
    let handled: Vec<String> = calls.lock().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(handled, ["1", "3", "5"]);
    assert_eq!(store.len(), 5, "four payloads and one idempotency key");
    stop(&router, run).await;
}

#[tokio::test(start_paused = true)]
async fn delay_on_error_brings_a_message_back_later_without_blocking_others() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(DelayOnErrorLayer::new(Duration::from_secs(1)))
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                if msg.id() == "a" && n <= 3 {
                    return Err(io_error("later"));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish(
        "in",
        vec![Message::with_id("a", ""), Message::with_id("b", "")],
    )
    .await
    .unwrap();
    until(|| sub.log.acks() == 2).await;
    assert_eq!(offsets(&calls, "a"), ms(&[0, 1000, 3000, 7000]));
    assert_eq!(offsets(&calls, "b"), ms(&[0]), "b did not wait for a");
    let order: Vec<String> = calls.lock().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(order, ["a", "b", "a", "a", "a"]);
    let delays: Vec<_> = sub
        .log
        .all()
        .into_iter()
        .filter_map(|(_, s)| match s {
            tidemill::Settlement::Nack { delay } => delay,
            _ => None,
        })
        .collect();
    assert_eq!(delays, ms(&[1000, 2000, 4000]));
    stop(&router, run).await;
}

#[tokio::test]
async fn instant_ack_acks_before_the_handler_finishes() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .publish_to("out", ps.clone())
        .layer(InstantAckLayer::new())
        .handle(move |msg: Message| {
            let g = g.clone();
            async move {
                g.notified().await;
                if msg.id() == "fail" {
                    return Err(io_error("too late to nack"));
                }
                HandlerResult::Ok(msg)
            }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish(
        "in",
        vec![Message::with_id("ok", ""), Message::with_id("fail", "")],
    )
    .await
    .unwrap();
    until(|| sub.log.acks() == 1).await;
    gate.notify_one();
    assert_eq!(
        ids(&take(&mut out, 1).await),
        ["ok"],
        "outputs are still published"
    );
    until(|| sub.log.acks() == 2).await;
    gate.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((sub.log.acks(), sub.log.nacks()), (2, 0));
    stop(&router, run).await;
}

#[tokio::test]
async fn ignored_errors_count_as_success() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", sub.clone())
        .layer(IgnoreErrorsLayer::new().of_type::<std::num::ParseIntError>())
        .handle(move |msg: Message| {
            let n = record(&c, &msg);
            async move {
                match (msg.id(), n) {
                    ("parse", _) => {
                        "x".parse::<u32>()?;
                    }
                    ("io", 1) => return Err(io_error("not ignored")),
                    _ => {}
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router);
    router.running().await;
    ps.publish(
        "in",
        vec![Message::with_id("parse", ""), Message::with_id("io", "")],
    )
    .await
    .unwrap();
    until(|| sub.log.acks() == 2).await;
    assert_eq!(sub.log.nacks(), 1);
    assert_eq!(offsets(&calls, "parse").len(), 1);
    assert_eq!(offsets(&calls, "io").len(), 2);
    stop(&router, run).await;
}

#[tokio::test]
async fn duplicator_handles_every_message_twice() {
    let ps = InProcessPubSub::new();
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new();
    router
        .handler("h")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .layer(DuplicatorLayer::new())
        .handle(move |msg: Message| {
            record(&c, &msg);
            async move { HandlerResult::Ok(Message::with_id(msg.id().to_owned(), "")) }
        })
        .unwrap();
    let mut out = ps.subscribe("out").await.unwrap();
    let run = start(&router);
    router.running().await;
    publish_ids(&ps, "in", [1]).await;
    assert_eq!(ids(&take(&mut out, 2).await), ["1", "1"]);
    assert_eq!(offsets(&calls, "1").len(), 2);
    stop(&router, run).await;
}

#[tokio::test]
async fn random_failures_and_panics_for_chaos_testing() {
    let ps = InProcessPubSub::new();
    let sub = RecordingSubscriber::new(ps.clone());
    let calls = Calls::default();
    let router = Router::new();
    for (name, layer_fail, layer_panic) in
        [("never", 0.0, 0.0), ("fail", 1.0, 0.0), ("panic", 0.0, 1.0)]
    {
        let c = calls.clone();
        router
            .handler(name)
            .subscribe(name, sub.clone())
            .layer(
                IgnoreErrorsLayer::new()
                    .of_type::<RandomFailure>()
                    .of_type::<PanicError>(),
            )
            .layer(RecovererLayer::new())
            .layer(RandomPanicLayer::new(layer_panic))
            .layer(RandomFailLayer::new(layer_fail))
            .handle(move |msg: Message| {
                record(&c, &msg);
                async { HandlerResult::Ok(()) }
            })
            .unwrap();
    }
    let run = start(&router);
    router.running().await;
    for topic in ["never", "fail", "panic"] {
        ps.publish(topic, vec![Message::with_id(topic, "")])
            .await
            .unwrap();
    }
    until(|| sub.log.acks() == 3).await;
    let handled: Vec<String> = calls.lock().iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(handled, ["never"]);
    assert!(router.is_running());
    stop(&router, run).await;
}
