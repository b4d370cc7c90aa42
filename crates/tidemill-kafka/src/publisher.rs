//! [`KafkaPublisher`]: an idempotent producer that returns once every message's delivery report
//! came back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tidemill::{Error, Message, Publisher, Result};

use crate::admin::Topics;
use crate::codec;
use crate::config::{validate_topic, KafkaConfig};
use crate::error::KafkaAdapterError;

/// Publishes to Kafka.
///
/// The producer is idempotent (no duplicates from its own retries, order kept per partition)
/// and `publish` returns once the broker acknowledged every message (`acks=all`); messages are
/// batched by librdkafka's own queue, so publishing many at once is much faster than one by
/// one. Metadata travels as headers, the id in the `tidemill_message_id` header.
///
/// ```no_run
/// use tidemill::{Message, Publisher, PublisherExt};
/// use tidemill_kafka::{KafkaConfig, KafkaPublisher};
///
/// # async fn example() -> tidemill::Result<()> {
/// let publisher = KafkaPublisher::new(KafkaConfig::new("127.0.0.1:9092"))?;
/// publisher.publish_one("searches", Message::new("rust books")).await?;
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    producer: FutureProducer,
    topics: Topics,
    config: KafkaConfig,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl KafkaPublisher {
    /// A publisher with the given configuration.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let mut client = config.client();
        client
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|e| config.connect_error(KafkaAdapterError::from(e)))?;
        let topics = Topics::new(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                producer,
                topics,
                config,
            }),
        })
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    /// Headers carry any UTF-8 name; the id header is the adapter's own. Kafka's default
    /// `message.max.bytes` is about 1 MB; the payload limit leaves room for headers and framing.
    fn limits(&self) -> tidemill::Limits {
        tidemill::Limits::new("Kafka")
            .reserved_names(&[crate::codec::ID_HEADER])
            .max_payload(1_000_000)
            .topic_rule(validate_topic)
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.limits().check_all(topic, &messages)?;
        let inner = &self.inner;
        inner.topics.ensure(topic).await?;
        let mut reports = Vec::with_capacity(messages.len());
        for msg in &messages {
            let key = inner.config.partitioning.key(msg);
            loop {
                let mut record = FutureRecord::<Vec<u8>, [u8]>::to(topic)
                    .payload(msg.payload().as_ref())
                    .headers(codec::headers(msg));
                if let Some(key) = &key {
                    record = record.key(key);
                }
                match inner.producer.send_result(record) {
                    Ok(report) => {
                        reports.push((msg.id(), report));
                        break;
                    }
                    // librdkafka's queue is full: let it drain, then try again.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        return Err(Error::publish(topic, msg.id(), KafkaAdapterError::from(e)))
                    }
                }
            }
        }
        let mut first_error = None;
        for (id, report) in reports {
            let failure = match report.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer went away before the delivery report".to_owned(),
            };
            first_error.get_or_insert_with(|| Error::publish(topic, id, failure));
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn close(&self) -> Result<()> {
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30)))
            .await
            .map_err(|e| Error::Other(KafkaAdapterError::Report(e.to_string()).into()))?
            .map_err(|e| Error::Other(e.into()))
    }
}
