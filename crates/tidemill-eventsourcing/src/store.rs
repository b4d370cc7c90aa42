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
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let r = store.append("order-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", "{}")]).await?;
    /// assert_eq!(r.version, 1);
    /// let stale = store.append("order-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", "{}")]).await;
    /// assert!(stale.unwrap_err().is_conflict());
    /// # Ok(()) }
    /// ```
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;

    /// Reads one stream. An unknown or soft-deleted stream reads as empty; a tombstoned one
    /// is [`Error::StreamTombstoned`].
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let events = vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")];
    /// store.append("s-1", ExpectedVersion::NoStream, events).await?;
    /// let newest = store.read_stream("s-1", ReadStream::backward().max_count(1)).await?;
    /// assert_eq!(newest[0].event_type, "B");
    /// assert!(store.read_stream("unknown-1", ReadStream::forward()).await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn read_stream(&self, stream: &str, read: ReadStream) -> Result<Vec<RecordedEvent>>;

    /// Reads the global log after `after`, in `(commit, position)` order, at most `limit`
    /// events. An event that is not returned yet because its transaction had not committed is
    /// never behind a later read's `after`: nothing is skipped.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, LogPosition, MemoryEventStore, NewEvent, StreamFilter};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("user-1", ExpectedVersion::Any, vec![NewEvent::new("Created", "{}")]).await?;
    /// store.append("order-1", ExpectedVersion::Any, vec![NewEvent::new("Placed", "{}")]).await?;
    /// let users = store.read_all(LogPosition::START, &StreamFilter::parse("user-*")?, 100).await?;
    /// assert_eq!(users.len(), 1);
    /// let all = store.read_all(LogPosition::START, &StreamFilter::All, 100).await?;
    /// assert!(store.read_all(all[1].position, &StreamFilter::All, 100).await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn read_all(
        &self,
        after: LogPosition,
        filter: &StreamFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The stream's version and lifecycle.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await?;
    /// assert_eq!(store.stream_info("s-1").await?.version, Some(1));
    /// # Ok(()) }
    /// ```
    async fn stream_info(&self, stream: &str) -> Result<StreamInfo>;

    /// Soft-deletes the stream: reads return nothing, its events stay in the global log, and
    /// the next append continues its versions (events from before the delete stay hidden).
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await?;
    /// store.delete_stream("s-1", ExpectedVersion::Exact(1)).await?;
    /// assert!(store.read_stream("s-1", ReadStream::forward()).await?.is_empty());
    /// let next = store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("B", "{}")]).await?;
    /// assert_eq!(next.version, 2);
    /// # Ok(()) }
    /// ```
    async fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()>;

    /// Removes the stream's events below `version` (from the stream and the global log).
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let events = vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")];
    /// store.append("s-1", ExpectedVersion::NoStream, events).await?;
    /// store.truncate_before("s-1", 2).await?;
    /// let left = store.read_stream("s-1", ReadStream::forward()).await?;
    /// assert_eq!(left.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    /// # Ok(()) }
    /// ```
    async fn truncate_before(&self, stream: &str, version: u64) -> Result<()>;

    /// Removes the stream's events and forbids its name for ever.
    ///
    /// ```
    /// use tidemill_eventsourcing::{Error, EventStore, ExpectedVersion, MemoryEventStore, NewEvent};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::NoStream, vec![NewEvent::new("A", "{}")]).await?;
    /// store.tombstone("s-1", ExpectedVersion::Any).await?;
    /// let again = store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("B", "{}")]).await;
    /// assert!(matches!(again, Err(Error::StreamTombstoned { .. })));
    /// # Ok(()) }
    /// ```
    async fn tombstone(&self, stream: &str, expected: ExpectedVersion) -> Result<()>;

    /// Stores the latest snapshot of `record.stream` (replacing an older one).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore, SnapshotRecord};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// let record = SnapshotRecord {
    ///     stream: "account-1".into(),
    ///     version: 10,
    ///     schema_version: 1,
    ///     payload: r#"{"balance":5}"#.into(),
    ///     recorded_at: SystemTime::now(),
    /// };
    /// store.save_snapshot(record.clone()).await?;
    /// assert_eq!(store.load_snapshot("account-1").await?, Some(record));
    /// # Ok(()) }
    /// ```
    async fn save_snapshot(&self, record: SnapshotRecord) -> Result<()>;

    /// The latest snapshot of `stream`.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert_eq!(store.load_snapshot("account-1").await?, None);
    /// # Ok(()) }
    /// ```
    async fn load_snapshot(&self, stream: &str) -> Result<Option<SnapshotRecord>>;

    /// The projection's checkpoint: the last event it applied.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert_eq!(store.load_checkpoint("never-ran").await?, None);
    /// # Ok(()) }
    /// ```
    async fn load_checkpoint(&self, projection: &str) -> Result<Option<LogPosition>>;

    /// Applies `events` to `projection` and advances its checkpoint, in one transaction of the
    /// store's database (SQL backends): the read model's writes and the checkpoint commit
    /// together. Stops at the first failing event; those before it are committed.
    ///
    /// ```
    /// use tidemill_eventsourcing::{
    ///     EventStore, ExpectedVersion, LogPosition, MemoryEventStore, NewEvent, Projection, ProjectionTx,
    ///     RecordedEvent, StreamFilter,
    /// };
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}")]).await?;
    /// let batch = store.read_all(LogPosition::START, &StreamFilter::All, 10).await?;
    /// let outcome = store.apply_projection(&Count, &batch).await?;
    /// assert_eq!(outcome.applied, 1);
    /// assert_eq!(store.load_checkpoint("count").await?, Some(batch[0].position));
    /// # Ok(()) }
    /// ```
    async fn apply_projection(
        &self,
        projection: &dyn Projection,
        events: &[RecordedEvent],
    ) -> Result<BatchOutcome>;

    /// Records `event` as dead-lettered by `projection` (with `error`) and moves the
    /// checkpoint past it.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, LogPosition, MemoryEventStore, NewEvent, StreamFilter};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("Poison", "{}")]).await?;
    /// let e = store.read_all(LogPosition::START, &StreamFilter::All, 1).await?.remove(0);
    /// store.dead_letter("count", &e, "cannot handle Poison").await?;
    /// assert_eq!(store.load_checkpoint("count").await?, Some(e.position));
    /// assert_eq!(store.dead_letters("count").await?[0].1, "cannot handle Poison");
    /// # Ok(()) }
    /// ```
    async fn dead_letter(&self, projection: &str, event: &RecordedEvent, error: &str)
        -> Result<()>;

    /// The events `projection` dead-lettered, oldest first: `(event, error)`.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert!(store.dead_letters("count").await?.is_empty());
    /// # Ok(()) }
    /// ```
    async fn dead_letters(&self, projection: &str) -> Result<Vec<(RecordedEvent, String)>>;

    /// Calls the projection's `reset` and deletes its checkpoint in one transaction, so the
    /// next run rebuilds it from the start of the log.
    ///
    /// ```
    /// use tidemill_eventsourcing::{
    ///     EventStore, ExpectedVersion, LogPosition, MemoryEventStore, NewEvent, Projection, ProjectionTx,
    ///     RecordedEvent, StreamFilter,
    /// };
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}")]).await?;
    /// let batch = store.read_all(LogPosition::START, &StreamFilter::All, 10).await?;
    /// store.apply_projection(&Count, &batch).await?;
    /// store.reset_projection(&Count).await?;
    /// assert_eq!(store.load_checkpoint("count").await?, None);
    /// # Ok(()) }
    /// ```
    async fn reset_projection(&self, projection: &dyn Projection) -> Result<()>;

    /// Completes when something may have been appended through this store object (a hint
    /// for live tails; other processes' appends are found by polling).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = Arc::new(MemoryEventStore::new());
    /// let waiting = tokio::spawn({
    ///     let store = store.clone();
    ///     async move { store.appended().await }
    /// });
    /// tokio::task::yield_now().await; // let it start waiting
    /// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}")]).await?;
    /// waiting.await.unwrap();
    /// # Ok(()) }
    /// ```
    async fn appended(&self);
}

