//! Defects of tansu, the Kafka-protocol test broker, reproduced with raw rdkafka so that they are
//! told apart from tidemill's own (see docs/testing.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Raw rdkafka, no tidemill: 20 producers publish 10,000 records to a one-partition topic while a
/// group of four consumers reads it, each committing the offset after every record it saw. On
/// tansu 0.6.0 with `memory://` storage, with the machine loaded (two busy loops beside it),
/// about one run in three misses one or two records the producers were told were stored, at
/// offsets no other record has. It is ignored because it shows a defect of the test broker, not
/// of tidemill: `cargo nextest run -p tidemill-kafka --test tansu_gaps --run-ignored only`, with
/// `scripts/kafka-broker.sh start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces a tansu defect; run by hand"]
async fn a_group_reading_while_many_producers_write_misses_no_record() {
    let topic = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let group = uuid::Uuid::new_v4().to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each payload and the offsets it was read at.
    let seen = Arc::new(Mutex::new(HashMap::<String, Vec<i64>>::new()));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9092")
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let (seen, topic) = (seen.clone(), topic.clone());
        consumers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                        seen.lock()
                            .unwrap()
                            .entry(payload)
                            .or_default()
                            .push(m.offset());
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(
                            &topic,
                            m.partition(),
                            Offset::Offset(m.offset() + 1),
                        )
                        .unwrap();
                        let _ = consumer.commit(&tpl, CommitMode::Async);
                    }
                    Ok(Err(e)) => eprintln!("consumer error {e}"),
                    Err(_) => break,
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    let offsets = Arc::new(Mutex::new(HashMap::<String, i64>::new()));
    for p in 0..20 {
        let (topic, offsets) = (topic.clone(), offsets.clone());
        tasks.push(tokio::spawn(async move {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9092")
                .set("batch.num.messages", "1")
                .set("linger.ms", "5")
                .set("enable.idempotence", "false")
                .create()
                .unwrap();
            for chunk in 0..10 {
                let mut futs = Vec::new();
                for i in 0..50 {
                    let payload = format!("{p}-{chunk}-{i}");
                    let producer = producer.clone();
                    let topic = topic.clone();
                    futs.push(async move {
                        let r = producer
                            .send(
                                FutureRecord::<(), _>::to(&topic).payload(&payload),
                                Duration::from_secs(30),
                            )
                            .await
                            .unwrap();
                        (payload, r.offset)
                    });
                }
                for (payload, off) in futures::future::join_all(futs).await {
                    offsets.lock().unwrap().insert(payload, off);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for _ in 0..60 {
        if seen.lock().unwrap().len() >= 10000 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for c in consumers {
        c.abort();
    }
    let seen = seen.lock().unwrap();
    let offsets = offsets.lock().unwrap();
    let mut by_offset: HashMap<i64, Vec<&String>> = HashMap::new();
    for (p, o) in offsets.iter() {
        by_offset.entry(*o).or_default().push(p);
    }
    let shared: Vec<_> = by_offset.iter().filter(|(_, v)| v.len() > 1).collect();
    let missing: Vec<_> = offsets
        .iter()
        .filter(|(p, _)| !seen.contains_key(*p))
        .collect();
    assert!(
        shared.is_empty(),
        "offsets given to two records: {shared:?}"
    );
    assert!(
        missing.is_empty(),
        "{} of 10000 records never read (payload, offset): {missing:?}",
        missing.len()
    );
}
