//! The test broker: started on first use by `scripts/kafka-broker.sh`, shared by every test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Result, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use tidemill_testkit::Broker;

pub const BROKERS: &str = "127.0.0.1:9092";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker.sh")
}

/// Runs the broker script (`start`, `restart`, ...), failing loudly.
pub fn broker(action: &str) {
    let status = Command::new("bash")
        .arg(script())
        .arg(action)
        .status()
        .expect("running scripts/kafka-broker.sh");
    assert!(status.success(), "scripts/kafka-broker.sh {action} failed");
}

/// A topic name no other test uses.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A connection for the conformance suite: a publisher per call, a subscriber per call in the
/// given group (without one, reading each fresh topic from its start).
pub struct Connected {
    pub config: KafkaConfig,
}

#[async_trait]
impl Broker for Connected {
    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(KafkaPublisher::new(self.config.clone())?))
    }

    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
        let config = match group {
            Some(group) => self.config.clone().consumer_group(group),
            None => self.config.clone(),
        };
        Ok(Arc::new(KafkaSubscriber::new(config)?))
    }
}
