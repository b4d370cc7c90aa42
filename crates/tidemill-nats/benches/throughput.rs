//! Throughput of tidemill's NATS JetStream adapter against the raw `async-nats` client doing the
//! same work, in the same run: publish (one message per call awaiting its ack, and batches of
//! 100 with acks awaited together), and consume with ack, at 16/64/256-byte payloads and
//! concurrency 1 and 4. Needs the local server (nats://127.0.0.1:4222).
//!
//! `cargo bench -p tidemill-nats --bench throughput`

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_nats::{topology::encode_name, NatsConfig, NatsPublisher, NatsSubscriber};

const URL: &str = "nats://127.0.0.1:4222";

fn topic() -> String {
    format!("bench.t{}", uuid::Uuid::new_v4().simple())
}

async fn raw_stream(js: &jetstream::Context, topic: &str) {
    js.create_stream(stream::Config {
        name: encode_name(topic),
        subjects: vec![topic.to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Messages per second for `n` messages done by `work` split over `tasks` tasks.
async fn rate<F, Fut>(n: usize, tasks: usize, work: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks).map(|_| tokio::spawn(work(n / tasks))).collect();
    for h in handles {
        h.await.unwrap();
    }
    (n / tasks * tasks) as f64 / start.elapsed().as_secs_f64()
}

async fn publish_case(size: usize, tasks: usize, batch: usize, n: usize) -> (f64, f64) {
    let payload = Bytes::from(vec![b'x'; size]);
    // tidemill
    let t = topic();
    let publisher = Arc::new(NatsPublisher::connect(NatsConfig::new(URL)).await.unwrap());
    publisher.ensure_topic(&t).await.unwrap();
    let ours = rate(n, tasks, |share| {
        let (publisher, t, payload) = (publisher.clone(), t.clone(), payload.clone());
        async move {
            for _ in 0..share / batch {
                let messages = (0..batch).map(|_| Message::new(payload.clone())).collect();
                publisher.publish(&t, messages).await.unwrap();
            }
        }
    })
    .await;
    // raw async-nats: the same headers (a message id), acks awaited per call of `batch`.
    let client = async_nats::connect(URL).await.unwrap();
    let js = jetstream::new(client);
    let t = topic();
    raw_stream(&js, &t).await;
    let raw = rate(n, tasks, |share| {
        let (js, t, payload) = (js.clone(), t.clone(), payload.clone());
        async move {
            for _ in 0..share / batch {
                let mut acks = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let publish = jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(uuid::Uuid::new_v4().to_string());
                    acks.push(js.send_publish(t.clone(), publish).await.unwrap());
                }
                for ack in acks {
                    ack.into_future().await.unwrap();
                }
            }
        }
    })
    .await;
    (ours, raw)
}

async fn fill(topic: &str, size: usize, n: usize) {
    let publisher = NatsPublisher::connect(NatsConfig::new(URL)).await.unwrap();
    let payload = Bytes::from(vec![b'x'; size]);
    for _ in 0..n / 500 {
        let messages = (0..500).map(|_| Message::new(payload.clone())).collect();
        publisher.publish(topic, messages).await.unwrap();
    }
}

async fn consume_case(size: usize, tasks: usize, n: usize) -> (f64, f64) {
    // tidemill: `tasks` subscribers of one group share the messages.
    let t = topic();
    fill(&t, size, n).await;
    let group = format!("g{}", uuid::Uuid::new_v4().simple());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let subscriber = NatsSubscriber::connect(NatsConfig::new(URL).group(&group))
            .await
            .unwrap();
        let (t, done) = (t.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let mut subscription = subscriber.subscribe(&t).await.unwrap();
            while done.load(std::sync::atomic::Ordering::Relaxed) < n {
                match tokio::time::timeout(Duration::from_millis(200), subscription.next()).await {
                    Ok(Some(Ok(d))) => {
                        d.ack();
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => continue,
                }
            }
            // Closing (returning what the last pull requests bring) is not part of the rate.
            let end = Instant::now();
            drop(subscription);
            subscriber.close().await.unwrap();
            end
        }));
    }
    let mut end = start;
    for h in handles {
        end = end.max(h.await.unwrap());
    }
    let ours = n as f64 / (end - start).as_secs_f64();

    // raw: `tasks` pull streams on one durable, each message acked.
    let t = topic();
    fill(&t, size, n).await;
    let client = async_nats::connect(URL).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(encode_name(&t)).await.unwrap();
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            filter_subject: t.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (consumer, done) = (consumer.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(64)
                .messages()
                .await
                .unwrap();
            while done.load(std::sync::atomic::Ordering::Relaxed) < n {
                match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                    Ok(Some(Ok(m))) => {
                        m.ack().await.unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => continue,
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let raw = n as f64 / start.elapsed().as_secs_f64();
    (ours, raw)
}

fn line(what: &str, size: usize, tasks: usize, (ours, raw): (f64, f64)) {
    println!(
        "{what:<28} {size:>4} B  c={tasks}  tidemill {ours:>9.0} msg/s  raw {raw:>9.0} msg/s  ratio {:>5.1} %",
        100.0 * ours / raw
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for size in [16, 64, 256] {
            for tasks in [1, 4] {
                line(
                    "publish, 1 per call (sync)",
                    size,
                    tasks,
                    publish_case(size, tasks, 1, 4_000).await,
                );
                line(
                    "publish, 100 per call",
                    size,
                    tasks,
                    publish_case(size, tasks, 100, 40_000).await,
                );
                line(
                    "consume + ack",
                    size,
                    tasks,
                    consume_case(size, tasks, 20_000).await,
                );
            }
        }
    });
}
