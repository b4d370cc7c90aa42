//! Publish and consume throughput through tidemill and through raw rdkafka doing the same work,
//! in one run, against the broker on 127.0.0.1:9092 (start it with `scripts/kafka-broker.sh`).
//!
//! `cargo bench -p tidemill-kafka --bench throughput`; `TIDEMILL_BENCH_MESSAGES` sets the count
//! (default 20,000).

use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use tidemill::{Message, Publisher, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};

const BROKERS: &str = "127.0.0.1:9092";
/// tansu waits half the fetch wait even with records to send; both consumers use a short one.
const FETCH_WAIT_MS: &str = "50";
/// Messages a publish call carries (and raw rdkafka sends before awaiting their reports).
const BATCH: usize = 1_000;

fn topic(name: &str) -> String {
    format!("bench-{name}-{}", uuid::Uuid::new_v4().simple())
}

async fn raw_publish(topic: &str, n: usize, payload: &[u8], tasks: usize) -> Duration {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    // Topic creation is not part of the measurement.
    tidemill_publish(topic, 1, payload, 1).await;
    let start = Instant::now();
    let per_task = n / tasks;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (producer, topic, payload) = (producer.clone(), topic.to_owned(), payload.to_vec());
        handles.push(tokio::spawn(async move {
            // Batches of 1,000 whose delivery reports are awaited before the next, as a
            // tidemill publish call of 1,000 messages does.
            let mut reports = Vec::with_capacity(BATCH);
            for i in 0..per_task {
                let id = i.to_string();
                let record = FutureRecord::<(), [u8]>::to(&topic)
                    .payload(&payload[..])
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "tidemill_message_id",
                        value: Some(&id),
                    }));
                reports.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                if reports.len() == BATCH || i + 1 == per_task {
                    for r in reports.drain(..) {
                        r.await.unwrap().unwrap();
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

async fn tidemill_publish(topic: &str, n: usize, payload: &[u8], tasks: usize) -> Duration {
    let publisher = KafkaPublisher::new(KafkaConfig::new(BROKERS)).unwrap();
    publisher
        .publish(topic, vec![Message::new("warm-up")])
        .await
        .unwrap();
    let start = Instant::now();
    let per_task = n / tasks;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (publisher, topic, payload) = (
            publisher.clone(),
            topic.to_owned(),
            bytes::Bytes::copy_from_slice(payload),
        );
        handles.push(tokio::spawn(async move {
            let mut left = per_task;
            while left > 0 {
                let k = left.min(BATCH);
                let msgs = (0..k).map(|_| Message::new(payload.clone())).collect();
                publisher.publish(&topic, msgs).await.unwrap();
                left -= k;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

async fn raw_consume(topic: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", uuid::Uuid::new_v4().to_string())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let start = Instant::now();
    let mut last_commit = Instant::now();
    let mut got = 0;
    let mut next = 0;
    while got < n {
        let m = consumer.recv().await.unwrap();
        std::hint::black_box(m.payload());
        next = m.offset() + 1;
        got += 1;
        if last_commit.elapsed() > Duration::from_millis(100) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, m.partition(), Offset::Offset(next))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Async).unwrap();
            last_commit = Instant::now();
        }
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(next))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    start.elapsed()
}

async fn tidemill_consume(topic: &str, n: usize) -> Duration {
    let subscriber = KafkaSubscriber::new(
        KafkaConfig::new(BROKERS)
            .group(uuid::Uuid::new_v4().to_string())
            .set("fetch.wait.max.ms", FETCH_WAIT_MS),
    )
    .unwrap();
    let mut sub = subscriber.subscribe(topic).await.unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = sub.next().await.unwrap().unwrap();
        std::hint::black_box(d.message().payload());
        d.ack();
    }
    drop(sub);
    subscriber.close().await.unwrap();
    start.elapsed()
}

fn main() {
    let n: usize = std::env::var("TIDEMILL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} messages per run against {BROKERS}");
    println!(
        "{:<28} {:>7} {:>12} {:>12} {:>7}",
        "workload", "payload", "raw msgs/s", "tidemill", "ratio"
    );
    rt.block_on(async {
        for size in [16usize, 64, 256] {
            let payload = vec![7u8; size];
            for tasks in [1usize, 4] {
                let (a, b) = (topic("raw"), topic("tm"));
                let raw = rate(raw_publish(&a, n, &payload, tasks).await);
                let ours = rate(tidemill_publish(&b, n, &payload, tasks).await);
                println!(
                    "{:<28} {:>6}B {:>12.0} {:>12.0} {:>7.2}",
                    format!("publish ({tasks} publishers)"),
                    size,
                    raw,
                    ours,
                    ours / raw
                );
                if tasks == 1 {
                    let raw_c = rate(raw_consume(&a, n).await);
                    let ours_c = rate(tidemill_consume(&b, n).await);
                    println!(
                        "{:<28} {:>6}B {:>12.0} {:>12.0} {:>7.2}",
                        "consume + commit",
                        size,
                        raw_c,
                        ours_c,
                        ours_c / raw_c
                    );
                }
            }
        }
    });
}
