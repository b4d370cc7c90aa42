//! [`SqlEventStore`]: the event store on PostgreSQL, MariaDB/MySQL or SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::Message;
use tidemill_sql::{Backend, Outbox, SqlConfig, SqlPool};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::event::{
    AppendResult, ExpectedVersion, LogPosition, NewEvent, ReadStream, RecordedEvent, StreamInfo,
};
use crate::names::{validate_stream, StreamFilter};
use crate::projection::{BatchOutcome, Projection};
use crate::snapshot::SnapshotRecord;
use crate::store::{EventStore, StoreConfig};

pub(crate) mod imp;
pub(crate) mod schema;

use schema::Names;

/// Metadata keys of the messages appended events become on the bus (besides the CQRS
/// `name` key, which holds the event type).
///
/// ```
/// use futures::StreamExt;
/// use tidemill::Subscriber;
/// use tidemill_eventsourcing::{keys, EventMetadata, EventStore, ExpectedVersion, NewEvent, SqlEventStore, StoreConfig};
/// use tidemill_sql::{SqlConfig, SqlPubSub};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let pubsub = SqlPubSub::connect(SqlConfig::from_url(url)?.group("billing")).await?;
/// pubsub.initialize().await?;
/// let store = SqlEventStore::new(pubsub.pool().clone(), StoreConfig::new())
///     .await?
///     .publish_to(pubsub.outbox(), |_stream| "orders".to_owned());
/// let subscriber = pubsub.subscriber()?;
/// let mut orders = subscriber.subscribe("orders").await?;
///
/// let placed = NewEvent::new("Placed", "{}").metadata(EventMetadata::default().correlation_id("req-1"));
/// store.append("order-1", ExpectedVersion::NoStream, vec![placed]).await?;
///
/// let delivery = orders.next().await.expect("a message")?;
/// let md = delivery.message().metadata();
/// assert_eq!(md.get("name"), Some("Placed"));
/// assert_eq!(md.get(keys::STREAM), Some("order-1"));
/// assert_eq!(md.get(keys::VERSION), Some("1"));
/// assert_eq!(md.get(keys::SCHEMA_VERSION), Some("1"));
/// assert_eq!(md.get(keys::CORRELATION_ID), Some("req-1"));
/// delivery.ack();
/// subscriber.close().await?;
/// # Ok(()) }
/// ```
pub mod keys {
    /// The event's stream.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::keys::STREAM, "es_stream");
    /// ```
    pub const STREAM: &str = "es_stream";
    /// Its version in the stream.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::keys::VERSION, "es_version");
    /// ```
    pub const VERSION: &str = "es_version";
    /// Its schema version.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::keys::SCHEMA_VERSION, "es_schema_version");
    /// ```
    pub const SCHEMA_VERSION: &str = "es_schema_version";
    /// Its correlation id.
    ///
    /// ```
    /// // The core's key, which its correlation middleware and the CQRS context read.
    /// assert_eq!(tidemill_eventsourcing::keys::CORRELATION_ID, tidemill::middleware::CORRELATION_ID_KEY);
    /// ```
    pub const CORRELATION_ID: &str = "correlation_id";
    /// Its causation id.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::keys::CAUSATION_ID, "causation_id");
    /// ```
    pub const CAUSATION_ID: &str = "causation_id";
    /// Its trace context.
    ///
    /// ```
    /// assert_eq!(tidemill_eventsourcing::keys::TRACEPARENT, "traceparent");
    /// ```
    pub const TRACEPARENT: &str = "traceparent";
}

/// Where appended events are published: the SQL outbox, in the append's transaction.
pub(crate) struct OutboxTarget {
    pub(crate) outbox: Outbox,
    pub(crate) topic: Box<dyn Fn(&str) -> String + Send + Sync>,
}

