//! [`Repository`]: loads aggregates (snapshot plus tail), runs commands, appends with the
//! loaded version, retries on conflict when asked, takes snapshots by policy.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::aggregate::{decode_event, encode_event, Aggregate};
use crate::error::{Error, Result};
use crate::event::{AppendResult, EventMetadata, ExpectedVersion, ReadStream, RecordedEvent};
use crate::snapshot::{SnapshotPolicy, SnapshotRecord};
use crate::store::EventStore;
use crate::upcast::Upcasters;

/// An aggregate as loaded.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tidemill_eventsourcing::Aggregate;
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
/// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # impl Aggregate for Counter {
/// #     const CATEGORY: &'static str = "counter";
/// #     type Event = Ev; type Command = i64; type Error = TooBig;
/// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
/// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
/// # }
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{MemoryEventStore, Repository};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
/// repo.execute("c1", 3).await?;
/// let loaded = repo.load("c1").await?;
/// assert_eq!((loaded.state.value, loaded.version, loaded.snapshot, loaded.events_read), (3, Some(1), None, 1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version it includes (`None`: no events).
    pub version: Option<u64>,
    /// The version of the snapshot it started from, if one was used.
    pub snapshot: Option<u64>,
    /// How many events were read after the snapshot.
    pub events_read: usize,
}

/// Why a command did not go through.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tidemill_eventsourcing::Aggregate;
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
/// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # impl Aggregate for Counter {
/// #     const CATEGORY: &'static str = "counter";
/// #     type Event = Ev; type Command = i64; type Error = TooBig;
/// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
/// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
/// # }
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{ExecuteError, MemoryEventStore, Repository};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
/// assert!(matches!(repo.execute("c1", 50).await, Err(ExecuteError::Rejected(TooBig))));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate rejected the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed (including a [`Conflict`](Error::Conflict) left after the retries).
    #[error(transparent)]
    Store(#[from] Error),
}

