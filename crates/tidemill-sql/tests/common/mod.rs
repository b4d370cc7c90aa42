//! Shared by the integration tests: where the databases are, and names that cannot collide
//! with other tests using the same servers.
#![allow(dead_code)]

use std::time::Duration;

pub mod target;

use futures::StreamExt;
use tidemill::{Delivery, Subscription};
use tidemill_sql::{Backend, SqlConfig, SqlPubSub};

/// Table prefix of this crate's tests on the shared servers.
pub const PREFIX: &str = "tmsql_";

pub fn pg_url() -> String {
    std::env::var("TIDEMILL_SQL_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("TIDEMILL_SQL_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A name no other test run uses.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A database of `backend`: the shared servers, or a fresh SQLite file (kept alive by the
/// returned guard).
pub struct Db {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self {
                url: pg_url(),
                _dir: None,
            },
            Backend::MySql => Self {
                url: mysql_url(),
                _dir: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("t.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }

    pub fn config(&self) -> SqlConfig {
        SqlConfig::from_url(&self.url)
            .unwrap()
            .table_prefix(PREFIX)
            .unwrap()
            .max_connections(8)
    }

    pub async fn pubsub(&self) -> SqlPubSub {
        self.pubsub_with(|c| c).await
    }

    pub async fn pubsub_with(&self, f: impl FnOnce(SqlConfig) -> SqlConfig) -> SqlPubSub {
        let ps = SqlPubSub::connect(f(self.config())).await.unwrap();
        ps.initialize().await.unwrap();
        ps
    }
}

/// The next delivery, failing the test after `secs` seconds.
pub async fn next(sub: &mut Subscription, secs: u64) -> Delivery {
    tokio::time::timeout(Duration::from_secs(secs), sub.next())
        .await
        .expect("timed out waiting for a delivery")
        .expect("stream ended")
        .expect("delivery error")
}

/// Asserts nothing arrives within `ms`.
pub async fn nothing(sub: &mut Subscription, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("unexpected delivery {:?}", d.map(|d| d.message().clone()));
    }
}

/// One `#[tokio::test]` per database for an `async fn(Backend)`.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(tidemill_sql::Backend::Postgres).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(tidemill_sql::Backend::MySql).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(tidemill_sql::Backend::Sqlite).await })*
        }
    };
}

/// Runs the same code on whichever pool type `$pool` holds.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            tidemill_sql::SqlPool::Postgres($p) => $body,
            tidemill_sql::SqlPool::MySql($p) => $body,
            tidemill_sql::SqlPool::Sqlite($p) => $body,
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    };
}

/// Collects message ids from a subscription into a channel, acking each.
pub fn drain_into(
    mut sub: Subscription,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(d)) = sub.next().await {
            let id = d.message().id().to_owned();
            d.ack();
            if tx.send(id).is_err() {
                break;
            }
        }
    })
}
