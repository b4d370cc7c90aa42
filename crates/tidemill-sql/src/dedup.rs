//! [`SqlDedupStore`]: "have I seen this message?" kept in the database, inside the handler's
//! own transaction (the inbox pattern).

use std::time::Duration;

use tidemill::{Error, Result};

use crate::pool::private::ConnRef;
use crate::pool::{SqlConn, SqlPool};
use crate::row::now_ms;
use crate::schema::Tables;

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
#[derive(Clone, Debug, Default)]
pub struct SqlDedupStore {
    tables: Tables,
}

impl SqlDedupStore {
    /// A store in the default tables (`tidemill_dedup`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store in `tables`.
    pub fn with_tables(tables: Tables) -> Self {
        Self { tables }
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
        let res = match conn.conn_ref() {
            #[cfg(feature = "postgres")]
            ConnRef::Postgres(c) => crate::pg::dedup_insert(c, &self.tables, key, now).await,
            #[cfg(feature = "mysql")]
            ConnRef::MySql(c) => crate::mysql::dedup_insert(c, &self.tables, key, now).await,
            #[cfg(feature = "sqlite")]
            ConnRef::Sqlite(c) => crate::sqlite::dedup_insert(c, &self.tables, key, now).await,
            ConnRef::Never(_) => unreachable!(),
        };
        res.map_err(|e| Error::Other(format!("deduplication of key {key:?} failed: {e}").into()))
    }

    /// [`check_and_set_in_tx`](Self::check_and_set_in_tx) on a connection of `pool`, committed
    /// at once (no surrounding transaction).
    pub async fn check_and_set(&self, pool: &SqlPool, key: &str) -> Result<bool> {
        let err = |e: sqlx::Error| Error::Other(Box::new(e));
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
        pool.dedup_purge(&self.tables, now_ms() - age.as_millis() as i64)
            .await
            .map_err(|e| Error::Other(Box::new(e)))
    }
}
