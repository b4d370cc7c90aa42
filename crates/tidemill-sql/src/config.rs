//! [`SqlConfig`]: how to reach the database and how publishers and subscribers behave.

use std::time::Duration;

use tidemill::Result;

pub use crate::backend::Backend;
use crate::schema::Tables;

/// How subscribers consume a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsumeMode {
    /// The topic is a log: rows stay, every consumer group keeps its own offset, and one member
    /// of a group at a time reads (the others take over when it is idle or gone). Keeps order.
    #[default]
    Log,
    /// The topic is a work queue: members claim rows with `SKIP LOCKED` (or the database's
    /// single writer), work in parallel, and an ack deletes the row. The group is ignored: the
    /// table is the queue.
    Queue,
}

/// Options of the SQL pub/sub. Every setter documents its default.
///
/// ```
/// use std::time::Duration;
/// use tidemill_sql::{ConsumeMode, SqlConfig};
///
/// let config = SqlConfig::from_url("sqlite://events.db")
///     .unwrap()
///     .table_prefix("shop_")
///     .unwrap()
///     .consume_mode(ConsumeMode::Queue)
///     .max_in_flight(16)
///     .nack_delay(Duration::from_millis(200));
/// assert_eq!(config.tables().messages_table(), "shop_messages");
/// ```
#[derive(Clone, Debug)]
pub struct SqlConfig {
    pub(crate) url: Option<String>,
    pub(crate) tables: Tables,
    pub(crate) initialize_schema: bool,
    pub(crate) mode: ConsumeMode,
    pub(crate) batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) nack_delay: Duration,
    pub(crate) min_poll_interval: Duration,
    pub(crate) max_poll_interval: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_connections: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) busy_timeout: Duration,
    pub(crate) ack_flush_interval: Duration,
    pub(crate) close_timeout: Duration,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            url: None,
            tables: Tables::default(),
            initialize_schema: true,
            mode: ConsumeMode::Log,
            batch_size: 128,
            max_in_flight: 1,
            nack_delay: tidemill::options::DEFAULT_NACK_DELAY,
            min_poll_interval: Duration::from_millis(10),
            max_poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            ack_flush_interval: Duration::from_millis(50),
            close_timeout: tidemill::options::DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl SqlConfig {
    /// Options for the database at `url` (`postgres://…`, `mysql://…`, `sqlite://path`), with
    /// every other option at its default. Fails if the scheme is not one of those.
    pub fn from_url(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        Backend::from_url(&url)?;
        Ok(Self {
            url: Some(url),
            ..Self::default()
        })
    }

    /// Which database the URL names, if a URL was given.
    pub fn backend(&self) -> Option<Backend> {
        self.url.as_deref().and_then(|u| Backend::from_url(u).ok())
    }

    /// The table names in use.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Prefix of the adapter's tables (default `tidemill_`): `<prefix>messages`,
    /// `<prefix>offsets`, `<prefix>sequences` (MariaDB/MySQL) and `<prefix>dedup`. Letters,
    /// digits and `_` only, starting with a letter or `_`, at most 40 bytes.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        self.tables = Tables::new(prefix)?;
        Ok(self)
    }

    /// Whether the first use creates the tables if they are missing (default `true`). Turn it
    /// off when migrations create them; [`schema_sql`](crate::schema_sql) gives the statements.
    pub fn initialize_schema(mut self, yes: bool) -> Self {
        self.initialize_schema = yes;
        self
    }

    /// How subscribers consume (default [`ConsumeMode::Log`]). Publishers write the same rows
    /// either way; do not consume one topic in both modes.
    pub fn consume_mode(mut self, mode: ConsumeMode) -> Self {
        self.mode = mode;
        self
    }

    /// How many rows one query reads or claims (default 128).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How many deliveries of one subscription may be unsettled at once (default 1, which keeps
    /// order: no next message before the previous one is settled).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long a nacked message waits before it comes back (default 100 ms).
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// Polling when idle: the first wait after an empty read (default 10 ms), doubling up to
    /// `max` (default 500 ms). PostgreSQL subscribers are also woken by `NOTIFY`, and publishers
    /// in the same process wake subscribers at once, so polling is the fallback.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll_interval = min;
        self.max_poll_interval = max.max(min);
        self
    }

    /// How long a claim lasts without renewal (default 30 s): a group member's hold on a topic
    /// (log mode, renewed while the member is alive) and a claimed row (queue mode: a delivery
    /// unsettled for longer goes to another member). Hosts' clocks must agree to well within it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Size of the connection pool the adapter opens (default 10; SQLite in memory: 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait for a connection, including reconnecting after the server went away
    /// (default 30 s); past it, publishing fails with an error.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// SQLite's busy timeout: how long a writer waits for another (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long `close` waits for the subscriptions to write their pending acks. Default 10 s.
    /// A delivery settled after `close` returned is not written: it comes again (at least once).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long acks may wait to be written together (default 50 ms). Acks are also written
    /// before every read and when a subscription closes.
    pub fn ack_flush_interval(mut self, interval: Duration) -> Self {
        self.ack_flush_interval = interval;
        self
    }
}

/// `url` with any password replaced by `***`, for errors and logs: the core's
/// [`tidemill::redact_url`], which every adapter shares.
///
/// ```
/// assert_eq!(
///     tidemill_sql::redact_url("postgres://app:s3cret@db:5432/x"),
///     "postgres://app:***@db:5432/x"
/// );
/// assert_eq!(tidemill_sql::redact_url("sqlite://a.db"), "sqlite://a.db");
/// ```
pub fn redact_url(url: &str) -> String {
    tidemill::redact_url(url)
}
