//! Projections: read models built from the global log, their checkpoints, and the task that
//! runs them (catch-up, then live tail).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tidemill::BoxError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::event::{LogPosition, RecordedEvent};
use crate::names::StreamFilter;
use crate::store::EventStore;

/// The transaction a projection writes its read model in: the store's own, so the checkpoint
/// commits with the read model's rows.
///
/// ```
/// use tidemill_eventsourcing::{Projection, ProjectionTx, RecordedEvent};
///
/// /// Counts events per stream in a table of the store's database.
/// struct PerStream;
///
/// #[async_trait::async_trait]
/// impl Projection for PerStream {
///     fn name(&self) -> &str { "per_stream" }
///     async fn apply(&self, tx: &mut ProjectionTx<'_>, e: &RecordedEvent) -> Result<(), tidemill::BoxError> {
///         if let ProjectionTx::Sqlite(conn) = tx {
///             sqlx::query("INSERT INTO per_stream (stream, n) VALUES (?, 1) \
///                          ON CONFLICT (stream) DO UPDATE SET n = n + 1")
///                 .bind(&e.stream)
///                 .execute(&mut **conn)
///                 .await?;
///         }
///         Ok(())
///     }
/// }
/// # drop(PerStream);
/// ```
#[non_exhaustive]
pub enum ProjectionTx<'a> {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
    /// MariaDB / MySQL.
    #[cfg(feature = "mysql")]
    MySql(&'a mut sqlx::MySqlConnection),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// The in-memory store: no transaction; the checkpoint is written after the batch
    /// (at least once).
    Memory(std::marker::PhantomData<&'a ()>),
}

/// A read model fed by the global log.
///
/// ```
/// use tidemill_eventsourcing::{Projection, ProjectionTx, RecordedEvent};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Count(AtomicU64);
///
/// #[async_trait::async_trait]
/// impl Projection for Count {
///     fn name(&self) -> &str { "count" }
///     async fn apply(&self, _tx: &mut ProjectionTx<'_>, _e: &RecordedEvent) -> Result<(), tidemill::BoxError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The checkpoint's name (unique per projection).
    ///
    /// ```
    /// use tidemill_eventsourcing::{Projection, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// assert_eq!(Count.name(), "count");
    /// ```
    fn name(&self) -> &str;

    /// Applies one event, writing through `tx`.
    ///
    /// ```
    /// use std::sync::Arc;
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
    /// // The store calls `apply` for each event, in the batch's transaction.
    /// assert_eq!(store.apply_projection(&Count, &batch).await?.applied, 1);
    /// # Ok(()) }
    /// ```
    async fn apply(&self, tx: &mut ProjectionTx<'_>, event: &RecordedEvent)
        -> Result<(), BoxError>;

    /// Empties the read model before a rebuild (same transaction as the checkpoint reset).
    ///
    /// ```
    /// use tidemill_eventsourcing::{EventStore, MemoryEventStore, Projection, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = MemoryEventStore::new();
    /// // The store calls `reset`, then deletes the checkpoint, in one transaction.
    /// store.reset_projection(&Count).await?;
    /// # Ok(()) }
    /// ```
    async fn reset(&self, tx: &mut ProjectionTx<'_>) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
}

/// What [`EventStore::apply_projection`] did with a batch.
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
/// assert!(outcome.failed.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BatchOutcome {
    /// How many events (from the front) were applied and checkpointed.
    pub applied: usize,
    /// The error of the event after them, if one failed.
    pub failed: Option<BoxError>,
}

/// What a projection does when an event fails (decode error, handler error).
///
/// ```
/// use tidemill_eventsourcing::{OnError, ProjectionOptions};
/// assert_eq!(OnError::default(), OnError::Stop);
/// let options = ProjectionOptions::new().on_error(OnError::DeadLetter);
/// # drop(options);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// This projection stops at the event (checkpoint before it) and reports the error; the
    /// other projections of a [`ProjectionGroup`] go on.
    #[default]
    Stop,
    /// The event goes to the dead-letter table and the projection goes on.
    DeadLetter,
    /// The projection stops and so does its whole [`ProjectionGroup`].
    Fail,
}

