//! [`SqlConfig`]: how to reach the database and how publishers and subscribers behave.

use std::time::Duration;

use tidemill::options::SharedOption;
use tidemill::{Error, Result, StartPosition};

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
    /// single writer), work in parallel, and an ack deletes the row. The table is the queue:
    /// there are no groups, and a subscriber configured with one is refused.
    Queue,
}

/// Options of the SQL pub/sub. Every setter documents its default.
///
/// ```
/// use std::time::Duration;
/// use tidemill_sql::{ConsumeMode, SqlConfig};
///
/// use tidemill::StartPosition;
///
/// let config = SqlConfig::new("sqlite://events.db")
///     .table_prefix("shop_")?
///     .group("billing")
///     .start_position(StartPosition::End)
///     .max_in_flight(16)
///     .nack_delay(Duration::from_millis(200));
/// assert_eq!(config.tables().messages_table(), "shop_messages");
///
/// let queue = SqlConfig::from_url("postgres://app@db/shop?sslmode=require&max_in_flight=16")?
///     .consume_mode(ConsumeMode::Queue);
/// assert_eq!(queue.group_name(), None);
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SqlConfig {
    pub(crate) url: Option<String>,
    pub(crate) tables: Tables,
    pub(crate) group: Option<String>,
    /// `None`: the default of the situation (the end without a group, the beginning for a new
    /// group, every row in queue mode).
    pub(crate) start: Option<StartPosition>,
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
            group: None,
            start: None,
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
    /// Options for the database at `url` (`postgres://…`, `postgresql://…`, `mysql://…`,
    /// `mariadb://…`, `sqlite://path`, `sqlite::memory:`), with every other option at its
    /// default: no group, log mode, the tables `tidemill_*`, 1 delivery in flight, nack delay
    /// 100 ms. The URL is not checked until connecting; [`SqlConfig::from_url`] checks it and
    /// reads options from it.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Options from a URL: the database's URL as [`SqlConfig::new`] takes it, plus the query
    /// options `group`, `start_position` (`beginning`, `end`, a row position, or an RFC 3339
    /// time), `max_in_flight`, `nack_delay` and `close_timeout` (in milliseconds). They are
    /// taken out of the URL; the database client's own parameters (`sslmode`, `ssl-mode`,
    /// `application_name`, SQLite's `mode`, ...) stay in it. Any other option is refused,
    /// listing the known ones; so is a scheme other than those above.
    ///
    /// ```
    /// use tidemill_sql::SqlConfig;
    /// let config = SqlConfig::from_url("mysql://root@db/shop?group=billing&ssl-mode=disabled")?;
    /// assert_eq!(config.group_name(), Some("billing"));
    /// assert_eq!(config.url(), Some("mysql://root@db/shop?ssl-mode=disabled"));
    /// assert!(SqlConfig::from_url("sqlite://a.db?colour=red").is_err());
    /// assert!(SqlConfig::from_url("redis://h").is_err());
    /// # Ok::<(), tidemill::Error>(())
    /// ```
    pub fn from_url(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        let backend = Backend::from_url(&url)?;
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut config = Self::default();
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            config = match SharedOption::parse("SQL", key, value)? {
                Some(SharedOption::Group(group)) => config.group(group),
                Some(SharedOption::StartPosition(start)) => config.start_position(start),
                Some(SharedOption::MaxInFlight(n)) => config.max_in_flight(n),
                Some(SharedOption::NackDelay(delay)) => config.nack_delay(delay),
                Some(SharedOption::CloseTimeout(timeout)) => config.close_timeout(timeout),
                None if is_driver_param(backend, key) => {
                    passed.push(pair);
                    config
                }
                None => return Err(unknown_option(backend, key)),
            };
        }
        config.url = Some(if passed.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed.join("&"))
        });
        Ok(config)
    }

    /// The URL handed to the database client (without this adapter's options), if one was
    /// given. It may hold a password: show it through [`redact_url`].
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
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

    /// Subscribers join this consumer group (default: none). A group has an offset per topic in
    /// `<prefix>offsets`; its members take turns (one reads while it holds the group's lease),
    /// and a member that comes later resumes where the group left off. Log mode only: queue
    /// mode has no groups, and refuses a subscriber with one.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Clears the consumer group: a subscriber reads from its start position and keeps its
    /// offset in memory.
    pub fn no_group(mut self) -> Self {
        self.group = None;
        self
    }

    /// The consumer group, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Where a subscription without a group starts, and where a new group starts; a group that
    /// already has an offset for the topic resumes from it whatever this says. Default: the
    /// end without a group, the beginning for a new group.
    ///
    /// - [`StartPosition::Beginning`]: the oldest row still in the table.
    /// - [`StartPosition::End`]: rows committed after `subscribe` returned.
    /// - [`StartPosition::Offset`]`(n)`: the row at position `n` (the `position` column) and
    ///   those after it. On PostgreSQL, rows are read in commit order (`(tx_id, position)`): it
    ///   starts at the first row at or past `n` in that order, or at the end if there is none.
    /// - [`StartPosition::Time`]`(t)`: the first row published (its `created_at`, the
    ///   publisher's clock in milliseconds) at or after `t` and those after it, or the end if
    ///   none is that recent.
    ///
    /// Queue mode delivers every row in the table, which is `Beginning`: the other variants are
    /// refused there. Refusals are [`Error::Config`] when the subscriber is made.
    ///
    /// ```
    /// use tidemill::StartPosition;
    /// let config = tidemill_sql::SqlConfig::new("sqlite::memory:").start_position(StartPosition::Offset(42));
    /// assert_eq!(config.start(), Some(StartPosition::Offset(42)));
    /// ```
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start = Some(start);
        self
    }

    /// The start position set, if any (`None`: the default of the situation).
    pub fn start(&self) -> Option<StartPosition> {
        self.start
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

    /// How long `close` waits for the subscriptions to write their pending acks. Default 30 s
    /// ([`tidemill::options::DEFAULT_CLOSE_TIMEOUT`]).
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

/// The adapter's own URL options: the shared ones.
const OPTIONS: &[&str] = SharedOption::NAMES;

/// The query parameters each database client reads from its URL (sqlx 0.8), left in the URL.
fn driver_params(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Postgres => &[
            "sslmode",
            "ssl-mode",
            "sslrootcert",
            "ssl-root-cert",
            "ssl-ca",
            "sslcert",
            "ssl-cert",
            "sslkey",
            "ssl-key",
            "statement-cache-capacity",
            "host",
            "hostaddr",
            "port",
            "dbname",
            "user",
            "password",
            "application_name",
            "options",
        ],
        Backend::MySql => &[
            "sslmode",
            "ssl-mode",
            "sslca",
            "ssl-ca",
            "sslcert",
            "ssl-cert",
            "sslkey",
            "ssl-key",
            "charset",
            "collation",
            "statement-cache-capacity",
            "socket",
            "timezone",
            "time-zone",
        ],
        Backend::Sqlite => &["mode", "cache", "immutable", "vfs"],
    }
}

