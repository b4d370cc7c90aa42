//! [`AmqpSubscriber`]: consumes queues with explicit acks, prefetch, delayed redelivery and
//! dead-lettering, and resumes after reconnecting.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::Acker as LapinAcker;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tidemill::{
    Acker, Delivery, Error, Result, Settle, Settlement, SubscribeInitializer, Subscriber,
    Subscription,
};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::config::AmqpConfig;
use crate::connection::{connect, connect_error, Backoff};
use crate::declare::{bind, declare_delay_queue, declare_exchange, declare_queue, QueueSpec};
use crate::error::AmqpError;

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
/// use tidemill::{Message, Publisher, Subscriber};
/// use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let config = AmqpConfig::default().group("doc-subscriber");
/// let subscriber = AmqpSubscriber::connect(config.clone()).await?;
/// let mut subscription = subscriber.subscribe("doc.subscriber").await?;
/// let publisher = AmqpPublisher::connect(config).await?;
/// publisher.publish("doc.subscriber", vec![Message::new("hi")]).await?;
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

/// What one subscription declares and consumes.
#[derive(Clone, Debug)]
struct Plan {
    topic: Arc<str>,
    exchange: String,
    binding_key: String,
    queue: QueueSpec,
    dead_letter: Option<QueueSpec>,
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

impl Inner {
    async fn connection(&self) -> lapin::Result<Arc<Connection>> {
        let mut current = self.conn.lock().await;
        if let Some(conn) = current.as_ref() {
            if conn.status().connected() {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(connect(&self.config, "subscriber").await?);
        *current = Some(conn.clone());
        Ok(conn)
    }

    fn plan(&self, topic: &str) -> Plan {
        let topology = &self.config.topology;
        let queue = if topology.shared_queue() {
            QueueSpec::shared(
                topology,
                &topology.queue_for(topic, self.config.group.as_deref().unwrap_or("")),
            )
        } else if let Some(group) = &self.config.group {
            QueueSpec::shared(topology, &topology.queue_for(topic, group))
        } else {
            // Named by us rather than the broker, so that it can be declared again under the
            // same name after a reconnect.
            let mut prefix: String = topic.chars().take(180).collect();
            prefix.retain(|c| c != '*' && c != '#');
            QueueSpec {
                name: format!("tidemill.{}.{}", uuid::Uuid::new_v4().simple(), prefix),
                durable: false,
                exclusive: true,
                auto_delete: true,
            }
        };
        let dead_letter = self.config.max_deliveries.map(|_| QueueSpec {
            name: self.config.dead_letter_queue_for(&queue.name),
            durable: queue.durable,
            exclusive: false,
            auto_delete: false,
        });
        Plan {
            topic: topic.into(),
            exchange: topology.exchange_for(topic),
            binding_key: topology.binding_key_for(topic),
            queue,
            dead_letter,
        }
    }

    async fn declare(&self, channel: &Channel, plan: &Plan) -> lapin::Result<()> {
        let topology = &self.config.topology;
        if !plan.exchange.is_empty() {
            declare_exchange(channel, &plan.exchange, topology).await?;
        }
        declare_queue(channel, &plan.queue, topology).await?;
        if !plan.exchange.is_empty() {
            bind(channel, &plan.queue.name, &plan.exchange, &plan.binding_key).await?;
        }
        if let Some(dlq) = &plan.dead_letter {
            declare_queue(channel, dlq, topology).await?;
        }
        Ok(())
    }

    /// Opens a channel, declares the plan and starts consuming.
    async fn open(&self, plan: &Plan) -> Result<(Channel, Consumer)> {
        let conn = self
            .connection()
            .await
            .map_err(|e| connect_error(&self.config, e))?;
        let failed = |e: lapin::Error| Error::subscribe(&*plan.topic, AmqpError::Client(e));
        let channel = conn.create_channel().await.map_err(failed)?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(failed)?;
        // Confirms let nacks that move a message (to a delay or dead-letter queue) ack the
        // original only once the copy is safe.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed)?;
        self.declare(&channel, plan).await.map_err(failed)?;
        let consumer = channel
            .basic_consume(
                plan.queue.name.as_str().into(),
                format!("tidemill-{}", uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed)?;
        Ok((channel, consumer))
    }
}

enum Outcome {
    Stop,
    /// The channel or connection went away (with the error, unless the broker cancelled the
    /// consumer).
    Lost(Option<lapin::Error>),
}

/// Runs one subscription: consumes, and after a lost connection reopens everything.
async fn run(
    inner: Arc<Inner>,
    plan: Arc<Plan>,
    first: (Channel, Consumer),
    tx: mpsc::Sender<Result<Delivery>>,
    buffer: Buffer,
    cancel: CancellationToken,
) {
    run_until_stopped(&inner, &plan, first, &tx, &buffer, &cancel).await;
    // The buffered deliveries hold their channel's settle task open; dropping them nacks them
    // through it, and then it closes the channel.
    drain(&buffer);
}

async fn run_until_stopped(
    inner: &Arc<Inner>,
    plan: &Arc<Plan>,
    first: (Channel, Consumer),
    tx: &mpsc::Sender<Result<Delivery>>,
    buffer: &Buffer,
    cancel: &CancellationToken,
) {
    let mut backoff = Backoff::new(&inner.config);
    let mut current = Some(first);
    loop {
        let (channel, consumer) = match current.take() {
            Some(open) => open,
            None => loop {
                if cancel.is_cancelled() || tx.is_closed() {
                    return;
                }
                match inner.open(plan).await {
                    Ok(open) => {
                        backoff.reset();
                        tracing::info!(topic = &*plan.topic, queue = %plan.queue.name, "subscription resumed");
                        break open;
                    }
                    Err(e) => {
                        tracing::debug!(topic = &*plan.topic, error = %e, "resubscribing failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = cancel.cancelled() => return,
                            _ = tx.closed() => return,
                        }
                    }
                }
            },
        };
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(SettleCtx {
            plan: plan.clone(),
            config: inner.config.clone(),
            shutdown: cancel.clone(),
            requeue: settle_tx.downgrade(),
        });
        inner
            .tracker
            .spawn(settle_loop(ctx, channel.clone(), settle_rx));
        let outcome = consume(plan, &channel, consumer, tx, &settle_tx, cancel).await;
        drop(settle_tx);
        match outcome {
            Outcome::Stop => return,
            Outcome::Lost(error) => {
                // Deliveries of the dead channel are back in their queue already; handing
                // them out would only process them twice.
                let mut rx = buffer.lock();
                while rx.try_recv().is_ok() {}
                drop(rx);
                if let Some(error) = error {
                    let _ = tx.try_send(Err(Error::subscribe(
                        &*plan.topic,
                        AmqpError::ConnectionLost(error),
                    )));
                }
            }
        }
    }
}

async fn consume(
    plan: &Plan,
    channel: &Channel,
    mut consumer: Consumer,
    tx: &mpsc::Sender<Result<Delivery>>,
    settle_tx: &mpsc::UnboundedSender<SettleCmd>,
    cancel: &CancellationToken,
) -> Outcome {
    let stop = |consumer: Consumer| async move {
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        Outcome::Stop
    };
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return stop(consumer).await,
            _ = tx.closed() => return stop(consumer).await,
            item = consumer.next() => item,
        };
        match item {
            Some(Ok(delivery)) => {
                let delivery = into_delivery(delivery, settle_tx.clone());
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return stop(consumer).await,
                    sent = tx.send(Ok(delivery)) => if sent.is_err() {
                        return stop(consumer).await;
                    },
                }
            }
            Some(Err(e)) => {
                tracing::warn!(topic = &*plan.topic, error = %e, "subscription lost its connection; reconnecting");
                return Outcome::Lost(Some(e));
            }
            None => {
                tracing::warn!(
                    topic = &*plan.topic,
                    "the broker cancelled the consumer; resubscribing"
                );
                return Outcome::Lost(None);
            }
        }
    }
}

fn into_delivery(
    delivery: lapin::message::Delivery,
    settle_tx: mpsc::UnboundedSender<SettleCmd>,
) -> Delivery {
    let lapin::message::Delivery {
        properties,
        data,
        acker,
        ..
    } = delivery;
    let payload = Bytes::from(data);
    let message = codec::decode(&properties, payload.clone());
    let pending = Pending {
        acker,
        id: message.shared_id(),
        properties,
        payload,
    };
    Delivery::new(
        message,
        Acker::new(AmqpSettle {
            tx: settle_tx,
            pending: Some(pending),
        }),
    )
}

/// A delivery waiting to be settled at the broker.
struct Pending {
    acker: LapinAcker,
    id: Arc<str>,
    properties: BasicProperties,
    payload: Bytes,
}

enum SettleCmd {
    Settle(Pending, Settlement),
    /// A held nack whose delay has passed.
    Requeue(Pending),
}

struct AmqpSettle {
    tx: mpsc::UnboundedSender<SettleCmd>,
    pending: Option<Pending>,
}

impl Settle for AmqpSettle {
    fn settle(mut self: Box<Self>, settlement: Settlement) {
        if let Some(pending) = self.pending.take() {
            // The settle task lives as long as a sender does; a failed send means the
            // subscriber was force-closed, and the broker requeues the message anyway.
            let _ = self.tx.send(SettleCmd::Settle(pending, settlement));
        }
    }
}

struct SettleCtx {
    plan: Arc<Plan>,
    config: AmqpConfig,
    shutdown: CancellationToken,
    requeue: mpsc::WeakUnboundedSender<SettleCmd>,
}

/// Settles one channel's deliveries in the order they were settled, then closes the channel
/// once every delivery of it is settled and its consumer is gone.
async fn settle_loop(
    ctx: Arc<SettleCtx>,
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<SettleCmd>,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            SettleCmd::Settle(pending, Settlement::Ack) => {
                let result = pending.acker.ack(BasicAckOptions::default()).await;
                report(&ctx, &pending, "ack", result.map(drop));
            }
            SettleCmd::Settle(pending, Settlement::Nack { delay }) => {
                nack(
                    &ctx,
                    &channel,
                    pending,
                    delay.unwrap_or(ctx.config.nack_delay),
                )
                .await;
            }
            SettleCmd::Requeue(pending) => requeue(&ctx, &pending).await,
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, "subscription closed".into()).await;
    }
}