/// How a projection runs.
///
/// ```
/// use tidemill_eventsourcing::{OnError, ProjectionOptions, StreamFilter};
/// let options = ProjectionOptions::new()
///     .filter(StreamFilter::parse("booking-*").unwrap())
///     .on_error(OnError::DeadLetter);
/// # drop(options);
/// ```
#[derive(Clone, Debug)]
pub struct ProjectionOptions {
    pub(crate) filter: StreamFilter,
    pub(crate) batch: usize,
    pub(crate) poll: Duration,
    pub(crate) on_error: OnError,
    pub(crate) live: bool,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProjectionOptions {
    /// All streams, batches of 500, polling every 100 ms in the live tail, stop on errors.
    ///
    /// ```
    /// let options = tidemill_eventsourcing::ProjectionOptions::new();
    /// # drop(options);
    /// ```
    pub fn new() -> Self {
        Self {
            filter: StreamFilter::All,
            batch: 500,
            poll: Duration::from_millis(100),
            on_error: OnError::Stop,
            live: true,
        }
    }

    /// Only these streams.
    ///
    /// ```
    /// use tidemill_eventsourcing::{ProjectionOptions, StreamFilter};
    /// let options = ProjectionOptions::new().filter(StreamFilter::category("booking").unwrap());
    /// # drop(options);
    /// ```
    pub fn filter(mut self, filter: StreamFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Events per transaction.
    ///
    /// ```
    /// let options = tidemill_eventsourcing::ProjectionOptions::new().batch_size(1000);
    /// # drop(options);
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// How often the live tail looks for other processes' appends.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = tidemill_eventsourcing::ProjectionOptions::new().poll_interval(Duration::from_millis(20));
    /// # drop(options);
    /// ```
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// What a failing event does.
    ///
    /// ```
    /// use tidemill_eventsourcing::{OnError, ProjectionOptions};
    /// let options = ProjectionOptions::new().on_error(OnError::Fail);
    /// # drop(options);
    /// ```
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Whether to keep following the log after catching up (default) or end there.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{run_projection, Ended, MemoryEventStore, Projection, ProjectionOptions, ProjectionTx, RecordedEvent};
    /// use tokio_util::sync::CancellationToken;
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Without the live tail, the projection ends once it caught up.
    /// let ended = run_projection(
    ///     Arc::new(MemoryEventStore::new()),
    ///     Arc::new(Count),
    ///     ProjectionOptions::new().live(false),
    ///     CancellationToken::new(),
    /// ).await;
    /// assert!(matches!(ended, Ended::Stopped));
    /// # }
    /// ```
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }
}

/// Why a projection ended.
///
/// ```
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{
///     run_projection, Ended, EventStore, ExpectedVersion, MemoryEventStore, NewEvent, Projection,
///     ProjectionOptions, ProjectionTx, RecordedEvent,
/// };
/// use tokio_util::sync::CancellationToken;
///
/// struct Picky;
/// #[async_trait::async_trait]
/// impl Projection for Picky {
///     fn name(&self) -> &str { "picky" }
///     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> {
///         Err("refused".into())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = Arc::new(MemoryEventStore::new());
/// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}")]).await?;
/// let ended = run_projection(store, Arc::new(Picky), ProjectionOptions::new().live(false), CancellationToken::new()).await;
/// assert!(matches!(ended, Ended::Failed(tidemill_eventsourcing::Error::Projection { version: 1, .. })));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum Ended {
    /// Stopped on request (or, without live tail, caught up).
    Stopped,
    /// Stopped at a failing event ([`OnError::Stop`] or [`OnError::Fail`]).
    Failed(Error),
}

/// Runs `projection` until `stop` is cancelled (or it caught up, without live tail, or an
/// event failed). Resumes after its checkpoint.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{
///     run_projection, EventStore, ExpectedVersion, MemoryEventStore, NewEvent, Projection,
///     ProjectionOptions, ProjectionTx, RecordedEvent,
/// };
/// use tokio_util::sync::CancellationToken;
///
/// struct Count(AtomicU64);
/// #[async_trait::async_trait]
/// impl Projection for Count {
///     fn name(&self) -> &str { "count" }
///     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = Arc::new(MemoryEventStore::new());
/// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}"), NewEvent::new("B", "{}")]).await?;
/// let count = Arc::new(Count(AtomicU64::new(0)));
/// let stop = CancellationToken::new();
/// let task = tokio::spawn(run_projection(store.clone(), count.clone(), ProjectionOptions::new(), stop.clone()));
/// while store.load_checkpoint("count").await?.is_none() {
///     tokio::task::yield_now().await;
/// }
/// stop.cancel();
/// task.await.unwrap();
/// assert_eq!(count.0.load(Ordering::Relaxed), 2);
/// # Ok(()) }
/// ```
pub async fn run_projection(
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    options: ProjectionOptions,
    stop: CancellationToken,
) -> Ended {
    match run_inner(&*store, &*projection, &options, &stop).await {
        Ok(()) => Ended::Stopped,
        Err(e) => Ended::Failed(e),
    }
}

async fn run_inner(
    store: &dyn EventStore,
    projection: &dyn Projection,
    options: &ProjectionOptions,
    stop: &CancellationToken,
) -> Result<()> {
    let mut at = store
        .load_checkpoint(projection.name())
        .await?
        .unwrap_or(LogPosition::START);
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let batch = store.read_all(at, &options.filter, options.batch).await?;
        if batch.is_empty() {
            if !options.live {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = store.appended() => {}
                _ = tokio::time::sleep(options.poll) => {}
            }
            continue;
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let outcome = store.apply_projection(projection, rest).await?;
            if outcome.applied > 0 {
                at = rest[outcome.applied - 1].position;
            }
            let Some(source) = outcome.failed else {
                break;
            };
            let event = &rest[outcome.applied];
            match options.on_error {
                OnError::DeadLetter => {
                    tracing::warn!(projection = projection.name(), stream = %event.stream, version = event.version, "dead-lettering an event: {source}");
                    store
                        .dead_letter(projection.name(), event, &source.to_string())
                        .await?;
                    at = event.position;
                    rest = &rest[outcome.applied + 1..];
                }
                OnError::Stop | OnError::Fail => {
                    return Err(Error::Projection {
                        projection: projection.name().to_owned(),
                        stream: event.stream.clone(),
                        version: event.version,
                        event_type: event.event_type.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// Several projections running side by side, stopped together.
///
/// Each runs in its own task; [`stop`](Self::stop) lets each finish the batch it is in (whose
/// transaction then commits with its checkpoint) and waits for all of them. A projection
/// with [`OnError::Fail`] that fails stops the others too.
///
/// ```
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionGroup, ProjectionOptions, ProjectionTx, RecordedEvent};
/// # struct Count;
/// # #[async_trait::async_trait]
/// # impl Projection for Count {
/// #     fn name(&self) -> &str { "count" }
/// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
/// group.spawn(Arc::new(Count), ProjectionOptions::new());
/// let ended = group.stop().await;
/// assert_eq!(ended[0].0, "count");
/// # }
/// ```
pub struct ProjectionGroup {
    store: Arc<dyn EventStore>,
    stop: CancellationToken,
    tasks: Vec<(String, JoinHandle<Ended>)>,
}

impl ProjectionGroup {
    /// A group reading `store`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, ProjectionGroup};
    /// let group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
    /// # drop(group);
    /// ```
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts `projection`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{Ended, MemoryEventStore, Projection, ProjectionGroup, ProjectionOptions, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
    /// group.spawn(Arc::new(Count), ProjectionOptions::new().live(false));
    /// let ended = group.join().await;
    /// assert!(matches!(ended[0].1, Ended::Stopped));
    /// # }
    /// ```
    pub fn spawn(&mut self, projection: Arc<dyn Projection>, options: ProjectionOptions) {
        let name = projection.name().to_owned();
        let store = self.store.clone();
        let stop = self.stop.child_token();
        let group_stop = self.stop.clone();
        let fail = options.on_error == OnError::Fail;
        let task = tokio::spawn(async move {
            let ended = run_projection(store, projection, options, stop).await;
            if fail && matches!(ended, Ended::Failed(_)) {
                group_stop.cancel();
            }
            ended
        });
        self.tasks.push((name, task));
    }

    /// A token that stops the group when cancelled (for a router's or process's shutdown).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionGroup, ProjectionOptions, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
    /// group.spawn(Arc::new(Count), ProjectionOptions::new());
    /// group.stop_token().cancel(); // e.g. from a shutdown signal
    /// assert_eq!(group.join().await.len(), 1);
    /// # }
    /// ```
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops every projection and waits for them: `(name, how it ended)`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{Ended, MemoryEventStore, Projection, ProjectionGroup, ProjectionOptions, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
    /// group.spawn(Arc::new(Count), ProjectionOptions::new());
    /// let ended = group.stop().await;
    /// assert!(matches!(ended[0].1, Ended::Stopped));
    /// # }
    /// ```
    pub async fn stop(self) -> Vec<(String, Ended)> {
        self.stop.cancel();
        self.join().await
    }

    /// Waits for every projection to end by itself (caught up without live tail, failed, or
    /// stopped through [`stop_token`](Self::stop_token)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionGroup, ProjectionOptions, ProjectionTx, RecordedEvent};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut group = ProjectionGroup::new(Arc::new(MemoryEventStore::new()));
    /// group.spawn(Arc::new(Count), ProjectionOptions::new().live(false));
    /// assert_eq!(group.join().await[0].0, "count");
    /// # }
    /// ```
    pub async fn join(self) -> Vec<(String, Ended)> {
        let mut out = Vec::new();
        for (name, task) in self.tasks {
            let ended = match task.await {
                Ok(e) => e,
                Err(e) => Ended::Failed(Error::Config(format!("projection task panicked: {e}"))),
            };
            out.push((name, ended));
        }
        out
    }
}
