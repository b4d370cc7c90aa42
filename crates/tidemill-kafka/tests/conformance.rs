//! The conformance suite against the Kafka-protocol test broker (tansu): every scenario against
//! the shared broker that keeps its log in memory, and the restart scenario against a broker of
//! its own that keeps its log on disk (a restart of the in-memory one loses everything).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::Result;
use tidemill_kafka::KafkaConfig;
use tidemill_testkit::{Broker, BrokerGap, Features, TestTarget};

/// The shared in-memory broker on port 9092. It is not restarted: its restart scenario is
/// skipped here and runs against [`durable::Kafka`] instead.
struct Kafka;

#[async_trait]
impl TestTarget for Kafka {
    fn features(&self) -> Features {
        Features {
            // The mock cluster's target runs this scenario (see docs/testing.md).
            broker_gaps: vec![BrokerGap::new(
                "concurrent_subscribe_and_close",
                "tansu 0.6.0's group coordinator assigns no partition to a new member for over \
                 60 s after many members of the group joined and left at once",
            )],
            ..common::features()
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        tokio::task::spawn_blocking(|| common::broker("start"))
            .await
            .map_err(|e| tidemill::Error::Other(e.into()))?;
        Ok(Arc::new(common::Connected {
            config: common::tansu(KafkaConfig::new(common::BROKERS)),
        }))
    }
}

tidemill_testkit::conformance_tests!(Kafka);

/// The restart scenario against a broker with SQLite storage on a port of its own, started fresh
/// for the test and stopped after it.
mod durable {
    use super::*;

    pub(super) struct Kafka;

    fn script(action: &'static str) -> impl FnOnce() {
        move || common::broker_script(action, common::DURABLE_PORT, "sqlite")
    }

    #[async_trait]
    impl TestTarget for Kafka {
        fn features(&self) -> Features {
            Features {
                restart_broker: Some(Arc::new(|| {
                    Box::pin(async {
                        tokio::task::spawn_blocking(script("restart")).await?;
                        Ok(())
                    })
                })),
                ..common::features()
            }
        }

        async fn connect(&self) -> Result<Arc<dyn Broker>> {
            tokio::task::spawn_blocking(script("fresh"))
                .await
                .map_err(|e| tidemill::Error::Other(e.into()))?;
            let brokers = format!("127.0.0.1:{}", common::DURABLE_PORT);
            Ok(Arc::new(common::Connected {
                config: common::tansu(KafkaConfig::new(brokers)),
            }))
        }
    }

    /// Stops the broker when the test ends, passed or not.
    struct Stop;

    impl Drop for Stop {
        fn drop(&mut self) {
            script("stop")();
        }
    }

    #[test]
    fn broker_restart_loses_nothing() {
        let _stop = Stop;
        tidemill_testkit::run_scenario(
            || Arc::new(Kafka),
            tidemill_testkit::scenarios::broker_restart_loses_nothing,
        );
    }
}
