//! The event store conformance suite on the local PostgreSQL (`TIDEMILL_SQL_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each check uses its own table prefix.

use std::sync::Arc;

use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

struct Postgres;

fn url() -> String {
    std::env::var("TIDEMILL_SQL_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[async_trait::async_trait]
impl Harness for Postgres {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        Arc::new(SqlEventStore::connect(&url(), config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(Postgres);
