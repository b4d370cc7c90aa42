//! What the tests share: the server's address, fresh names, and restarting the server.
#![allow(dead_code)]

use std::time::Duration;

use tidemill::BoxError;
use tidemill_redis::RedisConfig;
use tokio::process::Command;

/// The local server.
pub const URL: &str = "redis://127.0.0.1:6379";

/// The machine's command that starts the server (no persistence of its own).
const START: &[&str] = &[
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
];

pub fn config() -> RedisConfig {
    RedisConfig::from_url(URL).expect("valid url")
}

pub fn topic() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

pub fn group() -> String {
    format!("g_{}", uuid::Uuid::new_v4().simple())
}

/// A plain connection for checking the server's state.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn ping() -> bool {
    let Ok(client) = redis::Client::open(URL) else {
        return false;
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return false;
    };
    matches!(
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .as_deref(),
        Ok("PONG")
    )
}

/// Stops the server and starts it again with the machine's start command, returning once it
/// answers. The server runs without persistence, so it is stopped with `SHUTDOWN SAVE` (a
/// graceful restart writes a snapshot that the new process loads); the snapshot is removed
/// afterwards so the machine stays as configured.
pub async fn restart_redis() -> Result<(), BoxError> {
    stop_redis().await?;
    start_redis().await
}

/// Stops the server with `SHUTDOWN SAVE`, returning once it no longer answers.
pub async fn stop_redis() -> Result<(), BoxError> {
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "shutdown", "save"])
        .output()
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ping().await {
        if tokio::time::Instant::now() > deadline {
            return Err("the server did not stop".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts the server with the machine's command, returning once it answers; then removes the
/// snapshot it loaded.
pub async fn start_redis() -> Result<(), BoxError> {
    let status = Command::new("redis-server").args(START).status().await?;
    if !status.success() {
        return Err(format!("redis-server exited with {status}").into());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ping().await {
        if tokio::time::Instant::now() > deadline {
            return Err("the server did not come back".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file("/var/lib/redis/dump.rdb");
    Ok(())
}
