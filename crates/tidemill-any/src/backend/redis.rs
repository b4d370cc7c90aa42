//! `redis://`, `rediss://`: Redis Streams. A group is a stream consumer group; without one, a
//! subscription reads with `XREAD` from its start.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "redis";
pub(crate) const KNOWN: &[&str] = &[
    "max_in_flight",
    "nack_delay",
    "close_timeout",
    "key_prefix",
    "consumer",
    "claim_idle",
    "batch_size",
];

/// Nothing kept besides the publisher: every subscriber has its own connection.
pub(crate) struct Redis;

#[async_trait]
impl Adapter for Redis {
    type Config = RedisConfig;
    type SubscriberConfig = RedisConfig;

    fn configure(url: &ParsedUrl) -> Result<RedisConfig, AnyError> {
        url.check_known(NAME, KNOWN, &[])?;
        let mut config = RedisConfig::from_url(&url.base).map_err(|e| AnyError::InvalidUrl {
            url: url.redacted.clone(),
            reason: e.to_string(),
        })?;
        if let Some(prefix) = url.get("key_prefix") {
            config = config.key_prefix(prefix);
        }
        if let Some(name) = url.get("consumer") {
            config = config.consumer_name(name);
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
        if let Some(d) = url.duration("claim_idle")? {
            config = config.claim_idle(d);
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
        config: &RedisConfig,
        options: &SubscriberOptions,
    ) -> Result<RedisConfig, AnyError> {
        let mut config = config.clone();
        if let Some(n) = options.max_in_flight {
            config = config.max_in_flight(n);
        }
        let start =
            match options.from {
                None => None,
                Some(position @ (StartPosition::Beginning | StartPosition::End)) => Some(position),
                Some(position) => return Err(unsupported_start(
                    NAME,
                    options.group.is_some(),
                    position,
                    "Redis streams start at the beginning (from=beginning) or the end (from=end)",
                )),
            };
        config = match &options.group {
            Some(group) => config.group(group.as_str()),
            None => config.no_group(),
        };
        Ok(match start {
            Some(position) => config.start_position(position),
            None => config,
        })
    }

    async fn connect(config: &RedisConfig) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        Ok((
            Redis,
            Arc::new(RedisPublisher::connect(config.clone()).await?),
        ))
    }

    async fn subscriber(&self, config: RedisConfig) -> tidemill::Result<Arc<dyn Subscriber>> {
        Ok(Arc::new(RedisSubscriber::connect(config).await?))
    }
}
