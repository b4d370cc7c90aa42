//! [`RedisSubscriber`]: consumer groups with `XREADGROUP`/`XACK`/`XAUTOCLAIM`, or fan-out with
//! `XREAD`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{RedisError, Value};
use tidemill::{
    validate_topic, Acker, Delivery, Error, Result, Settle, Settlement, SubscribeInitializer,
    Subscriber, Subscription,
};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acker::{self, AckOp, Target};
use crate::codec::{self, Entry};
use crate::config::{RedisConfig, StartFrom};
use crate::connection::{is_connection_error, Backoff, Endpoint};
use crate::error::RedisAdapterError;

/// Subscribes to the stream `<key_prefix><topic>`.
///
/// With a [consumer group](RedisConfig::consumer_group), each subscription is a consumer of
/// that Redis consumer group (created on first subscribe, from the
/// [configured start](RedisConfig::start_position)) and reads with `XREADGROUP`: subscribers of one
/// group split the messages, an ack is an `XACK`. Messages left unacknowledged by a consumer that
/// died are claimed with `XAUTOCLAIM` after [`claim_idle`](RedisConfig::claim_idle); consumers
/// idle for longer than [`consumer_timeout`](RedisConfig::consumer_timeout) with nothing pending
/// are removed.
///
/// Without a group every subscription reads every message with `XREAD`, from the
/// [configured start](RedisConfig::start_position); its position lives in memory only.
///
/// Each subscription has a connection of its own for its blocking reads; acks of all
/// subscriptions go through one shared connection, batched.
///
/// ```
/// use futures::StreamExt;
/// use tidemill::{Message, Publisher, Subscriber};
/// use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let topic = format!("doc-subscriber-{}", tidemill::new_uuid());
/// let config = RedisConfig::from_url("redis://127.0.0.1:6379")?.group("billing");
/// let subscriber = RedisSubscriber::connect(config.clone()).await?;
/// let mut orders = subscriber.subscribe(&topic).await?;
///
/// let publisher = RedisPublisher::connect(config).await?;
/// publisher.publish(&topic, vec![Message::new("order #1")]).await?;
///
/// let delivery = orders.next().await.unwrap()?;
/// assert_eq!(delivery.message().payload().as_ref(), b"order #1");
/// delivery.ack();
/// subscriber.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSubscriber {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    endpoint: Endpoint,
    conn: ConnectionManager,
    acker: mpsc::UnboundedSender<AckOp>,
    consumer_base: Arc<str>,
    names: Mutex<HashMap<String, usize>>,
    closed: AtomicBool,
    cancel: CancellationToken,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSubscriber")
            .field("address", &self.inner.endpoint.address)
            .field("group", &self.inner.config.consumer_group)
            .field("consumer", &self.inner.consumer_base)
            .finish()
    }
}

impl RedisSubscriber {
    /// Connects to the server. Fails with [`Error::Connect`] if it cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.check()?;
        let endpoint = Endpoint::new(&config)?;
        let conn = endpoint.manager(&config).await?;
        let acker = acker::spawn(conn.clone(), &config);
        let consumer_base = config
            .consumer_name
            .clone()
            .unwrap_or_else(|| format!("tidemill-{}", tidemill::new_uuid()).into());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                endpoint,
                conn,
                acker,
                consumer_base,
                names: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                cancel: CancellationToken::new(),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The options in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// This subscriber's consumer name (its first subscription of a topic uses it as is).
    pub fn consumer_name(&self) -> &str {
        &self.inner.consumer_base
    }

    fn consumer_for(&self, topic: &str) -> Arc<str> {
        let mut names = self.inner.names.lock();
        let n = names.entry(topic.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.inner.consumer_base.clone()
        } else {
            format!("{}-{n}", self.inner.consumer_base).into()
        }
    }
}

