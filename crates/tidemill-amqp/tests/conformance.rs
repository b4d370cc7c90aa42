//! The tidemill conformance suite against the local RabbitMQ, durable pub/sub topology.
//!
//! `broker_restart_loses_nothing` stops and starts RabbitMQ: run it on its own
//! (`cargo nextest run -p tidemill-amqp -E 'test(broker_restart)'`).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Result, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};
use tidemill_testkit::{Broker, Features, RestartFn, TestTarget};

struct Target;

struct Rabbit {
    config: AmqpConfig,
}

#[async_trait]
impl TestTarget for Target {
    fn features(&self) -> Features {
        let restart: RestartFn = Arc::new(|| Box::pin(common::restart_rabbitmq()));
        Features {
            consumer_groups: true,
            exactly_once: false,
            // Prefetch 1 (the default) and nacks held in place keep publish order per consumer.
            guaranteed_order: true,
            guaranteed_order_with_single_subscriber: true,
            // A group's durable queue keeps messages with no member and across restarts.
            persistent: true,
            require_single_instance: false,
            new_subscriber_receives_old_messages: false,
            restart_broker: Some(restart),
            broker_gaps: Vec::new(),
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        Ok(Arc::new(Rabbit {
            config: AmqpConfig::from_url(&common::url())?,
        }))
    }
}

#[async_trait]
impl Broker for Rabbit {
    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(AmqpPublisher::connect(self.config.clone()).await?))
    }

    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
        let config = match group {
            Some(group) => self.config.clone().group(group),
            None => self.config.clone(),
        };
        Ok(Arc::new(AmqpSubscriber::connect(config).await?))
    }
}

tidemill_testkit::conformance_tests!(Target);