fn is_driver_param(backend: Backend, key: &str) -> bool {
    driver_params(backend).contains(&key)
        // PostgreSQL's `options[name]=value` sets one server parameter.
        || (backend == Backend::Postgres && key.starts_with("options[") && key.ends_with(']'))
}

fn unknown_option(backend: Backend, key: &str) -> Error {
    Error::Config(format!(
        "unknown SQL URL option {key:?}; known: {}, and the database client's {}",
        OPTIONS.join(", "),
        driver_params(backend).join(", ")
    ))
}

/// Refuses a URL that still holds options the database client would not read (this adapter's
/// own, given to [`SqlConfig::new`] instead of [`SqlConfig::from_url`], or unknown ones): sqlx
/// ignores unknown parameters on PostgreSQL and MariaDB/MySQL.
pub(crate) fn check_driver_url(backend: Backend, url: &str) -> Result<()> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if OPTIONS.contains(&key) {
            return Err(Error::Config(format!(
                "the SQL URL option {key:?} is read by SqlConfig::from_url, not SqlConfig::new"
            )));
        }
        if !is_driver_param(backend, key) {
            return Err(unknown_option(backend, key));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match SqlConfig::from_url(url) {
            Err(Error::Config(reason)) => reason,
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn from_url_takes_the_shared_options_out_of_the_url() {
        let c = SqlConfig::from_url(
            "postgres://app:pw@db/x?sslmode=require&group=billing&start_position=beginning\
             &max_in_flight=8&nack_delay=250&close_timeout=1500&application_name=shop",
        )
        .unwrap();
        assert_eq!(
            c.url(),
            Some("postgres://app:pw@db/x?sslmode=require&application_name=shop")
        );
        assert_eq!(c.group_name(), Some("billing"));
        assert_eq!(c.start(), Some(StartPosition::Beginning));
        assert_eq!(c.max_in_flight, 8);
        assert_eq!(c.nack_delay, Duration::from_millis(250));
        assert_eq!(c.close_timeout, Duration::from_millis(1500));

        let c = SqlConfig::from_url("sqlite://a.db?mode=rwc&start_position=17").unwrap();
        assert_eq!(c.url(), Some("sqlite://a.db?mode=rwc"));
        assert_eq!(c.start(), Some(StartPosition::Offset(17)));
        let c =
            SqlConfig::from_url("mariadb://root@db/x?start_position=2026-01-01T10:00:00Z").unwrap();
        assert_eq!(c.url(), Some("mariadb://root@db/x"));
        assert!(matches!(c.start(), Some(StartPosition::Time(_))));
        assert_eq!(c.group_name(), None);
        assert_eq!(SqlConfig::new("sqlite::memory:").start(), None);
    }

    #[test]
    fn an_unknown_option_is_refused_listing_the_known_ones() {
        let reason = config_error("postgres://app:secret@db/x?colour=red");
        for known in OPTIONS.iter().chain(["sslmode", "application_name"].iter()) {
            assert!(reason.contains(known), "{reason}");
        }
        assert!(!reason.contains("secret"), "{reason}");
        // Each database's own parameters only: SQLite's `mode` is not MariaDB's.
        assert!(config_error("mysql://root@db/x?mode=rwc").contains("\"mode\""));
        assert!(SqlConfig::from_url("sqlite://a.db?mode=ro").is_ok());
    }

    #[test]
    fn option_values_are_checked() {
        for url in [
            "sqlite://a.db?max_in_flight=lots",
            "sqlite://a.db?nack_delay=1s",
            "sqlite://a.db?close_timeout=-1",
            "sqlite://a.db?start_position=sideways",
        ] {
            config_error(url);
        }
    }

    #[test]
    fn new_takes_the_url_as_it_is() {
        let c = SqlConfig::new("sqlite://a.db?group=g");
        assert_eq!(c.url(), Some("sqlite://a.db?group=g"));
        assert_eq!(c.group_name(), None);
        // Connecting refuses what the database client would not read.
        assert!(matches!(
            check_driver_url(Backend::Sqlite, "sqlite://a.db?group=g"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            check_driver_url(Backend::Postgres, "postgres://db/x?colour=red"),
            Err(Error::Config(_))
        ));
        assert!(check_driver_url(Backend::Postgres, "postgres://db/x?sslmode=disable").is_ok());
    }
}
