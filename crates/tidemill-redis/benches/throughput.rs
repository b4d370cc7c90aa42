//! Throughput of tidemill's Redis adapter against the raw `redis` client doing the same work, in
//! the same run: messages/s and the ratio tidemill / raw.
//!
//! - publish, one message per call: `publish(topic, vec![msg])` vs one `XADD` per call;
//! - publish, batches of 16: `publish(topic, 16 messages)` vs a pipeline of 16 `XADD`s;
//! - consume: a consumer group reading and acking a pre-filled stream, through a subscription vs
//!   `XREADGROUP COUNT 128` + one `XACK` per batch.
//!
//! Each case runs with 16-, 64- and 256-byte payloads, at concurrency 1 and N (publishing tasks,
//! or subscribers of the group), against the server at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`). `BENCH_MESSAGES` sets the messages per case (default 20,000);
//! `BENCH_ONLY=publish` or `BENCH_ONLY=consume` runs only those cases.
//!
//! ```text
//! cargo bench -p tidemill-redis --bench throughput
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};

const PAYLOADS: [usize; 3] = [16, 64, 256];
/// Each case runs in this many slices, alternating tidemill and raw, so that load from other
/// processes hits both alike.
const ROUNDS: usize = 10;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn messages_per_case() -> usize {
    std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn key() -> String {
    format!("bench_{}", uuid::Uuid::new_v4().simple())
}

async fn raw_conn() -> MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn drop_key(key: &str) {
    let _: Value = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut raw_conn().await)
        .await
        .unwrap();
}

fn xadd(key: &str, id: &str, payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("*")
        .arg("message_id")
        .arg(id)
        .arg("payload")
        .arg(payload);
    cmd
}

/// Splits `total` into `tasks` shares.
fn shares(total: usize, tasks: usize) -> Vec<usize> {
    (0..tasks)
        .map(|i| total / tasks + usize::from(i < total % tasks))
        .collect()
}

