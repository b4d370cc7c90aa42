//! The causes this adapter puts inside tidemill's [`Error`](tidemill::Error).
//!
//! Every operation returns [`tidemill::Error`], which names the topic and the message id; its
//! `source` is a [`SqlError`] saying what the database or this adapter objected to.
//!
//! ```
//! use tidemill_sql::SqlError;
//! let err = SqlError::Dedup { key: "m-1".into(), reason: "the pool is closed".into() };
//! assert!(err.to_string().contains("m-1"));
//! ```

/// What went wrong underneath a [`tidemill::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The database or the connection failed. sqlx's errors carry no credentials.
    #[error("sql: {0}")]
    Database(#[from] sqlx::Error),
    /// Metadata could not be written as JSON.
    #[error("sql: encoding the metadata failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// The deduplication store failed for a key.
    #[error("sql: deduplication of key {key:?} failed: {reason}")]
    Dedup {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}
