//! The causes this adapter puts inside tidemill's [`Error`](tidemill::Error).
//!
//! Every operation returns [`tidemill::Error`], which names the topic and the message id; its
//! `source` is a [`RedisAdapterError`] saying what Redis or this adapter objected to.
//!
//! ```
//! use tidemill_redis::RedisAdapterError;
//! let err = RedisAdapterError::ReservedMetadataKey { key: "payload".into() };
//! assert_eq!(err.to_string(), "metadata key \"payload\" is a reserved stream field");
//! ```

/// What went wrong underneath a [`tidemill::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisAdapterError {
    /// The server or the connection failed. The redis client's errors carry no credentials.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A metadata key would overwrite one of the fields the adapter writes itself.
    #[error("metadata key {key:?} is a reserved stream field")]
    ReservedMetadataKey {
        /// The offending key.
        key: String,
    },
    /// The server answered in a shape the adapter does not understand.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
}
