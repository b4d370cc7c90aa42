//! Appended events reach the bus through the SQL outbox in the append's transaction, and the
//! CQRS event processors consume them unchanged. On SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemill::{HandlerResult, Router};
use tidemill_cqrs::{EventProcessor, Named, ProcessorConfig};
use tidemill_eventsourcing::{
    encode_event, keys, EventMetadata, EventStore, ExpectedVersion, SqlEventStore, StoreConfig,
};
use tidemill_sql::{SqlConfig, SqlPubSub, SubscriberOverrides};

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

async fn outbox_to_processor(url: &str) {
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let sql = SqlConfig::from_url(url)
        .unwrap()
        .table_prefix(format!("ob{unique}_"))
        .unwrap();
    let pubsub = SqlPubSub::connect(sql).await.unwrap();
    pubsub.initialize().await.unwrap();
    let topic = format!("users-{unique}");
    let store = SqlEventStore::new(
        pubsub.pool().clone(),
        StoreConfig::new()
            .table_prefix(format!("es{unique}_"))
            .unwrap(),
    )
    .await
    .unwrap()
    .publish_to(pubsub.outbox(), {
        let topic = topic.clone();
        move |_stream| topic.clone()
    });
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql") {
        use tidemill::SubscribeInitializer;
        // MariaDB: create the topic's sequence row before transactions publish to it.
        pubsub
            .subscriber()
            .unwrap()
            .initialize_topic(&topic)
            .await
            .unwrap();
    }

    let mut first = encode_event(&UserEvent::UserCreated { name: "Ada".into() }, 1).unwrap();
    first.metadata = EventMetadata::default().correlation_id("req-1");
    store
        .append("user-1", ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    // A refused append publishes nothing.
    let refused = encode_event(
        &UserEvent::UserCreated {
            name: "Nobody".into(),
        },
        1,
    )
    .unwrap();
    assert!(store
        .append("user-1", ExpectedVersion::NoStream, vec![refused])
        .await
        .is_err());
    // An idempotent retry publishes nothing either.
    store
        .append("user-1", ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    let second = encode_event(
        &UserEvent::UserCreated {
            name: "Grace".into(),
        },
        1,
    )
    .unwrap();
    store
        .append("user-2", ExpectedVersion::NoStream, vec![second])
        .await
        .unwrap();

    let router = Router::new();
    let groups = {
        let pubsub = pubsub.clone();
        move |group: &str| pubsub.subscriber_with(SubscriberOverrides::new().group(group))
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
                    let md = ctx.message().metadata();
                    let stream = md.get(keys::STREAM).unwrap_or_default().to_owned();
                    let corr = md.get(keys::CORRELATION_ID).map(str::to_owned);
                    tx.send((e.name, stream, ctx.message().id().to_owned(), corr))
                        .ok();
                    HandlerResult::Ok(())
                }
            },
        )
        .unwrap();
    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("events arrive")
            .unwrap();
        got.push(item);
    }
    assert_eq!(
        got[0],
        (
            "Ada".into(),
            "user-1".into(),
            first.id.to_string(),
            Some("req-1".into())
        )
    );
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("Grace", "user-2"));
    // Nothing else (the refused and retried appends published nothing).
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err());
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    outbox_to_processor(&format!("sqlite://{}", dir.path().join("app.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_postgres() {
    let url = std::env::var("TIDEMILL_SQL_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    outbox_to_processor(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_reach_cqrs_processor_mysql() {
    let url = std::env::var("TIDEMILL_SQL_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    outbox_to_processor(&url).await;
}
