//! Appended events reach another broker through the SQL outbox, written in the append's
//! transaction, and the core's forwarder: the store writes forwarder envelopes to the outbox,
//! a [`Forwarder`] reads them with a SQL subscriber and republishes them to Redis Streams
//! (127.0.0.1:6379), and a CQRS [`EventProcessor`] there handles them as typed events with
//! their ids and metadata unchanged. A conflicting, a retried and a rolled-back append
//! publish nothing. On SQLite, PostgreSQL and MariaDB.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemill::components::forwarder::{Forwarder, ForwarderConfig};
use tidemill::{HandlerResult, Router};
use tidemill_cqrs::{EventProcessor, LazySubscriber, Named, ProcessorConfig};
use tidemill_eventsourcing::{
    encode_event, keys, EventMetadata, EventStore, ExpectedVersion, NewEvent, ReadStream,
    SqlEventStore, StoreConfig,
};
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
use tidemill_sql::{SqlConfig, SqlPubSub, SubscriberOverrides};

const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum UserEvent {
    UserCreated { name: String },
}

/// What another service declares to consume the event: its own type, the same name.
#[derive(Debug, Serialize, Deserialize)]
struct UserCreated {
    name: String,
}
impl Named for UserCreated {}

fn created(name: &str) -> NewEvent {
    encode_event(&UserEvent::UserCreated { name: name.into() }, 1).unwrap()
}

/// What the consuming handler saw of one message.
#[derive(Debug, PartialEq)]
struct Seen {
    name: String,
    id: String,
    payload: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

async fn outbox_forwarder_to_processor(url: &str) {
    let tables = common::DropTables::new(url);
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let sql = SqlConfig::from_url(url)
        .unwrap()
        .table_prefix(tables.prefix(format!("ob{unique}_")))
        .unwrap();
    let pubsub = SqlPubSub::connect(sql).await.unwrap();
    pubsub.initialize().await.unwrap();
    let forwarding = ForwarderConfig::new(format!("es_forward_{unique}"));
    let topic = format!("users-{unique}");
    let store = SqlEventStore::new(
        pubsub.pool().clone(),
        StoreConfig::new()
            .table_prefix(tables.prefix(format!("es{unique}_")))
            .unwrap(),
    )
    .await
    .unwrap()
    .publish_to(pubsub.outbox().forwarding(forwarding.clone()), {
        let topic = topic.clone();
        // A topic the outbox refuses, after the events' rows are written: the append rolls
        // back.
        move |stream| match stream.starts_with("broken-") {
            true => "not a topic!".to_owned(),
            false => topic.clone(),
        }
    });
    let store = Arc::new(store);
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql") {
        use tidemill::SubscribeInitializer;
        // MariaDB: create the topic's sequence row before transactions publish to it.
        let init = pubsub.subscriber().unwrap();
        init.initialize_topic(forwarding.forwarder_topic())
            .await
            .unwrap();
    }

