//! The [`EventStore`] trait every backend implements, and the settings they share.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{
    AppendResult, ExpectedVersion, LogPosition, NewEvent, ReadStream, RecordedEvent, StreamInfo,
};
use crate::names::{validate_prefix, validate_stream, StreamFilter};
use crate::projection::{BatchOutcome, Projection};
use crate::snapshot::SnapshotRecord;

/// An append-only store of event streams with a global log.
///
/// Implemented by [`MemoryEventStore`](crate::MemoryEventStore) and, with the database
/// features, [`SqlEventStore`](crate::SqlEventStore). The conformance suite (feature
/// `conformance`) checks an implementation against the guarantees below.
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append("user-1", ExpectedVersion::NoStream, vec![NewEvent::new("Created", "{}")]).await?;
/// let err = store.append("user-1", ExpectedVersion::NoStream, vec![NewEvent::new("Created", "{}")]).await.unwrap_err();
/// assert!(err.is_conflict());
/// assert_eq!(store.read_stream("user-1", ReadStream::forward()).await?.len(), 1);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if its version satisfies `expected`; else
    /// [`Error::Conflict`] and nothing is written. Appending ids that are already stored by an
    /// identical earlier append succeeds without writing (`written: false`). An empty
    /// `events` only checks the expectation.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;

    /// Reads one stream. An unknown or soft-deleted stream reads as empty; a tombstoned one
    /// is [`Error::StreamTombstoned`].
    async fn read_stream(&self, stream: &str, read: ReadStream) -> Result<Vec<RecordedEvent>>;

    /// Reads the global log after `after`, in `(commit, position)` order, at most `limit`
    /// events. An event that is not returned yet because its transaction had not committed is
    /// never behind a later read's `after`: nothing is skipped.
    async fn read_all(
        &self,
        after: LogPosition,
        filter: &StreamFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The stream's version and lifecycle.
    async fn stream_info(&self, stream: &str) -> Result<StreamInfo>;

    /// Soft-deletes the stream: reads return nothing, its events stay in the global log, and
    /// the next append continues its versions (events from before the delete stay hidden).
    async fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()>;

    /// Removes the stream's events below `version` (from the stream and the global log).
    async fn truncate_before(&self, stream: &str, version: u64) -> Result<()>;

    /// Removes the stream's events and forbids its name for ever.
    async fn tombstone(&self, stream: &str, expected: ExpectedVersion) -> Result<()>;

    /// Stores the latest snapshot of `record.stream` (replacing an older one).
    async fn save_snapshot(&self, record: SnapshotRecord) -> Result<()>;

    /// The latest snapshot of `stream`.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<SnapshotRecord>>;

    /// The projection's checkpoint: the last event it applied.
    async fn load_checkpoint(&self, projection: &str) -> Result<Option<LogPosition>>;

    /// Applies `events` to `projection` and advances its checkpoint, in one transaction of the
    /// store's database (SQL backends): the read model's writes and the checkpoint commit
    /// together. Stops at the first failing event; those before it are committed.
    async fn apply_projection(
        &self,
        projection: &dyn Projection,
        events: &[RecordedEvent],
    ) -> Result<BatchOutcome>;

    /// Records `event` as dead-lettered by `projection` (with `error`) and moves the
    /// checkpoint past it.
    async fn dead_letter(&self, projection: &str, event: &RecordedEvent, error: &str)
        -> Result<()>;

    /// The events `projection` dead-lettered, oldest first: `(event, error)`.
    async fn dead_letters(&self, projection: &str) -> Result<Vec<(RecordedEvent, String)>>;

    /// Calls the projection's `reset` and deletes its checkpoint in one transaction, so the
    /// next run rebuilds it from the start of the log.
    async fn reset_projection(&self, projection: &dyn Projection) -> Result<()>;

    /// Completes when something may have been appended through this store object (a hint
    /// for live tails; other processes' appends are found by polling).
    async fn appended(&self);
}

