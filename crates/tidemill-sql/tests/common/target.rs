//! The conformance suite's view of the SQL pub/sub.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_sql::{Backend, SqlPubSub, SubscriberOverrides};
use tidemill_testkit::{Broker, Features, RestartFn, TestTarget};

use super::Db;

pub struct SqlTarget {
    backend: Backend,
    db: Db,
}

impl SqlTarget {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            db: Db::new(backend),
        }
    }
}

#[async_trait]
impl TestTarget for SqlTarget {
    fn features(&self) -> Features {
        Features {
            consumer_groups: true,
            exactly_once: true,
            guaranteed_order: true,
            guaranteed_order_with_single_subscriber: true,
            persistent: true,
            require_single_instance: false,
            new_subscriber_receives_old_messages: true,
            restart_broker: match self.backend {
                Backend::Postgres => Some(restart_postgres()),
                Backend::MySql => Some(restart_mariadb()),
                Backend::Sqlite => None,
            },
            broker_gaps: Vec::new(),
        }
    }

    async fn connect(&self) -> tidemill::Result<Arc<dyn Broker>> {
        let ps = SqlPubSub::connect(self.db.config().max_connections(16)).await?;
        ps.initialize().await?;
        Ok(Arc::new(SqlBroker(ps)))
    }
}

struct SqlBroker(SqlPubSub);

#[async_trait]
impl Broker for SqlBroker {
    async fn publisher(&self) -> tidemill::Result<Arc<dyn Publisher>> {
        Ok(Arc::new(self.0.publisher()))
    }

    async fn subscriber(&self, group: Option<&str>) -> tidemill::Result<Arc<dyn Subscriber>> {
        // Rows outlive subscribers, so the "default" subscriber the suite asks for is a group of
        // its own: it starts at the beginning of the topic, as every new group does.
        let own;
        let group = match group {
            Some(g) => g,
            None => {
                own = super::unique("solo");
                &own
            }
        };
        Ok(Arc::new(self.0.subscriber_with(
            SubscriberOverrides::new().group(group),
        )?))
    }
}

async fn run(cmd: &str, args: &[&str]) -> Result<(), tidemill::BoxError> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

async fn wait_port(port: u16, up: bool) -> Result<(), tidemill::BoxError> {
    for _ in 0..600 {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if open == up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    )
    .into())
}

fn restart_postgres() -> RestartFn {
    Arc::new(|| {
        Box::pin(async {
            let version = std::fs::read_dir("/etc/postgresql")?
                .next()
                .ok_or("no cluster in /etc/postgresql")??
                .file_name()
                .to_string_lossy()
                .into_owned();
            run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, "main", "restart"],
            )
            .await?;
            wait_port(5432, true).await
        })
    })
}

fn restart_mariadb() -> RestartFn {
    Arc::new(|| {
        Box::pin(async {
            run("mariadb-admin", &["-uroot", "shutdown"]).await?;
            // start-stop-daemon does nothing while the old server is still exiting.
            for _ in 0..600 {
                let alive = tokio::process::Command::new("pgrep")
                    .args(["-x", "mariadbd"])
                    .output()
                    .await?
                    .status
                    .success();
                if !alive {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            run(
                "start-stop-daemon",
                &[
                    "--start",
                    "--oknodo",
                    "--background",
                    "--exec",
                    "/usr/sbin/mariadbd",
                ],
            )
            .await?;
            wait_port(3306, true).await
        })
    })
}
