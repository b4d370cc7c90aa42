//! [`SqlSubscriber`]: reads topics as logs (offsets per consumer group) or as queues.
//!
//! Inside: the subscriber hands each subscription to a task, in log mode (`log`) or queue mode
//! (`queue`); both share the stream and settlement channel of `task`, and deliveries settle
//! through `settle`.

mod log;
mod queue;
mod settle;
mod task;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tidemill::{
    Delivery, Error, Result, StartPosition, SubscribeInitializer, Subscriber, Subscription,
};
use tokio::sync::{mpsc, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::log::LogTask;
use self::queue::QueueTask;
use self::task::Common;
use crate::config::{ConsumeMode, SqlConfig};
use crate::notify::SharedListener;
use crate::pool::SqlPool;
use crate::row::{Cursor, Start};
use crate::schema::{validate_group, validate_topic};

/// The subscriber options [`SqlPubSub::subscriber_with`](crate::SqlPubSub::subscriber_with)
/// replaces in the pub/sub's [`SqlConfig`], named as there; the others stay as configured.
///
/// ```
/// use std::time::Duration;
/// use tidemill::StartPosition;
/// use tidemill_sql::SubscriberOverrides;
///
/// let replay = SubscriberOverrides::new()
///     .group("audit")
///     .start_position(StartPosition::Beginning)
///     .max_in_flight(8)
///     .nack_delay(Duration::from_millis(500));
/// # drop(replay);
/// ```
#[derive(Clone, Debug, Default)]
pub struct SubscriberOverrides {
    group: Option<Option<String>>,
    start: Option<StartPosition>,
    max_in_flight: Option<usize>,
    nack_delay: Option<Duration>,
}

impl SubscriberOverrides {
    /// Nothing replaced.
    pub fn new() -> Self {
        Self::default()
    }

    /// This consumer group instead of the configured one ([`SqlConfig::group`]).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(Some(group.into()));
        self
    }

    /// No consumer group, whatever the configuration says ([`SqlConfig::no_group`]).
    pub fn no_group(mut self) -> Self {
        self.group = Some(None);
        self
    }

    /// This start position ([`SqlConfig::start_position`]).
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start = Some(start);
        self
    }

    /// This in-flight window ([`SqlConfig::max_in_flight`]).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// This nack delay ([`SqlConfig::nack_delay`]).
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = Some(delay);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.group.is_none()
            && self.start.is_none()
            && self.max_in_flight.is_none()
            && self.nack_delay.is_none()
    }

    pub(crate) fn apply(self, mut config: SqlConfig) -> SqlConfig {
        if let Some(group) = self.group {
            config.group = group;
        }
        if let Some(start) = self.start {
            config = config.start_position(start);
        }
        if let Some(n) = self.max_in_flight {
            config = config.max_in_flight(n);
        }
        if let Some(delay) = self.nack_delay {
            config = config.nack_delay(delay);
        }
        config
    }
}

/// Receives messages from the database.
///
/// In [`Log`](ConsumeMode::Log) mode (the default) each consumer group has an offset per topic
/// in `<prefix>offsets`; a group member holds a lease on that row while it reads, so members
/// take turns and no message goes to two of them; a new group starts at the topic's first
/// row, or at the configured [`start_position`](SqlConfig::start_position), and a group with an
/// offset resumes from it. Without a group, a subscription starts at the end of the topic (or
/// the start position) and keeps its offset in memory. In [`Queue`](ConsumeMode::Queue) mode
/// members claim rows in parallel and an ack deletes the row.
///
/// Acks are written in batches by the subscription's task; `close` writes those still pending
/// and ends every subscription. Dropping the subscriber leaves running subscriptions alone;
/// dropping a subscription ends it (writing its acks).
#[derive(Clone, Debug)]
pub struct SqlSubscriber {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlPool,
    config: Arc<SqlConfig>,
    schema: Arc<OnceCell<()>>,
    group: Option<String>,
    /// The configured start position, checked; `None`: the default of the situation.
    start: Option<Start>,
    owner: String,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listener: Arc<SharedListener>,
    closed: AtomicBool,
}

