//! The event store conformance suite on the local MariaDB (`TIDEMILL_SQL_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`); each check uses its own table prefix and drops
//! its tables when it ends.

mod common;

use std::sync::Arc;

use common::{mysql_url, tables_with, DropTables};
use tidemill_eventsourcing::conformance::Harness;
use tidemill_eventsourcing::{EventStore, SqlEventStore, StoreConfig};

struct MySql(DropTables);

impl MySql {
    fn new() -> Self {
        Self(DropTables::new(mysql_url()))
    }
}

#[async_trait::async_trait]
impl Harness for MySql {
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
        self.0.prefix(config.prefix());
        Arc::new(SqlEventStore::connect(&mysql_url(), config).await.unwrap())
    }
    fn exactly_once_projections(&self) -> bool {
        true
    }
}

tidemill_eventsourcing::event_store_conformance!(MySql::new());

/// A check leaves no table behind: neither the store's nor its read model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_drop_their_tables() {
    let harness = MySql::new();
    tidemill_eventsourcing::conformance::projection_error_policies(&harness).await;
    let prefixes = harness.0.prefixes();
    assert!(!tables_with(&mysql_url(), &prefixes)
        .await
        .unwrap()
        .is_empty());
    drop(harness);
    assert_eq!(
        tables_with(&mysql_url(), &prefixes).await.unwrap(),
        Vec::<String>::new()
    );
}
