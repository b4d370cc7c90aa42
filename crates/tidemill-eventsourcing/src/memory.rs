//! [`MemoryEventStore`]: the event store in process memory, for tests and prototypes.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{
    to_micros, AppendResult, Direction, ExpectedVersion, LogPosition, NewEvent, ReadStream,
    RecordedEvent, StreamInfo,
};
use crate::names::{validate_stream, StreamFilter};
use crate::projection::{BatchOutcome, Projection, ProjectionTx};
use crate::snapshot::SnapshotRecord;
use crate::store::{idempotent_outcome, EventStore, StoreConfig};

/// An event store in memory: one mutex, so appends are serialized and the global log is in
/// append order. Projections' checkpoints are written after each batch (at least once: the
/// read model is the projection's own business).
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, LogPosition, MemoryEventStore, NewEvent, StreamFilter};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append("a-1", ExpectedVersion::Any, vec![NewEvent::new("X", "1")]).await?;
/// store.append("b-1", ExpectedVersion::Any, vec![NewEvent::new("Y", "2")]).await?;
/// let all = store.read_all(LogPosition::START, &StreamFilter::parse("b-*")?, 10).await?;
/// assert_eq!(all.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryEventStore {
    config: StoreConfig,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    log: BTreeMap<i64, RecordedEvent>,
    next: i64,
    streams: HashMap<String, Meta>,
    ids: HashMap<Uuid, i64>,
    snapshots: HashMap<String, SnapshotRecord>,
    checkpoints: HashMap<String, LogPosition>,
    dead: Vec<(String, RecordedEvent, String)>,
}

#[derive(Debug, Default)]
struct Meta {
    info: StreamInfo,
    /// version → global position
    versions: BTreeMap<u64, i64>,
}

impl MemoryEventStore {
    /// An empty store with default settings.
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// assert_eq!(store.stream_info("s-1").await?.version, None);
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::with_config(StoreConfig::new())
    }

    /// An empty store with `config` (its clock and size limit; the prefix is unused).
    ///
    /// ```
    /// use tidemill_eventsourcing::{Error, EventStore, ExpectedVersion, MemoryEventStore, NewEvent, StoreConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::with_config(StoreConfig::new().max_event_bytes(16));
    /// let big = NewEvent::new("Big", vec![b'x'; 100]);
    /// let err = store.append("s-1", ExpectedVersion::Any, vec![big]).await.unwrap_err();
    /// assert!(matches!(err, Error::PayloadTooLarge { .. }));
    /// # Ok(()) }
    /// ```
    pub fn with_config(config: StoreConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
            notify: Notify::new(),
        }
    }
}

fn info_of(state: &State, stream: &str) -> StreamInfo {
    state
        .streams
        .get(stream)
        .map_or(StreamInfo::default(), |m| m.info)
}

fn tombstoned(stream: &str) -> Error {
    Error::StreamTombstoned {
        stream: stream.to_owned(),
    }
}

