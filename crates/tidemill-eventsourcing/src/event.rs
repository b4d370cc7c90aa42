//! Events as they are appended ([`NewEvent`]) and as they are read ([`RecordedEvent`]), and
//! the arguments of appends and reads.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an append expects of the stream's current version.
///
/// ```
/// use tidemill_eventsourcing::ExpectedVersion;
/// assert!(ExpectedVersion::Exact(2).accepts(Some(2)));
/// assert!(ExpectedVersion::NoStream.accepts(None));
/// assert!(!ExpectedVersion::Exists.accepts(None));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever the stream holds.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    Exists,
    /// The stream's last event has exactly this version (versions start at 1).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose version is `actual` (`None`: no events) satisfies this.
    ///
    /// ```
    /// use tidemill_eventsourcing::ExpectedVersion;
    /// assert!(ExpectedVersion::Any.accepts(Some(7)));
    /// assert!(ExpectedVersion::Exact(0).accepts(None));
    /// assert!(!ExpectedVersion::Exact(3).accepts(Some(4)));
    /// ```
    pub fn accepts(self, actual: Option<u64>) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual.is_none(),
            Self::Exists => actual.is_some(),
            Self::Exact(n) => actual == Some(n) || (n == 0 && actual.is_none()),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exists => f.write_str("an existing stream"),
            Self::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// Correlation, causation and trace context of an event, plus free-form string entries.
///
/// ```
/// use tidemill_eventsourcing::EventMetadata;
/// let md = EventMetadata::default().correlation_id("req-7").with("tenant", "acme");
/// assert_eq!(md.correlation_id.as_deref(), Some("req-7"));
/// assert_eq!(md.extra.get("tenant").map(String::as_str), Some("acme"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The id shared by everything one request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message or event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C `traceparent` of the span that appended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl EventMetadata {
    /// Sets the correlation id.
    ///
    /// ```
    /// let md = tidemill_eventsourcing::EventMetadata::default().correlation_id("req-1");
    /// assert_eq!(md.correlation_id.as_deref(), Some("req-1"));
    /// ```
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    ///
    /// ```
    /// let md = tidemill_eventsourcing::EventMetadata::default().causation_id("cmd-9");
    /// assert_eq!(md.causation_id.as_deref(), Some("cmd-9"));
    /// ```
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the trace context (`traceparent`).
    ///
    /// ```
    /// let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    /// let md = tidemill_eventsourcing::EventMetadata::default().traceparent(tp);
    /// assert_eq!(md.traceparent.as_deref(), Some(tp));
    /// ```
    pub fn traceparent(mut self, value: impl Into<String>) -> Self {
        self.traceparent = Some(value.into());
        self
    }

    /// Adds a free-form entry.
    ///
    /// ```
    /// let md = tidemill_eventsourcing::EventMetadata::default().with("tenant", "acme");
    /// assert_eq!(md.extra["tenant"], "acme");
    /// ```
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub(crate) fn to_json(&self) -> String {
        // Most events carry none: skip the serializer for them.
        if self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.traceparent.is_none()
            && self.extra.is_empty()
        {
            return "{}".to_owned();
        }
        serde_json::to_string(self).expect("string maps always serialize")
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// An event to append.
///
/// ```
/// use tidemill_eventsourcing::NewEvent;
/// let e = NewEvent::new("UserCreated", r#"{"name":"Ada"}"#).schema_version(2);
/// assert_eq!(e.event_type, "UserCreated");
/// assert_eq!(e.schema_version, 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// The event's id: appending an id again (a retry) does not store it twice.
    pub id: Uuid,
    /// The type name.
    pub event_type: String,
    /// The payload's schema version (1 unless the type changed; see upcasting).
    pub schema_version: u32,
    /// The payload (JSON for the typed layer; any bytes for the store).
    pub payload: Bytes,
    /// Correlation, causation, trace context.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// An event with a new (time-ordered) id, schema version 1 and no metadata.
    ///
    /// ```
    /// let e = tidemill_eventsourcing::NewEvent::new("Placed", r#"{"seats":2}"#);
    /// assert_eq!((e.event_type.as_str(), e.schema_version), ("Placed", 1));
    /// assert_eq!(&e.payload[..], br#"{"seats":2}"#);
    /// ```
    pub fn new(event_type: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: EventMetadata::default(),
        }
    }

    /// Sets the id (for appends that must be idempotent across retries).
    ///
    /// ```
    /// let id = uuid::Uuid::new_v4();
    /// let e = tidemill_eventsourcing::NewEvent::new("Placed", "{}").id(id);
    /// assert_eq!(e.id, id);
    /// ```
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the schema version.
    ///
    /// ```
    /// let e = tidemill_eventsourcing::NewEvent::new("Placed", "{}").schema_version(3);
    /// assert_eq!(e.schema_version, 3);
    /// ```
    pub fn schema_version(mut self, v: u32) -> Self {
        self.schema_version = v;
        self
    }

    /// Sets the metadata.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventMetadata, NewEvent};
    /// let e = NewEvent::new("Placed", "{}").metadata(EventMetadata::default().correlation_id("r-1"));
    /// assert_eq!(e.metadata.correlation_id.as_deref(), Some("r-1"));
    /// ```
    pub fn metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A place in the global log: events are ordered by `(commit, position)`.
