//! The tidemill conformance suite against the local Redis server.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::StartPosition;
use tidemill::{Publisher, Result, Subscriber};
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
use tidemill_testkit::{Broker, Features, TestTarget};

struct Target;

#[async_trait]
impl TestTarget for Target {
    fn features(&self) -> Features {
        Features {
            // A group is a Redis consumer group on the topic's stream.
            consumer_groups: true,
            // A lost XADD or XACK answer, or a claim after the idle time, delivers twice.
            exactly_once: false,
            // Per subscription, with the default window of one unsettled delivery.
            guaranteed_order: true,
            guaranteed_order_with_single_subscriber: true,
            // Streams keep entries without readers; a graceful restart keeps them too.
            persistent: true,
            require_single_instance: false,
            // Groups and group-less subscribers are configured to start at the beginning.
            new_subscriber_receives_old_messages: true,
            restart_broker: Some(Arc::new(|| Box::pin(common::restart_redis()))),
            broker_gaps: Vec::new(),
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        let config = common::config().start_position(StartPosition::Beginning);
        Ok(Arc::new(RedisBroker { config }))
    }
}

struct RedisBroker {
    config: RedisConfig,
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(
            RedisPublisher::connect(self.config.clone()).await?,
        ))
    }

    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
        let config = match group {
            Some(group) => self.config.clone().group(group),
            None => self.config.clone().no_group(),
        };
        Ok(Arc::new(RedisSubscriber::connect(config).await?))
    }
}

tidemill_testkit::conformance_tests!(Target);