#[async_trait]
impl Subscriber for RedisSubscriber {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        validate_topic(topic)?;
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("redis subscriber"));
        }
        let config = &inner.config;
        let key: Arc<str> = config.stream_key(topic).into();
        let topic: Arc<str> = topic.into();
        let sub_err = |e: RedisError| Error::subscribe(&*topic, RedisAdapterError::from(e));

        let mut conn = inner.conn.clone();
        let (target, position) = match &config.consumer_group {
            Some(group) => {
                ensure_group(&mut conn, &key, group, config.group_start)
                    .await
                    .map_err(sub_err)?;
                let target = Arc::new(Target {
                    topic: topic.clone(),
                    key: key.clone(),
                    group: group.clone(),
                    consumer: self.consumer_for(&topic),
                });
                (Some(target), String::new())
            }
            None => {
                let position = match config.fanout_start {
                    StartFrom::Beginning => "0-0".to_owned(),
                    StartFrom::Latest => last_id(&mut conn, &key).await.map_err(sub_err)?,
                };
                (None, position)
            }
        };
        let reader_conn = inner
            .endpoint
            .dedicated(config)
            .await
            .map_err(|e| inner.endpoint.connect_error(e))?;
        let client_id = client_id(&reader_conn).await.map_err(sub_err)?;

        let state = Arc::new(SubState {
            topic: topic.clone(),
            target,
            queues: Mutex::new(Queues::default()),
            readable: Notify::new(),
            room: Notify::new(),
            window: Arc::new(Semaphore::new(config.max_in_flight)),
            acker: inner.acker.clone(),
            cancel: inner.cancel.child_token(),
            nack_delay: config.nack_delay,
            low_water: config.batch_size / 2,
        });
        let reader = Reader {
            state: state.clone(),
            subscriber: inner.clone(),
            key,
            conn: Some((reader_conn, client_id)),
            position,
        };
        let handle = tokio::spawn(reader.run());
        {
            let mut readers = inner.readers.lock();
            readers.retain(|h| !h.is_finished());
            readers.push(handle);
        }
        let stream = futures::stream::unfold(StreamGuard(state), |guard| async move {
            let item = guard.0.next().await?;
            Some((item, guard))
        });
        Ok(Subscription::new(topic, stream))
    }

    /// Stops every subscription (their streams end), gives the messages they had fetched but
    /// not delivered back to the group, and waits until the acks and nacks made so far reached
    /// the server (up to [`close_timeout`](RedisConfig::close_timeout)). Deliveries still held
    /// can be settled afterwards. Closing twice is harmless.
    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.cancel.cancel();
        let readers = std::mem::take(&mut *inner.readers.lock());
        let timeout = inner.config.close_timeout;
        let deadline = Instant::now() + timeout;
        for reader in readers {
            if tokio::time::timeout_at(deadline, reader).await.is_err() {
                return Err(Error::Timeout {
                    operation: "closing the redis subscriber",
                    timeout,
                });
            }
        }
        let (done, flushed) = oneshot::channel();
        if inner.acker.send(AckOp::Flush(done)).is_ok()
            && tokio::time::timeout_at(deadline, flushed).await.is_err()
        {
            return Err(Error::Timeout {
                operation: "flushing acknowledgements",
                timeout,
            });
        }
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }

    fn max_in_flight(&self) -> Option<usize> {
        Some(self.inner.config.max_in_flight)
    }

    fn group(&self) -> Option<&str> {
        self.inner.config.consumer_group.as_deref()
    }

    /// Dead letters go to the stream of the dead-letter topic on this server.
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        let inner = &self.inner;
        Some(Arc::new(crate::RedisPublisher::from_parts(
            inner.config.clone(),
            inner.endpoint.clone(),
            inner.conn.clone(),
        )))
    }
}

#[async_trait]
impl SubscribeInitializer for RedisSubscriber {
    /// With a consumer group, creates the stream and the group (from the configured start), so
    /// the group gets every message published from now on. A stream keeps its entries without
    /// any reader, so without a group there is nothing to create.
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        let config = &self.inner.config;
        if let Some(group) = &config.consumer_group {
            let key = config.stream_key(topic);
            ensure_group(
                &mut self.inner.conn.clone(),
                &key,
                group,
                config.group_start,
            )
            .await
            .map_err(|e| Error::subscribe(topic, RedisAdapterError::from(e)))?;
        }
        Ok(())
    }
}

/// `XGROUP CREATE key group <start> MKSTREAM`; an existing group is left as it is.
async fn ensure_group(
    conn: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
    group: &str,
    start: StartFrom,
) -> Result<(), RedisError> {
    let start = match start {
        StartFrom::Beginning => "0",
        StartFrom::Latest => "$",
    };
    let created: Result<Value, RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// The id of the newest entry, where a subscription from now starts (`$` would be resolved
/// only at the first read and miss what is published in between).
async fn last_id(conn: &mut ConnectionManager, key: &str) -> Result<String, RedisError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let (mut entries, mut deleted) = (Vec::new(), Vec::new());
    codec::read_reply(Value::Array(vec![reply]), &mut entries, &mut deleted)
        .map_err(|e| RedisError::from((redis::ErrorKind::Parse, "XREVRANGE", e.to_string())))?;
    Ok(entries
        .first()
        .map(|e| e.id.to_string())
        .unwrap_or_else(|| "0-0".to_owned()))
}

