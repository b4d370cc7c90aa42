//! `kafka://host:port,host:port`: Kafka on librdkafka. A group is a Kafka consumer group (a new
//! one starts at the beginning); without one, a subscription reads every partition from its
//! start. `--key` values travel in [`KEY_METADATA`](crate::KEY_METADATA) and pick the partition.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber, Partitioning};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "kafka";
pub(crate) const KNOWN: &[&str] = &[
    "nack_delay",
    "partitions",
    "delivery_timeout",
    "max_in_flight",
    // Any librdkafka property, e.g. `rdkafka.acks=all` or `rdkafka.batch.num.messages=1`.
    "rdkafka.*",
];

fn max_in_flight() -> AnyError {
    AnyError::UnsupportedOption {
        backend: NAME,
        option: "max_in_flight",
        reason: "Kafka subscriptions hand out every buffered message without a window",
    }
}

/// Nothing kept besides the publisher: every subscriber has its own connection.
pub(crate) struct Kafka;

#[async_trait]
impl Adapter for Kafka {
    type Config = KafkaConfig;
    type SubscriberConfig = KafkaConfig;

    fn configure(url: &ParsedUrl) -> Result<KafkaConfig, AnyError> {
        url.check_known(NAME, KNOWN, &[])?;
        let brokers = url
            .base
            .trim_start_matches("kafka://")
            .trim_end_matches('/');
        if brokers.is_empty() || brokers.contains('@') {
            return Err(AnyError::InvalidUrl {
                url: url.redacted.clone(),
                reason: "expected kafka://host:port[,host:port...]".into(),
            });
        }
        let mut config = KafkaConfig::new(brokers)
            .partitioning(Partitioning::MetadataKey(crate::KEY_METADATA.into()));
        if let Some(d) = url.duration("nack_delay")? {
            config = config.nack_delay(d);
        }
        if let Some(n) = url.number("partitions")? {
            config = config.partitions(n);
        }
        if let Some(d) = url.duration("delivery_timeout")? {
            config = config.delivery_timeout(d);
        }
        if let Some(d) = url.duration("connect_timeout")? {
            config = config.set(
                "socket.connection.setup.timeout.ms",
                d.as_millis().to_string(),
            );
        }
        if url.get("max_in_flight").is_some() {
            return Err(max_in_flight());
        }
        for (key, value) in url.prefixed("rdkafka.") {
            config = config.set(key, value);
        }
        Ok(config)
    }

    fn subscriber_config(
        config: &KafkaConfig,
        options: &SubscriberOptions,
    ) -> Result<KafkaConfig, AnyError> {
        if options.max_in_flight.is_some() {
            return Err(max_in_flight());
        }
        let mut config = config.clone();
        let group = options.group.is_some();
        if let Some(g) = &options.group {
            config = config.group(g.as_str());
        }
        let start = match (options.from, group) {
            (None, _) | (Some(StartPosition::Beginning), true) => None,
            (
                Some(
                    position @ (StartPosition::Beginning
                    | StartPosition::End
                    | StartPosition::Time(_)),
                ),
                false,
            ) => Some(position),
            (Some(position), group) => {
                return Err(unsupported_start(
                    NAME,
                    group,
                    position,
                    "a new consumer group starts at the beginning; without a group: from=beginning, end or an RFC 3339 time",
                ))
            }
        };
        Ok(match start {
            Some(position) => config.start_position(position),
            None => config,
        })
    }

    async fn connect(config: &KafkaConfig) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        Ok((Kafka, Arc::new(KafkaPublisher::new(config.clone())?)))
    }

    async fn subscriber(&self, config: KafkaConfig) -> tidemill::Result<Arc<dyn Subscriber>> {
        Ok(Arc::new(KafkaSubscriber::new(config)?))
    }
}
