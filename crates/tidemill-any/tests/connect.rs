//! Every backend reached by URL: publish, subscribe in a group, receive, against the real
//! local brokers.

use std::time::Duration;

use futures::StreamExt;
use tidemill::Message;
use tidemill_any::{AnyError, BackendKind, StartPosition, SubscriberOptions};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", tidemill::new_uuid().replace('-', ""))
}

async fn round_trip(url: &str, kind: BackendKind) {
    let pubsub = tidemill_any::connect(url).await.expect("connects");
    assert_eq!(pubsub.kind(), kind);
    let topic = unique("any");
    let subscriber = pubsub
        .subscriber(SubscriberOptions::group(unique("g")).from(StartPosition::Beginning))
        .await
        .expect("a subscriber");
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    pubsub
        .publisher()
        .publish(&topic, vec![Message::new("hello").with_metadata("k", "v")])
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("a delivery in time")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().payload().as_ref(), b"hello");
    assert_eq!(delivery.message().metadata().get("k"), Some("v"));
    delivery.ack();
    drop(subscription);
    subscriber.close().await.unwrap();
    pubsub.close().await.unwrap();
}

#[tokio::test]
async fn memory_by_url() {
    round_trip("memory://?persistent=true", BackendKind::Memory).await;
}

#[tokio::test]
async fn sqlite_file_by_url() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        &format!("sqlite://{}", dir.path().join("a.db").display()),
        BackendKind::Sqlite,
    )
    .await;
}

#[tokio::test]
async fn sqlite_in_memory_by_url() {
    round_trip("sqlite::memory:", BackendKind::Sqlite).await;
}

#[tokio::test]
async fn postgres_by_url() {
    round_trip(
        "postgres://postgres@127.0.0.1:5432/test",
        BackendKind::Postgres,
    )
    .await;
}

#[tokio::test]
async fn mysql_and_mariadb_by_url() {
    round_trip("mysql://root@127.0.0.1:3306/test", BackendKind::MySql).await;
    round_trip("mariadb://root@127.0.0.1:3306/test", BackendKind::MySql).await;
}

#[tokio::test]
async fn redis_by_url() {
    round_trip("redis://127.0.0.1:6379?nack_delay=50ms", BackendKind::Redis).await;
}

#[tokio::test]
async fn nats_by_url() {
    round_trip("nats://127.0.0.1:4222?storage=memory", BackendKind::Nats).await;
}

#[tokio::test]
async fn amqp_by_url() {
    // RabbitMQ queues have no start position: the group's queue is declared on subscribe.
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f?durable=false";
    let pubsub = tidemill_any::connect(url).await.unwrap();
    let Err(err) = pubsub
        .subscriber(SubscriberOptions::group("g").from(StartPosition::Beginning))
        .await
    else {
        panic!("a start position on RabbitMQ was accepted")
    };
    assert!(matches!(err, AnyError::UnsupportedStart { .. }), "{err}");
    let topic = unique("any");
    let subscriber = pubsub
        .subscriber(SubscriberOptions::group(unique("g")))
        .await
        .unwrap();
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    pubsub
        .publisher()
        .publish(&topic, vec![Message::new("hello")])
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().payload().as_ref(), b"hello");
    delivery.ack();
    drop(subscription);
    subscriber.close().await.unwrap();
    pubsub.close().await.unwrap();
}

#[tokio::test]
async fn kafka_by_url() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:9092".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_err()
    {
        println!(
            "skipped: no Kafka broker on 127.0.0.1:9092 (scripts/kafka-broker.sh fresh starts one)"
        );
        return;
    }
    round_trip("kafka://127.0.0.1:9092", BackendKind::Kafka).await;
}

#[test]
fn wrong_scheme_unknown_option_and_bad_values_are_typed_errors() {
    match tidemill_any::parse("zmq://h").unwrap_err() {
        AnyError::UnknownScheme { supported, .. } => assert!(supported.contains(&"memory://")),
        other => panic!("{other}"),
    }
    match tidemill_any::parse("postgres://u:pw@h/db?colour=blue").unwrap_err() {
        AnyError::UnknownOption {
            option, known, url, ..
        } => {
            assert_eq!(option, "colour");
            assert!(known.contains(&"mode"));
            assert!(!url.contains("pw"));
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        tidemill_any::parse("redis://h?nack_delay=soon").unwrap_err(),
        AnyError::InvalidOption { .. }
    ));
    assert!(matches!(
        tidemill_any::parse("kafka://h:9092?max_in_flight=4").unwrap_err(),
        AnyError::UnsupportedOption { .. }
    ));
    assert!(matches!(
        tidemill_any::parse("sqlite::memory:?mode=queue&from=end").unwrap_err(),
        AnyError::UnsupportedStart { .. }
    ));
    assert!(tidemill_any::parse("nats://h:4222?from=2026-01-01T00:00:00Z").is_ok());
    assert!(tidemill_any::parse("sqlite::memory:?from=end&group=g").is_ok());
    assert!(tidemill_any::parse("kafka://h:9092?rdkafka.acks=all&rdkafka.retries=5").is_ok());
    assert!(matches!(
        tidemill_any::parse("kafka://h:9092?rdkafkaacks=all").unwrap_err(),
        AnyError::UnknownOption { .. }
    ));
    assert!(tidemill_any::parse("memory://?from=beginning").is_err());
    let config =
        tidemill_any::parse("amqp://guest:guest@h/%2f?mode=topic&exchange=events").unwrap();
    assert!(!format!("{config:?}").contains("guest:guest"));
}

#[tokio::test]
async fn unreachable_broker_is_a_connect_error_in_bounded_time() {
    let started = std::time::Instant::now();
    let err = tidemill_any::connect("redis://:s3cret@127.0.0.1:1?connect_timeout=2s")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AnyError::Connect { .. } | AnyError::ConnectTimeout { .. }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn every_backend_is_enabled_by_default() {
    assert_eq!(BackendKind::enabled().len(), BackendKind::all().len());
}
