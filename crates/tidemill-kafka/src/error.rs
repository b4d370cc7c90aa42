//! The causes this adapter puts inside tidemill's [`Error`](tidemill::Error).
//!
//! Every operation returns [`tidemill::Error`], which names the topic and the message id; its
//! `source` is a [`KafkaAdapterError`] saying what librdkafka or the broker objected to.
//!
//! ```
//! use tidemill_kafka::KafkaAdapterError;
//! let err = KafkaAdapterError::Broker("the topic has no partitions".into());
//! assert_eq!(err.to_string(), "kafka: the topic has no partitions");
//! ```

/// What went wrong underneath a [`tidemill::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaAdapterError {
    /// librdkafka failed (connection, produce, consume, commit, admin).
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The broker answered, but not as needed.
    #[error("kafka: {0}")]
    Broker(String),
    /// A delivery report never came back (the producer went away).
    #[error("kafka: the delivery report was lost: {0}")]
    Report(String),
}
