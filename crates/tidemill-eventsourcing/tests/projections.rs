//! Several projections side by side in a group: live tail, a clean stop, and a failing
//! projection with `OnError::Fail` stopping the group. On SQLite, read models in the store's
//! database (written in the checkpoint's transaction).

use std::sync::Arc;
use std::time::Duration;

use tidemill_eventsourcing::{
    Ended, EventStore, ExpectedVersion, NewEvent, OnError, Projection, ProjectionGroup,
    ProjectionOptions, ProjectionTx, RecordedEvent, SqlEventStore, StoreConfig, StreamFilter,
};

/// Counts events per stream into its own table.
struct PerStream {
    name: String,
    fail_on: Option<&'static str>,
}

#[async_trait::async_trait]
impl Projection for PerStream {
    fn name(&self) -> &str {
        &self.name
    }
    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        e: &RecordedEvent,
    ) -> Result<(), tidemill::BoxError> {
        if self.fail_on == Some(e.event_type.as_str()) {
            return Err("refused".into());
        }
        let ProjectionTx::Sqlite(c) = tx else {
            unreachable!("SQLite store")
        };
        let t = &self.name;
        sqlx::query(&format!(
            "INSERT INTO {t} (stream, n) VALUES (?, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1"
        ))
        .bind(&e.stream)
        .execute(&mut **c)
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut ProjectionTx<'_>) -> Result<(), tidemill::BoxError> {
        let ProjectionTx::Sqlite(c) = tx else {
            unreachable!("SQLite store")
        };
        let t = &self.name;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        ))
        .execute(&mut **c)
        .await?;
        sqlx::query(&format!("DELETE FROM {t}"))
            .execute(&mut **c)
            .await?;
        Ok(())
    }
}

async fn total(store: &SqlEventStore, table: &str) -> i64 {
    let tidemill_sql::SqlPool::Sqlite(pool) = store.pool() else {
        unreachable!()
    };
    sqlx::query_scalar(&format!("SELECT COALESCE(SUM(n), 0) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
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

async fn wait_for(store: &SqlEventStore, table: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total(store, table).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{table} did not reach {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_side_by_side_tail_and_stop_cleanly() {
    let store = store().await;
    for s in 0..5 {
        let events = (0..10).map(|_| NewEvent::new("Booked", "{}")).collect();
        store
            .append(&format!("booking-{s}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        store
            .append(
                &format!("user-{s}"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Joined", "{}")],
            )
            .await
            .unwrap();
    }
    let all = Arc::new(PerStream {
        name: "all_counts".into(),
        fail_on: None,
    });
    let bookings = Arc::new(PerStream {
        name: "booking_counts".into(),
        fail_on: None,
    });
    store.reset_projection(&*all).await.unwrap();
    store.reset_projection(&*bookings).await.unwrap();
    let dyn_store: Arc<dyn EventStore> = store.clone();
    let mut group = ProjectionGroup::new(dyn_store);
    group.spawn(all.clone(), ProjectionOptions::new().batch_size(7));
    group.spawn(
        bookings.clone(),
        ProjectionOptions::new().filter(StreamFilter::parse("booking-*").unwrap()),
    );
    wait_for(&store, "all_counts", 55).await;
    wait_for(&store, "booking_counts", 50).await;
    // Live tail: new events arrive in both.
    store
        .append(
            "booking-9",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Booked", "{}")],
        )
        .await
        .unwrap();
    wait_for(&store, "all_counts", 56).await;
    wait_for(&store, "booking_counts", 51).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), group.stop())
        .await
        .expect("stops");
    assert_eq!(ended.len(), 2);
    assert!(
        ended.iter().all(|(_, e)| matches!(e, Ended::Stopped)),
        "{ended:?}"
    );
    assert_eq!(total(&store, "all_counts").await, 56);
    assert_eq!(total(&store, "booking_counts").await, 51);

    // Rebuild one from zero: same result.
    store.reset_projection(&*bookings).await.unwrap();
    assert_eq!(total(&store, "booking_counts").await, 0);
    let dyn_store: Arc<dyn EventStore> = store.clone();
    let mut group = ProjectionGroup::new(dyn_store);
    group.spawn(
        bookings,
        ProjectionOptions::new()
            .filter(StreamFilter::parse("booking-*").unwrap())
            .live(false),
    );
    group.join().await;
    assert_eq!(total(&store, "booking_counts").await, 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projection_with_fail_stops_its_group() {
    let store = store().await;
    store
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Placed", "{}"), NewEvent::new("Poison", "{}")],
        )
        .await
        .unwrap();
    let good = Arc::new(PerStream {
        name: "good_counts".into(),
        fail_on: None,
    });
    let bad = Arc::new(PerStream {
        name: "bad_counts".into(),
        fail_on: Some("Poison"),
    });
    store.reset_projection(&*good).await.unwrap();
    store.reset_projection(&*bad).await.unwrap();
    let dyn_store: Arc<dyn EventStore> = store.clone();
    let mut group = ProjectionGroup::new(dyn_store);
    group.spawn(good, ProjectionOptions::new());
    group.spawn(bad, ProjectionOptions::new().on_error(OnError::Fail));
    let ended = tokio::time::timeout(Duration::from_secs(30), group.join())
        .await
        .expect("the group ends by itself");
    assert!(matches!(ended[0].1, Ended::Stopped), "{:?}", ended[0]);
    match &ended[1].1 {
        Ended::Failed(tidemill_eventsourcing::Error::Projection {
            stream,
            version,
            event_type,
            ..
        }) => {
            assert_eq!(
                (stream.as_str(), *version, event_type.as_str()),
                ("order-1", 2, "Poison")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(total(&store, "good_counts").await, 2);
    assert_eq!(total(&store, "bad_counts").await, 1);
}
