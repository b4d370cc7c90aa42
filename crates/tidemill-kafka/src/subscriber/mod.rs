//! [`KafkaSubscriber`]: a consumer per subscription that commits only what was acked.
//!
//! Inside: each subscription's consumer is fed by its reader task (`reader`); the reader, the
//! deliveries' settlements (`settle`) and librdkafka's rebalance callbacks (`rebalance`) share
//! the subscription's offsets and redeliveries (`shared`).

mod reader;
mod rebalance;
mod settle;
mod shared;

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tidemill::{Error, Result, Subscriber, Subscription};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::Topics;
use crate::config::{validate_topic, KafkaConfig};
use crate::error::KafkaAdapterError;
use crate::offsets::Offsets;

use self::reader::{assign_all, read};
use self::rebalance::Context;
use self::shared::Shared;

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
