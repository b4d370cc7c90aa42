//! Throughput and memory of the in-process pub/sub and the router, beside a bare bounded tokio
//! channel doing the same hand-off in the same run.
//!
//! `cargo bench -p tidemill --bench throughput` prints one table. Options through the
//! environment: `TIDEMILL_BENCH_MESSAGES` (default 1,000,000), `TIDEMILL_BENCH_BATCH` (messages
//! per publish call, default 1,000).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tidemill::in_process::InProcessConfig;
use tidemill::router::RouterConfig;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router, Subscriber};
use tokio::sync::Notify;

mod support;
use support::{env, peak_rss_kib, rss_kib};

/// Resets the peak so each measurement starts from the current use.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn messages(n: usize, payload: &Bytes) -> impl Iterator<Item = Message> + '_ {
    (0..n).map(move |_| Message::new(payload.clone()))
}

/// A producer task sends `n` messages through a bounded tokio channel to a consumer task.
async fn raw_channel(n: usize, payload: Bytes) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1024);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut got = 0;
        while let Some(m) = rx.recv().await {
            std::hint::black_box(&m);
            got += 1;
            if got == n {
                break;
            }
        }
    });
    for m in messages(n, &payload) {
        tx.send(m).await.unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

/// Publish through the in-process pub/sub to one subscription, acked by a bare consumer.
async fn publish_and_ack(n: usize, batch: usize, payload: Bytes) -> Duration {
    let ps = InProcessPubSub::new();
    let mut sub = ps.subscribe("bench").await.unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            sub.next().await.unwrap().unwrap().ack();
        }
    });
    publish_all(&ps, n, batch, &payload).await;
    consumer.await.unwrap();
    start.elapsed()
}

async fn publish_all(ps: &InProcessPubSub, n: usize, batch: usize, payload: &Bytes) {
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        ps.publish("bench", messages(k, payload).collect())
            .await
            .unwrap();
        left -= k;
    }
}

/// A publisher task and a router with one no-op consumer handler running together; the clock
/// stops when the handler has seen all `n` (each acked right after).
async fn routed(
    n: usize,
    batch: usize,
    payload: Bytes,
    concurrency: usize,
    work: Duration,
) -> (Duration, u64) {
    let ps = InProcessPubSub::with_config(
        InProcessConfig::default()
            .max_in_flight(concurrency)
            .buffer_size(1024),
    );
    let router = Router::with_config(RouterConfig::default());
    let seen = Arc::new(AtomicUsize::new(0));
    let all_seen = Arc::new(Notify::new());
    let (s, done) = (seen.clone(), all_seen.clone());
    router
        .handler("noop")
        .subscribe("bench", ps.clone())
        .concurrency(concurrency)
        .handle(move |msg: Message| {
            std::hint::black_box(&msg);
            if !work.is_zero() {
                // A handler slower than the publisher, without sleeping (which would measure
                // the timer instead).
                let until = Instant::now() + work;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            if s.fetch_add(1, Ordering::Relaxed) + 1 == n {
                done.notify_one();
            }
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    // The handler subscribes as the router starts.
    tokio::time::sleep(Duration::from_millis(10)).await;
    reset_peak_rss();
    let base = rss_kib();
    let start = Instant::now();
    let publisher = tokio::spawn({
        let ps = ps.clone();
        async move { publish_all(&ps, n, batch, &payload).await }
    });
    all_seen.notified().await;
    let elapsed = start.elapsed();
    publisher.await.unwrap();
    let peak = peak_rss_kib().saturating_sub(base);
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    (elapsed, peak)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n = env("TIDEMILL_BENCH_MESSAGES", 1_000_000);
    let batch = env("TIDEMILL_BENCH_BATCH", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("{n} messages, {batch} per publish call, 2 worker threads");
    println!(
        "{:<44} {:>7} {:>14} {:>10}",
        "workload", "payload", "msgs/s", "vs raw"
    );
    rt.block_on(async {
        for size in [16usize, 64, 256] {
            let payload = Bytes::from(vec![7u8; size]);
            // Warm up allocator and scheduler.
            raw_channel(n / 10, payload.clone()).await;
            let raw = rate(n, raw_channel(n, payload.clone()).await);
            println!("{:<44} {:>6}B {:>14.0} {:>10}", "bare tokio mpsc (bounded 1024)", size, raw, "1.00");
            let publish = rate(n, publish_and_ack(n, batch, payload.clone()).await);
            println!(
                "{:<44} {:>6}B {:>14.0} {:>10.2}",
                "publish -> subscription -> ack", size, publish, publish / raw
            );
            for concurrency in [1usize, 4] {
                let (d, _) = routed(n, batch, payload.clone(), concurrency, Duration::ZERO).await;
                let routed = rate(n, d);
                println!(
                    "{:<44} {:>6}B {:>14.0} {:>10.2}",
                    format!("publish -> router (concurrency {concurrency}) -> ack"),
                    size,
                    routed,
                    routed / raw
                );
            }
        }
        let payload = Bytes::from(vec![7u8; 64]);
        let (d, peak) = routed(n, batch, payload, 1, Duration::from_micros(1)).await;
        println!(
            "slow handler (1 us of work a message): {:.0} msgs/s, peak RSS growth {:.1} MiB over {n} messages",
            rate(n, d),
            peak as f64 / 1024.0
        );
    });
}