impl SqlSubscriber {
    pub(crate) fn new(
        pool: SqlPool,
        config: Arc<SqlConfig>,
        schema: Arc<OnceCell<()>>,
        listener: Arc<SharedListener>,
    ) -> Result<Self> {
        let group = config.group.clone();
        if let Some(g) = &group {
            validate_group(g)?;
        }
        let start = config.start.map(Start::from_position).transpose()?;
        if config.mode == ConsumeMode::Queue {
            // The table is the queue: a setting that would not take effect is refused.
            if let Some(g) = &group {
                return Err(Error::Config(format!(
                    "SQL queue mode has no consumer groups (group {g:?}): every member \
                     claims from the same rows; use log mode for groups"
                )));
            }
            if let Some(other) = config.start.filter(|s| *s != StartPosition::Beginning) {
                return Err(Error::Config(format!(
                    "SQL queue mode delivers every row still in the table (beginning); it cannot \
                     start at {:?}",
                    other.kind()
                )));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                schema,
                group,
                start,
                owner: uuid::Uuid::new_v4().simple().to_string(),
                stop: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
                listener,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The consumer group, if any.
    pub fn group(&self) -> Option<&str> {
        self.inner.group.as_deref()
    }
}

impl Inner {
    /// Where a subscription in log mode starts, decided before `subscribe` returns, and the
    /// committed rows past that cursor it skips. A group reads from its offset row: this
    /// creates it at the start position if the group has none (a new group), and leaves an
    /// existing one as it is.
    async fn start_of(&self, topic: &str) -> sqlx::Result<(Cursor, HashSet<i64>)> {
        let tables = &self.config.tables;
        match (&self.group, self.start) {
            (None, start) => {
                self.pool
                    .start_cursor(tables, topic, start.unwrap_or(Start::End))
                    .await
            }
            // A new group's row starts at the beginning when its first member claims it.
            (Some(_), None | Some(Start::Beginning)) => Ok((Cursor::default(), HashSet::new())),
            (Some(group), Some(start)) => {
                let (cursor, mut skip) = self.pool.start_cursor(tables, topic, start).await?;
                if !self
                    .pool
                    .offset_if_absent(tables, group, topic, cursor)
                    .await?
                {
                    // The group existed: it resumes, and the rows to skip mean nothing to it.
                    skip.clear();
                }
                // The claim sets the read cursor from the row.
                Ok((Cursor::default(), skip))
            }
        }
    }
}

#[async_trait]
impl Subscriber for SqlSubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        Some(self.inner.config.max_in_flight)
    }

    fn group(&self) -> Option<&str> {
        self.inner.group.as_deref()
    }

    /// Dead letters are rows of the dead-letter topic in the same tables.
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        let inner = &self.inner;
        Some(Arc::new(crate::SqlPublisher::new(
            inner.pool.clone(),
            inner.config.clone(),
            inner.schema.clone(),
        )))
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("subscriber"));
        }
        validate_topic(topic)?;
        let inner = &self.inner;
        inner
            .pool
            .ensure_schema(&inner.config, &inner.schema)
            .await
            .map_err(|e| Error::subscribe(topic, e))?;
        let listening = inner.listener.guard(&inner.pool, &inner.config.tables);
        let tables = &inner.config.tables;
        let wake = crate::notify::register(tables.prefix(), topic);
        let (out, mut rx) = mpsc::channel::<Delivery>(1);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let common = Common {
            pool: inner.pool.clone(),
            config: inner.config.clone(),
            topic: Arc::from(topic),
            out,
            settle_tx,
            settle_rx,
            wake,
            stop: inner.stop.child_token(),
            in_flight: 0,
            _listening: listening,
        };
        let task = match inner.config.mode {
            ConsumeMode::Log => {
                let (start, skip) = inner
                    .start_of(topic)
                    .await
                    .map_err(|e| Error::subscribe(topic, e))?;
                let task = LogTask {
                    c: common,
                    group: inner.group.clone(),
                    owner: inner.owner.clone(),
                    leased: inner.group.is_none(),
                    read: start,
                    acked: start,
                    flushed: start,
                    skip,
                    buffer: VecDeque::new(),
                    pending: VecDeque::new(),
                    next_seq: 0,
                    last_flush: Instant::now(),
                };
                tokio::spawn(task.run())
            }
            ConsumeMode::Queue => tokio::spawn(
                QueueTask {
                    c: common,
                    buffer: VecDeque::new(),
                    delivered: HashSet::new(),
                }
                .run(),
            ),
        };
        {
            let mut tasks = inner.tasks.lock();
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|d| d.map(Ok)));
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        let timeout = self.inner.config.close_timeout;
        tokio::time::timeout(timeout, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await
        .map_err(|_| Error::Timeout {
            operation: "closing the SQL subscriber (writing its acks)",
            timeout,
        })
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }
}

#[async_trait]
impl SubscribeInitializer for SqlSubscriber {
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        // Rows are kept whether or not anyone subscribed: the tables are all a topic needs.
        validate_topic(topic)?;
        self.inner
            .pool
            .ensure_schema(&self.inner.config, &self.inner.schema)
            .await
            .map_err(|e| Error::subscribe(topic, e))?;
        // With MariaDB/MySQL alone compiled in, the pattern cannot fail.
        #[cfg(feature = "mysql")]
        #[allow(irrefutable_let_patterns)]
        if let crate::SqlPool::MySql(pool) = &self.inner.pool {
            crate::mysql::ensure_sequence(pool, self.inner.config.tables(), topic)
                .await
                .map_err(|e| Error::subscribe(topic, e))?;
        }
        Ok(())
    }
}
