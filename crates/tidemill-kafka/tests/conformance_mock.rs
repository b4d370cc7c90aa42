//! The conformance suite against librdkafka's in-process mock cluster, which behaves as Kafka
//! does where the test broker has gaps (see the crate docs). One cluster per test process.

mod common;

use std::sync::{mpsc, Arc, OnceLock};

use async_trait::async_trait;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tidemill::Result;
use tidemill_kafka::KafkaConfig;
use tidemill_testkit::{Broker, Features, TestTarget};

enum Command {
    Restart(mpsc::Sender<()>),
}

/// The mock cluster lives on a thread of its own (it cannot move between threads).
struct Mock {
    servers: String,
    commands: mpsc::Sender<Command>,
}

fn mock() -> &'static Mock {
    static MOCK: OnceLock<Mock> = OnceLock::new();
    MOCK.get_or_init(|| {
        let (servers_tx, servers_rx) = mpsc::channel();
        let (commands, commands_rx) = mpsc::channel::<Command>();
        std::thread::spawn(move || {
            let cluster: MockCluster<'static, DefaultProducerContext> =
                MockCluster::new(1).expect("a mock cluster");
            servers_tx.send(cluster.bootstrap_servers()).unwrap();
            for command in commands_rx {
                match command {
                    Command::Restart(done) => {
                        cluster.broker_down(1).expect("broker down");
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        cluster.broker_up(1).expect("broker up");
                        let _ = done.send(());
                    }
                }
            }
        });
        Mock {
            servers: servers_rx.recv().expect("the mock cluster's address"),
            commands,
        }
    })
}

struct Target;

#[async_trait]
impl TestTarget for Target {
    fn features(&self) -> Features {
        Features {
            restart_broker: Some(Arc::new(|| {
                Box::pin(async {
                    let (done, wait) = mpsc::channel();
                    mock().commands.send(Command::Restart(done))?;
                    tokio::task::spawn_blocking(move || wait.recv()).await??;
                    Ok(())
                })
            })),
            ..common::features()
        }
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        Ok(Arc::new(common::Connected {
            // The mock cluster creates topics on first use; its admin API does not answer.
            config: KafkaConfig::new(&mock().servers)
                .create_topics(false)
                // Once its last member left, a mock group waits a session timeout less one
                // second before it takes in new members (Kafka: the initial rebalance delay,
                // 3 s): a short session keeps the scenarios where members come and go quick.
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "1000"),
        }))
    }
}

tidemill_testkit::conformance_tests!(Target);