fn check(stream: &str, expected: ExpectedVersion, info: StreamInfo) -> Result<()> {
    if info.tombstoned {
        return Err(tombstoned(stream));
    }
    if !expected.accepts(info.version) {
        return Err(Error::Conflict {
            stream: stream.to_owned(),
            expected,
            actual: info.version,
        });
    }
    Ok(())
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.config.check_append(stream, &events)?;
        let now = (self.config.clock)();
        let result = {
            let mut st = self.state.lock();
            let existing = events
                .iter()
                .filter_map(|e| st.ids.get(&e.id))
                .filter_map(|p| st.log.get(p))
                .map(|r| (r.id, r.stream.clone(), r.version, r.position))
                .collect();
            let info = info_of(&st, stream);
            if info.tombstoned {
                return Err(tombstoned(stream));
            }
            if let Some(done) = idempotent_outcome(stream, expected, &events, existing)? {
                return Ok(done);
            }
            check(stream, expected, info)?;
            let mut version = info.version.unwrap_or(0);
            let mut position = LogPosition {
                commit: 0,
                position: st.next,
            };
            if events.is_empty() {
                return Ok(AppendResult {
                    version,
                    position,
                    written: false,
                });
            }
            let st = &mut *st;
            let meta = st.streams.entry(stream.to_owned()).or_default();
            for e in events {
                st.next += 1;
                version += 1;
                position = LogPosition {
                    commit: 0,
                    position: st.next,
                };
                st.ids.insert(e.id, st.next);
                meta.versions.insert(version, st.next);
                st.log.insert(
                    st.next,
                    RecordedEvent {
                        id: e.id,
                        stream: stream.to_owned(),
                        version,
                        position,
                        event_type: e.event_type,
                        schema_version: e.schema_version,
                        payload: e.payload,
                        metadata: e.metadata,
                        recorded_at: now,
                    },
                );
            }
            meta.info.version = Some(version);
            meta.info.deleted = false;
            AppendResult {
                version,
                position,
                written: true,
            }
        };
        self.notify.notify_waiters();
        Ok(result)
    }

    async fn read_stream(&self, stream: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        validate_stream(stream)?;
        let st = self.state.lock();
        let Some(meta) = st.streams.get(stream) else {
            return Ok(Vec::new());
        };
        if meta.info.tombstoned {
            return Err(tombstoned(stream));
        }
        if meta.info.deleted {
            return Ok(Vec::new());
        }
        let (lo, hi) = read.bounds(meta.info.visible_from);
        if lo > hi {
            return Ok(Vec::new());
        }
        let until = read.time_bound_micros();
        let range = meta.versions.range(lo..=hi);
        let pick = |(_, p): (&u64, &i64)| st.log.get(p).cloned();
        let events = match read.direction {
            Direction::Forward => range.filter_map(pick).collect::<Vec<_>>(),
            Direction::Backward => range.rev().filter_map(pick).collect(),
        };
        Ok(events
            .into_iter()
            .filter(|e| to_micros(e.recorded_at) <= until)
            .take(read.max_count)
            .collect())
    }

    async fn read_all(
        &self,
        after: LogPosition,
        filter: &StreamFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let st = self.state.lock();
        Ok(st
            .log
            .range(after.position + 1..)
            .map(|(_, e)| e)
            .filter(|e| filter.matches(&e.stream))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        validate_stream(stream)?;
        Ok(info_of(&self.state.lock(), stream))
    }

    async fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        validate_stream(stream)?;
        let mut st = self.state.lock();
        check(stream, expected, info_of(&st, stream))?;
        if let Some(meta) = st.streams.get_mut(stream) {
            meta.info.deleted = true;
            meta.info.visible_from = meta.info.version.unwrap_or(0) + 1;
        }
        Ok(())
    }

    async fn truncate_before(&self, stream: &str, version: u64) -> Result<()> {
        validate_stream(stream)?;
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(meta) = st.streams.get_mut(stream) else {
            return Ok(());
        };
        if meta.info.tombstoned {
            return Err(tombstoned(stream));
        }
        let keep = meta.versions.split_off(&version);
        for p in meta.versions.values() {
            if let Some(e) = st.log.remove(p) {
                st.ids.remove(&e.id);
            }
        }
        meta.versions = keep;
        meta.info.visible_from = meta.info.visible_from.max(version);
        Ok(())
    }

    async fn tombstone(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        validate_stream(stream)?;
        let mut st = self.state.lock();
        check(stream, expected, info_of(&st, stream))?;
        let st = &mut *st;
        let meta = st.streams.entry(stream.to_owned()).or_default();
        for p in meta.versions.values() {
            if let Some(e) = st.log.remove(p) {
                st.ids.remove(&e.id);
            }
        }
        meta.versions.clear();
        meta.info.tombstoned = true;
        st.snapshots.remove(stream);
        Ok(())
    }

    async fn save_snapshot(&self, record: SnapshotRecord) -> Result<()> {
        validate_stream(&record.stream)?;
        self.state
            .lock()
            .snapshots
            .insert(record.stream.clone(), record);
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<SnapshotRecord>> {
        validate_stream(stream)?;
        Ok(self.state.lock().snapshots.get(stream).cloned())
    }

    async fn load_checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
        Ok(self.state.lock().checkpoints.get(projection).copied())
    }

    async fn apply_projection(
        &self,
        projection: &dyn Projection,
        events: &[RecordedEvent],
    ) -> Result<BatchOutcome> {
        let mut tx = ProjectionTx::Memory(std::marker::PhantomData);
        let mut applied = 0;
        let mut failed = None;
        for e in events {
            if let Err(err) = projection.apply(&mut tx, e).await {
                failed = Some(err);
                break;
            }
            applied += 1;
        }
        if applied > 0 {
            self.state
                .lock()
                .checkpoints
                .insert(projection.name().to_owned(), events[applied - 1].position);
        }
        Ok(BatchOutcome { applied, failed })
    }

    async fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        error: &str,
    ) -> Result<()> {
        let mut st = self.state.lock();
        st.dead
            .push((projection.to_owned(), event.clone(), error.to_owned()));
        st.checkpoints.insert(projection.to_owned(), event.position);
        Ok(())
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<(RecordedEvent, String)>> {
        Ok(self
            .state
            .lock()
            .dead
            .iter()
            .filter(|d| d.0 == projection)
            .map(|d| (d.1.clone(), d.2.clone()))
            .collect())
    }

    async fn reset_projection(&self, projection: &dyn Projection) -> Result<()> {
        let mut tx = ProjectionTx::Memory(std::marker::PhantomData);
        projection
            .reset(&mut tx)
            .await
            .map_err(|e| Error::Config(format!("resetting projection: {e}")))?;
        self.state.lock().checkpoints.remove(projection.name());
        Ok(())
    }

    async fn appended(&self) {
        self.notify.notified().await;
    }
}