///
/// `position` is the event's global position (unique, increasing in insertion order).
/// `commit` orders transactions where the database can commit them out of position order
/// (PostgreSQL: the inserting transaction's id); it is 0 on the other backends. Keep the whole
/// value as a checkpoint and read on from it with
/// [`EventStore::read_all`](crate::EventStore::read_all).
///
/// ```
/// use tidemill_eventsourcing::LogPosition;
/// assert!(LogPosition::START < LogPosition { commit: 0, position: 1 });
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The commit order key (PostgreSQL transaction id; 0 elsewhere).
    pub commit: i64,
    /// The global position.
    pub position: i64,
}

impl LogPosition {
    /// Before the first event.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, LogPosition, MemoryEventStore, StreamFilter};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert!(store.read_all(LogPosition::START, &StreamFilter::All, 10).await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub const START: Self = Self {
        commit: 0,
        position: 0,
    };
}

/// An event as stored.
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append("cart-1", ExpectedVersion::NoStream, vec![NewEvent::new("Added", "{}")]).await?;
/// let e = &store.read_stream("cart-1", ReadStream::forward()).await?[0];
/// assert_eq!((e.stream.as_str(), e.version, e.event_type.as_str()), ("cart-1", 1, "Added"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// The event's id.
    pub id: Uuid,
    /// Its stream.
    pub stream: String,
    /// Its version in the stream (1, 2, ...).
    pub version: u64,
    /// Its place in the global log.
    pub position: LogPosition,
    /// The type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload.
    pub payload: Bytes,
    /// Correlation, causation, trace context.
    pub metadata: EventMetadata,
    /// When the store wrote it (its clock).
    pub recorded_at: SystemTime,
}

/// What an append wrote (or, for a retried append, had written).
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// let events = vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")];
/// let r = store.append("s-1", ExpectedVersion::NoStream, events).await?;
/// assert_eq!((r.version, r.written), (2, true));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append: the version of its last event.
    pub version: u64,
    /// The global position of the last event.
    pub position: LogPosition,
    /// `false` when every event was already stored by an earlier identical append.
    pub written: bool,
}

/// Which way a stream is read.
///
/// ```
/// use tidemill_eventsourcing::{Direction, ReadStream};
/// assert_eq!(ReadStream::backward().direction, Direction::Backward);
/// assert_eq!(Direction::default(), Direction::Forward);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// How to read one stream: direction, start, count and an "as of" bound.
///
/// ```
/// use tidemill_eventsourcing::ReadStream;
/// let read = ReadStream::backward().max_count(1); // the last event
/// # drop(read);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStream {
    /// Direction.
    pub direction: Direction,
    /// First version returned (forward: this and later; backward: this and earlier).
    /// `None`: the stream's start (forward) or end (backward).
    pub from: Option<u64>,
    /// At most this many events.
    pub max_count: usize,
    /// Only events recorded at or before this time.
    pub as_of_time: Option<SystemTime>,
    /// Only events up to this version.
    pub as_of_version: Option<u64>,
}

