//! Typed errors of publishers and subscribers.

use std::time::Duration;

/// A boxed error, the form in which adapters pass on their client library's errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a publisher or subscriber: which topic, which message, what.
///
/// ```
/// let err = tidemill::Error::invalid_topic("", "a topic name must not be empty");
/// assert_eq!(err.to_string(), "invalid topic name \"\": a topic name must not be empty");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The topic name is not valid for this pub/sub; nothing was sent.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The rejected name.
        topic: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The broker did not take a message.
    #[error("{source} (publishing message {message_id} to topic {topic:?})")]
    Publish {
        /// The topic published to.
        topic: String,
        /// The id of the first message that was not taken.
        message_id: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A subscription could not be made or broke for good.
    #[error("{source} (subscribing to topic {topic:?})")]
    Subscribe {
        /// The topic subscribed to.
        topic: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Acknowledging or rejecting a message at the broker failed; the broker will deliver it again.
    #[error("{source} (settling message {message_id} on topic {topic:?})")]
    Settle {
        /// The topic the message came from.
        topic: String,
        /// The message id.
        message_id: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A received message could not be decoded.
    #[error("decoding a message on topic {topic:?} failed: {reason}")]
    Decode {
        /// The topic the message came from.
        topic: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A metadata entry the pub/sub cannot carry unchanged (see
    /// [`Limits`](crate::limits::Limits)); nothing was sent.
    #[error("metadata {key:?} of message {message_id} refused: {reason}")]
    InvalidMetadata {
        /// The message id.
        message_id: String,
        /// The refused name (empty when the metadata as a whole is too large).
        key: String,
        /// Why, naming the adapter.
        reason: String,
    },
    /// The message is larger than the pub/sub accepts; nothing was sent.
    #[error("message {message_id} for topic {topic:?} is {size} bytes, over the limit of {limit}")]
    MessageTooLarge {
        /// The topic published to.
        topic: String,
        /// The message id.
        message_id: String,
        /// The message size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A bounded buffer is full and the pub/sub is configured to fail rather than wait.
    #[error("the buffer for topic {topic:?} is full ({capacity} messages)")]
    Full {
        /// The topic published to.
        topic: String,
        /// The buffer's capacity.
        capacity: usize,
    },
    /// Connecting to the broker failed. The address is given without credentials.
    #[error("{source} (connecting to {address})")]
    Connect {
        /// The broker's address, with any password removed.
        address: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The publisher or subscriber was closed.
    #[error("the {0} is closed")]
    Closed(&'static str),
    /// An operation did not finish in time.
    #[error("{operation} timed out after {timeout:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },
    /// Configuration that cannot work, found before anything was sent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other failure of the broker or its client library.
    #[error(transparent)]
    Other(BoxError),
}

impl Error {
    /// An [`Error::InvalidTopic`].
    pub fn invalid_topic(topic: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidTopic {
            topic: topic.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Publish`].
    ///
    /// ```
    /// let err = tidemill::Error::publish("orders", "m-1", "broker said no");
    /// assert!(err.to_string().contains("m-1"));
    /// ```
    pub fn publish(
        topic: impl Into<String>,
        message_id: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Publish {
            topic: topic.into(),
            message_id: message_id.into(),
            source: source.into(),
        }
    }

    /// An [`Error::Subscribe`].
    pub fn subscribe(topic: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Subscribe {
            topic: topic.into(),
            source: source.into(),
        }
    }

    /// Whether this error says the publisher or subscriber is closed.
    ///
    /// ```
    /// assert!(tidemill::Error::Closed("publisher").is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// Whether trying again can never succeed: the input itself is refused (a topic name,
    /// metadata, size, configuration or payload the pub/sub does not accept). Everything else
    /// (a broker away, a timeout, a full buffer, a closed client) is transient.
    ///
    /// ```
    /// use tidemill::Error;
    /// assert!(Error::invalid_topic("", "empty").is_permanent());
    /// assert!(!Error::publish("t", "m", "connection reset").is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::InvalidTopic { .. }
                | Self::InvalidMetadata { .. }
                | Self::MessageTooLarge { .. }
                | Self::Decode { .. }
                | Self::Config(_)
        )
    }
}

/// The result of publisher and subscriber operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks the rules every tidemill pub/sub applies to a topic name: not empty, at most 255 bytes,
/// no control characters. Adapters add the rules of their broker.
///
/// ```
/// assert!(tidemill::validate_topic("orders.created").is_ok());
/// assert!(tidemill::validate_topic("").is_err());
/// assert!(tidemill::validate_topic("a\nb").is_err());
/// ```
pub fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::invalid_topic(
            topic,
            "a topic name must not be empty",
        ));
    }
    if topic.len() > 255 {
        return Err(Error::invalid_topic(
            topic,
            "a topic name must be at most 255 bytes",
        ));
    }
    // Printable ASCII, the usual case, is checked byte by byte without decoding characters.
    let printable = topic.bytes().all(|b| (0x20..0x7f).contains(&b));
    let control = !printable && topic.chars().any(char::is_control);
    if control {
        return Err(Error::invalid_topic(
            topic,
            "a topic name must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_byte_scan_finds_exactly_the_control_characters() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let topic = format!("a{c}b");
            assert_eq!(
                super::validate_topic(&topic).is_err(),
                c.is_control(),
                "U+{:04X}",
                c as u32
            );
        }
    }
}
