//! The event store conformance suite on the local PostgreSQL (`TIDEMILL_SQL_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each check uses its own table prefix and drops
//! its tables when it ends.

mod common;

use std::sync::Arc;

use common::{pg_url, tables_with, DropTables};
use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

struct Postgres(DropTables);

impl Postgres {
    fn new() -> Self {
        Self(DropTables::new(pg_url()))
    }
}

#[async_trait::async_trait]
impl Harness for Postgres {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        self.0.prefix(config.prefix());
        Arc::new(SqlEventStore::connect(&pg_url(), config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(Postgres::new());

/// A check leaves no table behind: neither the store's nor its read model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_drop_their_tables() {
    let harness = Postgres::new();
    tidemill_eventsourcing::conformance::projection_error_policies(&harness).await;
    let prefixes = harness.0.prefixes();
    assert!(!tables_with(&pg_url(), &prefixes).await.unwrap().is_empty());
    drop(harness);
    assert_eq!(
        tables_with(&pg_url(), &prefixes).await.unwrap(),
        Vec::<String>::new()
    );
}
