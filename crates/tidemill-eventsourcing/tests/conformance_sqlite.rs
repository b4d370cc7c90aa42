//! The event store conformance suite on SQLite (a file per check, WAL mode, several
//! connections).

use std::sync::Arc;

use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

struct Sqlite;

#[async_trait::async_trait]
impl Harness for Sqlite {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        // The directory must outlive the store: leak it (removed with the test's tmp).
        let dir = tempfile::tempdir().unwrap().keep();
        let url = format!("sqlite://{}", dir.join("events.db").display());
        Arc::new(SqlEventStore::connect(&url, config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(Sqlite);
