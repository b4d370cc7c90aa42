//! [`KafkaSubscriber`]: a consumer per subscription that commits only what was acked.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tidemill::{
    Acker, Delivery, Error, Message, Result, Settle, Settlement, Subscriber, Subscription,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::Topics;
use crate::codec;
use crate::config::{validate_topic, KafkaConfig, StartFrom};
use crate::error::KafkaAdapterError;
use crate::offsets::Offsets;

/// Subscribes to Kafka topics.
///
/// With a consumer group ([`KafkaConfig::consumer_group`]) each subscription is a member of the
/// group: the group's members share the topic's partitions, and each group gets every message.
/// Offsets are committed only for acked messages, and only up to the lowest unacked offset of
/// each partition. Without a group a subscription reads every partition from where
/// [`KafkaConfig::start_from`] says and commits nothing.
///
/// A nacked message is delivered again by the subscription itself after the nack delay (an
/// in-process retry: the partition's committed offset stays behind it, so a restart delivers it
/// too). Messages after it keep flowing meanwhile; a handler that needs strict order per key
/// through failures retries in place (retry middleware).
///
/// ```no_run
/// use futures::StreamExt;
/// use tidemill::Subscriber;
/// use tidemill_kafka::{KafkaConfig, KafkaSubscriber};
///
/// # async fn example() -> tidemill::Result<()> {
/// let subscriber = KafkaSubscriber::new(KafkaConfig::new("127.0.0.1:9092").group("search-stats"))?;
/// let mut searches = subscriber.subscribe("searches").await?;
/// while let Some(delivery) = searches.next().await {
///     let delivery = delivery?;
///     println!("{}", String::from_utf8_lossy(delivery.message().payload()));
///     delivery.ack();
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaSubscriber {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    topics: Topics,
    closing: CancellationToken,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl KafkaSubscriber {
    /// A subscriber with the given configuration.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        config.check()?;
        let topics = Topics::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                topics,
                closing: CancellationToken::new(),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// What a subscription's reader, its deliveries' ackers and the rebalance callbacks share.
struct Shared {
    topic: String,
    offsets: Mutex<Offsets>,
    redeliveries: Mutex<VecDeque<Redelivery>>,
    wake: Notify,
    nack_delay: Duration,
}

struct Redelivery {
    due: Instant,
    message: Message,
    partition: i32,
    offset: i64,
    generation: u64,
}

impl Shared {
    /// The offsets to commit, as a list for librdkafka.
    fn committable(&self) -> Option<TopicPartitionList> {
        let offsets = self.offsets.lock().take_committable();
        if offsets.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        Some(tpl)
    }
}

/// librdkafka's callbacks: commit what may be committed before partitions are taken away.
struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        if let Some(tpl) = self.shared.committable() {
            if let Err(error) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(topic = %self.shared.topic, %error, "commit before a rebalance failed");
            }
        }
        let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        // In-flight messages of these partitions go to their new owner; their settlements here
        // are ignored (the generation changes).
        self.shared.offsets.lock().revoke(&partitions);
        self.shared
            .redeliveries
            .lock()
            .retain(|r| !partitions.contains(&r.partition));
    }
}

struct KafkaSettle {
    shared: Arc<Shared>,
    message: Message,
    partition: i32,
    offset: i64,
    generation: u64,
}

impl Settle for KafkaSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        match settlement {
            Settlement::Ack => {
                self.shared
                    .offsets
                    .lock()
                    .acked(self.generation, self.partition, self.offset);
            }
            Settlement::Nack { delay } => {
                if !self
                    .shared
                    .offsets
                    .lock()
                    .owns(self.generation, self.partition)
                {
                    return;
                }
                let due = Instant::now() + delay.unwrap_or(self.shared.nack_delay);
                self.shared.redeliveries.lock().push_back(Redelivery {
                    due,
                    message: self.message,
                    partition: self.partition,
                    offset: self.offset,
                    generation: self.generation,
                });
                self.shared.wake.notify_one();
            }
        }
    }
}