async fn client_id(conn: &MultiplexedConnection) -> Result<i64, RedisError> {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn.clone())
        .await
}

/// What one subscription shares between its reader task, its stream and its deliveries.
struct SubState {
    topic: Arc<str>,
    /// The group to settle in; `None` without a consumer group.
    target: Option<Arc<Target>>,
    queues: Mutex<Queues>,
    readable: Notify,
    room: Notify,
    window: Arc<Semaphore>,
    acker: mpsc::UnboundedSender<AckOp>,
    cancel: CancellationToken,
    nack_delay: Duration,
    low_water: usize,
}

#[derive(Default)]
struct Queues {
    /// Fetched, not yet delivered.
    buffer: VecDeque<Entry>,
    /// Nacked, with the time they are due; they go before `buffer`, in nack order.
    redeliveries: VecDeque<(Instant, Entry)>,
    errors: VecDeque<Error>,
    closed: bool,
}

enum Step {
    Deliver(Entry),
    Fail(Error),
    Wait(Option<Instant>),
    End,
}

impl SubState {
    async fn next(self: &Arc<Self>) -> Option<Result<Delivery>> {
        // The fast path skips registering with the cancellation token on every message.
        let permit = match self.window.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                permit = self.window.clone().acquire_owned() => permit.ok()?,
                _ = self.cancel.cancelled() => return None,
            },
        };
        if self.cancel.is_cancelled() {
            return None;
        }
        loop {
            let step = {
                let mut q = self.queues.lock();
                if q.closed {
                    Step::End
                } else if let Some((due, _)) = q.redeliveries.front() {
                    if *due <= Instant::now() {
                        Step::Deliver(q.redeliveries.pop_front().expect("checked").1)
                    } else {
                        Step::Wait(Some(*due))
                    }
                } else if let Some(entry) = q.buffer.pop_front() {
                    if q.buffer.len() == self.low_water {
                        self.room.notify_one();
                    }
                    Step::Deliver(entry)
                } else if let Some(e) = q.errors.pop_front() {
                    Step::Fail(e)
                } else {
                    self.room.notify_one();
                    Step::Wait(None)
                }
            };
            match step {
                Step::Deliver(entry) => {
                    let message = entry.message.clone();
                    let settle = RedisSettle {
                        state: self.clone(),
                        entry,
                        _permit: permit,
                    };
                    return Some(Ok(Delivery::new(message, Acker::new(settle))));
                }
                Step::Fail(e) => return Some(Err(e)),
                Step::End => return None,
                Step::Wait(due) => {
                    let due = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        _ = self.readable.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.cancel.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Adds fetched entries; once closed, gives them straight back.
    fn push(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut q = self.queues.lock();
        if q.closed {
            drop(q);
            self.release(entries.into_iter().map(|e| e.id).collect());
            return;
        }
        q.buffer.extend(entries);
        drop(q);
        self.readable.notify_one();
    }

    fn push_error(&self, error: Error) {
        let mut q = self.queues.lock();
        // A consumer that does not look at errors must not make them pile up.
        if q.errors.len() < 16 {
            q.errors.push_back(error);
        }
        drop(q);
        self.readable.notify_one();
    }

    fn buffered(&self) -> usize {
        self.queues.lock().buffer.len()
    }

    fn redeliver(&self, entry: Entry, delay: Duration) {
        let mut q = self.queues.lock();
        if q.closed {
            drop(q);
            self.release(vec![entry.id]);
            return;
        }
        q.redeliveries.push_back((Instant::now() + delay, entry));
        drop(q);
        self.readable.notify_one();
    }

    fn release(&self, ids: Vec<Arc<str>>) {
        if let (Some(target), false) = (&self.target, ids.is_empty()) {
            let _ = self.acker.send(AckOp::Release {
                target: target.clone(),
                ids,
            });
        }
    }

    /// Ends the subscription: the stream ends, and what was fetched but not delivered goes back.
    fn shut(&self) {
        let (buffer, redeliveries) = {
            let mut q = self.queues.lock();
            q.closed = true;
            (
                std::mem::take(&mut q.buffer),
                std::mem::take(&mut q.redeliveries),
            )
        };
        let ids = redeliveries
            .into_iter()
            .map(|(_, e)| e.id)
            .chain(buffer.into_iter().map(|e| e.id))
            .collect();
        self.release(ids);
        self.readable.notify_one();
    }
}

/// Cancels the subscription when its stream is dropped.
struct StreamGuard(Arc<SubState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.cancel.cancel();
    }
}

struct RedisSettle {
    state: Arc<SubState>,
    entry: Entry,
    _permit: OwnedSemaphorePermit,
}

impl Settle for RedisSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let RedisSettle {
            state,
            entry,
            _permit,
        } = *self;
        match settlement {
            Settlement::Ack => {
                if let Some(target) = &state.target {
                    let _ = state.acker.send(AckOp::Ack {
                        target: target.clone(),
                        id: entry.id,
                        message_id: entry.message.shared_id(),
                    });
                }
            }
            Settlement::Nack { delay } => {
                state.redeliver(entry, delay.unwrap_or(state.nack_delay));
            }
        }
        // The permit goes last, so a redelivery is queued before the stream may fetch more.
        drop(_permit);
    }
}

