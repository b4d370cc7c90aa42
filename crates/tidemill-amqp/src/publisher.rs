//! [`AmqpPublisher`]: publishes with publisher confirms over a pool of channels.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};
use parking_lot::{Mutex, RwLock};
use tidemill::{BoxError, Error, Message, Publisher, Result};
use tokio::time::Instant;

use crate::codec;
use crate::config::AmqpConfig;
use crate::connection::{connect, connect_error, reconnect_backoff};
use crate::declare::{declare_exchange, declare_queue, QueueSpec};
use crate::error::{is_transient, AmqpError};

/// Publishes tidemill messages to RabbitMQ.
///
/// `publish` returns once the broker confirmed every message (publisher confirms, the default),
/// which for durable queues means they are on disk. Messages of one `publish` call go over one
/// channel, in order; concurrent calls spread over a pool of channels. If the connection drops,
/// `publish` reconnects with backoff and sends again what was not confirmed, until the publish
/// timeout; it never reports success for a message the broker has not confirmed.
///
/// ```
/// use tidemill::{Message, Publisher, PublisherExt};
/// use tidemill_amqp::{AmqpConfig, AmqpPublisher};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let publisher = AmqpPublisher::connect(AmqpConfig::default()).await?;
/// publisher.publish_one("doc.publisher", Message::new("hello")).await?;
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpPublisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: AmqpConfig,
    session: Mutex<Option<Arc<Session>>>,
    reconnect: tokio::sync::Mutex<()>,
    next: AtomicUsize,
    closed: AtomicBool,
    in_flight: tokio::sync::RwLock<()>,
}

/// One connection and its channels; replaced as a whole when the connection dies.
struct Session {
    conn: Connection,
    channels: Vec<RwLock<Channel>>,
    declared: Mutex<HashSet<String>>,
}

/// A failed attempt: how many messages were confirmed before the failure, and whether another
/// attempt can help.
struct Failure {
    confirmed: usize,
    error: AmqpError,
    retry: bool,
}

impl Failure {
    fn lapin(confirmed: usize, error: lapin::Error) -> Self {
        let retry = is_transient(&error);
        let error = if retry {
            AmqpError::ConnectionLost(error)
        } else {
            AmqpError::Client(error)
        };
        Self {
            confirmed,
            error,
            retry,
        }
    }
}

impl AmqpPublisher {
    /// Connects to the broker.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        if config.mandatory && !config.confirms {
            return Err(Error::Config(
                "mandatory publishing needs publisher confirms to report unroutable messages"
                    .into(),
            ));
        }
        let inner = Arc::new(Inner {
            config,
            session: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            in_flight: tokio::sync::RwLock::new(()),
        });
        inner
            .session()
            .await
            .map_err(|e| connect_error(&inner.config, e))?;
        Ok(Self { inner })
    }

    /// The options in force.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }
}

impl Inner {
    async fn open_channel(&self, conn: &Connection) -> lapin::Result<Channel> {
        let channel = conn.create_channel().await?;
        if self.config.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        Ok(channel)
    }

    async fn session(&self) -> lapin::Result<Arc<Session>> {
        if let Some(s) = self.live_session() {
            return Ok(s);
        }
        let _one_at_a_time = self.reconnect.lock().await;
        if let Some(s) = self.live_session() {
            return Ok(s);
        }
        let conn = connect(&self.config, "publisher").await?;
        let mut channels = Vec::with_capacity(self.config.channel_pool_size);
        for _ in 0..self.config.channel_pool_size {
            channels.push(RwLock::new(self.open_channel(&conn).await?));
        }
        let session = Arc::new(Session {
            conn,
            channels,
            declared: Mutex::new(HashSet::new()),
        });
        *self.session.lock() = Some(session.clone());
        Ok(session)
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        let session = self.session.lock().clone()?;
        session.conn.status().connected().then_some(session)
    }

    async fn channel(&self, session: &Session) -> lapin::Result<Channel> {
        let slot =
            &session.channels[self.next.fetch_add(1, Ordering::Relaxed) % session.channels.len()];
        let channel = slot.read().clone();
        if channel.status().connected() {
            return Ok(channel);
        }
        // A channel the broker closed (e.g. after a 404) is replaced on its own; the cached
        // declarations may be what was wrong, so they are made again.
        let fresh = self.open_channel(&session.conn).await?;
        session.declared.lock().clear();
        *slot.write() = fresh.clone();
        Ok(fresh)
    }

    async fn ensure_declared(
        &self,
        session: &Session,
        channel: &Channel,
        topic: &str,
        exchange: &str,
    ) -> lapin::Result<()> {
        let topology = &self.config.topology;
        // Keyed by the exchange, or by the topic for the default exchange's work queues; looked
        // up without allocating, as this runs on every publish.
        let key = if exchange.is_empty() { topic } else { exchange };
        if session.declared.lock().contains(key) {
            return Ok(());
        }
        if exchange.is_empty() {
            if topology.shared_queue() {
                // A work queue exists from its first message on, so nothing published before
                // the first worker is lost.
                let spec = QueueSpec::shared(topology, topic);
                declare_queue(channel, &spec, topology).await?;
            }
        } else {
            declare_exchange(channel, exchange, topology).await?;
        }
        session.declared.lock().insert(key.to_owned());
        Ok(())
    }

