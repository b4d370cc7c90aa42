//! [`SqlDedupStore`]: "have I seen this message?" kept in the database, inside the handler's
//! own transaction (the inbox pattern), or, built on a pool, a [`DeduplicationStore`] for
//! [`tidemill::middleware::DeduplicatorLayer`] shared by every process using the database.

use std::time::Duration;

use async_trait::async_trait;
use tidemill::middleware::DeduplicationStore;
use tidemill::{BoxError, Error, Result};

use crate::config::Backend;
use crate::pool::private::ConnRef;
use crate::pool::{SqlConn, SqlPool};
use crate::row::now_ms;
use crate::schema::Tables;

/// Runs `$body` with `$c` bound to the backend's connection and `$b` to its [`Backend`].
macro_rules! on_conn {
    ($conn:expr, |$c:ident, $b:ident| $body:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            ConnRef::Postgres($c) => {
                let $b = Backend::Postgres;
                $body
            }
            #[cfg(feature = "mysql")]
            ConnRef::MySql($c) => {
                let $b = Backend::MySql;
                $body
            }
            #[cfg(feature = "sqlite")]
            ConnRef::Sqlite($c) => {
                let $b = Backend::Sqlite;
                $body
            }
            ConnRef::Never(_) => unreachable!(),
        }
    };
}

/// Runs `$body` with `$c` bound to a connection of `$pool` and `$b` to its [`Backend`].
macro_rules! on_pool_conn {
    ($pool:expr, |$c:ident, $b:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            SqlPool::Postgres(p) => match p.acquire().await {
                Ok(mut conn) => {
                    let ($c, $b) = (&mut *conn, Backend::Postgres);
                    $body
                }
                Err(e) => Err(e),
            },
            #[cfg(feature = "mysql")]
            SqlPool::MySql(p) => match p.acquire().await {
                Ok(mut conn) => {
                    let ($c, $b) = (&mut *conn, Backend::MySql);
                    $body
                }
                Err(e) => Err(e),
            },
            #[cfg(feature = "sqlite")]
            SqlPool::Sqlite(p) => match p.acquire().await {
                Ok(mut conn) => {
                    let ($c, $b) = (&mut *conn, Backend::Sqlite);
                    $body
                }
                Err(e) => Err(e),
            },
        }
    };
}

/// The longest key accepted (the key column's size on MariaDB/MySQL).
pub const MAX_KEY_LEN: usize = 255;

/// Remembers message keys (ids, or any string the caller derives) in the `<prefix>dedup` table.
///
/// Used inside the handler's transaction, "message seen" and the handler's writes commit or roll
/// back together: a message whose handling failed is not marked seen, and one that committed is
/// never handled again, even when the broker delivers it twice. Two transactions checking the
/// same key at once serialize on it: the second waits for the first and sees `false` if the first
/// committed.
///
/// ```
/// use tidemill_sql::{SqlConfig, SqlDedupStore, SqlPool, SqlPubSub};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = SqlPubSub::connect(SqlConfig::from_url("sqlite::memory:")?).await?;
/// pubsub.initialize().await?;
/// let SqlPool::Sqlite(pool) = pubsub.pool() else { unreachable!() };
/// let store = SqlDedupStore::new();
///
/// let mut tx = pool.begin().await?;
/// if store.check_and_set_in_tx(&mut tx, "message-1").await? {
///     // first time: do the work with the same transaction
/// }
/// tx.commit().await?;
///
/// let mut tx = pool.begin().await?;
/// assert!(!store.check_and_set_in_tx(&mut tx, "message-1").await?); // seen
/// # Ok(()) }
/// ```
///
/// # As a [`DeduplicationStore`]
///
/// Built with [`on_pool`](Self::on_pool), the store implements [`DeduplicationStore`], for a
/// [`DeduplicatorLayer`](tidemill::middleware::DeduplicatorLayer) that several processes share
/// through the database. Each check commits at once (not in the handler's transaction). The
/// `ttl` is compared with the key's `created_at`: a key recorded longer ago than `ttl` counts as
/// new again and its `created_at` is renewed, in one `UPDATE … WHERE created_at < now - ttl`
/// that concurrent checkers serialize on, so exactly one of them wins; expired rows stay until
/// [`purge_older_than`](Self::purge_older_than). [`remove`](Self::remove) deletes the key, which
/// the layer does when the handler failed. A store built with [`new`](Self::new) or
/// [`with_tables`](Self::with_tables) has no pool, and used as a `DeduplicationStore` it fails
/// every check with an error saying so (the layer nacks the message).
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::{DeduplicationStore, DeduplicatorLayer};
/// use tidemill_sql::{SqlConfig, SqlDedupStore, SqlPubSub};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidemill::BoxError> {
/// let pubsub = SqlPubSub::connect(SqlConfig::from_url("sqlite::memory:")?).await?;
/// pubsub.initialize().await?;
/// let store = SqlDedupStore::on_pool(pubsub.pool().clone());
/// assert!(DeduplicationStore::check_and_set(&store, "m-1", Duration::from_secs(60)).await?);
/// assert!(!DeduplicationStore::check_and_set(&store, "m-1", Duration::from_secs(60)).await?);
/// let layer = DeduplicatorLayer::new(store, Duration::from_secs(60));
/// # drop(layer);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SqlDedupStore {
    tables: Tables,
    pool: Option<SqlPool>,
}

