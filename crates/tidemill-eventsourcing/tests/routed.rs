//! Projections under a router: they start with it, `router.close()` returns only after they
//! stopped with their checkpoints written, a restart resumes without applying an event twice,
//! and an `OnError::Fail` failure closes the router and is reported by `run`. On SQLite.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidemill::router::RouterError;
use tidemill::Router;
use tidemill_eventsourcing::{
    Error, EventStore, ExpectedVersion, LogPosition, NewEvent, OnError, Projection,
    ProjectionOptions, ProjectionTx, RecordedEvent, RoutedProjections, SqlEventStore, StoreConfig,
};

/// Records each applied event's id in its own table; a second apply of an event would be a
/// unique violation (and fail the projection).
struct Applied {
    table: String,
    fail_on: Option<&'static str>,
    /// Set once `router.close()` returned: applying after it is a bug.
    closed: Arc<AtomicBool>,
    late: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Projection for Applied {
    fn name(&self) -> &str {
        &self.table
    }
    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        e: &RecordedEvent,
    ) -> Result<(), tidemill::BoxError> {
        if self.closed.load(Ordering::SeqCst) {
            self.late.fetch_add(1, Ordering::SeqCst);
        }
        if self.fail_on == Some(e.event_type.as_str()) {
            return Err("refused".into());
        }
        let ProjectionTx::Sqlite(c) = tx else {
            unreachable!("SQLite store")
        };
        sqlx::query(&format!(
            "INSERT INTO {} (event_id, position) VALUES (?, ?)",
            self.table
        ))
        .bind(e.id.to_string())
        .bind(e.position.position)
        .execute(&mut **c)
        .await?;
        Ok(())
    }
}

async fn store() -> Arc<SqlEventStore> {
    let dir = tempfile::tempdir().unwrap().keep();
    let url = format!("sqlite://{}", dir.join("events.db").display());
    Arc::new(
        SqlEventStore::connect(&url, StoreConfig::new())
            .await
            .unwrap(),
    )
}

fn pool(store: &SqlEventStore) -> &sqlx::SqlitePool {
    let tidemill_sql::SqlPool::Sqlite(pool) = store.pool() else {
        unreachable!()
    };
    pool
}

async fn create(store: &SqlEventStore, table: &str) {
    sqlx::query(&format!(
        "CREATE TABLE {table} (event_id TEXT PRIMARY KEY, position INTEGER NOT NULL)"
    ))
    .execute(pool(store))
    .await
    .unwrap();
}

async fn count(store: &SqlEventStore, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool(store))
        .await
        .unwrap()
}

async fn max_position(store: &SqlEventStore, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COALESCE(MAX(position), 0) FROM {table}"))
        .fetch_one(pool(store))
        .await
        .unwrap()
}

async fn append(store: &SqlEventStore, stream: &str, n: usize, event_type: &str) {
    let events = (0..n).map(|_| NewEvent::new(event_type, "{}")).collect();
    store
        .append(stream, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

async fn wait_for(store: &SqlEventStore, table: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(store, table).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{table} did not reach {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start(router: &Router) -> tokio::task::JoinHandle<Result<(), RouterError>> {
    let router = router.clone();
    tokio::spawn(async move { router.run().await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_close_waits_for_projections_and_restart_resumes() {
    let store = store().await;
    let table = "routed_applied";
    create(&store, table).await;
    for s in 0..5 {
        append(&store, &format!("order-{s}"), 10, "Placed").await;
    }
    let closed = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicU64::new(0));
    let projection = Arc::new(Applied {
        table: table.to_owned(),
        fail_on: None,
        closed: closed.clone(),
        late: late.clone(),
    });
    let options = ProjectionOptions::new()
        .batch_size(3)
        .poll_interval(Duration::from_millis(20));

    let router = Router::new();
    RoutedProjections::new(store.clone())
        .add(projection.clone(), options.clone())
        .register(&router, "read-models")
        .unwrap();
    let run = start(&router);
    router.running().await;
    wait_for(&store, table, 50).await;
    // Appended while the router closes: some may be applied, none after close returns.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                append(&store, &format!("late-{i}"), 1, "Placed").await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    router.close().await.unwrap();
    closed.store(true, Ordering::SeqCst);
    run.await.unwrap().unwrap();
    writer.await.unwrap();

    // The checkpoint is the last applied event: the read model and it committed together.
    let checkpoint = store
        .load_checkpoint(table)
        .await
        .unwrap()
        .expect("a checkpoint was written");
    assert_eq!(checkpoint.position, max_position(&store, table).await);
    let applied_before_restart = count(&store, table).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        late.load(Ordering::SeqCst),
        0,
        "applied after close returned"
    );
    assert_eq!(count(&store, table).await, applied_before_restart);

    // A new router resumes after the checkpoint: every event exactly once (a second apply
    // would be a unique violation and fail the projection).
    closed.store(false, Ordering::SeqCst);
    let router = Router::new();
    RoutedProjections::new(store.clone())
        .add(projection, options)
        .register(&router, "read-models")
        .unwrap();
    let run = start(&router);
    router.running().await;
    wait_for(&store, table, 70).await;
    router.close().await.unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(count(&store, table).await, 70);
    let checkpoint = store.load_checkpoint(table).await.unwrap().unwrap();
    assert!(checkpoint > LogPosition::START);
    assert_eq!(checkpoint.position, max_position(&store, table).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_projection_closes_the_router_and_run_reports_it() {
    let store = store().await;
    let (good, bad) = ("routed_good", "routed_bad");
    create(&store, good).await;
    create(&store, bad).await;
    append(&store, "order-1", 5, "Placed").await;
    append(&store, "order-1", 1, "Poison").await;
    append(&store, "order-1", 5, "Placed").await;
    let flags = || {
        (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        )
    };
    let (c1, l1) = flags();
    let (c2, l2) = flags();
    let router = Router::new();
    RoutedProjections::new(store.clone())
        .add(
            Arc::new(Applied {
                table: good.to_owned(),
                fail_on: None,
                closed: c1,
                late: l1,
            }),
            ProjectionOptions::new(),
        )
        .add(
            Arc::new(Applied {
                table: bad.to_owned(),
                fail_on: Some("Poison"),
                closed: c2,
                late: l2,
            }),
            ProjectionOptions::new()
                .batch_size(2)
                .on_error(OnError::Fail),
        )
        .register(&router, "read-models")
        .unwrap();
    let run = start(&router);
    // The router closes by itself.
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the router closed")
        .unwrap();
    let Err(RouterError::Close(tidemill::Error::Other(source))) = result else {
        panic!("expected a close error, got {result:?}");
    };
    let Some(Error::ProjectionsFailed { failures }) = source.downcast_ref::<Error>() else {
        panic!("expected ProjectionsFailed, got {source}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, bad);
    assert!(matches!(
        failures[0].1,
        Error::Projection { version: 6, .. }
    ));
    // The failing projection stopped before the poison event, checkpointed there.
    assert_eq!(count(&store, bad).await, 5);
    let checkpoint = store.load_checkpoint(bad).await.unwrap().unwrap();
    assert_eq!(checkpoint.position, max_position(&store, bad).await);
    assert!(!router.is_running());
}
