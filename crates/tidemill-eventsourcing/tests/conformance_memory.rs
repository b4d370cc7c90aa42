//! The event store conformance suite on the in-memory store.

use std::sync::Arc;

use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};

struct Memory;

#[async_trait::async_trait]
impl Harness for Memory {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        Arc::new(MemoryEventStore::with_config(config))
    }
    fn exactly_once_projections(&self) -> bool {
        false
    }
}

tidemill_eventsourcing::event_store_conformance!(Memory);
