//! The conformance suite against the Kafka-protocol test broker.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::Result;
use tidemill_kafka::KafkaConfig;
use tidemill_testkit::{Broker, Features, TestTarget};

struct Kafka;

#[async_trait]
impl TestTarget for Kafka {
    fn features(&self) -> Features {
        Features {
            consumer_groups: true,
            persistent: true,
            new_subscriber_receives_old_messages: true,
            restart_broker: Some(Arc::new(|| {
                Box::pin(async {
                    tokio::task::spawn_blocking(|| common::broker("restart")).await?;
                    Ok(())
                })
            })),
            ..Features::default()
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        tokio::task::spawn_blocking(|| common::broker("start"))
            .await
            .map_err(|e| tidemill::Error::Other(e.into()))?;
        Ok(Arc::new(common::Connected {
            config: KafkaConfig::new(common::BROKERS),
        }))
    }
}

tidemill_testkit::conformance_tests!(Kafka);
