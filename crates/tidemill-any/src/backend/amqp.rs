//! `amqp://`, `amqps://`: RabbitMQ. `mode` picks the topology (`pubsub`: an exchange per topic
//! and a queue per group; `work_queue`: a queue per topic; `topic`: one topic exchange).

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, SubscriberOptions};

const NAME: &str = "amqp";
pub(crate) const KNOWN: &[&str] = &[
    "max_in_flight",
    "nack_delay",
    "close_timeout",
    "mode",
    "exchange",
    "durable",
];
/// The AMQP client's own parameters, left in the URL.
const PASSED: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "channel_max",
    "frame_max",
    "auth_mechanism",
];

/// Nothing kept besides the publisher: every subscriber has its own connection.
pub(crate) struct Amqp;

#[async_trait]
impl Adapter for Amqp {
    type Config = AmqpConfig;
    type SubscriberConfig = AmqpConfig;

    fn configure(url: &ParsedUrl) -> Result<AmqpConfig, AnyError> {
        url.check_known(NAME, KNOWN, PASSED)?;
        let mut pairs: Vec<(String, String)> = url
            .params
            .iter()
            .filter(|(k, _)| PASSED.contains(&k.as_str()))
            .cloned()
            .collect();
        if let Some(mode) = url.choice("mode", &["pubsub", "work_queue", "topic"])? {
            pairs.push(("topology".into(), mode));
        }
        if let Some(exchange) = url.get("exchange") {
            pairs.push(("exchange".into(), exchange.into()));
        }
        if let Some(durable) = url.flag("durable")? {
            pairs.push(("durable".into(), durable.to_string()));
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let full = if query.is_empty() {
            url.base.clone()
        } else {
            format!("{}?{query}", url.base)
        };
        let mut config = AmqpConfig::from_url(&full).map_err(|e| AnyError::InvalidUrl {
            url: url.redacted.clone(),
            reason: e.to_string(),
        })?;
        if let Some(n) = url.number::<u16>("max_in_flight")? {
            config = config.max_in_flight(n);
        }
        if let Some(d) = url.duration("nack_delay")? {
            config = config.nack_delay(d);
        }
        if let Some(d) = url.duration("close_timeout")? {
            config = config.close_timeout(d);
        }
        Ok(config)
    }

    fn subscriber_config(
        config: &AmqpConfig,
        options: &SubscriberOptions,
    ) -> Result<AmqpConfig, AnyError> {
        if let Some(position) = options.from {
            return Err(unsupported_start(
                NAME,
                options.group.is_some(),
                position,
                "RabbitMQ queues have no start position: a group's queue holds what arrived since it was declared, a subscription without a group gets what is published after it",
            ));
        }
        let mut config = config.clone();
        if let Some(n) = options.max_in_flight {
            config = config.max_in_flight(u16::try_from(n).unwrap_or(u16::MAX));
        }
        if let Some(group) = &options.group {
            config = config.group(group.as_str());
        }
        Ok(config)
    }

    async fn connect(config: &AmqpConfig) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        Ok((
            Amqp,
            Arc::new(AmqpPublisher::connect(config.clone()).await?),
        ))
    }

    async fn subscriber(&self, config: AmqpConfig) -> tidemill::Result<Arc<dyn Subscriber>> {
        Ok(Arc::new(AmqpSubscriber::connect(config).await?))
    }
}
