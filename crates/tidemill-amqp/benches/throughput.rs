//! Publish and consume throughput through tidemill and through raw lapin doing the same work,
//! in the same run, against the local RabbitMQ: 16/64/256-byte payloads, concurrency 1 and 8,
//! publishing with and without publisher confirms. Prints messages/s and tidemill's share.
//!
//! `cargo bench -p tidemill-amqp --bench throughput` (`TIDEMILL_BENCH_MESSAGES` sets the
//! message count per case, default 20,000).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tidemill::{Message, Publisher, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber, Topology};

/// A message as lapin publishes it: the id and the payload.
type RawMessage = (String, Vec<u8>);

const BATCH: usize = 50;
const ROUNDS: usize = 3;
const CONCURRENCY: usize = 8;
const PREFETCH: u16 = 100;

fn url() -> String {
    std::env::var("TIDEMILL_AMQP_URL").unwrap_or_else(|_| tidemill_amqp::DEFAULT_URL.to_owned())
}

fn messages() -> usize {
    std::env::var("TIDEMILL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn config(confirms: bool) -> AmqpConfig {
    // Transient queues and messages: what is measured is the client, not the broker's disk.
    AmqpConfig::new(url())
        .topology(Topology::work_queue().durable(false))
        .confirms(confirms)
        .channel_pool_size(CONCURRENCY)
        .max_in_flight(PREFETCH)
}

async fn raw_connection() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("connecting")
}

async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            // As tidemill declares a non-durable work queue.
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declaring the queue");
}

async fn delete(queue: &str) {
    let conn = raw_connection().await;
    let channel = conn.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bench".into()).await;
}

fn fresh_queue() -> String {
    format!("bench_{}", uuid::Uuid::new_v4().simple())
}

/// Splits `n` messages into `tasks` lists of batches.
fn shares(n: usize, tasks: usize) -> Vec<usize> {
    (0..tasks)
        .map(|t| n / tasks + usize::from(t < n % tasks))
        .collect()
}