/// The task that reads one subscription's stream into its buffer.
struct Reader {
    state: Arc<SubState>,
    subscriber: Arc<Inner>,
    key: Arc<str>,
    conn: Option<(MultiplexedConnection, i64)>,
    /// Without a group: the id of the last entry read.
    position: String,
}

enum Read {
    /// Own pending entries first (a restarted consumer with a stable name), from this id.
    OwnPending(String),
    New,
}

impl Reader {
    async fn run(mut self) {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let state = self.state.clone();
        let mut backoff = Backoff::new(config);
        let mut read = Read::OwnPending("0-0".to_owned());
        let mut next_claim = Instant::now();
        let mut claim_cursor = "0-0".to_owned();
        let mut next_check = Instant::now() + config.consumer_check_interval;
        let mut failing = false;
        loop {
            // Back-pressure: fetch more only once the consumer has used up half of the buffer.
            while state.buffered() > state.low_water {
                tokio::select! {
                    _ = state.room.notified() => {}
                    _ = state.cancel.cancelled() => break,
                }
            }
            if state.cancel.is_cancelled() {
                break;
            }
            let result = match &state.target {
                Some(target) => {
                    let target = target.clone();
                    self.group_round(
                        &target,
                        &mut read,
                        &mut next_claim,
                        &mut claim_cursor,
                        &mut next_check,
                    )
                    .await
                }
                None => self.fanout_round().await,
            };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(topic = %state.topic, "subscription reading again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or the group is gone (deleted, or a server restart without
                    // persistence): declare it again.
                    if let Some(target) = &state.target {
                        tracing::warn!(topic = %state.topic, group = %target.group, "consumer group missing, creating it again");
                        let mut conn = self.subscriber.conn.clone();
                        if let Err(e) =
                            ensure_group(&mut conn, &self.key, &target.group, config.group_start)
                                .await
                        {
                            tracing::warn!(topic = %state.topic, error = %e, "creating the consumer group failed");
                            self.pause(&mut backoff).await;
                        }
                    }
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        self.conn = None;
                        if !failing {
                            tracing::warn!(topic = %state.topic, address = %self.subscriber.endpoint.address, error = %e, "subscription lost the connection, reconnecting");
                        }
                    } else {
                        tracing::warn!(topic = %state.topic, error = %e, "reading the stream failed");
                        state.push_error(Error::subscribe(
                            &*state.topic,
                            RedisAdapterError::from(e),
                        ));
                    }
                    failing = true;
                    self.pause(&mut backoff).await;
                }
            }
        }
        state.shut();
    }

    async fn pause(&self, backoff: &mut Backoff) {
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = self.state.cancel.cancelled() => {}
        }
    }

    async fn connection(&mut self) -> Result<(MultiplexedConnection, i64), RedisError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .subscriber
            .endpoint
            .dedicated(&self.subscriber.config)
            .await?;
        let id = client_id(&conn).await?;
        self.conn = Some((conn.clone(), id));
        Ok((conn, id))
    }

    async fn group_round(
        &mut self,
        target: &Target,
        read: &mut Read,
        next_claim: &mut Instant,
        claim_cursor: &mut String,
        next_check: &mut Instant,
    ) -> Result<(), RedisError> {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let (mut conn, client_id) = self.connection().await?;
        let count = config.batch_size;
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());

        if let Read::OwnPending(from) = read {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*target.group)
                .arg(&*target.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&*self.key)
                .arg(&*from)
                .query_async(&mut conn)
                .await?;
            codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
            let last = entries
                .last()
                .map(|e| e.id.to_string())
                .or(deleted.last().cloned());
            match last {
                Some(last) => *from = last,
                None => *read = Read::New,
            }
            self.ack_deleted(target, deleted);
            self.state.push(entries);
            return Ok(());
        }

        let now = Instant::now();
        if now >= *next_claim {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&*self.key)
                .arg(&*target.group)
                .arg(&*target.consumer)
                .arg(config.claim_idle.as_millis() as u64)
                .arg(&**claim_cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            let cursor =
                codec::autoclaim_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
            if !entries.is_empty() {
                tracing::debug!(topic = %target.topic, count = entries.len(), "claimed idle messages");
            }
            self.state.push(std::mem::take(&mut entries));
            if cursor == "0-0" {
                *next_claim = now + config.claim_interval;
            }
            *claim_cursor = cursor;
            if self.state.buffered() > self.state.low_water {
                return Ok(());
            }
        }
        if let Some(timeout) = config.consumer_timeout {
            if now >= *next_check {
                *next_check = now + config.consumer_check_interval;
                self.remove_dead_consumers(&mut conn, target, timeout)
                    .await?;
            }
        }

        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*target.group)
            .arg(&*target.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(config.block_time.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*self.key)
            .arg(">");
        let reply = self.blocking(&cmd, &mut conn, client_id).await?;
        codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
        self.state.push(entries);
        Ok(())
    }

    async fn fanout_round(&mut self) -> Result<(), RedisError> {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let (mut conn, client_id) = self.connection().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(config.block_time.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*self.key)
            .arg(&self.position);
        let reply = self.blocking(&cmd, &mut conn, client_id).await?;
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());
        codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
        if let Some(last) = entries.last() {
            self.position = last.id.to_string();
        }
        self.state.push(entries);
        Ok(())
    }

    /// Runs a blocking read. If the subscription is cancelled meanwhile, the read is woken with
    /// `CLIENT UNBLOCK` and awaited, so entries the server handed out reach the buffer (and go
    /// back to the group) instead of vanishing with a dropped reply.
    async fn blocking(
        &self,
        cmd: &redis::Cmd,
        conn: &mut MultiplexedConnection,
        client_id: i64,
    ) -> Result<Value, RedisError> {
        let read = cmd.query_async::<Value>(conn);
        tokio::pin!(read);
        tokio::select! {
            reply = &mut read => reply,
            _ = self.state.cancel.cancelled() => {
                let unblock: Result<Value, RedisError> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(client_id)
                    .query_async(&mut self.subscriber.conn.clone())
                    .await;
                if let Err(e) = unblock {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK failed");
                }
                read.await
            }
        }
    }

    /// Pending entries whose data was deleted from the stream can never be processed: ack them.
    fn ack_deleted(&self, target: &Target, deleted: Vec<String>) {
        let Some(target_arc) = &self.state.target else {
            return;
        };
        for id in deleted {
            tracing::warn!(topic = %target.topic, entry_id = %id, "pending entry was deleted from the stream; acknowledging it");
            let _ = self.state.acker.send(AckOp::Ack {
                target: target_arc.clone(),
                message_id: id.clone().into(),
                id: id.into(),
            });
        }
    }

    /// `XGROUP DELCONSUMER` for consumers idle longer than `timeout` with nothing pending. A dead
    /// consumer's pending messages are claimed by `XAUTOCLAIM` first, which empties its list.
    async fn remove_dead_consumers(
        &self,
        conn: &mut MultiplexedConnection,
        target: &Target,
        timeout: Duration,
    ) -> Result<(), RedisError> {
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&*self.key)
            .arg(&*target.group)
            .query_async(conn)
            .await?;
        let Value::Array(consumers) = reply else {
            return Ok(());
        };
        for consumer in consumers {
            let fields = match consumer {
                Value::Array(flat) => {
                    let mut it = flat.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    pairs
                }
                Value::Map(pairs) => pairs,
                _ => continue,
            };
            let (mut name, mut pending, mut idle) = (None, None, None);
            for (k, v) in fields {
                match codec::string(k).as_deref() {
                    Some("name") => name = codec::string(v),
                    Some("pending") => pending = as_int(&v),
                    Some("idle") => idle = as_int(&v),
                    _ => {}
                }
            }
            let (Some(name), Some(0), Some(idle)) = (name, pending, idle) else {
                continue;
            };
            if name == *target.consumer || idle < timeout.as_millis() as i64 {
                continue;
            }
            let removed: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&*self.key)
                .arg(&*target.group)
                .arg(&name)
                .query_async(conn)
                .await;
            match removed {
                Ok(_) => {
                    tracing::info!(topic = %target.topic, group = %target.group, consumer = %name, idle_ms = idle, "removed idle consumer")
                }
                Err(e) => {
                    tracing::debug!(consumer = %name, error = %e, "removing idle consumer failed")
                }
            }
        }
        Ok(())
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn parse_error(e: RedisAdapterError) -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
}
