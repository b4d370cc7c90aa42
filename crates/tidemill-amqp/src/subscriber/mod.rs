//! [`AmqpSubscriber`]: consumes queues with explicit acks, prefetch, delayed redelivery and
//! dead-lettering, and resumes after reconnecting.
//!
//! Inside: `plan` says what a subscription declares and opens its channel; its task (`run`)
//! consumes (`consume`) and reopens everything after a lost connection; deliveries settle
//! through each channel's settle task (`settle`, which also holds delayed nacks); the user
//! gets the subscription's buffer as a `stream`.

mod consume;
mod plan;
mod run;
mod settle;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::Connection;
use tidemill::{Error, Result, SubscribeInitializer, Subscriber, Subscription};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AmqpConfig;
use crate::connection::connect_error;
use crate::declare::declare_exchange;
use crate::error::AmqpError;

use self::run::run;
use self::stream::{Buffer, SubscriptionStream};

/// Receives tidemill messages from RabbitMQ.
///
/// Each subscription consumes one queue on a channel of its own with the configured prefetch
/// and explicit acks: a delivery is acked to the broker only when it is acked in tidemill. A
/// nack requeues it (after the nack delay), or dead-letters it after `max_deliveries`. When the
/// connection drops, every subscription reconnects with backoff, declares its exchange, queue
/// and binding again (exclusive and auto-delete queues included) and resumes consuming.
///
/// ```
/// use futures::StreamExt;
/// use tidemill::{Message, Publisher, PublisherExt, Subscriber};
/// use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let config = AmqpConfig::default().group("doc-subscriber");
/// let subscriber = AmqpSubscriber::connect(config.clone()).await?;
/// let mut subscription = subscriber.subscribe("doc.subscriber").await?;
/// let publisher = AmqpPublisher::connect(config).await?;
/// publisher.publish_one("doc.subscriber", Message::new("hi")).await?;
/// let delivery = subscription.next().await.unwrap()?;
/// assert_eq!(delivery.message().payload().as_ref(), b"hi");
/// delivery.ack();
/// subscriber.close().await?;
/// # publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpSubscriber {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSubscriber")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: AmqpConfig,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    closed: AtomicBool,
}

impl AmqpSubscriber {
    /// Connects to the broker.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        config.check()?;
        let inner = Arc::new(Inner {
            config,
            conn: tokio::sync::Mutex::new(None),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            closed: AtomicBool::new(false),
        });
        inner
            .connection()
            .await
            .map_err(|e| connect_error(&inner.config, e))?;
        Ok(Self { inner })
    }

    /// The options in force.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// The queue a subscription of this subscriber to `topic` consumes, if it has a fixed name
    /// (a consumer group's queue or a work queue); `None` for the exclusive queue of a
    /// subscriber without group.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> tidemill::Result<()> {
    /// use tidemill_amqp::{AmqpConfig, AmqpSubscriber};
    /// let subscriber = AmqpSubscriber::connect(AmqpConfig::default().group("billing")).await?;
    /// assert_eq!(subscriber.queue_for("orders").as_deref(), Some("orders.billing"));
    /// # Ok(()) }
    /// ```
    pub fn queue_for(&self, topic: &str) -> Option<String> {
        let plan = self.inner.plan(topic);
        (!plan.queue.exclusive).then_some(plan.queue.name)
    }
}

#[async_trait]
impl Subscriber for AmqpSubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        Some(usize::from(self.inner.config.prefetch))
    }

    fn group(&self) -> Option<&str> {
        self.inner.config.group_name()
    }

    /// Dead letters are published, with this subscriber's options and topology, to the
    /// dead-letter topic through a publisher that connects on first use.
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        Some(Arc::new(crate::publisher::LazyPublisher::new(
            self.inner.config.clone(),
        )))
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("subscriber"));
        }
        inner
            .config
            .topology
            .validate_subscribe(topic, inner.config.group.as_deref())?;
        let plan = Arc::new(inner.plan(topic));
        let first = inner.open(&plan).await?;
        let (tx, rx) = mpsc::channel(usize::from(inner.config.prefetch).max(1));
        let buffer: Buffer = Arc::new(parking_lot::Mutex::new(rx));
        let cancel = inner.shutdown.child_token();
        inner.tracker.spawn(run(
            inner.clone(),
            plan,
            first,
            tx,
            buffer.clone(),
            cancel.clone(),
        ));
        let stream = SubscriptionStream {
            buffer,
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
            cancel,
            done: false,
        };
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.shutdown.cancel();
        inner.tracker.close();
        // One deadline for all of it: the settlements, then the connection.
        let deadline = tokio::time::Instant::now() + inner.config.close_timeout;
        if tokio::time::timeout_at(deadline, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("closing the AMQP subscriber with deliveries still unsettled; the broker requeues them");
        }
        let conn = match tokio::time::timeout_at(deadline, inner.conn.lock()).await {
            Ok(mut conn) => conn.take(),
            // A connection attempt still holds it; it ends within the connect timeout.
            Err(_) => None,
        };
        if let Some(conn) = conn {
            if conn.status().connected() {
                // A second for the goodbye, even when the settlements used up the deadline.
                let until = deadline.max(tokio::time::Instant::now()) + Duration::from_secs(1);
                let _ = tokio::time::timeout_at(until, conn.close(200, "closing".into())).await;
            }
        }
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }
}

#[async_trait]
impl SubscribeInitializer for AmqpSubscriber {
    /// Declares the topic's exchange and, for a consumer group or a work queue, its queue and
    /// binding, so that messages published before the first subscription are kept.
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("subscriber"));
        }
        inner
            .config
            .topology
            .validate_subscribe(topic, inner.config.group.as_deref())?;
        let plan = inner.plan(topic);
        let conn = inner
            .connection()
            .await
            .map_err(|e| connect_error(&inner.config, e))?;
        let failed = |e: lapin::Error| Error::subscribe(topic, AmqpError::Client(e));
        let channel = conn.create_channel().await.map_err(failed)?;
        let topology = &inner.config.topology;
        if !plan.exchange.is_empty() {
            declare_exchange(&channel, &plan.exchange, topology)
                .await
                .map_err(failed)?;
        }
        if !plan.queue.exclusive {
            inner.declare(&channel, &plan).await.map_err(failed)?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}
