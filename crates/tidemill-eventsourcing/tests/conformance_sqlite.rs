//! The event store conformance suite on SQLite (a file per check, WAL mode, several
//! connections), in temporary directories removed when the check ends.

use std::sync::Arc;

use parking_lot::Mutex;
use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

/// Holds the checks' directories until the check ends.
#[derive(Default)]
struct Sqlite(Mutex<Vec<tempfile::TempDir>>);

#[async_trait::async_trait]
impl Harness for Sqlite {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        self.0.lock().push(dir);
        Arc::new(SqlEventStore::connect(&url, config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(Sqlite::default());
