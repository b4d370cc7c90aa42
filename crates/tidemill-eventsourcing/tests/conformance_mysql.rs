//! The event store conformance suite on the local MariaDB (`TIDEMILL_SQL_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`); each check uses its own table prefix.

use std::sync::Arc;

use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

struct MySql;

fn url() -> String {
    std::env::var("TIDEMILL_SQL_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

#[async_trait::async_trait]
impl Harness for MySql {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        Arc::new(SqlEventStore::connect(&url(), config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(MySql);