impl SqlDedupStore {
    /// A store in the default tables (`tidemill_dedup`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store in `tables`.
    pub fn with_tables(tables: Tables) -> Self {
        Self { tables, pool: None }
    }

    /// A store in the default tables that holds `pool`, so it is a [`DeduplicationStore`]
    /// (see [the type's docs](Self#as-a-deduplicationstore)).
    pub fn on_pool(pool: SqlPool) -> Self {
        Self {
            tables: Tables::default(),
            pool: Some(pool),
        }
    }

    /// The same store in `tables` (which must be initialized, e.g. by
    /// [`SqlPubSub::initialize`](crate::SqlPubSub::initialize) with the same table prefix).
    pub fn tables(mut self, tables: Tables) -> Self {
        self.tables = tables;
        self
    }

    fn own_pool(&self) -> Result<&SqlPool> {
        self.pool.as_ref().ok_or_else(|| {
            Error::Config(
                "this SqlDedupStore has no pool: build it with SqlDedupStore::on_pool to use it \
                 as a DeduplicationStore"
                    .into(),
            )
        })
    }

    /// Records `key` in the store's own pool and returns `true` if it was not recorded, or was
    /// recorded more than `ttl` ago; `false` if it is a duplicate. Committed at once.
    pub async fn check_and_set_within(&self, key: &str, ttl: Duration) -> Result<bool> {
        let pool = self.own_pool()?;
        let now = now_ms();
        let cutoff = now.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let d = |b: Backend| self.tables.q(b, &self.tables.dedup_table());
        let renewed = on_pool_conn!(pool, |c, b| {
            let sql = format!(
                "UPDATE {} SET created_at = {} WHERE dedup_key = {} AND created_at < {}",
                d(b),
                ph(b, 1),
                ph(b, 2),
                ph(b, 3)
            );
            sqlx::query(&sql)
                .bind(now)
                .bind(key)
                .bind(cutoff)
                .execute(c)
                .await
                .map(|done| done.rows_affected() == 1)
        });
        let renewed = renewed.map_err(|e| dedup_error(key, e))?;
        if renewed {
            return Ok(true);
        }
        self.check_and_set(pool, key).await
    }

    /// Forgets `key` in the store's own pool, so it is new again. Forgetting a key that is not
    /// there is no error.
    pub async fn remove(&self, key: &str) -> Result<()> {
        let pool = self.own_pool()?;
        let d = |b: Backend| self.tables.q(b, &self.tables.dedup_table());
        let done = on_pool_conn!(pool, |c, b| {
            let sql = format!("DELETE FROM {} WHERE dedup_key = {}", d(b), ph(b, 1));
            sqlx::query(&sql).bind(key).execute(c).await.map(|_| ())
        });
        done.map_err(|e| dedup_error(key, e))
    }

