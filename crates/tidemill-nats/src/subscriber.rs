//! [`NatsSubscriber`]: consumes JetStream streams through pull consumers, durable per group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::ErrorCode;
use async_nats::{Client, HeaderMap, StatusCode, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::{
    Acker, Delivery, Error, Result, Settle, Settlement, SubscribeInitializer, Subscriber,
    Subscription,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::NatsConfig;
use crate::connection::{connect, jetstream};
use crate::error::NatsError;
use crate::topology::{
    consumer_config, decode_message, encode_name, validate_subject, Streams, DEAD_LETTER_REASON,
    DEAD_LETTER_SEQUENCE, DEAD_LETTER_TOPIC,
};

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

struct Outstanding {
    reply: Subject,
    since: Instant,
    stream_sequence: u64,
}

/// Work for the settling task.
enum Command {
    /// Send `payload` to the delivery's reply subject.
    Settle { reply: Subject, payload: Bytes },
    /// Move a message to the dead-letter subject, then terminate it.
    DeadLetter(Box<DeadLetter>),
}

struct DeadLetter {
    reply: Subject,
    topic: Arc<str>,
    message_id: Arc<str>,
    sequence: u64,
    headers: Option<HeaderMap>,
    payload: Bytes,
    reason: String,
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
    fn send(&self, command: Command) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.settle_tx.send(command).is_err() {
            self.done();
        }
    }

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

    /// Stops the background tasks and lets the connection go (flushes it if it is shared).
    async fn release(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        if self.owns_client {
            if let Err(err) = self.client.drain().await {
                tracing::debug!(error = %err, "draining the NATS connection failed");
            }
        } else if let Err(err) = self.client.flush().await {
            tracing::debug!(error = %err, "flushing the NATS connection failed");
        }
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    fn nak_payload(&self, delay: Option<Duration>) -> Bytes {
        match delay.unwrap_or(self.config.nack_delay) {
            d if d.is_zero() => AckKind::Nak(None).into(),
            d => AckKind::Nak(Some(d)).into(),
        }
    }

    /// The pull consumer for `topic`, found or created.
    async fn consumer(
        &self,
        topic: &str,
        resume_from: Option<u64>,
    ) -> Result<(String, Consumer<pull::Config>), NatsError> {
        let stream = self.streams.stream_for(topic).await?;
        let group = self.config.group.as_deref();
        let deliver = self.config.effective_deliver_from();
        let Some(group) = group else {
            let mut config = consumer_config(&self.config, topic, None, deliver);
            if let Some(sequence) = resume_from {
                // The ephemeral consumer was lost (server restart): continue where it was.
                config.deliver_policy =
                    async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: sequence,
                    };
            }
            let consumer = self
                .js
                .create_consumer_on_stream(config, stream.as_str())
                .await
                .map_err(|err| self.consumer_error(topic, err))?;
            self.ephemeral
                .lock()
                .push((stream.clone(), consumer.cached_info().name.clone()));
            return Ok((stream, consumer));
        };
        let durable = encode_name(group);
        match self
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(&durable, stream.as_str())
            .await
        {
            Ok(consumer) => {
                // Server 2.9 would silently accept a "create" that changes an existing durable,
                // so its configuration is checked here instead.
                let found = &consumer.cached_info().config.filter_subject;
                if found != topic {
                    return Err(NatsError::ConsumerMismatch {
                        stream,
                        consumer: durable,
                        expected: topic.into(),
                        found: found.clone(),
                    });
                }
                Ok((stream, consumer))
            }
            Err(err) if is_not_found(&err) => {
                let config = consumer_config(&self.config, topic, Some(&durable), deliver);
                let consumer = self
                    .js
                    .create_consumer_on_stream(config, stream.as_str())
                    .await
                    .map_err(|err| self.consumer_error(topic, err))?;
                tracing::debug!(stream = %stream, consumer = %durable, "created durable consumer");
                Ok((stream, consumer))
            }
            Err(err) => Err(self.consumer_error(topic, err)),
        }
    }

    fn consumer_error(&self, topic: &str, err: impl std::fmt::Display) -> NatsError {
        let text = err.to_string();
        if text.contains("stream not found") {
            self.streams.forget(topic);
        }
        NatsError::Client(text)
    }
}

fn is_not_found(err: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(err.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

/// Sends settlements; with double acks, resends each until the server confirms it.
async fn settle_task(
    inner: std::sync::Weak<Inner>,
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let Some(double_ack) = inner.upgrade().map(|i| i.config.double_ack) else {
        return;
    };
    let inbox = client.new_inbox();
    let mut confirmations = if double_ack {
        match client.subscribe(format!("{inbox}.*")).await {
            Ok(sub) => Some(sub),
            Err(err) => {
                tracing::error!(error = %err, "cannot subscribe for ack confirmations; acks are not confirmed");
                None
            }
        }
    } else {
        None
    };
    // Unconfirmed acks by number: reply subject, payload, last sent, attempts.
    let mut waiting: HashMap<u64, (Subject, Bytes, Instant, u32)> = HashMap::new();
    let mut next = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let resend_after = Duration::from_secs(2);
    let mut open = true;
    loop {
        tokio::select! {
            command = rx.recv(), if open => {
                let Some(command) = command else { open = false; continue };
                let Some(inner) = inner.upgrade() else { return };
                match command {
                    Command::Settle { reply, payload } => {
                        if confirmations.is_some() {
                            next += 1;
                            let respond = format!("{inbox}.{next}");
                            if let Err(err) = client.publish_with_reply(reply.clone(), respond, payload.clone()).await {
                                tracing::debug!(error = %err, "sending a settlement failed, will retry");
                            }
                            waiting.insert(next, (reply, payload, Instant::now(), 1));
                        } else {
                            if let Err(err) = client.publish(reply, payload).await {
                                tracing::warn!(error = %err, "sending a settlement failed; the server will deliver the message again");
                            }
                            inner.done();
                        }
                    }
                    Command::DeadLetter(dead) => {
                        tokio::spawn(dead_letter(inner.clone(), *dead));
                    }
                }
            }
            Some(reply) = async { match confirmations.as_mut() { Some(s) => s.next().await, None => None } } => {
                let number = reply.subject.rsplit('.').next().and_then(|n| n.parse::<u64>().ok());
                if let Some(number) = number {
                    if waiting.remove(&number).is_some() {
                        if let Some(inner) = inner.upgrade() { inner.done() }
                    }
                }
            }
            _ = tick.tick() => {
                if !open && waiting.is_empty() {
                    return;
                }
                let now = Instant::now();
                let mut given_up = Vec::new();
                for (number, (reply, payload, sent, attempts)) in waiting.iter_mut() {
                    if now.duration_since(*sent) < resend_after {
                        continue;
                    }
                    if *attempts >= 60 {
                        given_up.push(*number);
                        continue;
                    }
                    *attempts += 1;
                    *sent = now;
                    let respond = format!("{inbox}.{number}");
                    if let Err(err) = client.publish_with_reply(reply.clone(), respond, payload.clone()).await {
                        tracing::debug!(error = %err, "resending a settlement failed, will retry");
                    }
                }
                for number in given_up {
                    waiting.remove(&number);
                    tracing::error!("the server never confirmed a settlement; the message may come again");
                    if let Some(inner) = inner.upgrade() { inner.done() }
                }
            }
        }
    }
}

/// Publishes the message to the dead-letter subject with the reason, then terminates it at its
/// stream; if that fails, the message is nacked and comes back.
async fn dead_letter(inner: Arc<Inner>, dead: DeadLetter) {
    let Some(subject) = inner.config.dead_letter_subject.clone() else {
        inner.done();
        return;
    };
    let mut headers = dead.headers.unwrap_or_default();
    headers.insert(
        DEAD_LETTER_REASON,
        dead.reason.replace(['\r', '\n'], " ").as_str(),
    );
    headers.insert(DEAD_LETTER_TOPIC, &*dead.topic);
    headers.insert(DEAD_LETTER_SEQUENCE, dead.sequence.to_string().as_str());
    let result = async {
        inner.streams.stream_for(&subject).await?;
        let ack = inner
            .js
            .publish_with_headers(subject.clone(), headers, dead.payload)
            .await
            .map_err(NatsError::client)?;
        ack.await.map_err(NatsError::client)
    }
    .await;
    let payload: Bytes = match result {
        Ok(_) => {
            tracing::warn!(topic = %dead.topic, message_id = %dead.message_id, dead_letter = %subject, reason = %dead.reason, "message dead-lettered");
            AckKind::Term.into()
        }
        Err(err) => {
            tracing::error!(topic = %dead.topic, message_id = %dead.message_id, error = %err, "dead-lettering failed; the message comes back");
            inner.nak_payload(None)
        }
    };
    // Through the settling task, so that double acks confirm this too.
    inner.send(Command::Settle {
        reply: dead.reply,
        payload,
    });
    inner.done();
}

/// Sends in-progress signals for deliveries unsettled for a third of the ack wait.
async fn keepalive_task(inner: std::sync::Weak<Inner>, ack_wait: Duration) {
    let every = (ack_wait / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.cancel.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let due: Vec<Subject> = inner
            .outstanding
            .lock()
            .values_mut()
            .filter(|o| now.duration_since(o.since) >= every)
            .map(|o| {
                o.since = now;
                o.reply.clone()
            })
            .collect();
        for reply in due {
            if let Err(err) = inner.client.publish(reply, AckKind::Progress.into()).await {
                tracing::debug!(error = %err, "sending an in-progress signal failed");
            }
        }
    }
}

/// Settles one delivery through the subscriber's settling task.
struct NatsSettle {
    inner: Arc<Inner>,
    token: u64,
    reply: Subject,
    /// The message itself, kept only on its last allowed delivery when it may be dead-lettered.
    last: Option<Box<DeadLetter>>,
}

impl Settle for NatsSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let this = *self;
        if this.inner.outstanding.lock().remove(&this.token).is_none() {
            // Already returned by `close`.
            return;
        }
        let command = match settlement {
            Settlement::Ack => Command::Settle {
                reply: this.reply,
                payload: AckKind::Ack.into(),
            },
            Settlement::Nack { delay } => match this.last {
                Some(dead) => Command::DeadLetter(dead),
                None => Command::Settle {
                    reply: this.reply,
                    payload: this.inner.nak_payload(delay),
                },
            },
        };
        this.inner.send(command);
    }
}

/// How long one pull request waits at the server. Short, because a subscription that goes away
/// waits this long at most to return what its last request still brings.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The state behind one subscription's stream of deliveries: an inbox subscription and the pull
/// requests sent to the consumer, counted so that what they still bring can be returned.
struct Pump {
    inner: Arc<Inner>,
    topic: Arc<str>,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` once the consumer is known.
    next_subject: Option<String>,
    inbox: Option<(Subject, async_nats::Subscriber)>,
    /// Messages requested and neither received nor expired.
    outstanding: usize,
    last_request: Instant,
    failures: u32,
    last_sequence: u64,
    ephemeral_lost: bool,
}

impl Pump {
    fn new(inner: Arc<Inner>, topic: &str) -> Self {
        inner.live.fetch_add(1, Ordering::AcqRel);
        Self {
            inner,
            topic: Arc::from(topic),
            next_subject: None,
            inbox: None,
            outstanding: 0,
            last_request: Instant::now(),
            failures: 0,
            last_sequence: 0,
            ephemeral_lost: false,
        }
    }

    async fn open(&mut self) -> Result<(), NatsError> {
        let resume_from = (self.ephemeral_lost && self.last_sequence > 0).then(|| {
            let unsettled = self
                .inner
                .outstanding
                .lock()
                .values()
                .map(|o| o.stream_sequence)
                .min();
            unsettled.unwrap_or(u64::MAX).min(self.last_sequence + 1)
        });
        let (stream, consumer) = self.inner.consumer(&self.topic, resume_from).await?;
        if self.inbox.is_none() {
            let inbox = Subject::from(self.inner.client.new_inbox());
            let subscription = self
                .inner
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(NatsError::client)?;
            self.inbox = Some((inbox, subscription));
        }
        self.next_subject = Some(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{stream}.{}",
            consumer.cached_info().name
        ));
        self.outstanding = 0;
        self.ephemeral_lost = false;
        Ok(())
    }

    /// Asks for another batch once half of what was asked for has arrived.
    async fn request_more(&mut self) {
        let batch = self.inner.config.batch_size;
        if self.outstanding > batch / 2 {
            return;
        }
        let (Some(subject), Some((inbox, _))) = (&self.next_subject, &self.inbox) else {
            return;
        };
        let request = format!(
            "{{\"batch\":{batch},\"expires\":{}}}",
            PULL_EXPIRES.as_nanos()
        );
        match self
            .inner
            .client
            .publish_with_reply(subject.clone(), inbox.clone(), request.into())
            .await
        {
            Ok(()) => {
                self.outstanding += batch;
                self.last_request = Instant::now();
            }
            Err(err) => tracing::debug!(topic = %self.topic, error = %err, "pull request failed"),
        }
    }

    async fn next(&mut self) -> Option<Result<Delivery>> {
        let cancel = self.inner.cancel.clone();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if self.next_subject.is_none() {
                let opened = tokio::select! {
                    _ = cancel.cancelled() => continue,
                    opened = self.open() => opened,
                };
                if let Err(err) = opened {
                    self.failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(self.failures.min(5)));
                    tokio::select! {
                        _ = cancel.cancelled() => {},
                        _ = tokio::time::sleep(backoff) => {},
                    }
                    // Report the first failure and then every tenth, and keep trying.
                    if self.failures == 1 || self.failures.is_multiple_of(10) {
                        return Some(Err(Error::subscribe(&*self.topic, err)));
                    }
                    continue;
                }
                self.failures = 0;
            }
            self.request_more().await;
            // A request that neither delivered nor expired within its time was lost with the
            // connection (a server restart): ask again.
            let lost_after = self.last_request + PULL_EXPIRES + Duration::from_secs(1);
            let (_, subscription) = self.inbox.as_mut().expect("opened above");
            let message = tokio::select! {
                _ = cancel.cancelled() => continue,
                _ = tokio::time::sleep_until(lost_after) => {
                    self.outstanding = 0;
                    continue;
                }
                message = subscription.next() => message,
            };
            let Some(message) = message else {
                // The connection was closed under the subscription.
                self.inbox = None;
                self.next_subject = None;
                continue;
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    let message = async_nats::jetstream::Message {
                        message,
                        context: self.inner.js.clone(),
                    };
                    if let Some(delivery) = self.deliver(message) {
                        return Some(Ok(delivery));
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(StatusCode::NO_RESPONDERS) => {
                    // No consumer (or no JetStream) to answer: find or create it again.
                    tracing::debug!(topic = %self.topic, "no consumer answers pull requests, opening it again");
                    self.lost();
                    tokio::select! {
                        _ = cancel.cancelled() => {},
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {},
                    }
                }
                Some(status) => {
                    self.outstanding = self
                        .outstanding
                        .saturating_sub(expired(&message, self.inner.config.batch_size));
                    let description = message.description.as_deref().unwrap_or_default();
                    if description.contains("Consumer Deleted") {
                        self.lost();
                    } else if status != StatusCode::TIMEOUT {
                        tracing::debug!(topic = %self.topic, %status, description, "pull request ended");
                    }
                }
            }
        }
    }

    fn lost(&mut self) {
        self.next_subject = None;
        self.outstanding = 0;
        self.ephemeral_lost = self.inner.config.group.is_none();
    }

    fn deliver(&mut self, message: async_nats::jetstream::Message) -> Option<Delivery> {
        let (sequence, delivered, stream) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered, info.stream.to_owned()),
            Err(_) => return None,
        };
        self.last_sequence = self.last_sequence.max(sequence);
        let async_nats::jetstream::Message { message, .. } = message;
        let reply = message.reply?;
        let config = &self.inner.config;
        let dead_letter_at = match (config.max_deliveries, &config.dead_letter_subject) {
            (Some(max), Some(_)) => Some(i64::from(max)),
            _ => None,
        };
        let decoded = decode_message(message.headers.as_ref(), message.payload.clone(), || {
            format!("{stream}:{sequence}")
        });
        let last = dead_letter_at.filter(|max| delivered >= *max).map(|max| {
            Box::new(DeadLetter {
                reply: reply.clone(),
                topic: self.topic.clone(),
                message_id: decoded.shared_id(),
                sequence,
                headers: message.headers.clone(),
                payload: message.payload.clone(),
                reason: format!("rejected on delivery {delivered} of at most {max}"),
            })
        });
        if let (Some(max), Some(mut dead)) =
            (dead_letter_at, last.as_ref().map(|d| d.clone_parts()))
        {
            if delivered > max {
                // The last allowed delivery ran out its ack wait.
                dead.reason = format!(
                    "not settled within the ack wait ({:?}) after {max} deliveries",
                    config.ack_wait
                );
                self.inner.send(Command::DeadLetter(Box::new(dead)));
                return None;
            }
        }
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        self.inner.outstanding.lock().insert(
            token,
            Outstanding {
                reply: reply.clone(),
                since: Instant::now(),
                stream_sequence: sequence,
            },
        );
        let settle = NatsSettle {
            inner: self.inner.clone(),
            token,
            reply,
            last,
        };
        Some(Delivery::new(decoded, Acker::new(settle)))
    }
}

/// How many requested messages a pull status says will not come.
fn expired(message: &async_nats::Message, batch: usize) -> usize {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get_last("Nats-Pending-Messages"))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(batch)
}

impl Drop for Pump {
    /// Hands what the last pull requests still bring back to the server (a nack each), on a
    /// task that lives until those requests are done, so nothing waits out its ack wait.
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let returning = self
            .inbox
            .take()
            .zip(tokio::runtime::Handle::try_current().ok());
        let Some(((_, mut subscription), runtime)) = returning else {
            inner.live.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let mut outstanding = self.outstanding;
        let until = self.last_request + PULL_EXPIRES + Duration::from_millis(500);
        let batch = inner.config.batch_size;
        inner.pending.fetch_add(1, Ordering::AcqRel);
        inner.live.fetch_sub(1, Ordering::AcqRel);
        runtime.spawn(async move {
            // First what has already arrived, then what comes until the requests are done.
            loop {
                let message = match futures::FutureExt::now_or_never(subscription.next()).flatten()
                {
                    Some(message) => Some(message),
                    None if outstanding == 0 => break,
                    None => match tokio::time::timeout_at(until, subscription.next()).await {
                        Ok(Some(message)) => Some(message),
                        _ => None,
                    },
                };
                let Some(message) = message else { break };
                match message.status {
                    None | Some(StatusCode::OK) => {
                        outstanding = outstanding.saturating_sub(1);
                        if let Some(reply) = message.reply {
                            inner.send(Command::Settle {
                                reply,
                                payload: AckKind::Nak(None).into(),
                            });
                        }
                    }
                    Some(StatusCode::IDLE_HEARTBEAT) => {}
                    Some(_) => outstanding = outstanding.saturating_sub(expired(&message, batch)),
                }
            }
            drop(subscription);
            inner.done();
        });
    }
}

impl DeadLetter {
    fn clone_parts(&self) -> DeadLetter {
        DeadLetter {
            reply: self.reply.clone(),
            topic: self.topic.clone(),
            message_id: self.message_id.clone(),
            sequence: self.sequence,
            headers: self.headers.clone(),
            payload: self.payload.clone(),
            reason: self.reason.clone(),
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
