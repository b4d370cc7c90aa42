//! Runs the demo binary as a user would and checks what it prints.

use std::process::Command;

#[test]
fn demo_on_sqlite_greets_every_message_and_stops_cleanly() {
    check_demo("sqlite");
}

#[test]
fn demo_in_process_greets_every_message_and_stops_cleanly() {
    check_demo("in-process");
}

#[test]
fn demo_on_redis_by_tidemill_url() {
    check_demo_with(&[], &[("TIDEMILL_URL", "redis://127.0.0.1:6379")]);
}

#[test]
fn demo_on_nats_by_watermill_pubsub_type() {
    check_demo_with(&[], &[("WATERMILL_PUBSUB_TYPE", "nats")]);
}

#[test]
fn demo_in_process_by_empty_watermill_pubsub_type() {
    check_demo_with(&[], &[("WATERMILL_PUBSUB_TYPE", "")]);
}

fn check_demo(pubsub: &str) {
    check_demo_with(&["--pubsub", pubsub], &[]);
}

fn check_demo_with(args: &[&str], env: &[(&str, &str)]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo"));
    command
        .args(["--interval", "20ms", "--count", "3"])
        .args(args)
        .env_remove("TIDEMILL_URL")
        .env_remove("WATERMILL_PUBSUB_TYPE");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |needle: &str| stdout.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("sending message"), 3, "{stdout}");
    assert_eq!(
        count("executing hello_handler specific middleware"),
        3,
        "{stdout}"
    );
    assert_eq!(count("hello_handler received message"), 3, "{stdout}");
    assert_eq!(
        count("incoming_topic_handler received message"),
        3,
        "{stdout}"
    );
    assert_eq!(
        count("Hello! I got your message: Hello, tidemill!"),
        3,
        "{stdout}"
    );
    // The greeting carries the correlation id of the message it answers.
    for line in stdout.lines().filter(|l| l.starts_with("sending message")) {
        let correlation = line.rsplit(' ').next().unwrap();
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("outgoing_topic_handler") && l.contains(correlation)),
            "no greeting with correlation id {correlation}: {stdout}"
        );
    }
}

#[test]
fn sigterm_closes_the_demo_gracefully() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--interval", "20ms", "--pubsub", "in-process"])
        .env_remove("TIDEMILL_URL")
        .env_remove("WATERMILL_PUBSUB_TYPE")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the demo runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until it is running and greeting.
    lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("outgoing_topic_handler received"))
        .expect("a greeting");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "the signals plugin closes the router and the demo exits cleanly: {exit:?}"
    );
}
