//! The test broker: started on first use by `scripts/kafka-broker.sh`, shared by every test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Result, Subscriber};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};
use tidemill_testkit::{Broker, Features};

pub const BROKERS: &str = "127.0.0.1:9092";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-broker.sh")
}

/// The broker that keeps its log on disk, for the restart scenario: slower, and a process of its
/// own so that restarting it disturbs no other test.
pub const DURABLE_PORT: u16 = 9093;

/// Runs the broker script (`start`, `restart`, ...) for the shared in-memory broker, failing
/// loudly.
pub fn broker(action: &str) {
    broker_script(action, 9092, "memory");
}

/// Runs the broker script for the broker on `port` with `storage` (`memory` or `sqlite`).
pub fn broker_script(action: &str, port: u16, storage: &str) {
    let status = Command::new("bash")
        .arg(script())
        .arg(action)
        .env("TIDEMILL_KAFKA_PORT", port.to_string())
        .env("TIDEMILL_KAFKA_STORAGE", storage)
        .status()
        .expect("running scripts/kafka-broker.sh");
    assert!(
        status.success(),
        "scripts/kafka-broker.sh {action} (port {port}, {storage}) failed"
    );
}

/// Settings for tansu's gaps (see docs/testing.md): one message per record batch,
/// so a group resuming at a committed offset never meets a batch it started inside of; short
/// fetch waits, since tansu waits half the fetch wait even when it has records to send; and no
/// idempotent producer, whose bookkeeping stalls tansu under concurrent producers (the mock
/// cluster covers it).
pub fn tansu(config: KafkaConfig) -> KafkaConfig {
    config
        .set("batch.num.messages", "1")
        .set("fetch.wait.max.ms", "50")
        .set("enable.idempotence", "false")
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
            Some(group) => self.config.clone().group(group),
            // The suite's subscribers without a group read each fresh topic from its start.
            None => self
                .config
                .clone()
                .start_position(tidemill::StartPosition::Beginning),
        };
        Ok(Arc::new(KafkaSubscriber::new(config)?))
    }
}

/// What every Kafka target claims: groups, a persistent log, and new subscribers reading it from
/// the start.
pub fn features() -> Features {
    Features {
        consumer_groups: true,
        persistent: true,
        new_subscriber_receives_old_messages: true,
        ..Features::default()
    }
}
