//! The tidemill conformance suite against the local nats-server with JetStream.
//!
//! `broker_restart_loses_nothing` restarts the server with the machine's own commands: run it
//! on its own (`cargo nextest run -p tidemill-nats -E 'test(broker_restart)'`).
//!
//! Two configurations run the suite: the default one (`at_least_once`), and `ordered`, whose
//! consumers allow one unacknowledged message at a time (`max_in_flight(1)`), which is what
//! JetStream needs to keep publish order across nacks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tidemill::{Publisher, Result, Subscriber};
use tidemill_nats::{NatsConfig, NatsPublisher, NatsSubscriber};
use tidemill_testkit::{Broker, Features, TestTarget};

struct Target {
    ordered: bool,
}

struct Nats {
    config: NatsConfig,
}

#[async_trait]
impl TestTarget for Target {
    fn features(&self) -> Features {
        Features {
            consumer_groups: true,
            exactly_once: false,
            guaranteed_order: self.ordered,
            guaranteed_order_with_single_subscriber: self.ordered,
            persistent: true,
            require_single_instance: false,
            new_subscriber_receives_old_messages: true,
            restart_broker: Some(Arc::new(|| {
                async {
                    common::restart_server(common::Stop::Graceful, Duration::from_secs(1))
                        .await
                        .map_err(Into::into)
                }
                .boxed()
            })),
            broker_gaps: Vec::new(),
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        common::ensure_server().await;
        // The suite's subscribers without a group read what was published before them.
        let config = common::config().start_position(tidemill::StartPosition::Beginning);
        let config = if self.ordered {
            config.max_in_flight(1)
        } else {
            config
        };
        Ok(Arc::new(Nats { config }))
    }
}

#[async_trait]
impl Broker for Nats {
    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(NatsPublisher::connect(self.config.clone()).await?))
    }

    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
        let config = match group {
            Some(group) => self.config.clone().group(group),
            None => self.config.clone(),
        };
        Ok(Arc::new(NatsSubscriber::connect(config).await?))
    }
}

mod at_least_once {
    tidemill_testkit::conformance_tests!(crate::Target { ordered: false });
}

mod ordered {
    tidemill_testkit::conformance_tests!(crate::Target { ordered: true });
}
