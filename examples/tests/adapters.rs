//! Runs each adapter's example binary against its local broker, as a user would, and checks
//! that the handler printed every message and the program ended cleanly.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn redis_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_redis"), Some("127.0.0.1:6379"));
}

#[test]
fn nats_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_nats"), Some("127.0.0.1:4222"));
}

#[test]
fn rabbitmq_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_rabbitmq"), Some("127.0.0.1:5672"));
}

#[test]
fn kafka_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_kafka"), Some("127.0.0.1:9092"));
}

#[test]
fn postgres_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_postgres"), Some("127.0.0.1:5432"));
}

#[test]
fn sqlite_example_prints_every_order() {
    check_example(env!("CARGO_BIN_EXE_sqlite"), None);
}

/// Generous: a busy machine may be slow to connect, create topics and join groups.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn check_example(binary: &str, broker: Option<&str>) {
    if let Some(address) = broker {
        // A missing broker is a failure with its reason, not a skip: CI starts every one.
        let address = address.to_socket_addrs().unwrap().next().unwrap();
        if let Err(err) = TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            panic!("the broker at {address} is unreachable ({err}); start it (scripts/services.sh, or scripts/kafka-broker.sh fresh for Kafka)");
        }
    }
    let mut child = Command::new(binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{binary} does not start: {err}"));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_LIMIT {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{binary} still ran after {RUN_LIMIT:?}; it printed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{binary} failed ({}):\n{stdout}{stderr}",
        out.status
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable(); // the order of deliveries is not what this checks
    assert_eq!(
        lines,
        [
            "received order #1",
            "received order #2",
            "received order #3"
        ],
        "{binary} printed:\n{stdout}{stderr}"
    );
}
