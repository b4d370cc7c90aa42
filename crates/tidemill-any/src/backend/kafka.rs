//! `kafka://host:port,host:port`: Kafka on librdkafka. A group is a Kafka consumer group (a new
//! one starts at the beginning); without one, a subscription reads every partition from its
//! start. `--key` values travel in [`KEY_METADATA`](crate::KEY_METADATA) and pick the partition.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber, Partitioning};

use super::{connect_error, unsupported_start, Backend};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "kafka";
pub(crate) const KNOWN: &[&str] = &[
    "nack_delay",
    "partitions",
    "delivery_timeout",
    "max_in_flight",
];

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
    Ok(config)
}

fn max_in_flight() -> AnyError {
    AnyError::UnsupportedOption {
        backend: NAME,
        option: "max_in_flight",
        reason: "Kafka subscriptions hand out every buffered message without a window",
    }
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

pub(crate) fn check(url: &ParsedUrl, defaults: &SubscriberOptions) -> Result<(), AnyError> {
    subscriber_config(&configure(url)?, defaults).map(drop)
}

pub(crate) async fn connect(url: &ParsedUrl) -> Result<Box<dyn Backend>, AnyError> {
    let config = configure(url)?;
    let publisher = KafkaPublisher::new(config.clone()).map_err(connect_error(url))?;
    Ok(Box::new(Kafka {
        config,
        publisher: Arc::new(publisher),
    }))
}

struct Kafka {
    config: KafkaConfig,
    publisher: Arc<dyn Publisher>,
}

#[async_trait]
impl Backend for Kafka {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }

    async fn subscriber(
        &self,
        options: &SubscriberOptions,
    ) -> Result<Arc<dyn Subscriber>, AnyError> {
        let config = subscriber_config(&self.config, options)?;
        Ok(Arc::new(KafkaSubscriber::new(config)?))
    }

    async fn close(&self) -> tidemill::Result<()> {
        self.publisher.close().await
    }
}
