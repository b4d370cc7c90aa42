//! [`RedisDeduplicationStore`]: the memory of a deduplicator kept in Redis, shared by every
//! process that uses the same server and prefix. It implements
//! [`DeduplicationStore`], so it plugs into [`tidemill::middleware::DeduplicatorLayer`].

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Value;
use tidemill::middleware::DeduplicationStore;
use tidemill::{BoxError, Error, Result};

use crate::config::RedisConfig;
use crate::connection::Endpoint;
use crate::error::RedisAdapterError;

/// Remembers keys (message ids, or whatever a deduplicator derives from a message) for a while,
/// with an atomic set-if-absent: `SET <prefix><key> 1 NX PX <ttl>`. Of any number of processes
/// checking the same key at once, exactly one is told it is new. The ttl is the key's expiry
/// in Redis (`PX`), so the window of a [`DeduplicatorLayer`](tidemill::middleware::DeduplicatorLayer)
/// is honoured exactly; [`remove`](Self::remove) deletes the key (`DEL`), which the layer does
/// when a handler fails so that the redelivery is handled.
///
/// ```
/// use std::time::Duration;
/// use tidemill_redis::{RedisConfig, RedisDeduplicationStore};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let store = RedisDeduplicationStore::connect(RedisConfig::from_url("redis://127.0.0.1:6379")?)
///     .await?
///     .key_prefix("doc-dedup:");
/// let key = tidemill::new_uuid();
/// assert!(store.check_and_set(&key, Duration::from_secs(60)).await?); // first time: new
/// assert!(!store.check_and_set(&key, Duration::from_secs(60)).await?); // seen before
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisDeduplicationStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisDeduplicationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDeduplicationStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisDeduplicationStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "tidemill:dedup:";

    /// Connects to the server of `config` (only its connection options are used). Keys are
    /// stored under [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX).
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let endpoint = Endpoint::new(&config)?;
        let conn = endpoint.manager(&config).await?;
        Ok(Self {
            conn,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        })
    }

    /// A store on an existing connection.
    pub fn with_connection(conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// The prefix put before every key. Default [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Records `key` for `ttl` (at least 1 ms) if it is not recorded yet. Returns `true` if the
    /// key was new (the message should be processed), `false` if it was already there (a
    /// duplicate). Atomic across processes.
    pub async fn check_and_set(&self, key: &str, ttl: Duration) -> Result<bool> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Value = redis::cmd("SET")
            .arg(self.full_key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| Error::Other(Box::new(RedisAdapterError::from(e))))?;
        Ok(!matches!(reply, Value::Nil))
    }

    /// Forgets `key`, so it is new again. Forgetting a key that is not there is no error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tidemill_redis::{RedisConfig, RedisDeduplicationStore};
    /// # #[tokio::main] async fn main() -> tidemill::Result<()> {
    /// let store = RedisDeduplicationStore::connect(RedisConfig::from_url("redis://127.0.0.1:6379")?)
    ///     .await?
    ///     .key_prefix("doc-dedup:");
    /// let key = tidemill::new_uuid();
    /// assert!(store.check_and_set(&key, Duration::from_secs(60)).await?);
    /// store.remove(&key).await?;
    /// assert!(store.check_and_set(&key, Duration::from_secs(60)).await?); // new again
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, key: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(self.full_key(key))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| Error::Other(Box::new(RedisAdapterError::from(e))))
    }

    fn full_key(&self, key: &str) -> String {
        let mut full_key = String::with_capacity(self.prefix.len() + key.len());
        full_key.push_str(&self.prefix);
        full_key.push_str(key);
        full_key
    }
}

#[async_trait]
impl DeduplicationStore for RedisDeduplicationStore {
    async fn check_and_set(&self, key: &str, ttl: Duration) -> std::result::Result<bool, BoxError> {
        Ok(RedisDeduplicationStore::check_and_set(self, key, ttl).await?)
    }

    async fn remove(&self, key: &str) -> std::result::Result<(), BoxError> {
        Ok(RedisDeduplicationStore::remove(self, key).await?)
    }
}
