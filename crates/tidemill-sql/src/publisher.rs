//! [`SqlPubSub`], the entry point, and [`SqlPublisher`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Error, Message, Publisher, Result};
use tokio::sync::OnceCell;

use crate::config::SqlConfig;
use crate::notify::SharedListener;
use crate::outbox::Outbox;
use crate::pool::SqlPool;
use crate::row::{encode, now_ms};
use crate::schema::validate_topic;
use crate::subscriber::{SqlSubscriber, SubscriberOverrides};

/// The database as a pub/sub: hands out publishers and subscribers sharing one pool.
///
/// [`subscriber`](Self::subscriber) makes a subscriber of the configuration's
/// [`group`](SqlConfig::group) and [`start_position`](SqlConfig::start_position);
/// [`subscriber_with`](Self::subscriber_with) one of another group, start position, in-flight
/// window or nack delay, on the same pool.
///
/// ```
/// use futures::StreamExt;
/// use tidemill::{Message, Publisher, PublisherExt, Subscriber};
/// use tidemill_sql::{SqlConfig, SqlPubSub, SubscriberOverrides};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let pubsub = SqlPubSub::connect(SqlConfig::from_url("sqlite::memory:?group=billing")?).await?;
/// let billing = pubsub.subscriber()?;
/// // Another group on the same pool.
/// let shipping = pubsub.subscriber_with(SubscriberOverrides::new().group("shipping"))?;
/// pubsub.publisher().publish_one("orders", Message::new("order #1")).await?;
/// for subscriber in [&billing, &shipping] {
///     // A new group starts at the beginning of the topic.
///     let mut orders = subscriber.subscribe("orders").await?;
///     let delivery = orders.next().await.unwrap()?;
///     assert_eq!(delivery.message().payload().as_ref(), b"order #1");
///     delivery.ack();
///     subscriber.close().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlPubSub {
    pool: SqlPool,
    config: Arc<SqlConfig>,
    schema: Arc<OnceCell<()>>,
    listener: Arc<SharedListener>,
}

impl SqlPubSub {
    /// Opens a pool to `config`'s database.
    pub async fn connect(config: SqlConfig) -> Result<Self> {
        let pool = SqlPool::connect(&config).await?;
        Ok(Self::from_pool(pool, config))
    }

    /// Uses a pool the application already has; `config`'s URL and pool settings are ignored.
    pub fn from_pool(pool: impl Into<SqlPool>, config: SqlConfig) -> Self {
        Self {
            pool: pool.into(),
            config: Arc::new(config),
            schema: Arc::new(OnceCell::new()),
            listener: Arc::default(),
        }
    }

    /// The pool, e.g. to begin the transactions the [`Outbox`] publishes in.
    pub fn pool(&self) -> &SqlPool {
        &self.pool
    }

    /// The configuration.
    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Creates the tables now if the configuration allows it (publishers and subscribers
    /// otherwise do it on first use). Call it before publishing inside transactions: on
    /// MariaDB/MySQL, DDL would commit the caller's transaction.
    pub async fn initialize(&self) -> Result<()> {
        self.pool.ensure_schema(&self.config, &self.schema).await
    }

    /// A publisher.
    pub fn publisher(&self) -> SqlPublisher {
        SqlPublisher::new(self.pool.clone(), self.config.clone(), self.schema.clone())
    }

    /// A subscriber of the configuration's [`group`](SqlConfig::group) (or none) and
    /// [`start_position`](SqlConfig::start_position). Refused with [`Error::Config`] if a
    /// setting cannot take effect: a group or a start position other than `Beginning` in queue
    /// mode, an offset past `i64::MAX`, an invalid group name.
    pub fn subscriber(&self) -> Result<SqlSubscriber> {
        self.subscriber_with(SubscriberOverrides::new())
    }

    /// A subscriber on the same pool with some of the configuration's subscriber options
    /// replaced: another group (or none), start position, in-flight window or nack delay.
    /// Refused as [`subscriber`](Self::subscriber) is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
    /// use tidemill::{StartPosition, Subscriber};
    /// use tidemill_sql::{ConsumeMode, SqlConfig, SqlPubSub, SubscriberOverrides};
    ///
    /// let pubsub = SqlPubSub::connect(SqlConfig::new("sqlite::memory:")).await?;
    /// let audit = pubsub.subscriber_with(
    ///     SubscriberOverrides::new().group("audit").start_position(StartPosition::End),
    /// )?;
    /// assert_eq!(audit.group(), Some("audit"));
    ///
    /// let queue = SqlPubSub::from_pool(pubsub.pool().clone(), SqlConfig::default().consume_mode(ConsumeMode::Queue));
    /// assert!(matches!(
    ///     queue.subscriber_with(SubscriberOverrides::new().group("audit")),
    ///     Err(tidemill::Error::Config(_))
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn subscriber_with(&self, overrides: SubscriberOverrides) -> Result<SqlSubscriber> {
        let config = if overrides.is_empty() {
            self.config.clone()
        } else {
            Arc::new(overrides.apply((*self.config).clone()))
        };
        SqlSubscriber::new(
            self.pool.clone(),
            config,
            self.schema.clone(),
            self.listener.clone(),
        )
    }

    /// Publishing inside the caller's transactions, with these tables.
    pub fn outbox(&self) -> Outbox {
        Outbox::with_tables(self.config.tables.clone())
    }
}

/// Publishes by inserting rows; `publish` returns once they are committed (one statement or
/// transaction per call: all of a call's messages or none).
///
/// Same-process subscribers are woken at once; on PostgreSQL a `NOTIFY` wakes the others.
#[derive(Clone, Debug)]
pub struct SqlPublisher {
    pool: SqlPool,
    config: Arc<SqlConfig>,
    schema: Arc<OnceCell<()>>,
    closed: Arc<AtomicBool>,
}

impl SqlPublisher {
    pub(crate) fn new(pool: SqlPool, config: Arc<SqlConfig>, schema: Arc<OnceCell<()>>) -> Self {
        Self {
            pool,
            config,
            schema,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl Publisher for SqlPublisher {
    /// Metadata is stored as a JSON object of strings: any UTF-8 name and value. Payloads up to
    /// what the database takes in one value: 1 GiB on PostgreSQL (`bytea`), 16 MiB on
    /// MariaDB/MySQL (the default `max_allowed_packet`), 1 GB on SQLite (`SQLITE_MAX_LENGTH`).
    fn limits(&self) -> tidemill::Limits {
        let (adapter, max) = match self.pool.backend() {
            crate::Backend::Postgres => ("PostgreSQL", (1 << 30) - 1024),
            crate::Backend::MySql => ("MariaDB/MySQL", 16 * 1024 * 1024 - 1024),
            crate::Backend::Sqlite => ("SQLite", 1_000_000_000 - 1024),
        };
        tidemill::Limits::new(adapter)
            .max_payload(max)
            .topic_rule(validate_topic)
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        self.limits().check_all(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let first_id = messages[0].shared_id();
        self.pool
            .ensure_schema(&self.config, &self.schema)
            .await
            .map_err(|e| Error::publish(topic, &*first_id, e))?;
        let now = now_ms();
        let rows = encode(topic, messages, now)?;
        self.pool
            .insert(&self.config.tables, topic, &rows, now)
            .await
            .map_err(|e| Error::publish(topic, &*first_id, crate::SqlError::from(e)))?;
        crate::notify::wake(self.config.tables.prefix(), topic);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        // Every publish has committed by the time it returns: nothing to flush.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}