/// Loads and saves aggregates of type `A`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tidemill_eventsourcing::Aggregate;
/// # #[derive(Default, Serialize, Deserialize)] struct Counter { value: i64 }
/// # #[derive(Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # impl Aggregate for Counter {
/// #     const CATEGORY: &'static str = "counter";
/// #     type Event = Ev; type Command = i64; type Error = TooBig;
/// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
/// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
/// # }
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{ExecuteError, MemoryEventStore, Repository, SnapshotPolicy};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()))
///     .snapshots(SnapshotPolicy::EveryN(2))
///     .retry_on_conflict(3);
/// repo.execute("c1", 4).await?;
/// repo.execute("c1", 5).await?;
/// assert!(matches!(repo.execute("c1", 1).await, Err(ExecuteError::Rejected(TooBig))));
/// let loaded = repo.load("c1").await?;
/// assert_eq!((loaded.state.value, loaded.version, loaded.snapshot), (9, Some(2), Some(2)));
/// # Ok(()) }
/// ```
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    policy: SnapshotPolicy,
    upcasters: Upcasters,
    retries: u32,
    _a: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            policy: self.policy,
            upcasters: self.upcasters.clone(),
            retries: self.retries,
            _a: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`: no snapshots, no upcasters, no retries.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository};
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
    /// # drop(repo);
    /// ```
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            policy: SnapshotPolicy::Never,
            upcasters: Upcasters::new(),
            retries: 0,
            _a: PhantomData,
        }
    }

    /// When to take snapshots.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository, SnapshotPolicy};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new())).snapshots(SnapshotPolicy::EveryN(1));
    /// repo.execute("c1", 1).await?;
    /// assert_eq!(repo.load("c1").await?.snapshot, Some(1));
    /// # Ok(()) }
    /// ```
    pub fn snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The upcasters for stored events of older schema versions.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, Repository, Upcasters};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = Arc::new(MemoryEventStore::new());
    /// // Schema 0 stored the amount as "n".
    /// let old = NewEvent::new("Added", r#"{"n":4}"#).schema_version(0);
    /// store.append("counter-c1", ExpectedVersion::NoStream, vec![old]).await?;
    /// let up = Upcasters::new().register("Added", 0, |v| Ok(serde_json::json!({ "by": v["n"] })));
    /// let repo = Repository::<Counter>::new(store).upcasters(up);
    /// assert_eq!(repo.load("c1").await?.state.value, 4);
    /// # Ok(()) }
    /// ```
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// On a [`Conflict`](Error::Conflict), reload and handle the command again up to `n`
    /// times.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository};
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new())).retry_on_conflict(3);
    /// # drop(repo);
    /// ```
    pub fn retry_on_conflict(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The stream of aggregate `id`: `<CATEGORY>-<id>`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// assert_eq!(tidemill_eventsourcing::Repository::<Counter>::stream_of("42"), "counter-42");
    /// ```
    pub fn stream_of(id: &str) -> String {
        format!("{}-{id}", A::CATEGORY)
    }

    /// Decodes a stored event of this aggregate (upcasting it).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore, ReadStream, Repository};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = Arc::new(MemoryEventStore::new());
    /// let repo = Repository::<Counter>::new(store.clone());
    /// repo.execute("c1", 2).await?;
    /// let record = &store.read_stream("counter-c1", ReadStream::forward()).await?[0];
    /// assert!(matches!(repo.decode(record)?, Ev::Added { by: 2 }));
    /// # Ok(()) }
    /// ```
    pub fn decode(&self, record: &RecordedEvent) -> Result<A::Event> {
        decode_event(
            record,
            &self.upcasters,
            A::schema_version(&record.event_type),
        )
    }

    /// Loads aggregate `id`: its latest usable snapshot, then the events after it.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
    /// assert_eq!(repo.load("new").await?.version, None);
    /// repo.execute("c1", 2).await?;
    /// assert_eq!(repo.load("c1").await?.state.value, 2);
    /// # Ok(()) }
    /// ```
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream = Self::stream_of(id);
        let mut loaded = Loaded {
            state: A::default(),
            version: None,
            snapshot: None,
            events_read: 0,
        };
        if self.policy != SnapshotPolicy::Never {
            if let Some(snap) = self.store.load_snapshot(&stream).await? {
                if snap.schema_version == A::SNAPSHOT_VERSION {
                    match serde_json::from_slice::<A>(&snap.payload) {
                        Ok(state) => {
                            loaded.state = state;
                            loaded.version = Some(snap.version);
                            loaded.snapshot = Some(snap.version);
                        }
                        // A snapshot is only a cache: fall back to the events.
                        Err(e) => tracing::warn!(%stream, "ignoring an undecodable snapshot: {e}"),
                    }
                }
            }
        }
        let from = loaded.version.map_or(1, |v| v + 1);
        self.fold(&stream, ReadStream::forward().from(from), &mut loaded)
            .await?;
        Ok(loaded)
    }

    /// Aggregate `id` as it was at the end of `read` (e.g. `ReadStream::forward().as_of_time(t)`),
    /// from its events only.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, ReadStream, Repository};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
    /// repo.execute("c1", 2).await?;
    /// repo.execute("c1", 3).await?;
    /// let then = repo.load_as_of("c1", ReadStream::forward().as_of_version(1)).await?;
    /// assert_eq!(then.state.value, 2);
    /// # Ok(()) }
    /// ```
    pub async fn load_as_of(&self, id: &str, read: ReadStream) -> Result<Loaded<A>> {
        let mut loaded = Loaded {
            state: A::default(),
            version: None,
            snapshot: None,
            events_read: 0,
        };
        self.fold(&Self::stream_of(id), read, &mut loaded).await?;
        Ok(loaded)
    }

    async fn fold(&self, stream: &str, read: ReadStream, loaded: &mut Loaded<A>) -> Result<()> {
        for record in self.store.read_stream(stream, read).await? {
            let event = self.decode(&record)?;
            loaded.state.apply(&event);
            loaded.version = Some(record.version);
            loaded.events_read += 1;
        }
        Ok(())
    }

    /// Runs `command` on aggregate `id` and appends its events.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new()));
    /// let r = repo.execute("c1", 2).await?;
    /// assert_eq!(r.version, 1);
    /// # Ok(()) }
    /// ```
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<AppendResult, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_with(id, command, EventMetadata::default())
            .await
    }

    /// Like [`execute`](Self::execute), stamping every event with `metadata`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{EventMetadata, EventStore, MemoryEventStore, ReadStream, Repository};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = Arc::new(MemoryEventStore::new());
    /// let repo = Repository::<Counter>::new(store.clone());
    /// repo.execute_with("c1", 2, EventMetadata::default().correlation_id("req-1")).await?;
    /// let e = &store.read_stream("counter-c1", ReadStream::forward()).await?[0];
    /// assert_eq!(e.metadata.correlation_id.as_deref(), Some("req-1"));
    /// # Ok(()) }
    /// ```
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: EventMetadata,
    ) -> Result<AppendResult, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let stream = Self::stream_of(id);
        let mut attempt = 0;
        loop {
            let mut loaded = self.load(id).await?;
            let events = loaded
                .state
                .handle(command.clone())
                .map_err(ExecuteError::Rejected)?;
            let expected = match loaded.version {
                None => ExpectedVersion::NoStream,
                Some(v) => ExpectedVersion::Exact(v),
            };
            let mut new = Vec::with_capacity(events.len());
            for e in &events {
                let mut n = encode_event(e, 1)?;
                n.schema_version = A::schema_version(&n.event_type);
                n.metadata = metadata.clone();
                new.push(n);
            }
            match self.store.append(&stream, expected, new).await {
                Ok(result) => {
                    let before = loaded.version.unwrap_or(0);
                    if self.policy.due(before, result.version) {
                        for e in &events {
                            loaded.state.apply(e);
                        }
                        self.snapshot(&stream, &loaded.state, result.version).await;
                    }
                    return Ok(result);
                }
                Err(e) if e.is_conflict() && attempt < self.retries => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn snapshot(&self, stream: &str, state: &A, version: u64) {
        let payload = match serde_json::to_vec(state) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%stream, "cannot encode a snapshot: {e}");
                return;
            }
        };
        let record = SnapshotRecord {
            stream: stream.to_owned(),
            version,
            schema_version: A::SNAPSHOT_VERSION,
            payload: payload.into(),
            recorded_at: std::time::SystemTime::now(),
        };
        // The events are stored; a missing snapshot only costs a longer load next time.
        if let Err(e) = self.store.save_snapshot(record).await {
            tracing::warn!(%stream, "cannot save a snapshot: {e}");
        }
    }

    /// Takes a snapshot of aggregate `id` now (whatever the policy).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use tidemill_eventsourcing::Aggregate;
    /// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
    /// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
    /// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
    /// # impl Aggregate for Counter {
    /// #     const CATEGORY: &'static str = "counter";
    /// #     type Event = Ev; type Command = i64; type Error = TooBig;
    /// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
    /// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
    /// # }
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Repository, SnapshotPolicy};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter>::new(Arc::new(MemoryEventStore::new())).snapshots(SnapshotPolicy::EveryN(100));
    /// repo.execute("c1", 2).await?;
    /// assert_eq!(repo.take_snapshot("c1").await?, Some(1));
    /// assert_eq!(repo.load("c1").await?.snapshot, Some(1));
    /// # Ok(()) }
    /// ```
    pub async fn take_snapshot(&self, id: &str) -> Result<Option<u64>> {
        let stream = Self::stream_of(id);
        let loaded = self.load(id).await?;
        let Some(version) = loaded.version else {
            return Ok(None);
        };
        let payload = serde_json::to_vec(&loaded.state).map_err(|e| Error::Snapshot {
            stream: stream.clone(),
            source: e.into(),
        })?;
        self.store
            .save_snapshot(SnapshotRecord {
                stream,
                version,
                schema_version: A::SNAPSHOT_VERSION,
                payload: payload.into(),
                recorded_at: std::time::SystemTime::now(),
            })
            .await?;
        Ok(Some(version))
    }
}