fn delivery(
    shared: &Arc<Shared>,
    message: Message,
    partition: i32,
    offset: i64,
    generation: u64,
) -> Delivery {
    let settle = KafkaSettle {
        shared: shared.clone(),
        message: message.clone(),
        partition,
        offset,
        generation,
    };
    Delivery::new(message, Acker::new(settle))
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        validate_topic(topic)?;
        let inner = &self.inner;
        if inner.closing.is_cancelled() {
            return Err(Error::Closed("Kafka subscriber"));
        }
        inner.topics.ensure(topic).await?;
        let config = &inner.config;
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            offsets: Mutex::new(Offsets::default()),
            redeliveries: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            nack_delay: config.nack_delay,
        });
        let mut client = config.client();
        let group = config
            .group
            .clone()
            // librdkafka wants a group id even for a consumer that only reads assigned
            // partitions; nothing is committed for it.
            .unwrap_or_else(|| format!("tidemill-reader-{}", tidemill::new_uuid()));
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match config.start_from {
                    Some(crate::config::StartFrom::End) => "latest",
                    _ => "earliest",
                },
            )
            // Notice partitions of topics created after subscribing within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "2000");
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let consumer: StreamConsumer<Context> = client
            .create_with_context(Context {
                shared: shared.clone(),
            })
            .map_err(|e| config.connect_error(KafkaAdapterError::from(e)))?;
        let consumer = Arc::new(consumer);
        if config.group.is_some() {
            consumer
                .subscribe(&[topic])
                .map_err(|e| Error::subscribe(topic, KafkaAdapterError::from(e)))?;
        } else {
            assign_all(&consumer, topic, config.start_without_group()).await?;
        }
        let (tx, rx) = mpsc::channel(config.buffer);
        let cancel = inner.closing.child_token();
        let reader = tokio::spawn(read(
            consumer,
            shared,
            tx,
            cancel.clone(),
            config.commit_interval,
            config.group.is_some(),
        ));
        inner.readers.lock().push(reader);
        // Dropping the subscription stops its reader.
        let guard = cancel.drop_guard();
        let stream = tokio_stream_from(rx).map(move |item| {
            let _ = &guard;
            item
        });
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closing.cancel();
        let readers: Vec<_> = std::mem::take(&mut *self.inner.readers.lock());
        let timeout = self.inner.config.close_timeout;
        let joined = tokio::time::timeout(timeout, async {
            for reader in readers {
                let _ = reader.await;
            }
        })
        .await;
        joined.map_err(|_| Error::Timeout {
            operation: "closing the Kafka subscriber",
            timeout,
        })
    }

    fn group(&self) -> Option<&str> {
        self.inner.config.group.as_deref()
    }

    /// Dead letters go to the dead-letter topic on the same brokers, through a producer of
    /// their own (the topic is created like any other).
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        match crate::KafkaPublisher::new(self.inner.config.clone()) {
            Ok(publisher) => Some(Arc::new(publisher)),
            Err(error) => {
                tracing::warn!(%error, "no dead-letter producer: rejected messages are kept and come back");
                None
            }
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Assigns every partition of `topic`, starting where `start` says.
async fn assign_all(
    consumer: &Arc<StreamConsumer<Context>>,
    topic: &str,
    start: StartFrom,
) -> Result<()> {
    let c = consumer.clone();
    let t = topic.to_owned();
    let tpl = tokio::task::spawn_blocking(move || -> Result<TopicPartitionList> {
        let timeout = Duration::from_secs(10);
        let metadata = c
            .fetch_metadata(Some(&t), timeout)
            .map_err(|e| Error::subscribe(&t, KafkaAdapterError::from(e)))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|m| m.name() == t)
            .flat_map(|m| m.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::subscribe(
                &t,
                KafkaAdapterError::Broker("the topic has no partitions".into()),
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let offset = match start {
                StartFrom::Beginning => Offset::Beginning,
                StartFrom::End => Offset::End,
                StartFrom::Timestamp(ms) => Offset::Offset(ms),
            };
            tpl.add_partition_offset(&t, p, offset)
                .map_err(|e| Error::subscribe(&t, KafkaAdapterError::from(e)))?;
        }
        if let StartFrom::Timestamp(_) = start {
            tpl = c.offsets_for_times(tpl, timeout).map_err(|e| {
                Error::subscribe(
                    &t,
                    KafkaAdapterError::Broker(format!("finding offsets for a time: {e}")),
                )
            })?;
        }
        Ok(tpl)
    })
    .await
    .map_err(|e| Error::subscribe(topic, e))??;
    consumer
        .assign(&tpl)
        .map_err(|e| Error::subscribe(topic, KafkaAdapterError::from(e)))
}

/// Reads the consumer into the subscription's channel, delivers nacked messages again when due,
/// and commits acked offsets.
async fn read(
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Delivery>>,
    cancel: CancellationToken,
    commit_interval: Duration,
    commits: bool,
) {
    let mut tick = tokio::time::interval(commit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        // Take room in the channel first, so a slow consumer holds back fetching, not commits.
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                commit(&consumer, &shared, commits, CommitMode::Async);
                continue;
            }
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        loop {
            let due = shared.redeliveries.lock().front().map(|r| r.due);
            if let Some(due) = due.filter(|d| *d <= Instant::now()) {
                let _ = due;
                let r = shared.redeliveries.lock().pop_front();
                if let Some(r) = r {
                    if shared.offsets.lock().owns(r.generation, r.partition) {
                        permit.send(Ok(delivery(
                            &shared,
                            r.message,
                            r.partition,
                            r.offset,
                            r.generation,
                        )));
                        continue 'outer;
                    }
                }
                continue;
            }
            let wake = shared.wake.notified();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'outer,
                _ = tick.tick() => commit(&consumer, &shared, commits, CommitMode::Async),
                _ = wake => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(far_future)), if due.is_some() => {}
                record = consumer.recv() => match record {
                    Ok(record) => {
                        backoff = Duration::from_millis(100);
                        let message = codec::decode(&record);
                        let (partition, offset) = (record.partition(), record.offset());
                        let generation = {
                            let mut offsets = shared.offsets.lock();
                            offsets.received(partition, offset);
                            offsets.generation()
                        };
                        permit.send(Ok(delivery(&shared, message, partition, offset, generation)));
                        continue 'outer;
                    }
                    Err(error) => {
                        // librdkafka reconnects by itself; report and slow down.
                        tracing::warn!(topic = %shared.topic, %error, "Kafka consumer error");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }
    commit(&consumer, &shared, commits, CommitMode::Sync);
    // Closing a consumer leaves its group, which blocks: keep it off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn commit(consumer: &StreamConsumer<Context>, shared: &Shared, commits: bool, mode: CommitMode) {
    if !commits {
        return;
    }
    if let Some(tpl) = shared.committable() {
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(topic = %shared.topic, %error, "committing offsets failed");
        }
    }
}