    /// Records `key` through `conn` (usually the handler's transaction) and returns `true` if
    /// it was not recorded before, `false` if it was. The record commits or rolls back with
    /// the transaction.
    pub async fn check_and_set_in_tx(&self, conn: &mut impl SqlConn, key: &str) -> Result<bool> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::Config(format!(
                "a deduplication key must be 1 to {MAX_KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        let now = now_ms();
        let res = on_conn!(conn.conn_ref(), |c, b| {
            let d = self.tables.q(b, &self.tables.dedup_table());
            // Both forms report 1 row for an insert and 0 for an ignored duplicate; a
            // concurrent transaction holding the same key makes this wait until it ends, so
            // exactly one of them sees 1.
            let sql = match b {
                Backend::MySql => format!("INSERT IGNORE INTO {d} (dedup_key, created_at) VALUES (?, ?)"),
                Backend::Postgres | Backend::Sqlite => format!(
                    "INSERT INTO {d} (dedup_key, created_at) VALUES ({}, {}) ON CONFLICT DO NOTHING",
                    ph(b, 1),
                    ph(b, 2)
                ),
            };
            sqlx::query(&sql)
                .bind(key)
                .bind(now)
                .execute(c)
                .await
                .map(|done| done.rows_affected() == 1)
        });
        res.map_err(|e| dedup_error(key, e))
    }

    /// [`check_and_set_in_tx`](Self::check_and_set_in_tx) on a connection of `pool`, committed
    /// at once (no surrounding transaction).
    pub async fn check_and_set(&self, pool: &SqlPool, key: &str) -> Result<bool> {
        let err = |e: sqlx::Error| Error::Other(Box::new(crate::SqlError::from(e)));
        match pool {
            #[cfg(feature = "postgres")]
            SqlPool::Postgres(p) => {
                self.check_and_set_in_tx(&mut p.acquire().await.map_err(err)?, key)
                    .await
            }
            #[cfg(feature = "mysql")]
            SqlPool::MySql(p) => {
                self.check_and_set_in_tx(&mut p.acquire().await.map_err(err)?, key)
                    .await
            }
            #[cfg(feature = "sqlite")]
            SqlPool::Sqlite(p) => {
                self.check_and_set_in_tx(&mut p.acquire().await.map_err(err)?, key)
                    .await
            }
        }
    }

    /// Forgets keys recorded more than `age` ago; returns how many. Run it now and then: a key
    /// must be kept at least as long as the broker may redeliver its message.
    pub async fn purge_older_than(&self, pool: &SqlPool, age: Duration) -> Result<u64> {
        let before = now_ms() - age.as_millis() as i64;
        let d = |b: Backend| self.tables.q(b, &self.tables.dedup_table());
        let done = on_pool_conn!(pool, |c, b| {
            let sql = format!("DELETE FROM {} WHERE created_at < {}", d(b), ph(b, 1));
            sqlx::query(&sql)
                .bind(before)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        });
        done.map_err(|e| Error::Other(Box::new(crate::SqlError::from(e))))
    }
}

/// The `n`th bind placeholder of `backend`'s statements.
fn ph(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::MySql | Backend::Sqlite => "?".to_owned(),
    }
}

fn dedup_error(key: &str, e: sqlx::Error) -> Error {
    Error::Other(Box::new(crate::SqlError::Dedup {
        key: key.to_owned(),
        reason: e.to_string(),
    }))
}

#[async_trait]
impl DeduplicationStore for SqlDedupStore {
    async fn check_and_set(&self, key: &str, ttl: Duration) -> std::result::Result<bool, BoxError> {
        Ok(self.check_and_set_within(key, ttl).await?)
    }

    async fn remove(&self, key: &str) -> std::result::Result<(), BoxError> {
        Ok(SqlDedupStore::remove(self, key).await?)
    }
}
