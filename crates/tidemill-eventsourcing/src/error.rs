//! [`Error`]: everything the event store, repositories and projections report.

use tidemill::BoxError;

use crate::event::ExpectedVersion;

/// The crate's result type.
///
/// ```
/// fn version_of(info: tidemill_eventsourcing::StreamInfo) -> tidemill_eventsourcing::Result<u64> {
///     Ok(info.version.unwrap_or(0))
/// }
/// assert_eq!(version_of(Default::default()).unwrap(), 0);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, naming the stream (and version and event type where there is one).
///
/// ```
/// use tidemill_eventsourcing::{Error, ExpectedVersion};
/// let err = Error::Conflict { stream: "user-1".into(), expected: ExpectedVersion::NoStream, actual: Some(3) };
/// assert_eq!(err.to_string(), "stream \"user-1\": expected no stream, found version 3");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version did not match the expectation; nothing was written.
    #[error("stream {stream:?}: expected {expected}, found {}", actual.map_or("no stream".to_owned(), |v| format!("version {v}")))]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version (`None`: no events yet).
        actual: Option<u64>,
    },
    /// The stream name is not valid; nothing was sent to the database.
    #[error("invalid stream name {stream:?}: {reason}")]
    InvalidStream {
        /// The rejected name.
        stream: String,
        /// Why.
        reason: &'static str,
    },
    /// A setting or name that cannot take effect.
    #[error("configuration: {0}")]
    Config(String),
    /// An event's payload (or metadata) is larger than the store accepts; nothing was written.
    #[error(
        "stream {stream:?}: event {event_type:?} is {size} bytes, more than the {max} allowed"
    )]
    PayloadTooLarge {
        /// The stream appended to.
        stream: String,
        /// The event's type.
        event_type: String,
        /// Payload plus metadata, in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An event id of the append is already stored elsewhere (another stream or version, or
    /// only part of the batch): not a retry of the same append. Nothing was written.
    #[error("stream {stream:?}: event id {event_id} is already used by another append")]
    DuplicateEventId {
        /// The stream appended to.
        stream: String,
        /// The id.
        event_id: uuid::Uuid,
    },
    /// The stream was tombstoned: it can never be read or written again.
    #[error("stream {stream:?} is tombstoned")]
    StreamTombstoned {
        /// The stream.
        stream: String,
    },
    /// A stored event's type is not one the reader knows.
    #[error("stream {stream:?} version {version}: unknown event type {event_type:?}")]
    UnknownEventType {
        /// The stream of the event.
        stream: String,
        /// Its version.
        version: u64,
        /// Its type name.
        event_type: String,
    },
    /// A stored event's payload could not be decoded (or upcast) into the reader's type.
    #[error("stream {stream:?} version {version}: cannot decode event {event_type:?} (schema v{schema_version}): {source}")]
    Decode {
        /// The stream of the event.
        stream: String,
        /// Its version.
        version: u64,
        /// Its type name.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A snapshot could not be encoded or decoded.
    #[error("stream {stream:?}: snapshot: {source}")]
    Snapshot {
        /// The aggregate's stream.
        stream: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A projection's handler failed on an event.
    #[error("projection {projection:?} at stream {stream:?} version {version} ({event_type:?}): {source}")]
    Projection {
        /// The projection.
        projection: String,
        /// The stream of the event.
        stream: String,
        /// Its version.
        version: u64,
        /// Its type name.
        event_type: String,
        /// The handler's error.
        #[source]
        source: BoxError,
    },
    /// Publishing appended events through the outbox failed; the append was rolled back.
    #[error("publishing stream {stream:?}'s events through the outbox: {source}")]
    Outbox {
        /// The stream appended to.
        stream: String,
        /// The cause.
        #[source]
        source: tidemill::Error,
    },
    /// Projections run under a router ended with errors (reported when the router closes).
    #[error("{} projection(s) failed: {}", failures.len(), failures.iter().map(|(n, e)| format!("{n:?}: {e}")).collect::<Vec<_>>().join("; "))]
    ProjectionsFailed {
        /// `(projection name, its error)`.
        failures: Vec<(String, Error)>,
    },
    /// The database failed.
    #[error("{operation}: {source}")]
    Database {
        /// What the store was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn db(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Database {
            operation,
            source: source.into(),
        }
    }

    /// Whether this is a [`Conflict`](Error::Conflict).
    ///
    /// ```
    /// let err = tidemill_eventsourcing::Error::Config("x".into());
    /// assert!(!err.is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