async fn tidemill_publish(size: usize, total: usize, tasks: usize, batch: usize) -> f64 {
    let topic = key();
    let publisher = RedisPublisher::connect(RedisConfig::from_url(&url()).unwrap())
        .await
        .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let handles: Vec<_> = shares(total, tasks)
        .into_iter()
        .map(|n| {
            let (publisher, topic, payload) = (publisher.clone(), topic.clone(), payload.clone());
            tokio::spawn(async move {
                let mut left = n;
                while left > 0 {
                    let take = batch.min(left);
                    let msgs = (0..take).map(|_| Message::new(payload.clone())).collect();
                    publisher.publish(&topic, msgs).await.unwrap();
                    left -= take;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop_key(&topic).await;
    rate
}

async fn raw_publish(size: usize, total: usize, tasks: usize, batch: usize) -> f64 {
    let topic = key();
    let conn = raw_conn().await;
    let payload = vec![b'x'; size];
    let start = Instant::now();
    let handles: Vec<_> = shares(total, tasks)
        .into_iter()
        .map(|n| {
            let (mut conn, topic, payload) = (conn.clone(), topic.clone(), payload.clone());
            tokio::spawn(async move {
                let mut left = n;
                while left > 0 {
                    let take = batch.min(left);
                    // The same work as the adapter: a fresh UUID per message, then XADD.
                    if take == 1 {
                        let id = tidemill::new_uuid();
                        let _: Value = xadd(&topic, &id, &payload)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    } else {
                        let mut pipe = redis::pipe();
                        for _ in 0..take {
                            let id = tidemill::new_uuid();
                            pipe.add_command(xadd(&topic, &id, &payload));
                        }
                        let _: Vec<Value> = pipe.query_async(&mut conn).await.unwrap();
                    }
                    left -= take;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop_key(&topic).await;
    rate
}

/// A stream of `total` entries and a group reading it from the start.
async fn prefilled(size: usize, total: usize) -> (String, String) {
    let (topic, group) = (key(), key());
    let mut conn = raw_conn().await;
    let payload = vec![b'x'; size];
    for chunk in shares(total, total.div_ceil(1000)) {
        let mut pipe = redis::pipe();
        for _ in 0..chunk {
            pipe.add_command(xadd(&topic, &tidemill::new_uuid(), &payload));
        }
        let _: Vec<Value> = pipe.query_async(&mut conn).await.unwrap();
    }
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&topic)
        .arg(&group)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    (topic, group)
}

async fn tidemill_consume(size: usize, total: usize, members: usize) -> f64 {
    let (topic, group) = prefilled(size, total).await;
    let config = RedisConfig::from_url(&url())
        .unwrap()
        .group(group)
        .block_time(Duration::from_millis(50));
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut subscribers = Vec::new();
    let mut subscriptions = Vec::new();
    for _ in 0..members {
        let subscriber = RedisSubscriber::connect(config.clone()).await.unwrap();
        subscriptions.push(subscriber.subscribe(&topic).await.unwrap());
        subscribers.push(subscriber);
    }
    let start = Instant::now();
    let handles: Vec<_> = subscriptions
        .into_iter()
        .map(|mut sub| {
            let (counted, done) = (counted.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        d = sub.next() => {
                            let Some(Ok(d)) = d else { return };
                            d.ack();
                            if counted.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == total {
                                done.notify_waiters();
                                return;
                            }
                        }
                        _ = done.notified() => return,
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    // Closing waits until every ack reached the server: part of the work.
    for s in &subscribers {
        s.close().await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    drop_key(&topic).await;
    rate
}

async fn raw_consume(size: usize, total: usize, members: usize) -> f64 {
    let (topic, group) = prefilled(size, total).await;
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..members {
        conns.push(raw_conn().await);
    }
    let start = Instant::now();
    // The time the last message was acked: readers still blocked in XREADGROUP then are not
    // part of the work.
    let finished = Arc::new(std::sync::OnceLock::new());
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (topic, group, counted) = (topic.clone(), group.clone(), counted.clone());
            let finished = finished.clone();
            tokio::spawn(async move {
                let consumer = format!("raw-{i}");
                while counted.load(std::sync::atomic::Ordering::Acquire) < total {
                    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(&group)
                        .arg(&consumer)
                        .arg("COUNT")
                        .arg(128)
                        .arg("BLOCK")
                        .arg(50)
                        .arg("STREAMS")
                        .arg(&topic)
                        .arg(">")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let ids: Vec<String> = reply
                        .keys
                        .into_iter()
                        .flat_map(|k| k.ids)
                        .map(|e| {
                            // Read what a handler would: the payload and the message id.
                            std::hint::black_box((e.map.get("payload"), e.map.get("message_id")));
                            e.id
                        })
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let _: Value = redis::cmd("XACK")
                        .arg(&topic)
                        .arg(&group)
                        .arg(&ids)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let before = counted.fetch_add(ids.len(), std::sync::atomic::Ordering::AcqRel);
                    if before + ids.len() >= total {
                        let _ = finished.set(start.elapsed());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let rate = total as f64 / finished.get().expect("all acked").as_secs_f64();
    drop_key(&topic).await;
    rate
}

#[derive(Clone, Copy)]
enum Case {
    Publish { batch: usize },
    Consume,
}

async fn measure(case: Case, size: usize, concurrency: usize, total: usize) -> (f64, f64) {
    let n = (total / ROUNDS).max(1);
    let (mut time_t, mut time_r) = (0f64, 0f64);
    for round in 0..ROUNDS {
        // Alternate which goes first as well.
        let run_t = |n| async move {
            match case {
                Case::Publish { batch } => tidemill_publish(size, n, concurrency, batch).await,
                Case::Consume => tidemill_consume(size, n, concurrency).await,
            }
        };
        let run_r = |n| async move {
            match case {
                Case::Publish { batch } => raw_publish(size, n, concurrency, batch).await,
                Case::Consume => raw_consume(size, n, concurrency).await,
            }
        };
        let (t, r) = if round % 2 == 0 {
            let t = run_t(n).await;
            (t, run_r(n).await)
        } else {
            let r = run_r(n).await;
            (run_t(n).await, r)
        };
        time_t += n as f64 / t;
        time_r += n as f64 / r;
    }
    let done = (n * ROUNDS) as f64;
    (done / time_t, done / time_r)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let total = messages_per_case();
        println!(
            "tidemill-redis vs raw redis client, {total} messages per case in {ROUNDS} alternating slices"
        );
        println!(
            "{:<22} {:>7} {:>5} {:>14} {:>14} {:>7}",
            "case", "payload", "conc", "tidemill msg/s", "raw msg/s", "ratio"
        );
        let cases = [
            ("publish 1/call", Case::Publish { batch: 1 }, 16),
            ("publish batch of 16", Case::Publish { batch: 16 }, 16),
            ("consume + ack (group)", Case::Consume, 4),
        ];
        // BENCH_ONLY=consume (or publish) runs the cases whose name starts with it.
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        for (name, case, n) in cases {
            if !name.starts_with(&only) {
                continue;
            }
            for size in PAYLOADS {
                for concurrency in [1, n] {
                    let (t, r) = measure(case, size, concurrency, total).await;
                    println!(
                        "{name:<22} {:>6}B {concurrency:>5} {t:>14.0} {r:>14.0} {:>7.2}",
                        size,
                        t / r
                    );
                }
            }
        }
    });
}
