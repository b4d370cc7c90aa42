//! Core NATS without JetStream: [`CoreNatsPublisher`] and [`CoreNatsSubscriber`].
//!
//! **Not persistent, at-most-once.** Core NATS hands a message to the subscribers connected at
//! that moment and forgets it: nothing is stored, a subscriber that is away misses it, and there
//! is no acknowledgement, so acking does nothing and **a nack does not bring the message back**.
//! `publish` returns once the messages are flushed to the server's socket, not once anybody got
//! them. Use it for fire-and-forget fan-out (cache invalidation, live updates) where the
//! JetStream [`NatsPublisher`](crate::NatsPublisher)/[`NatsSubscriber`](crate::NatsSubscriber)
//! pair is more than needed.
//!
//! Groups map onto NATS queue groups: the subscribers of a queue group share the messages, and
//! every group and every subscriber without group gets each message.
//!
//! ```no_run
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_nats::{CoreNatsPublisher, CoreNatsSubscriber, NatsConfig};
//!
//! # #[tokio::main] async fn main() -> tidemill::Result<()> {
//! let config = NatsConfig::new("nats://127.0.0.1:4222");
//! let subscriber = CoreNatsSubscriber::connect(config.clone().group("workers")).await?;
//! let mut updates = subscriber.subscribe("prices.live").await?;
//! let publisher = CoreNatsPublisher::connect(config).await?;
//! publisher.publish_one("prices.live", Message::new("42")).await?;
//! let delivery = updates.next().await.unwrap()?;
//! delivery.ack(); // does nothing: core NATS has no acknowledgements
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::Client;
use async_trait::async_trait;
use futures::StreamExt;
use tidemill::{Acker, Delivery, Error, Message, Publisher, Result, Subscriber, Subscription};
use tokio_util::sync::CancellationToken;

use crate::config::NatsConfig;
use crate::connection::connect;
use crate::error::NatsError;
use crate::topology::{decode_message, encode_headers, validate_subject};

/// Publishes to core NATS subjects (no JetStream, nothing stored). See the
/// [module docs](crate::core_nats).
#[derive(Clone, Debug)]
pub struct CoreNatsPublisher {
    client: Client,
    closed: Arc<AtomicBool>,
    owns_client: bool,
}

impl CoreNatsPublisher {
    /// Connects with its own connection, which `close` releases.
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        Ok(Self {
            client: connect(&config).await?,
            closed: Arc::default(),
            owns_client: true,
        })
    }

    /// A publisher on an existing connection, which `close` flushes but leaves open.
    pub fn from_client(client: Client) -> Self {
        Self {
            client,
            closed: Arc::default(),
            owns_client: false,
        }
    }
}

#[async_trait]
impl Publisher for CoreNatsPublisher {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        validate_subject(topic)?;
        let mut encoded = Vec::with_capacity(messages.len());
        for message in &messages {
            let headers =
                encode_headers(message).map_err(|e| Error::publish(topic, message.id(), e))?;
            encoded.push((message.id(), headers, message.payload().clone()));
        }
        for (id, headers, payload) in encoded {
            self.client
                .publish_with_headers(topic.to_owned(), headers, payload)
                .await
                .map_err(|e| Error::publish(topic, id, NatsError::client(e)))?;
        }
        let first = messages.first().map(|m| m.id()).unwrap_or_default();
        self.client
            .flush()
            .await
            .map_err(|e| Error::publish(topic, first, NatsError::client(e)))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = if self.owns_client {
            self.client.drain().await.map_err(NatsError::client)
        } else {
            self.client.flush().await.map_err(NatsError::client)
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "flushing the NATS connection failed");
        }
        Ok(())
    }
}

/// Subscribes to core NATS subjects, in a queue group if the configuration names one. Ack and
/// nack do nothing. See the [module docs](crate::core_nats).
#[derive(Clone, Debug)]
pub struct CoreNatsSubscriber {
    client: Client,
    group: Option<String>,
    cancel: CancellationToken,
    owns_client: bool,
}

impl CoreNatsSubscriber {
    /// Connects with its own connection; the queue group is [`NatsConfig::group`].
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        Ok(Self {
            client: connect(&config).await?,
            group: config.group,
            cancel: CancellationToken::new(),
            owns_client: true,
        })
    }

    /// A subscriber on an existing connection, in queue group `group` if given.
    pub fn from_client(client: Client, group: Option<String>) -> Self {
        Self {
            client,
            group,
            cancel: CancellationToken::new(),
            owns_client: false,
        }
    }
}

#[async_trait]
impl Subscriber for CoreNatsSubscriber {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        if self.cancel.is_cancelled() {
            return Err(Error::Closed("subscriber"));
        }
        validate_subject(topic)?;
        let subscription = match &self.group {
            Some(group) => {
                self.client
                    .queue_subscribe(topic.to_owned(), group.clone())
                    .await
            }
            None => self.client.subscribe(topic.to_owned()).await,
        }
        .map_err(|e| Error::subscribe(topic, NatsError::client(e)))?;
        // The server registers the interest before anything published afterwards arrives.
        self.client
            .flush()
            .await
            .map_err(|e| Error::subscribe(topic, NatsError::client(e)))?;
        let topic_name: Arc<str> = Arc::from(topic);
        let stream = subscription
            .map(move |message| {
                let subject = topic_name.clone();
                let decoded = decode_message(message.headers.as_ref(), message.payload, || {
                    format!("{subject}:{}", tidemill::new_uuid())
                });
                Ok(Delivery::new(decoded, Acker::noop()))
            })
            .take_until(self.cancel.clone().cancelled_owned());
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        self.cancel.cancel();
        if self.owns_client {
            if let Err(err) = self.client.drain().await {
                tracing::debug!(error = %err, "draining the NATS connection failed");
            }
        }
        Ok(())
    }
}
