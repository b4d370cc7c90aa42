//! [`RedisSubscriber`]: consumer groups with `XREADGROUP`/`XACK`/`XAUTOCLAIM`, or fan-out with
//! `XREAD`.
//!
//! Inside: each subscription has a reader task (`reader`) that reads with a consumer group
//! (`group`, which also claims idle messages) or without one (`fanout`), and removes dead
//! consumers (`cleanup`); what it reads goes to the subscription's stream (`stream`), which its
//! deliveries settle back into. Where a subscription starts is set up by `start`.

mod cleanup;
mod fanout;
mod group;
mod reader;
mod start;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::RedisError;
use tidemill::{validate_topic, Error, Result, SubscribeInitializer, Subscriber, Subscription};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acker::{self, AckOp, Target};
use crate::config::{RedisConfig, StartFrom};
use crate::connection::Endpoint;
use crate::error::RedisAdapterError;

use self::reader::{client_id, Reader};
use self::start::{ensure_group, last_id};
use self::stream::{Queues, StreamGuard, SubState};

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
/// use tidemill::{Message, Publisher, PublisherExt, Subscriber};
/// use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let topic = format!("doc-subscriber-{}", tidemill::new_uuid());
/// let config = RedisConfig::from_url("redis://127.0.0.1:6379")?.group("billing");
/// let subscriber = RedisSubscriber::connect(config.clone()).await?;
/// let mut orders = subscriber.subscribe(&topic).await?;
///
/// let publisher = RedisPublisher::connect(config).await?;
/// publisher.publish_one(&topic, Message::new("order #1")).await?;
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