    let md = EventMetadata::default()
        .correlation_id("req-1")
        .causation_id("cmd-1")
        .with("tenant", "acme");
    let first = created("Ada").metadata(md);
    store
        .append("user-1", ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    // A conflicting append publishes nothing.
    let err = store
        .append("user-1", ExpectedVersion::NoStream, vec![created("Nobody")])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    // An idempotent retry publishes nothing either.
    let again = store
        .append("user-1", ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    assert!(!again.written);
    // An append whose outbox write fails rolls back: no events, no messages.
    let err = store
        .append("broken-1", ExpectedVersion::NoStream, vec![created("Lost")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tidemill_eventsourcing::Error::Outbox { .. }),
        "{err}"
    );
    assert!(store
        .read_stream("broken-1", ReadStream::forward())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.stream_info("broken-1").await.unwrap().version, None);
    // Concurrent appenders on one new stream: one wins, the others conflict and publish
    // nothing.
    let mut racers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .append(
                    "user-race",
                    ExpectedVersion::NoStream,
                    vec![created(&format!("Racer {w}"))],
                )
                .await
        }));
    }
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    assert_eq!(wins, 1);
    store
        .append(
            "user-2",
            ExpectedVersion::NoStream,
            vec![created("Grace"), created("Linus")],
        )
        .await
        .unwrap();

    // The other service: a forwarder from the SQL outbox to Redis, a processor on Redis.
    let key_prefix = format!("es-outbox-{unique}:");
    let redis = RedisConfig::from_url(REDIS)
        .unwrap()
        .key_prefix(key_prefix.clone())
        .block_time(Duration::from_millis(50));
    let publisher = RedisPublisher::connect(redis.clone())
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/services.sh starts it)");
    let forwarder = Forwarder::new(
        pubsub
            .subscriber_with(SubscriberOverrides::new().group("forwarder"))
            .unwrap(),
        publisher.clone(),
        forwarding,
    );
    let forwarding_task = tokio::spawn({
        let forwarder = forwarder.clone();
        async move { forwarder.run().await }
    });
    forwarder.running().await;

    let router = Router::new();
    let groups = {
        let redis = redis.clone();
        move |group: &str| {
            let config = redis.clone().group(group);
            Ok(LazySubscriber::new(move || {
                RedisSubscriber::connect(config.clone())
            }))
        }
    };
    let processor = EventProcessor::with_config(
        &router,
        groups,
        ProcessorConfig::default().topic(tidemill_cqrs::topic::single(topic.clone())),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    processor
        .handle(
            "welcome",
            move |e: UserCreated, ctx: tidemill_cqrs::Context| {
                let tx = tx.clone();
                async move {
                    let m = ctx.message();
                    tx.send(Seen {
                        name: e.name,
                        id: m.id().to_owned(),
                        payload: m.payload().to_vec(),
                        metadata: m
                            .metadata()
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    })
                    .ok();
                    HandlerResult::Ok(())
                }
            },
        )
        .unwrap();
    let routing = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let mut got = Vec::new();
    while got.len() < 4 {
        let item = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("events arrive")
            .unwrap();
        got.push(item);
    }
    // Nothing else: the refused, retried and rolled-back appends published nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "an extra message arrived"
    );

    // Each message is its stored event: the id, the payload, the event's metadata and the
    // store's keys, in the order of the appends.
    let mut stored = Vec::new();
    for stream in ["user-1", "user-race", "user-2"] {
        stored.extend(
            store
                .read_stream(stream, ReadStream::forward())
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), stored.len());
    for (seen, event) in got.iter().zip(&stored) {
        assert_eq!(seen.id, event.id.to_string());
        assert_eq!(seen.payload, event.payload.to_vec());
        let md = &seen.metadata;
        let get = |k: &str| md.get(k).map(String::as_str);
        assert_eq!(get("name"), Some("UserCreated"));
        assert_eq!(get(keys::STREAM), Some(event.stream.as_str()));
        assert_eq!(get(keys::VERSION), Some(event.version.to_string().as_str()));
        assert_eq!(get(keys::SCHEMA_VERSION), Some("1"));
        assert_eq!(
            get(keys::CORRELATION_ID),
            event.metadata.correlation_id.as_deref()
        );
        assert_eq!(
            get(keys::CAUSATION_ID),
            event.metadata.causation_id.as_deref()
        );
    }
    assert_eq!(got[0].name, "Ada");
    assert_eq!(
        (
            got[0]
                .metadata
                .get(keys::CORRELATION_ID)
                .map(String::as_str),
            got[0].metadata.get(keys::CAUSATION_ID).map(String::as_str),
            got[0].metadata.get("tenant").map(String::as_str),
        ),
        (Some("req-1"), Some("cmd-1"), Some("acme"))
    );
    assert!(got[1].name.starts_with("Racer "));
    assert_eq!(
        (got[2].name.as_str(), got[3].name.as_str()),
        ("Grace", "Linus")
    );

    router.close().await.unwrap();
    routing.await.unwrap().unwrap();
    forwarder.close().await;
    forwarding_task.await.unwrap().unwrap();
    drop_redis_stream(&format!("{key_prefix}{topic}")).await;
}

/// Deletes the test's stream (its groups go with it).
async fn drop_redis_stream(key: &str) {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    outbox_forwarder_to_processor(&format!("sqlite://{}", dir.path().join("app.db").display()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_postgres() {
    outbox_forwarder_to_processor(&common::pg_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_mysql() {
    outbox_forwarder_to_processor(&common::mysql_url()).await;
}