async fn requeue(ctx: &SettleCtx, pending: &Pending) {
    let result = pending
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
    report(ctx, pending, "nack", result.map(drop));
}

async fn nack(ctx: &Arc<SettleCtx>, channel: &Channel, pending: Pending, delay: Duration) {
    let count = codec::deliveries(&pending.properties).saturating_add(1);
    let plan = &ctx.plan;
    if let (Some(max), Some(dlq)) = (ctx.config.max_deliveries, &plan.dead_letter) {
        if count >= max {
            tracing::info!(topic = &*plan.topic, message_id = &*pending.id, queue = %dlq.name, "moving message to the dead-letter queue");
            move_to(ctx, channel, pending, &dlq.name.clone(), count).await;
            return;
        }
        if delay.is_zero() {
            move_to(ctx, channel, pending, &plan.queue.name.clone(), count).await;
            return;
        }
    } else if delay.is_zero() {
        requeue(ctx, &pending).await;
        return;
    } else if delay <= ctx.config.max_held_nack_delay {
        // Held here, the message keeps its prefetch slot and so its place in the order.
        let Some(requeue_tx) = ctx.requeue.upgrade() else {
            requeue(ctx, &pending).await;
            return;
        };
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {}
            }
            let _ = requeue_tx.send(SettleCmd::Requeue(pending));
        });
        return;
    }
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let durable = plan.queue.durable;
    match declare_delay_queue(channel, &plan.queue.name, durable, delay_ms).await {
        Ok(delay_queue) => move_to(ctx, channel, pending, &delay_queue, count).await,
        Err(e) => {
            tracing::warn!(topic = &*plan.topic, message_id = &*pending.id, error = %e, "declaring the delay queue failed; requeueing at once");
            requeue(ctx, &pending).await;
        }
    }
}