impl OutboxTarget {
    /// The messages of `events`, appended after `version`: id = event id, payload = event
    /// payload, `name` = event type (what the CQRS event processors dispatch on).
    pub(crate) fn messages(&self, stream: &str, version: u64, events: &[NewEvent]) -> Vec<Message> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut m = Message::with_id(e.id.to_string(), e.payload.clone())
                    .with_metadata("name", e.event_type.clone())
                    .with_metadata("content_type", "application/json")
                    .with_metadata(keys::STREAM, stream)
                    .with_metadata(keys::VERSION, (version + 1 + i as u64).to_string())
                    .with_metadata(keys::SCHEMA_VERSION, e.schema_version.to_string());
                let md = &e.metadata;
                for (k, v) in [
                    (keys::CORRELATION_ID, &md.correlation_id),
                    (keys::CAUSATION_ID, &md.causation_id),
                    (keys::TRACEPARENT, &md.traceparent),
                ] {
                    if let Some(v) = v {
                        m.metadata_mut().set(k, v.clone());
                    }
                }
                for (k, v) in &md.extra {
                    m.metadata_mut().set(k.clone(), v.clone());
                }
                m
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Lifecycle {
    Delete,
    Truncate(u64),
    Tombstone,
}

/// The event store on a SQL database.
///
/// ```
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, NewEvent, ReadStream, SqlEventStore, StoreConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new()).await?;
/// store.append("order-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", "{}")]).await?;
/// let events = store.read_stream("order-1", ReadStream::forward()).await?;
/// assert_eq!(events[0].version, 1);
/// # Ok(()) }
/// ```
pub struct SqlEventStore {
    pool: SqlPool,
    names: Names,
    config: StoreConfig,
    outbox: Option<OutboxTarget>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for SqlEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEventStore")
            .field("backend", &self.names.backend)
            .field("prefix", &self.names.prefix)
            .field("outbox", &self.outbox.is_some())
            .finish()
    }
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match &$self.pool {
            #[cfg(feature = "postgres")]
            SqlPool::Postgres(p) => imp::pg::$f(p, &$self.names, $($arg),*).await,
            #[cfg(feature = "mysql")]
            SqlPool::MySql(p) => imp::my::$f(p, &$self.names, $($arg),*).await,
            #[cfg(feature = "sqlite")]
            SqlPool::Sqlite(p) => imp::lite::$f(p, &$self.names, $($arg),*).await,
            #[allow(unreachable_patterns)]
            _ => Err(Error::Config("this database's feature is not compiled in".into())),
        }
    };
}

impl SqlEventStore {
    /// Connects to `url` (`postgres://`, `mysql://`/`mariadb://`, `sqlite://path`,
    /// `sqlite::memory:`) and creates the tables unless told not to.
    ///
    /// ```
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// use tidemill_sql::Backend;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new()).await?;
    /// assert_eq!(store.backend(), Backend::Sqlite);
    /// assert!(SqlEventStore::connect("nosuchdb://x", StoreConfig::new()).await.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self> {
        let sql = SqlConfig::from_url(url).map_err(|e| Error::Config(e.to_string()))?;
        let pool = SqlPool::connect(&sql)
            .await
            .map_err(|e| Error::db("connecting", e))?;
        Self::new(pool, config).await
    }

    /// A store on a pool the application already has (the same pool as its read models, so
    /// projections write them in the checkpoint's transaction).
    ///
    /// ```
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// use tidemill_sql::{SqlConfig, SqlPool};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = SqlPool::connect(&SqlConfig::from_url("sqlite::memory:")?).await?;
    /// let store = SqlEventStore::new(pool.clone(), StoreConfig::new().table_prefix("billing_")?).await?;
    /// # drop(store);
    /// # Ok(()) }
    /// ```
    pub async fn new(pool: SqlPool, config: StoreConfig) -> Result<Self> {
        let names = Names::new(pool.backend(), &config.prefix)?;
        let store = Self {
            pool,
            names,
            config,
            outbox: None,
            notify: Arc::new(Notify::new()),
        };
        if store.config.initialize_schema {
            store.create_schema().await?;
        }
        Ok(store)
    }

    /// Also publishes every appended event as a tidemill message to `topic(stream)` through
    /// `outbox`, in the append's transaction: the messages exist if and only if the events
    /// do. The outbox's tables must exist ([`tidemill_sql::SqlPubSub::initialize`]).
    ///
    /// The message's id is the event id, its payload the event's, `name` the event type,
    /// plus [`keys`] and the event's free-form metadata.
    ///
    /// ```
    /// use tidemill::components::forwarder::ForwarderConfig;
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// use tidemill_sql::{SqlConfig, SqlPubSub};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pubsub = SqlPubSub::connect(SqlConfig::from_url("sqlite::memory:")?).await?;
    /// pubsub.initialize().await?;
    /// // Envelopes for the core's forwarder, which moves them to another broker: each stream's
    /// // events to a topic of its category.
    /// let outbox = pubsub.outbox().forwarding(ForwarderConfig::new("outbox"));
    /// let store = SqlEventStore::new(pubsub.pool().clone(), StoreConfig::new())
    ///     .await?
    ///     .publish_to(outbox, |stream| format!("{}.events", stream.split('-').next().unwrap_or(stream)));
    /// # drop(store);
    /// # Ok(()) }
    /// ```
    pub fn publish_to(
        mut self,
        outbox: Outbox,
        topic: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.outbox = Some(OutboxTarget {
            outbox,
            topic: Box::new(topic),
        });
        self
    }

    /// Creates the tables if missing (see [`schema_sql`](crate::schema_sql)).
    ///
    /// ```
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new().initialize_schema(false)).await?;
    /// store.create_schema().await?;
    /// store.create_schema().await?; // idempotent
    /// # Ok(()) }
    /// ```
    pub async fn create_schema(&self) -> Result<()> {
        dispatch!(self, create_schema())
    }

    /// The pool (to write read models through the same database).
    ///
    /// ```
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// use tidemill_sql::SqlPool;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new()).await?;
    /// let SqlPool::Sqlite(pool) = store.pool() else { unreachable!() };
    /// let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM es_events").fetch_one(pool).await?;
    /// assert_eq!(n, 0);
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &SqlPool {
        &self.pool
    }

    /// The database.
    ///
    /// ```
    /// use tidemill_eventsourcing::{SqlEventStore, StoreConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
    /// let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new()).await?;
    /// assert_eq!(store.backend(), tidemill_sql::Backend::Sqlite);
    /// # Ok(()) }
    /// ```
    pub fn backend(&self) -> Backend {
        self.names.backend
    }
}