/// A source of "now" for `recorded_at` (tests and replays set their own).
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use tidemill_eventsourcing::{Clock, StoreConfig};
/// let fixed: Clock = Arc::new(|| SystemTime::UNIX_EPOCH + Duration::from_secs(60));
/// let config = StoreConfig::new().clock(fixed);
/// # drop(config);
/// ```
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
///
/// ```
/// assert_eq!(tidemill_eventsourcing::DEFAULT_MAX_EVENT_BYTES, 1024 * 1024);
/// ```
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

impl StoreConfig {
    /// Tables prefixed `es_`, events up to 1 MiB, the system clock, schema created on connect.
    ///
    /// ```
    /// let config = tidemill_eventsourcing::StoreConfig::new();
    /// assert_eq!(config.prefix(), "es_");
    /// ```
    pub fn new() -> Self {
        Self {
            prefix: "es_".to_owned(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            clock: Arc::new(SystemTime::now),
            initialize_schema: true,
        }
    }

    /// Table name prefix (validated: ASCII letters, digits, `_`; quoted in every statement).
    ///
    /// ```
    /// use tidemill_eventsourcing::StoreConfig;
    /// assert_eq!(StoreConfig::new().table_prefix("billing_").unwrap().prefix(), "billing_");
    /// assert!(StoreConfig::new().table_prefix("no spaces").is_err());
    /// ```
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// The table prefix.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::StoreConfig::default().prefix(), "es_");
    /// ```
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Largest event (payload plus encoded metadata) accepted; larger ones are refused before
    /// anything is written.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, StoreConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::with_config(StoreConfig::new().max_event_bytes(1024));
    /// let err = store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("E", vec![0u8; 2048])]).await;
    /// assert!(err.is_err());
    /// # Ok(()) }
    /// ```
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// The clock that stamps `recorded_at`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::SystemTime;
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream, StoreConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let config = StoreConfig::new().clock(Arc::new(|| SystemTime::UNIX_EPOCH));
    /// let store = MemoryEventStore::with_config(config);
    /// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("E", "{}")]).await?;
    /// let e = &store.read_stream("s-1", ReadStream::forward()).await?[0];
    /// assert_eq!(e.recorded_at, SystemTime::UNIX_EPOCH);
    /// # Ok(()) }
    /// ```
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether connecting creates the tables (default yes); off when migrations are managed
    /// elsewhere (see [`schema_sql`](crate::schema_sql)).
    ///
    /// ```
    /// use tidemill_eventsourcing::{schema_sql, SqlEventStore, StoreConfig};
    /// use tidemill_sql::{Backend, SqlConfig, SqlPool};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let pool = SqlPool::connect(&SqlConfig::from_url("sqlite::memory:").unwrap()).await.unwrap();
    /// // Migrations managed elsewhere: here, run by hand.
    /// let SqlPool::Sqlite(p) = &pool else { unreachable!() };
    /// for statement in schema_sql(Backend::Sqlite, "es_")? {
    ///     sqlx::query(&statement).execute(p).await.unwrap();
    /// }
    /// let store = SqlEventStore::new(pool, StoreConfig::new().initialize_schema(false)).await?;
    /// # drop(store);
    /// # Ok(()) }
    /// ```
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
