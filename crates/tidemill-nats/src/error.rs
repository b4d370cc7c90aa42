//! What can go wrong particular to NATS. These errors travel as the `source` of tidemill's
//! [`Error`](tidemill::Error) variants, which name the topic and message id.

/// A NATS-specific failure.
///
/// ```
/// let err = tidemill_nats::NatsError::NoStream { subject: "orders".into() };
/// assert!(err.to_string().contains("orders"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// No stream covers the subject and the configuration does not allow creating one.
    #[error("no JetStream stream covers subject {subject:?}")]
    NoStream {
        /// The subject (topic).
        subject: String,
    },
    /// A durable consumer exists with a configuration that does not fit the subscriber.
    #[error("consumer {consumer:?} on stream {stream:?} filters {found:?}, expected {expected:?}")]
    ConsumerMismatch {
        /// The stream.
        stream: String,
        /// The durable consumer (the group).
        consumer: String,
        /// The filter subject the subscriber needs.
        expected: String,
        /// The filter subject the consumer has.
        found: String,
    },
    /// A metadata key or value cannot be a NATS header.
    #[error("metadata entry {key:?} cannot travel as a NATS header: {reason}")]
    InvalidHeader {
        /// The metadata key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The server did not confirm in time.
    #[error("the server did not confirm within {0:?}")]
    Timeout(std::time::Duration),
    /// A JetStream API or client error, as the client reported it.
    #[error("{0}")]
    Client(String),
}

impl NatsError {
    pub(crate) fn client(err: impl std::fmt::Display) -> Self {
        Self::Client(err.to_string())
    }
}