    async fn attempt(
        &self,
        topic: &str,
        exchange: &str,
        routing_key: &str,
        messages: &[Message],
        props: &[BasicProperties],
    ) -> std::result::Result<(), Failure> {
        let session = self.session().await.map_err(|e| Failure::lapin(0, e))?;
        let channel = self
            .channel(&session)
            .await
            .map_err(|e| self.failed(&session, 0, e))?;
        self.ensure_declared(&session, &channel, topic, exchange)
            .await
            .map_err(|e| self.failed(&session, 0, e))?;
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        let mut confirms = Vec::with_capacity(messages.len());
        for (message, props) in messages.iter().zip(props) {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    message.payload(),
                    props.clone(),
                )
                .await
                .map_err(|e| self.failed(&session, 0, e))?;
            confirms.push(confirm);
        }
        for (i, confirm) in confirms.into_iter().enumerate() {
            match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(_))) => {
                    return Err(Failure {
                        confirmed: i,
                        error: AmqpError::Unroutable {
                            exchange: exchange.to_owned(),
                            routing_key: routing_key.to_owned(),
                        },
                        retry: false,
                    })
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(Failure {
                        confirmed: i,
                        error: AmqpError::Nacked,
                        retry: false,
                    })
                }
                Err(e) => return Err(self.failed(&session, i, e)),
            }
        }
        Ok(())
    }

    fn failed(&self, session: &Arc<Session>, confirmed: usize, error: lapin::Error) -> Failure {
        if !session.conn.status().connected() {
            let mut current = self.session.lock();
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
                *current = None;
            }
        }
        if error.is_amqp_soft_error() {
            session.declared.lock().clear();
        }
        Failure::lapin(confirmed, error)
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    /// Header names are AMQP short strings (255 bytes); the names RabbitMQ and this adapter
    /// write themselves are refused rather than lost on the way; RabbitMQ's default largest
    /// message is 128 MiB.
    fn limits(&self) -> tidemill::Limits {
        tidemill::Limits::new("RabbitMQ")
            .max_name(255)
            .reserved_names(&["x-death", "x-delivery-count"])
            .reserved_prefixes(&["x-first-death-", "x-last-death-", "x-tidemill-"])
            .max_payload(128 * 1024 * 1024)
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        let topology = &inner.config.topology;
        topology.validate_publish(topic)?;
        self.limits().check_all(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let _in_flight = inner.in_flight.read().await;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        let persistent = topology.is_durable();
        let props = messages
            .iter()
            .map(|m| codec::encode(m, persistent).map_err(|e| Error::publish(topic, m.id(), e)))
            .collect::<Result<Vec<_>>>()?;
        let exchange = topology.exchange_for(topic);
        let routing_key = topology.routing_key_for(topic);
        let deadline = Instant::now() + inner.config.publish_timeout;
        let mut backoff = reconnect_backoff(&inner.config);
        let mut done = 0;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match inner
                .attempt(
                    topic,
                    &exchange,
                    &routing_key,
                    &messages[done..],
                    &props[done..],
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            done += failure.confirmed;
            let id = messages[done].id();
            if !failure.retry {
                return Err(Error::publish(topic, id, failure.error));
            }
            let delay = backoff.next_delay();
            if inner.closed.load(Ordering::Acquire) || Instant::now() + delay > deadline {
                let source: BoxError = Box::new(AmqpError::GaveUp {
                    attempts,
                    last: failure.error.to_string(),
                });
                return Err(Error::publish(topic, id, source));
            }
            tracing::debug!(topic, message_id = id, error = %failure.error, "publish interrupted; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Publishes under way hold the read side until their confirms are in.
        let wait = inner.in_flight.write();
        if tokio::time::timeout(inner.config.close_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("closing the AMQP publisher before in-flight publishes finished");
        }
        let session = inner.session.lock().take();
        if let Some(session) = session {
            for channel in &session.channels {
                let channel = channel.read().clone();
                if channel.status().connected() {
                    let _ = channel.close(200, "closing".into()).await;
                }
            }
            if session.conn.status().connected() {
                let _ = session.conn.close(200, "closing".into()).await;
            }
        }
        Ok(())
    }
}

/// A publisher that connects on its first publish: a subscriber's dead-letter publisher, made
/// where nothing can be awaited.
pub(crate) struct LazyPublisher {
    config: AmqpConfig,
    publisher: tokio::sync::OnceCell<AmqpPublisher>,
}

impl LazyPublisher {
    pub(crate) fn new(config: AmqpConfig) -> Self {
        Self {
            config,
            publisher: tokio::sync::OnceCell::new(),
        }
    }
}

#[async_trait]
impl Publisher for LazyPublisher {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let publisher = self
            .publisher
            .get_or_try_init(|| AmqpPublisher::connect(self.config.clone()))
            .await?;
        publisher.publish(topic, messages).await
    }

    async fn close(&self) -> Result<()> {
        match self.publisher.get() {
            Some(publisher) => publisher.close().await,
            None => Ok(()),
        }
    }
}
