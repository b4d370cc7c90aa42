//! `nats://`, `tls://`: NATS JetStream. A group is a durable pull consumer; without one, each
//! subscription has an ephemeral consumer.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_nats::{NatsConfig, NatsPublisher, NatsSubscriber, Storage};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "nats";
pub(crate) const KNOWN: &[&str] = &[
    "max_in_flight",
    "nack_delay",
    "close_timeout",
    "ack_wait",
    "stream_prefix",
    "storage",
    "batch_size",
];

/// Nothing kept besides the publisher: every subscriber has its own connection.
pub(crate) struct Nats;

#[async_trait]
impl Adapter for Nats {
    type Config = NatsConfig;
    type SubscriberConfig = NatsConfig;

    fn configure(url: &ParsedUrl) -> Result<NatsConfig, AnyError> {
        url.check_known(NAME, KNOWN, &[])?;
        let mut config = NatsConfig::from_url(&url.base).map_err(|e| AnyError::InvalidUrl {
            url: url.redacted.clone(),
            reason: e.to_string(),
        })?;
        if let Some(prefix) = url.get("stream_prefix") {
            config = config.stream_prefix(prefix);
        }
        if let Some(storage) = url.choice("storage", &["file", "memory"])? {
            config = config.storage(if storage == "memory" {
                Storage::Memory
            } else {
                Storage::File
            });
        }
        if let Some(n) = url.number("max_in_flight")? {
            config = config.max_in_flight(n);
        }
        if let Some(d) = url.duration("nack_delay")? {
            config = config.nack_delay(d);
        }
        if let Some(d) = url.duration("close_timeout")? {
            config = config.close_timeout(d);
        }
        if let Some(d) = url.duration("ack_wait")? {
            config = config.ack_wait(d);
        }
        if let Some(n) = url.number("batch_size")? {
            config = config.batch_size(n);
        }
        if let Some(d) = url.duration("connect_timeout")? {
            config = config.connect_timeout(d);
        }
        Ok(config)
    }

    fn subscriber_config(
        config: &NatsConfig,
        options: &SubscriberOptions,
    ) -> Result<NatsConfig, AnyError> {
        let mut config = config.clone();
        if let Some(n) = options.max_in_flight {
            config = config.max_in_flight(n);
        }
        config = match &options.group {
            Some(group) => config.group(group.as_str()),
            None => config.no_group(),
        };
        Ok(match options.from {
            None => config,
            Some(
                position @ (StartPosition::Beginning
                | StartPosition::End
                | StartPosition::Time(_)
                | StartPosition::Offset(_)),
            ) => config.start_position(position),
            Some(position) => {
                return Err(unsupported_start(
                    NAME,
                    options.group.is_some(),
                    position,
                    "JetStream consumers here start at the beginning, the end or a time (from=beginning|end|<RFC 3339 time>)",
                ))
            }
        })
    }

    async fn connect(config: &NatsConfig) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        Ok((
            Nats,
            Arc::new(NatsPublisher::connect(config.clone()).await?),
        ))
    }

    async fn subscriber(&self, config: NatsConfig) -> tidemill::Result<Arc<dyn Subscriber>> {
        Ok(Arc::new(NatsSubscriber::connect(config).await?))
    }
}