impl Default for ReadStream {
    fn default() -> Self {
        Self::forward()
    }
}

impl ReadStream {
    /// The whole stream, oldest first.
    ///
    /// ```
    /// let read = tidemill_eventsourcing::ReadStream::forward();
    /// assert_eq!((read.from, read.max_count), (None, usize::MAX));
    /// ```
    pub fn forward() -> Self {
        Self {
            direction: Direction::Forward,
            from: None,
            max_count: usize::MAX,
            as_of_time: None,
            as_of_version: None,
        }
    }

    /// The whole stream, newest first.
    ///
    /// ```
    /// use tidemill_eventsourcing::{Direction, ReadStream};
    /// assert_eq!(ReadStream::backward().direction, Direction::Backward);
    /// ```
    pub fn backward() -> Self {
        Self {
            direction: Direction::Backward,
            ..Self::forward()
        }
    }

    /// Starts at `version`.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let events = vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")];
    /// store.append("s-1", ExpectedVersion::NoStream, events).await?;
    /// let tail = store.read_stream("s-1", ReadStream::forward().from(2)).await?;
    /// assert_eq!(tail[0].event_type, "B");
    /// # Ok(()) }
    /// ```
    pub fn from(mut self, version: u64) -> Self {
        self.from = Some(version);
        self
    }

    /// Returns at most `n` events.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::ReadStream::forward().max_count(10).max_count, 10);
    /// ```
    pub fn max_count(mut self, n: usize) -> Self {
        self.max_count = n;
        self
    }

    /// The stream as it was at `time`: events recorded later are left out.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await?;
    /// let before = store.read_stream("s-1", ReadStream::forward().as_of_time(SystemTime::UNIX_EPOCH)).await?;
    /// assert!(before.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn as_of_time(mut self, time: SystemTime) -> Self {
        self.as_of_time = Some(time);
        self
    }

    /// The stream as it was at `version`.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let events = vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")];
    /// store.append("s-1", ExpectedVersion::NoStream, events).await?;
    /// let then = store.read_stream("s-1", ReadStream::forward().as_of_version(1)).await?;
    /// assert_eq!(then.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn as_of_version(mut self, version: u64) -> Self {
        self.as_of_version = Some(version);
        self
    }

    /// The version range `[lo, hi]` this read covers, before `max_count`.
    pub(crate) fn bounds(&self, visible_from: u64) -> (u64, u64) {
        let mut lo = visible_from.max(1);
        let mut hi = self.as_of_version.unwrap_or(u64::MAX >> 2);
        match (self.direction, self.from) {
            (Direction::Forward, Some(f)) => lo = lo.max(f),
            (Direction::Backward, Some(f)) => hi = hi.min(f),
            _ => {}
        }
        (lo, hi)
    }

    pub(crate) fn time_bound_micros(&self) -> i64 {
        self.as_of_time.map_or(i64::MAX, to_micros)
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn limit(&self) -> i64 {
        self.max_count.min(i64::MAX as usize) as i64
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub(crate) fn to_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(i64::MAX as u128) as i64)
}

#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// A stream's state: its version and lifecycle.
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await?;
/// store.delete_stream("s-1", ExpectedVersion::Exact(1)).await?;
/// let info = store.stream_info("s-1").await?;
/// assert!(info.deleted && !info.tombstoned);
/// assert_eq!(info.version, Some(1));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// The last event's version (`None`: no events yet).
    pub version: Option<u64>,
    /// Events below this version are gone (truncated) or hidden (soft delete).
    pub visible_from: u64,
    /// Soft-deleted: reads return nothing until the next append.
    pub deleted: bool,
    /// Tombstoned: never readable or writable again.
    pub tombstoned: bool,
}

#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) const STATE_LIVE: i64 = 0;
#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) const STATE_DELETED: i64 = 1;
#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) const STATE_TOMBSTONED: i64 = 2;

impl StreamInfo {
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn from_row(version: i64, visible_from: i64, state: i64) -> Self {
        Self {
            version: (version > 0).then_some(version as u64),
            visible_from: visible_from.max(1) as u64,
            deleted: state == STATE_DELETED,
            tombstoned: state == STATE_TOMBSTONED,
        }
    }
}
