//! What the tests share: the server address, fresh names, and restarting the local server.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use tidemill_nats::NatsConfig;

/// The local server every test uses.
pub const URL: &str = "nats://127.0.0.1:4222";

/// Options for the local server.
pub fn config() -> NatsConfig {
    NatsConfig::new(URL)
}

/// A fresh topic name.
pub fn topic() -> String {
    format!("test.t_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh group name.
pub fn group() -> String {
    format!("g_{}", uuid::Uuid::new_v4().simple())
}

const START: &[&str] = &[
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/nats-server",
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
];

/// How the server is stopped.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGTERM: the server shuts down cleanly, writing its state.
    Graceful,
    /// SIGKILL: the server dies on the spot, as in a crash.
    Kill,
}

/// Stops the local server, keeps it down for `down`, starts it with the machine's command and
/// waits until JetStream answers.
pub async fn restart_server(stop: Stop, down: Duration) -> Result<(), String> {
    let signal = match stop {
        Stop::Graceful => "TERM/30/KILL/5",
        Stop::Kill => "KILL/5",
    };
    run(&[
        "--stop",
        "--oknodo",
        "--retry",
        signal,
        "--exec",
        "/usr/sbin/nats-server",
    ])?;
    tokio::time::sleep(down).await;
    run(START)?;
    wait_ready(Duration::from_secs(60)).await
}

/// Makes sure the server runs (starting it if it is down).
pub async fn ensure_server() {
    if wait_ready(Duration::from_millis(500)).await.is_err() {
        run(START).expect("starting nats-server");
        wait_ready(Duration::from_secs(60))
            .await
            .expect("nats-server did not come up");
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let status = Command::new("start-stop-daemon")
        .args(args)
        .status()
        .map_err(|e| format!("running start-stop-daemon: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("start-stop-daemon {args:?} failed: {status}"))
    }
}

/// Waits until the server accepts connections and JetStream answers an API request.
async fn wait_ready(limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ready = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_millis(500))
                .connect(URL)
                .await
                .ok()?;
            let reply = tokio::time::timeout(
                Duration::from_secs(1),
                client.request("$JS.API.INFO", "".into()),
            )
            .await
            .ok()?
            .ok()?;
            let body = String::from_utf8_lossy(&reply.payload).into_owned();
            // Until JetStream has recovered its streams it answers with an error.
            (!body.contains("\"error\"")).then_some(())
        };
        if ready.await.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("nats-server not ready within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