async fn raw_publish(size: usize, tasks: usize, confirms: bool, n: usize) -> f64 {
    let queue = fresh_queue();
    let conn = raw_connection().await;
    let mut channels = Vec::new();
    for _ in 0..tasks {
        let channel = conn.create_channel().await.unwrap();
        if confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
        }
        channels.push(channel);
    }
    declare(&channels[0], &queue).await;
    let work: Vec<Vec<Vec<RawMessage>>> = shares(n, tasks)
        .into_iter()
        .map(|share| {
            let all: Vec<RawMessage> = (0..share)
                .map(|_| (uuid::Uuid::new_v4().to_string(), vec![b'x'; size]))
                .collect();
            all.chunks(BATCH).map(<[_]>::to_vec).collect()
        })
        .collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    for (channel, batches) in channels.into_iter().zip(work) {
        let queue = queue.clone();
        handles.push(tokio::spawn(async move {
            for batch in batches {
                let mut pending = Vec::with_capacity(batch.len());
                for (id, payload) in &batch {
                    let props = BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(1);
                    pending.push(
                        channel
                            .basic_publish(
                                "".into(),
                                queue.as_str().into(),
                                BasicPublishOptions::default(),
                                payload,
                                props,
                            )
                            .await
                            .unwrap(),
                    );
                }
                for confirm in pending {
                    assert!(confirm.await.unwrap().take_message().is_none());
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    let _ = conn.close(200, "bench".into()).await;
    delete(&queue).await;
    n as f64 / elapsed.as_secs_f64()
}

async fn tidemill_publish(size: usize, tasks: usize, confirms: bool, n: usize) -> f64 {
    let queue = fresh_queue();
    let publisher = Arc::new(AmqpPublisher::connect(config(confirms)).await.unwrap());
    // The queue exists before the clock starts, as for lapin.
    let warm = raw_connection().await;
    declare(&warm.create_channel().await.unwrap(), &queue).await;
    let _ = warm.close(200, "bench".into()).await;
    let work: Vec<Vec<Vec<Message>>> = shares(n, tasks)
        .into_iter()
        .map(|share| {
            let all: Vec<Message> = (0..share).map(|_| Message::new(vec![b'x'; size])).collect();
            all.chunks(BATCH).map(<[_]>::to_vec).collect()
        })
        .collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    for batches in work {
        let (publisher, queue) = (publisher.clone(), queue.clone());
        handles.push(tokio::spawn(async move {
            for batch in batches {
                publisher.publish(&queue, batch).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed();
    publisher.close().await.unwrap();
    delete(&queue).await;
    n as f64 / elapsed.as_secs_f64()
}

/// A queue holding `n` messages of `size` bytes, as the tidemill publisher writes them.
async fn filled_queue(size: usize, n: usize) -> String {
    let queue = fresh_queue();
    let publisher = AmqpPublisher::connect(config(true)).await.unwrap();
    let all: Vec<Message> = (0..n).map(|_| Message::new(vec![b'x'; size])).collect();
    for batch in all.chunks(500) {
        publisher.publish(&queue, batch.to_vec()).await.unwrap();
    }
    publisher.close().await.unwrap();
    queue
}

async fn wait_for(count: &AtomicUsize, n: usize) {
    while count.load(Ordering::Acquire) < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn raw_consume(size: usize, tasks: usize, n: usize) -> f64 {
    let queue = filled_queue(size, n).await;
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let conn = raw_connection().await;
    let mut handles = Vec::new();
    for i in 0..tasks {
        let channel = conn.create_channel().await.unwrap();
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("raw-{i}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let count = count.clone();
        handles.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                // The same decoding work tidemill does: id and payload out of the delivery.
                let id = delivery.properties.message_id().clone();
                std::hint::black_box((&id, &delivery.data));
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                count.fetch_add(1, Ordering::AcqRel);
            }
            drop(channel);
        }));
    }
    wait_for(&count, n).await;
    let _ = conn.close(200, "bench".into()).await;
    let elapsed = start.elapsed();
    for h in handles {
        h.abort();
    }
    delete(&queue).await;
    n as f64 / elapsed.as_secs_f64()
}

async fn tidemill_consume(size: usize, tasks: usize, n: usize) -> f64 {
    let queue = filled_queue(size, n).await;
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let subscriber = AmqpSubscriber::connect(config(true)).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let mut subscription = subscriber.subscribe(&queue).await.unwrap();
        let count = count.clone();
        handles.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = subscription.next().await {
                std::hint::black_box(delivery.message());
                delivery.ack();
                count.fetch_add(1, Ordering::AcqRel);
            }
        }));
    }
    wait_for(&count, n).await;
    // Closing waits until every ack has gone out.
    subscriber.close().await.unwrap();
    let elapsed = start.elapsed();
    for h in handles {
        h.abort();
    }
    delete(&queue).await;
    n as f64 / elapsed.as_secs_f64()
}

fn line(what: &str, size: usize, tasks: usize, raw: f64, ours: f64) {
    println!(
        "{what:<22} {size:>4} B  x{tasks:<2}  lapin {raw:>10.0} msg/s  tidemill {ours:>10.0} msg/s  ratio {:>5.1} %",
        ours / raw * 100.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let n = messages();
        println!("{n} messages per case, batches of {BATCH}, prefetch {PREFETCH}, concurrency 1 and {CONCURRENCY}");
        for confirms in [true, false] {
            let what = if confirms { "publish (confirms)" } else { "publish (no confirms)" };
            for size in [16, 64, 256] {
                for tasks in [1, CONCURRENCY] {
                    // Each side runs three times, interleaved; the best run counts, which
                    // evens out warm-up and noise from other work on the machine.
                    let mut raw = 0f64;
                    let mut ours = 0f64;
                    for _ in 0..ROUNDS {
                        raw = raw.max(raw_publish(size, tasks, confirms, n).await);
                        ours = ours.max(tidemill_publish(size, tasks, confirms, n).await);
                    }
                    line(what, size, tasks, raw, ours);
                }
            }
        }
        for size in [16, 64, 256] {
            for tasks in [1, CONCURRENCY] {
                let mut raw = 0f64;
                let mut ours = 0f64;
                for _ in 0..ROUNDS {
                    raw = raw.max(raw_consume(size, tasks, n).await);
                    ours = ours.max(tidemill_consume(size, tasks, n).await);
                }
                line("consume + ack", size, tasks, raw, ours);
            }
        }
    });
}