#[async_trait]
impl EventStore for SqlEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.config.check_append(stream, &events)?;
        let config = &self.config;
        let outbox = self.outbox.as_ref();
        let r = dispatch!(self, append(config, outbox, stream, expected, &events))?;
        if r.written {
            self.notify.notify_waiters();
        }
        Ok(r)
    }

    async fn read_stream(&self, stream: &str, read: ReadStream) -> Result<Vec<RecordedEvent>> {
        validate_stream(stream)?;
        dispatch!(self, read_stream(stream, read))
    }

    async fn read_all(
        &self,
        after: LogPosition,
        filter: &StreamFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        dispatch!(self, read_all(after, filter, limit))
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        validate_stream(stream)?;
        dispatch!(self, stream_info(stream))
    }

    async fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        validate_stream(stream)?;
        dispatch!(self, change(stream, Some(expected), Lifecycle::Delete))
    }

    async fn truncate_before(&self, stream: &str, version: u64) -> Result<()> {
        validate_stream(stream)?;
        dispatch!(self, change(stream, None, Lifecycle::Truncate(version)))
    }

    async fn tombstone(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        validate_stream(stream)?;
        dispatch!(self, change(stream, Some(expected), Lifecycle::Tombstone))
    }

    async fn save_snapshot(&self, record: SnapshotRecord) -> Result<()> {
        validate_stream(&record.stream)?;
        dispatch!(self, save_snapshot(&record))
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<SnapshotRecord>> {
        validate_stream(stream)?;
        dispatch!(self, load_snapshot(stream))
    }

    async fn load_checkpoint(&self, projection: &str) -> Result<Option<LogPosition>> {
        dispatch!(self, load_checkpoint(projection))
    }

    async fn apply_projection(
        &self,
        projection: &dyn Projection,
        events: &[RecordedEvent],
    ) -> Result<BatchOutcome> {
        dispatch!(self, apply_projection(projection, events))
    }

    async fn dead_letter(
        &self,
        projection: &str,
        event: &RecordedEvent,
        error: &str,
    ) -> Result<()> {
        dispatch!(self, dead_letter(projection, event, error))
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<(RecordedEvent, String)>> {
        dispatch!(self, dead_letters(projection))
    }

    async fn reset_projection(&self, projection: &dyn Projection) -> Result<()> {
        dispatch!(self, reset_projection(projection))
    }

    async fn appended(&self) {
        self.notify.notified().await;
    }
}
