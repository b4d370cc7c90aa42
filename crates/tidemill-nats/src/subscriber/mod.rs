//! [`NatsSubscriber`]: consumes JetStream streams through pull consumers, durable per group.
//!
//! Inside: each subscription's stream is a pull pump (`pump`) on a consumer found or created by
//! `consumer`; deliveries are tracked and kept alive (`outstanding`) and settle through the
//! settling task (`settle`); close is here.

mod consumer;
mod outstanding;
mod pump;
mod settle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Subject};
use async_trait::async_trait;
use parking_lot::Mutex;
use tidemill::{Error, Result, SubscribeInitializer, Subscriber, Subscription};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::NatsConfig;
use crate::connection::{connect, jetstream};
use crate::topology::{validate_subject, Streams};

use self::outstanding::{keepalive_task, Outstanding};
use self::pump::Pump;
use self::settle::{settle_task, Command};

/// Receives messages from JetStream.
///
/// Each subscription is a pull consumer on the topic's stream, filtered on the topic's subject:
///
/// - with a group ([`NatsConfig::group`]), the durable consumer named after the group: every
///   subscriber of the group pulls from it, so they share the messages, and the group resumes
///   where it left off after restarts;
/// - without a group, an ephemeral consumer of its own (fan-out), removed when the subscriber
///   closes.
///
/// A delivery is acknowledged to the server only when it is acked; a nack asks the server to
/// deliver it again after the nack delay; while a delivery is unsettled the subscriber keeps it
/// alive with in-progress signals, so a slow handler does not hit the ack wait. Settlements go
/// through a task of the subscriber, which `close` waits for.
///
/// ```no_run
/// use futures::StreamExt;
/// use tidemill::Subscriber;
/// use tidemill_nats::{NatsConfig, NatsSubscriber};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let subscriber = NatsSubscriber::connect(NatsConfig::new("nats://127.0.0.1:4222").group("billing")).await?;
/// let mut orders = subscriber.subscribe("orders").await?;
/// while let Some(delivery) = orders.next().await {
///     let delivery = delivery?;
///     println!("{:?}", delivery.message());
///     delivery.ack();
/// }
/// subscriber.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsSubscriber {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSubscriber")
            .field("address", &self.inner.config.address())
            .field("group", &self.inner.config.group)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

pub(crate) struct Inner {
    client: Client,
    js: async_nats::jetstream::Context,
    config: Arc<NatsConfig>,
    streams: Arc<Streams>,
    closed: AtomicBool,
    cancel: CancellationToken,
    owns_client: bool,
    settle_tx: mpsc::UnboundedSender<Command>,
    /// Settlements handed to the settling task and not yet done.
    pending: AtomicUsize,
    settled: Notify,
    /// Deliveries handed out and not settled: kept alive, and returned on close.
    outstanding: Mutex<HashMap<u64, Outstanding>>,
    next_token: AtomicU64,
    /// Ephemeral consumers to remove on close.
    ephemeral: Mutex<Vec<(String, String)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Subscriptions whose stream still exists.
    live: AtomicUsize,
}

impl NatsSubscriber {
    /// Connects with its own connection, which `close` releases. Must be called inside a Tokio
    /// runtime.
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        let client = connect(&config).await?;
        Ok(Self::build(client, config, true))
    }

    /// A subscriber on an existing connection, which `close` leaves open. Must be called inside a
    /// Tokio runtime.
    pub fn from_client(client: Client, config: NatsConfig) -> Self {
        Self::build(client, config, false)
    }

    fn build(client: Client, config: NatsConfig, owns_client: bool) -> Self {
        let config = Arc::new(config);
        let js = jetstream(client.clone(), &config);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            streams: Arc::new(Streams::new(js.clone(), config.clone())),
            client,
            js,
            config,
            closed: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            owns_client,
            settle_tx,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
            outstanding: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            ephemeral: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let settler = tokio::spawn(settle_task(weak.clone(), inner.client.clone(), settle_rx));
        let mut tasks = vec![settler];
        if inner.config.progress_keepalive {
            tasks.push(tokio::spawn(keepalive_task(weak, inner.config.ack_wait)));
        }
        *inner.tasks.lock() = tasks;
        Self { inner }
    }

    /// The connection.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The consumer group of this subscriber, if any.
    pub fn group(&self) -> Option<&str> {
        self.inner.config.group.as_deref()
    }
}