/// A source of "now" for `recorded_at` (tests and replays set their own).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Settings every backend shares.
///
/// ```
/// use tidemill_eventsourcing::StoreConfig;
/// let config = StoreConfig::new().table_prefix("billing_es_").unwrap().max_event_bytes(64 * 1024);
/// assert_eq!(config.prefix(), "billing_es_");
/// assert!(StoreConfig::new().table_prefix("x\"; DROP").is_err());
/// ```
#[derive(Clone)]
pub struct StoreConfig {
    pub(crate) prefix: String,
    pub(crate) max_event_bytes: usize,
    pub(crate) clock: Clock,
    pub(crate) initialize_schema: bool,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("prefix", &self.prefix)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("initialize_schema", &self.initialize_schema)
            .finish_non_exhaustive()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The default largest event (payload plus metadata): 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

impl StoreConfig {
    /// Tables prefixed `es_`, events up to 1 MiB, the system clock, schema created on connect.
    pub fn new() -> Self {
        Self {
            prefix: "es_".to_owned(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            clock: Arc::new(SystemTime::now),
            initialize_schema: true,
        }
    }

    /// Table name prefix (validated: ASCII letters, digits, `_`; quoted in every statement).
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// The table prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Largest event (payload plus encoded metadata) accepted; larger ones are refused before
    /// anything is written.
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// The clock that stamps `recorded_at`.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether connecting creates the tables (default yes); off when migrations are managed
    /// elsewhere (see [`schema_sql`](crate::schema_sql)).
    pub fn initialize_schema(mut self, yes: bool) -> Self {
        self.initialize_schema = yes;
        self
    }

    /// Checks an append before anything is written: the stream name, event sizes and
    /// duplicate ids within the batch.
    pub(crate) fn check_append(&self, stream: &str, events: &[NewEvent]) -> Result<()> {
        validate_stream(stream)?;
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        for e in events {
            let size = e.payload.len() + e.metadata.to_json().len() + e.event_type.len();
            if size > self.max_event_bytes {
                return Err(Error::PayloadTooLarge {
                    stream: stream.to_owned(),
                    event_type: e.event_type.clone(),
                    size,
                    max: self.max_event_bytes,
                });
            }
            if e.event_type.is_empty() || e.event_type.len() > 200 {
                return Err(Error::Config(format!(
                    "event type {:?}: 1 to 200 bytes",
                    e.event_type
                )));
            }
            if !seen.insert(e.id) {
                return Err(Error::DuplicateEventId {
                    stream: stream.to_owned(),
                    event_id: e.id,
                });
            }
        }
        Ok(())
    }
}

/// An already stored event found by id during an append: `(id, stream, version, position)`.
pub(crate) type Existing = (Uuid, String, u64, LogPosition);

/// Decides what an append whose ids are (partly) stored already means: `Some(result)` for a
/// retry of the identical append, an error when the ids were used otherwise, `None` when none
/// is stored.
pub(crate) fn idempotent_outcome(
    stream: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    mut existing: Vec<Existing>,
) -> Result<Option<AppendResult>> {
    if existing.is_empty() {
        return Ok(None);
    }
    let dup = |id| Error::DuplicateEventId {
        stream: stream.to_owned(),
        event_id: id,
    };
    if existing.len() != events.len() {
        let id = existing[0].0;
        return Err(dup(id));
    }
    existing.sort_by_key(|e| e.2);
    let first = existing[0].2;
    for (i, (e, stored)) in events.iter().zip(&existing).enumerate() {
        if stored.0 != e.id || stored.1 != stream || stored.2 != first + i as u64 {
            return Err(dup(e.id));
        }
    }
    let before = (first > 1).then(|| first - 1);
    if !expected.accepts(before) {
        return Err(Error::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: before,
        });
    }
    let last = existing.last().expect("not empty");
    Ok(Some(AppendResult {
        version: last.2,
        position: last.3,
        written: false,
    }))
}