/// Publishes a copy of the message to `queue` (through the default exchange), and acks the
/// original once the broker confirmed the copy; requeues the original if that fails.
async fn move_to(ctx: &SettleCtx, channel: &Channel, pending: Pending, queue: &str, count: u32) {
    let props = codec::with_deliveries(&pending.properties, count);
    let published = async {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &pending.payload,
                props,
            )
            .await?
            .await?;
        Ok::<_, lapin::Error>(confirm)
    }
    .await;
    match published {
        Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {
            let result = pending.acker.ack(BasicAckOptions::default()).await;
            report(ctx, &pending, "ack", result.map(drop));
        }
        Ok(Confirmation::Nack(_)) => {
            tracing::warn!(
                topic = &*ctx.plan.topic,
                message_id = &*pending.id,
                queue,
                "the broker refused the moved copy; requeueing"
            );
            requeue(ctx, &pending).await;
        }
        Err(e) => {
            tracing::warn!(topic = &*ctx.plan.topic, message_id = &*pending.id, queue, error = %e, "moving the message failed; requeueing");
            requeue(ctx, &pending).await;
        }
    }
}

fn report(ctx: &SettleCtx, pending: &Pending, what: &str, result: lapin::Result<()>) {
    if let Err(e) = result {
        // The channel is gone: the broker has requeued the message already and delivers it
        // again, which at-least-once allows.
        let err = Error::Settle {
            topic: ctx.plan.topic.to_string(),
            message_id: pending.id.to_string(),
            source: Box::new(AmqpError::Client(e)),
        };
        tracing::debug!(error = %err, what, "settling failed; the message will be redelivered");
    }
}

type Buffer = Arc<parking_lot::Mutex<mpsc::Receiver<Result<Delivery>>>>;

/// Gives back (nacks) the deliveries buffered and not yet handed out, and ends the stream.
fn drain(buffer: &Buffer) {
    let mut rx = buffer.lock();
    rx.close();
    while rx.try_recv().is_ok() {}
}

/// The stream handed to the user: ends as soon as the subscription or the subscriber is
/// closed. The buffer is shared with the subscription's task, which drains it when it stops,
/// whether or not the stream is still polled.
struct SubscriptionStream {
    buffer: Buffer,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    cancel: CancellationToken,
    done: bool,
}

impl Stream for SubscriptionStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.poll_unpin(cx).is_ready() {
            self.done = true;
            drain(&self.buffer);
            return Poll::Ready(None);
        }
        let polled = self.buffer.lock().poll_recv(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        self.cancel.cancel();
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
        if tokio::time::timeout(inner.config.close_timeout, inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("closing the AMQP subscriber with deliveries still unsettled; the broker requeues them");
        }
        if let Some(conn) = inner.conn.lock().await.take() {
            if conn.status().connected() {
                let _ = conn.close(200, "closing".into()).await;
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