impl Inner {
    /// Waits until every settlement handed over is done, or `deadline`.
    async fn wait_settled(&self, deadline: Instant) {
        while self.pending.load(Ordering::Acquire) > 0 {
            let notified = self.settled.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("closing with settlements the server did not confirm");
                break;
            }
        }
    }

    /// Stops the background tasks, flushes the connection and lets it go (drained if it is ours).
    async fn release(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        // Settlements are only queued on the connection: flush them before it goes, as a drain
        // does not wait for its writes and a process that exits next would lose them.
        if let Err(err) = self.client.flush().await {
            tracing::debug!(error = %err, "flushing the NATS connection failed");
        }
        if self.owns_client {
            if let Err(err) = self.client.drain().await {
                tracing::debug!(error = %err, "draining the NATS connection failed");
            }
        }
    }
}

#[async_trait]
impl Subscriber for NatsSubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        Some(self.inner.config.max_ack_pending)
    }

    fn group(&self) -> Option<&str> {
        self.inner.config.group_name()
    }

    /// Dead letters go to the dead-letter subject on this connection (its stream made as any
    /// topic's).
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        Some(Arc::new(crate::NatsPublisher::from_client(
            self.inner.client.clone(),
            (*self.inner.config).clone(),
        )))
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("subscriber"));
        }
        validate_subject(topic)?;
        let mut pump = Pump::new(self.inner.clone(), topic);
        // The consumer exists when `subscribe` returns, so nothing published afterwards is missed.
        pump.open()
            .await
            .map_err(|err| Error::subscribe(topic, err))?;
        let stream = futures::stream::unfold(pump, |mut pump| async move {
            let item = pump.next().await?;
            Some((item, pump))
        });
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.cancel.cancel();
        // Deliveries being handled may still be settled, until the close timeout; what is
        // left then is returned to the server.
        let deadline = Instant::now() + inner.config.close_timeout;
        while !inner.outstanding.lock().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let held: Vec<Subject> = inner
            .outstanding
            .lock()
            .drain()
            .map(|(_, o)| o.reply)
            .collect();
        for reply in held {
            inner.send(Command::Settle {
                reply,
                payload: inner.nak_payload(Some(Duration::ZERO)),
            });
        }
        let deadline = deadline.max(Instant::now() + Duration::from_secs(2));
        inner.wait_settled(deadline).await;
        let ephemeral = std::mem::take(&mut *inner.ephemeral.lock());
        for (stream, consumer) in ephemeral {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                inner.js.delete_consumer_from_stream(consumer, stream),
            )
            .await;
        }
        if inner.live.load(Ordering::Acquire) == 0 {
            inner.release().await;
        } else {
            // Streams not yet dropped still return what their pull requests bring when they
            // are: the connection goes once they are gone (or the close timeout passed).
            let inner = inner.clone();
            tokio::spawn(async move {
                while inner.live.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                inner.wait_settled(deadline).await;
                inner.release().await;
            });
        }
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }
}

#[async_trait]
impl SubscribeInitializer for NatsSubscriber {
    /// Creates the topic's stream and, for a group, its durable consumer, so that the group gets
    /// the messages published from now on even before it first subscribes.
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        validate_subject(topic)?;
        if self.inner.config.group.is_some() {
            self.inner
                .consumer(topic, None)
                .await
                .map(drop)
                .map_err(|err| Error::subscribe(topic, err))
        } else {
            self.inner
                .streams
                .stream_for(topic)
                .await
                .map(drop)
                .map_err(|err| Error::subscribe(topic, err))
        }
    }
}
