//! The router's per-message cost on the workload users write first, beside a bare bounded
//! tokio channel doing the same work in the same run.
//!
//! Per message: a 64-byte payload freshly allocated and copied, published by a spawned task;
//! a handler that checks the payload's length and decrements a shared counter. The clock runs
//! from just before the first publish until the handler has counted message N. The channel
//! (`mpsc::channel::<Bytes>(1024)`) and the router take turns, round after round, and the table
//! gives the median of the rounds and the ratio.
//!
//! `cargo bench -p tidemill --bench router`. Environment: `TIDEMILL_BENCH_MESSAGES` (N,
//! default 1,000,000), `TIDEMILL_BENCH_ROUNDS` (default 5), `TIDEMILL_BENCH_ONLY` (`channel`,
//! `router` or `router-batch`: run only that workload, as `scripts/callgrind-router.sh` does to
//! count instructions per message), `TIDEMILL_BENCH_MEMORY` (`0` skips the queued-memory part).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemill::in_process::InProcessConfig;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, PublisherExt, Router};
use tokio::sync::Notify;

mod support;
use support::{env, rss_kib};

const PAYLOAD: usize = 64;

/// A fresh 64-byte payload, copied from a template as a message read off a socket would be.
fn payload(template: &[u8; PAYLOAD]) -> Bytes {
    Bytes::copy_from_slice(template)
}

/// Counts messages down and wakes the timer at zero.
struct Countdown {
    left: AtomicI64,
    done: Notify,
}

impl Countdown {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicI64::new(n as i64),
            done: Notify::new(),
        })
    }

    fn count(&self, payload: &[u8]) {
        assert_eq!(payload.len(), PAYLOAD);
        if self.left.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.done.notify_one();
        }
    }
}

/// The baseline: a producer task and a consumer task on a bounded channel of `Bytes`.
async fn channel(n: usize) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let countdown = Countdown::new(n);
    let consumer = tokio::spawn({
        let countdown = countdown.clone();
        async move {
            while let Some(bytes) = rx.recv().await {
                countdown.count(&bytes);
            }
        }
    });
    let template = [7u8; PAYLOAD];
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            tx.send(payload(&template)).await.unwrap();
        }
    });
    countdown.done.notified().await;
    let elapsed = start.elapsed();
    producer.await.unwrap();
    consumer.await.unwrap();
    elapsed
}

/// The in-process pub/sub and a router with one handler, `batch` messages per publish call.
async fn router(n: usize, batch: usize) -> Duration {
    let pubsub = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(1024));
    let router = Router::new();
    let countdown = Countdown::new(n);
    let c = countdown.clone();
    router
        .handler("count")
        .subscribe("bench", pubsub.clone())
        .handle(move |msg: Message| {
            c.count(msg.payload());
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    let template = [7u8; PAYLOAD];
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        if batch == 1 {
            for _ in 0..n {
                pubsub
                    .publish_one("bench", Message::new(payload(&template)))
                    .await
                    .unwrap();
            }
        } else {
            let mut left = n;
            while left > 0 {
                let k = left.min(batch);
                let messages = (0..k).map(|_| Message::new(payload(&template))).collect();
                pubsub.publish("bench", messages).await.unwrap();
                left -= k;
            }
        }
    });
    countdown.done.notified().await;
    let elapsed = start.elapsed();
    producer.await.unwrap();
    running.close().await.unwrap();
    elapsed
}

/// Resident memory growth with `n` messages queued and nobody consuming, in MiB: the channel
/// of `Bytes` (sized to hold them all) and a subscription of the in-process pub/sub.
async fn queued_memory(n: usize) -> (f64, f64) {
    let template = [7u8; PAYLOAD];
    let base = rss_kib();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(n);
    for _ in 0..n {
        tx.send(payload(&template)).await.unwrap();
    }
    let channel = rss_kib().saturating_sub(base);
    drop((tx, rx));

    let base = rss_kib();
    let pubsub = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(n));
    let subscription = tidemill::Subscriber::subscribe(&pubsub, "queued")
        .await
        .unwrap();
    for _ in 0..n {
        pubsub
            .publish_one("queued", Message::new(payload(&template)))
            .await
            .unwrap();
    }
    let queued = rss_kib().saturating_sub(base);
    drop(subscription);
    (channel as f64 / 1024.0, queued as f64 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env("TIDEMILL_BENCH_MESSAGES", 1_000_000);
    let rounds = env("TIDEMILL_BENCH_ROUNDS", 5).max(1);
    let only = std::env::var("TIDEMILL_BENCH_ONLY").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Some(only) = only {
            match only.as_str() {
                "channel" => channel(n).await,
                "router" => router(n, 1).await,
                "router-batch" => router(n, 1000).await,
                other => panic!("TIDEMILL_BENCH_ONLY={other}: expected channel, router or router-batch"),
            };
            return;
        }
        println!("{n} messages of {PAYLOAD} B, 2 worker threads, median of {rounds} interleaved rounds");
        // Warm up allocator and scheduler.
        channel(n / 10).await;
        router(n / 10, 1).await;
        let (mut raw, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            raw.push(n as f64 / channel(n).await.as_secs_f64());
            one.push(n as f64 / router(n, 1).await.as_secs_f64());
            raw.push(n as f64 / channel(n).await.as_secs_f64());
            many.push(n as f64 / router(n, 1000).await.as_secs_f64());
        }
        let range = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            format!("{:.2}M-{:.2}M", lo / 1e6, hi / 1e6)
        };
        let base = median(raw.clone());
        println!("{:<40} {:>12} {:>16} {:>8}", "workload", "msgs/s", "range", "ratio");
        for (name, v) in [
            ("bare mpsc::channel::<Bytes>(1024)", &raw),
            ("router, 1 message per publish", &one),
            ("router, 1,000 messages per publish", &many),
        ] {
            let m = median(v.clone());
            println!("{name:<40} {m:>12.0} {:>16} {:>8.2}", range(v), m / base);
        }
        if env("TIDEMILL_BENCH_MEMORY", 1) != 0 {
            let (channel, queued) = queued_memory(n).await;
            println!(
                "memory with {n} queued: channel of Bytes {channel:.0} MiB, in-process subscription {queued:.0} MiB ({:.2}x)",
                queued / channel.max(1.0)
            );
        }
    });
}
