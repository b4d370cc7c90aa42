//! What the integration tests share: the broker's address, fresh names, restarting RabbitMQ.
#![allow(dead_code)]

use std::time::Duration;

use tidemill::BoxError;
use tokio::process::Command;
use tokio::time::Instant;

/// The local broker, `TIDEMILL_AMQP_URL` overriding it.
pub fn url() -> String {
    std::env::var("TIDEMILL_AMQP_URL").unwrap_or_else(|_| tidemill_amqp::DEFAULT_URL.to_owned())
}

/// A fresh name with `prefix`.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Stops RabbitMQ with `rabbitmqctl stop`, starts it with `rabbitmq-server -detached` and
/// returns once it accepts AMQP connections again.
pub async fn restart_rabbitmq() -> Result<(), BoxError> {
    let stop = Command::new("rabbitmqctl").arg("stop").output().await?;
    // `rabbitmq-server -detached` refuses to start while the old node is still going down.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect("127.0.0.1:5672")
        .await
        .is_ok()
    {
        if Instant::now() > deadline {
            return Err(format!(
                "RabbitMQ still listens 60 s after rabbitmqctl stop ({}): {}",
                stop.status,
                String::from_utf8_lossy(&stop.stderr)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut last = String::new();
    for _ in 0..3 {
        // A start that races the old node's last steps fails; the next try succeeds.
        let start = Command::new("rabbitmq-server")
            .arg("-detached")
            .output()
            .await?;
        match wait_until_up(Duration::from_secs(60)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                last = format!("{e} (rabbitmq-server -detached: {})", start.status);
            }
        }
    }
    Err(last.into())
}

/// Waits until an AMQP connection to the broker succeeds.
pub async fn wait_until_up(limit: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    let url = url();
    loop {
        let attempt = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(conn)) => {
                let _ = conn.close(200, "up".into()).await;
                return Ok(());
            }
            _ if Instant::now() > deadline => {
                return Err(format!("RabbitMQ did not accept connections within {limit:?}").into())
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A raw lapin connection and channel, to look at what the adapter left on the broker.
pub async fn raw() -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(&url(), lapin::ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("raw channel");
    (conn, channel)
}

/// How many ready messages `queue` holds, or `None` if it does not exist.
pub async fn queue_depth(queue: &str) -> Option<u32> {
    let (conn, channel) = raw().await;
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    declared.ok().map(|q| q.message_count())
}

/// Takes one message from `queue` with basic.get (acking it), waiting up to `limit` for one.
pub async fn get_one(queue: &str, limit: Duration) -> Option<lapin::message::BasicGetMessage> {
    let (conn, channel) = raw().await;
    let deadline = Instant::now() + limit;
    let got = loop {
        let got = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get");
        if got.is_some() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = conn.close(200, "done".into()).await;
    got
}

/// Makes the broker close every connection whose client properties mention `marker` (a
/// connection name), as a network failure or an operator would.
pub async fn kill_connections(marker: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q", "-s"])
        .output()
        .await
        .expect("rabbitmqctl list_connections");
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut killed = 0;
    for line in listing.lines().filter(|l| l.contains(marker)) {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: simulated failure"])
            .status()
            .await
            .expect("rabbitmqctl close_connection");
        assert!(status.success(), "closing connection {pid} failed");
        killed += 1;
    }
    killed
}

/// The next delivery within `limit`, panicking on timeout or end.
pub async fn next(
    subscription: &mut tidemill::Subscription,
    limit: Duration,
) -> tidemill::Delivery {
    use futures::StreamExt;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, subscription.next()).await {
            Ok(Some(Ok(d))) => return d,
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("the subscription ended"),
            Err(_) => panic!("no delivery within {limit:?}"),
        }
    }
}

/// Asserts nothing arrives within `wait`.
pub async fn quiet(subscription: &mut tidemill::Subscription, wait: Duration) {
    use futures::StreamExt;
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, subscription.next()).await {
            Ok(Some(Ok(d))) => panic!("unexpected delivery {}", d.message().id()),
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("the subscription ended"),
            Err(_) => return,
        }
    }
}

/// A payload as text.
pub fn text(delivery: &tidemill::Delivery) -> String {
    String::from_utf8_lossy(delivery.message().payload()).into_owned()
}
