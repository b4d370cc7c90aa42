//! Low latency without hammering: PostgreSQL wakes subscribers with NOTIFY, the others poll
//! with backoff; SQLite runs in WAL mode with a busy timeout.

mod common;

use std::time::{Duration, Instant};

use common::{next, unique, Db};
use tidemill::{Message, Publisher, Subscriber};
use tidemill_sql::{Backend, SqlPool, SubscriberOverrides};

/// A commit from outside this process's publishers (so no in-process wake-up) reaches an idle
/// subscriber through NOTIFY long before its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_idle_subscribers() {
    let db = Db::new(Backend::Postgres);
    let ps = db
        .pubsub_with(|c| c.poll_interval(Duration::from_secs(30), Duration::from_secs(30)))
        .await;
    let topic = unique("notify");
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    // Let the first (empty) read happen, so the subscription sleeps until its 30 s poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let SqlPool::Postgres(pool) = ps.pool() else {
        unreachable!()
    };
    let started = Instant::now();
    let mut tx = pool.begin().await.unwrap();
    ps.outbox()
        .publish_in_tx(&mut tx, &topic, vec![Message::with_id("n", "x")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    d.ack();
    sub.close().await.unwrap();
}

/// Without a wake-up, an idle subscriber still finds a commit by polling, within its longest
/// poll interval.
async fn polling_finds_outside_commits(backend: Backend) {
    let db = Db::new(backend);
    let ps = db
        .pubsub_with(|c| c.poll_interval(Duration::from_millis(10), Duration::from_millis(200)))
        .await;
    let topic = unique("poll");
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let mut s = sub.subscribe(&topic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    on_pool!(ps.pool(), |pool| {
        let mut tx = pool.begin().await.unwrap();
        ps.outbox()
            .publish_in_tx(&mut tx, &topic, vec![Message::with_id("p", "x")])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    let started = Instant::now();
    let d = next(&mut s, 10).await;
    assert_eq!(d.message().id(), "p");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    d.ack();
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_polling_finds_outside_commits() {
    polling_finds_outside_commits(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_polling_finds_outside_commits() {
    polling_finds_outside_commits(Backend::Sqlite).await;
}

/// SQLite: WAL mode and a busy timeout, so several tasks of one process publish and consume
/// the same file at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_is_wal_and_shared_by_many_tasks() {
    let db = Db::new(Backend::Sqlite);
    let ps = db.pubsub().await;
    let SqlPool::Sqlite(pool) = ps.pool() else {
        unreachable!()
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let (timeout,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(timeout, 5000);

    let topic = unique("many");
    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    common::drain_into(sub.subscribe(&topic).await.unwrap(), tx);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (publisher, topic) = (ps.publisher(), topic.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                publisher
                    .publish(&topic, vec![Message::with_id(format!("{w}-{i}"), "x")])
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 400 {
        let id = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(seen.insert(id));
    }
    sub.close().await.unwrap();
}
