//! [`RedisPublisher`]: `XADD` to the stream of each topic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Pipeline, RedisError, RedisResult, Value};
use tidemill::{Error, Message, Publisher, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::codec;
use crate::config::RedisConfig;
use crate::connection::{is_connection_error, reconnect_backoff, Endpoint};
use crate::error::RedisAdapterError;

/// Publishes with `XADD` to the stream `<key_prefix><topic>`.
///
/// `publish` returns once the server has answered every `XADD`: the entries are in the server's
/// memory (on disk only as far as the server's own persistence settings go). A batch goes out as
/// one pipeline, in order, in one round trip. While the server is unreachable, `publish` retries
/// with backoff for [`publish_retry_timeout`](RedisConfig::publish_retry_timeout) and then fails;
/// it never reports success for an entry the server did not confirm. A retry after a lost answer
/// can store an entry twice (at-least-once).
///
/// Cloning gives another handle on the same connection.
///
/// ```
/// use tidemill::{Message, Publisher};
/// use tidemill_redis::{RedisConfig, RedisPublisher};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let publisher = RedisPublisher::connect(RedisConfig::from_url("redis://127.0.0.1:6379")?).await?;
/// let messages = (0..3).map(|i| Message::new(format!("order {i}"))).collect();
/// publisher.publish("doc-publisher-orders", messages).await?;
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    endpoint: Endpoint,
    conn: ConnectionManager,
    closed: AtomicBool,
    /// Publishes in progress, which `close` waits for.
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Counts one publish in progress.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher")
            .field("address", &self.inner.endpoint.address)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisPublisher {
    /// Connects to the server. Fails with [`Error::Connect`] if it cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let endpoint = Endpoint::new(&config)?;
        let conn = endpoint.manager(&config).await?;
        Ok(Self::from_parts(config, endpoint, conn))
    }

    /// A publisher on a connection made already (a subscriber's, for dead letters).
    pub(crate) fn from_parts(
        config: RedisConfig,
        endpoint: Endpoint,
        conn: ConnectionManager,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                endpoint,
                conn,
                closed: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// The options in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    async fn send(&self, topic: &str, key: &str, messages: &[Message]) -> Result<()> {
        let inner = &*self.inner;
        let max_len = inner.config.max_len_of(topic);
        let encode = |m: &Message| {
            codec::xadd(key, max_len, m).map_err(|e| Error::publish(topic, m.id(), e))
        };
        // One command needs no pipeline bookkeeping.
        let batch = if let [message] = messages {
            Batch::One(encode(message)?)
        } else {
            let mut pipe = Pipeline::with_capacity(messages.len());
            for message in messages {
                pipe.add_command(encode(message)?);
            }
            pipe.ignore_errors();
            Batch::Many(pipe)
        };
        let mut retry: Option<(Instant, tidemill::backoff::Retries)> = None;
        loop {
            let mut conn = inner.conn.clone();
            // Ok(Some((i, e))): the server refused message i; Err: the request failed as a whole.
            let outcome: RedisResult<Option<(usize, RedisError)>> = match &batch {
                Batch::One(cmd) => match cmd.query_async::<()>(&mut conn).await {
                    Ok(()) => Ok(None),
                    Err(e) if is_connection_error(&e) => Err(e),
                    Err(e) => Ok(Some((0, e))),
                },
                Batch::Many(pipe) => pipe
                    .query_async::<Vec<RedisResult<Value>>>(&mut conn)
                    .await
                    .map(|results| {
                        results
                            .into_iter()
                            .enumerate()
                            .find_map(|(i, r)| r.err().map(|e| (i, e)))
                    }),
            };
            match outcome {
                Ok(None) => return Ok(()),
                Ok(Some((i, e))) => {
                    return Err(Error::publish(
                        topic,
                        messages[i].id(),
                        RedisAdapterError::from(e),
                    ))
                }
                Err(e) if is_connection_error(&e) => {
                    let (deadline, backoff) = retry.get_or_insert_with(|| {
                        (
                            Instant::now() + inner.config.publish_retry_timeout,
                            reconnect_backoff(&inner.config),
                        )
                    });
                    let delay = backoff.next_delay();
                    if inner.closed.load(Ordering::Acquire) || Instant::now() + delay > *deadline {
                        return Err(publish_error(topic, messages, e));
                    }
                    tracing::debug!(topic, address = %inner.endpoint.address, error = %e, "publish failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(publish_error(topic, messages, e)),
            }
        }
    }
}

enum Batch {
    One(redis::Cmd),
    Many(Pipeline),
}

fn publish_error(topic: &str, messages: &[Message], e: RedisError) -> Error {
    Error::publish(topic, messages[0].id(), RedisAdapterError::from(e))
}

#[async_trait]
impl Publisher for RedisPublisher {
    /// Entry fields are binary-safe; the id and payload fields are the adapter's own, and a
    /// Redis string holds at most 512 MB.
    fn limits(&self) -> tidemill::Limits {
        tidemill::Limits::new("Redis")
            .reserved_names(&[crate::codec::ID_FIELD, crate::codec::PAYLOAD_FIELD])
            .max_payload(512 * 1024 * 1024)
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.limits().check_all(topic, &messages)?;
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("redis publisher"));
        }
        if messages.is_empty() {
            return Ok(());
        }
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(inner);
        if inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("redis publisher"));
        }
        if inner.config.key_prefix.is_empty() {
            self.send(topic, topic, &messages).await
        } else {
            self.send(topic, &inner.config.stream_key(topic), &messages)
                .await
        }
    }

    /// Waits for publishes in progress, then refuses new ones. The connection is released when
    /// the last handle is dropped.
    async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = inner.idle.notified();
            if inner.in_flight.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            idle.await;
        }
    }
}
