//! `publish --count/--rate` and `consume --count/--from` driven as subprocesses against the real
//! local brokers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::{failed, ok, payloads, run};

fn unique(prefix: &str) -> String {
    common::unique(prefix)
}

#[test]
fn publish_count_repeats_with_fresh_ids_and_consume_count_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("count.db").display());
    let topic = unique("count");
    let out = ok(&run(&[
        "publish", &url, &topic, "a", "b", "--count", "3", "--output", "json",
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["published"], 6, "{summary}");
    let ids: BTreeSet<&str> = summary["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "every copy has its own id: {summary}");

    // --count ends the command after that many, however many more there are.
    let first = ok(&run(&[
        "consume",
        &url,
        &topic,
        "--group",
        "g",
        "--count",
        "4",
        "--idle-timeout",
        "10s",
        "--format",
        "json",
    ]));
    assert_eq!(payloads(&first), ["a", "b", "a", "b"]);
    let rest = ok(&run(&[
        "consume",
        &url,
        &topic,
        "--group",
        "g",
        "--idle-timeout",
        "2s",
        "--format",
        "json",
    ]));
    assert_eq!(payloads(&rest), ["a", "b"]);
    let printed: BTreeSet<String> = first
        .lines()
        .chain(rest.lines())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        printed.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        ids
    );
}

#[test]
fn publish_rate_spaces_the_messages_out() {
    let topic = unique("rate");
    let started = Instant::now();
    let out = ok(&run(&[
        "publish",
        "redis://127.0.0.1:6379",
        &topic,
        "m",
        "--count",
        "11",
        "--rate",
        "20",
        "--output",
        "json",
    ]));
    let elapsed = started.elapsed();
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["published"], 11);
    // 11 messages at 20/s: the last goes out 10 intervals of 50 ms after the first.
    assert!(
        elapsed >= Duration::from_millis(500),
        "11 messages at 20/s took only {elapsed:?}"
    );
}

#[test]
fn consume_from_a_time_gets_only_what_came_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("from.db").display());
    for url in ["nats://127.0.0.1:4222", sqlite.as_str()] {
        from_a_time(url);
    }
}

fn from_a_time(url: &str) {
    let topic = unique("from");
    ok(&run(&["publish", url, &topic, "a"]));
    std::thread::sleep(Duration::from_millis(1500));
    let from = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(500));
    ok(&run(&["publish", url, &topic, "b"]));
    for group in [None, Some(unique("g"))] {
        let mut args = vec![
            "consume",
            url,
            &topic,
            "--from",
            &from,
            "--idle-timeout",
            "3s",
            "--format",
            "json",
        ];
        if let Some(g) = &group {
            args.extend(["--group", g.as_str()]);
        }
        let out = ok(&run(&args));
        assert_eq!(payloads(&out), ["b"], "--from {from} (group {group:?})");
    }
    // The same topic from the beginning has both: the time is what left `a` out.
    let all = ok(&run(&[
        "consume",
        url,
        &topic,
        "--from",
        "beginning",
        "--idle-timeout",
        "3s",
        "--format",
        "json",
    ]));
    assert_eq!(payloads(&all), ["a", "b"]);
}

#[test]
fn consume_from_a_time_is_refused_where_the_backend_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_queue = format!(
        "sqlite://{}?mode=queue",
        dir.path().join("from.db").display()
    );
    for (url, backend) in [
        ("redis://127.0.0.1:6379", "redis"),
        (sqlite_queue.as_str(), "sql"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "amqp"),
        // No broker there: refused before connecting.
        ("redis://127.0.0.1:1", "redis"),
    ] {
        for group in [None, Some("g")] {
            let mut args = vec!["consume", url, "t", "--from", "2026-01-02T03:04:05Z"];
            if let Some(g) = group {
                args.extend(["--group", g]);
            }
            let err = failed(&run(&args));
            assert!(
                err.contains(&format!("{backend} cannot start"))
                    && err.contains("2026-01-02T03:04:05"),
                "{url} {group:?}: {err}"
            );
        }
    }
}
