//! The `tidemill` binary driven as a user would, against the real local brokers.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{ok, payloads, run, text, tidemill, unique};

/// Publishes three messages with metadata in one process, consumes them in another.
fn round_trip(url: &str) {
    let topic = unique("rt");
    let group = unique("g");
    ok(&run(&[
        "publish",
        url,
        &topic,
        "one",
        "two",
        "three",
        "-m",
        "kind=test",
    ]));
    let out = ok(&run(&[
        "consume",
        url,
        &topic,
        "--group",
        &group,
        "--count",
        "3",
        "--format",
        "json",
        "--timeout",
        "30s",
    ]));
    assert_eq!(payloads(&out), ["one", "two", "three"], "{out}");
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["metadata"]["kind"], "test");
        assert_eq!(v["topic"], topic.as_str());
    }
    // Acked: the group gets nothing more.
    let again = ok(&run(&[
        "consume",
        url,
        &topic,
        "--group",
        &group,
        "--idle-timeout",
        "2s",
        "--format",
        "json",
    ]));
    assert_eq!(again, "", "acked messages came back");
}

#[test]
fn publish_consume_round_trip_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&format!("sqlite://{}", dir.path().join("rt.db").display()));
}

#[test]
fn publish_consume_round_trip_postgres() {
    round_trip("postgres://postgres@127.0.0.1:5432/test");
}

#[test]
fn publish_consume_round_trip_mysql() {
    round_trip("mysql://root@127.0.0.1:3306/test");
}

#[test]
fn publish_consume_round_trip_mariadb_scheme() {
    round_trip("mariadb://root@127.0.0.1:3306/test");
}

#[test]
fn publish_consume_round_trip_redis() {
    round_trip("redis://127.0.0.1:6379");
}

#[test]
fn publish_consume_round_trip_nats() {
    round_trip("nats://127.0.0.1:4222");
}

#[test]
fn publish_consume_round_trip_amqp_work_queue() {
    round_trip("amqp://guest:guest@127.0.0.1:5672/%2f?mode=work_queue");
}

#[test]
fn publish_consume_round_trip_kafka() {
    if TcpStream::connect_timeout(&"127.0.0.1:9092".parse().unwrap(), Duration::from_secs(1))
        .is_err()
    {
        println!(
            "skipped: no Kafka broker on 127.0.0.1:9092 (scripts/kafka-broker.sh fresh starts one)"
        );
        return;
    }
    round_trip("kafka://127.0.0.1:9092");
}

#[test]
fn jsonl_from_stdin_carries_payload_metadata_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("j.db").display());
    let topic = unique("jsonl");
    let mut child = tidemill()
        .args(["publish", &url, &topic, "--jsonl", "--output", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"payload\":\"hi\",\"metadata\":{\"lang\":\"en\"},\"key\":\"k1\"}\n{\"payload\":{\"n\":2}}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(summary["published"], 2);
    let out = ok(&run(&[
        "consume", &url, &topic, "--group", "g", "--count", "2", "--output", "json",
    ]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["payload"], "hi");
    assert_eq!(lines[0]["metadata"]["lang"], "en");
    assert_eq!(lines[0]["metadata"][tidemill_any::KEY_METADATA], "k1");
    assert_eq!(lines[1]["payload"], "{\"n\":2}");
}

#[test]
fn malformed_json_lines_are_reported_by_number_and_atomic_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        "{\"payload\":\"a\"}\nnot json\n{\"payload\":\"c\"}\n{\"payload\":\"d\",\"colour\":1}\n",
    )
    .unwrap();
    let file = file.display().to_string();

    let atomic = unique("atomic");
    let out = run(&[
        "publish", &url, &atomic, "--jsonl", "--file", &file, "--atomic",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("line 4") && err.contains("nothing was published"),
        "{err}"
    );
    let got = ok(&run(&[
        "consume",
        &url,
        &atomic,
        "--group",
        "g",
        "--idle-timeout",
        "1s",
        "--output",
        "json",
    ]));
    assert_eq!(got, "", "--atomic sent something");

    let partial = unique("partial");
    let out = run(&["publish", &url, &partial, "--jsonl", "--file", &file]);
    assert!(
        !out.status.success(),
        "a malformed line is an error even when the rest is sent"
    );
    assert!(text(&out.stderr).contains("the others were published"));
    let got = ok(&run(&[
        "consume", &url, &partial, "--group", "g", "--count", "2", "--output", "json",
    ]));
    assert_eq!(payloads(&got), ["a", "c"]);
}

#[test]
fn bad_input_is_refused_before_connecting() {
    // Port 1 has no broker: a connection attempt would fail differently (or hang).
    let cases: [(&[&str], &str); 5] = [
        (&["publish", "ftp://h", "t", "x"], "expected one of"),
        (
            &["publish", "redis://127.0.0.1:1?colour=blue", "t", "x"],
            "unknown option `colour`",
        ),
        (
            &["publish", "nats://127.0.0.1:1", "a..b", "x"],
            "invalid topic name",
        ),
        (
            &[
                "publish",
                "postgres://u@127.0.0.1:1/db",
                "bad topic; --",
                "x",
            ],
            "invalid topic name",
        ),
        (
            &[
                "consume",
                "amqp://guest:guest@127.0.0.1:1/%2f",
                "t",
                "--from",
                "beginning",
            ],
            "cannot start",
        ),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let out = run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} tried to connect"
        );
    }
    // Redis streams have no offsets to start at (NATS does: a stream sequence).
    let out = run(&["consume", "redis://127.0.0.1:6379", "t", "--from", "12"]);
    assert!(
        text(&out.stderr).contains("redis cannot start"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unreachable_broker_fails_in_bounded_time_with_the_password_masked() {
    for url in [
        "redis://app:s3cret@127.0.0.1:1",
        "amqp://guest:s3cret@127.0.0.1:1/%2f",
        "nats://app:s3cret@127.0.0.1:1",
        "postgres://app:s3cret@127.0.0.1:1/test",
    ] {
        let started = Instant::now();
        let out = run(&["publish", url, "t", "x", "--timeout", "5s"]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{url} took {:?}",
            started.elapsed()
        );
        assert!(err.contains("127.0.0.1:1"), "{url}: {err}");
        assert!(!err.contains("s3cret"), "{url}: {err}");
        assert!(
            err.contains("***") || url.starts_with("redis"),
            "{url}: {err}"
        );
    }
}

#[test]
fn sigint_during_consume_loses_nothing() {
    let url = "redis://127.0.0.1:6379";
    let topic = unique("sigint");
    let group = unique("g");
    // Enough that the consumer is still busy when the signal comes.
    let all: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.txt");
    std::fs::write(&file, all.join("\n")).unwrap();
    ok(&run(&[
        "publish",
        url,
        &topic,
        "--file",
        &file.display().to_string(),
    ]));

    let mut child = tidemill()
        .args(["consume", url, &topic, "--group", &group])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        seen.insert(lines.next().unwrap().unwrap());
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for line in lines {
        seen.insert(line.unwrap());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C is a clean exit: {status:?}");
    assert!(
        seen.len() < all.len(),
        "the first consumer printed everything: nothing tested"
    );

    // Whatever the first consumer did not print comes to the next one.
    let rest = ok(&run(&[
        "consume",
        url,
        &topic,
        "--group",
        &group,
        "--idle-timeout",
        "5s",
    ]));
    seen.extend(rest.lines().map(str::to_owned));
    let expected: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(seen, expected);
}

#[test]
fn no_ack_peeks_and_leaves_the_messages_for_the_next_consumer() {
    let url = "nats://127.0.0.1:4222";
    let topic = unique("peek");
    let group = unique("g");
    ok(&run(&["publish", url, &topic, "a", "b", "-m", "k=1"]));
    ok(&run(&["publish", url, &topic, "c"]));
    let peeked = ok(&run(&[
        "consume", url, &topic, "--group", &group, "--no-ack", "--count", "3",
    ]));
    assert_eq!(peeked, "a\nb\nc\n");
    let filtered = ok(&run(&[
        "consume",
        url,
        &topic,
        "--group",
        &group,
        "--no-ack",
        "--filter",
        "k=1",
        "--idle-timeout",
        "2s",
        "--format",
        "pretty",
    ]));
    assert!(
        filtered.contains("k: 1") && filtered.contains("a\n") && !filtered.contains("c\n"),
        "{filtered}"
    );
    let taken = ok(&run(&[
        "consume", url, &topic, "--group", &group, "--count", "3",
    ]));
    assert_eq!(taken, "a\nb\nc\n");
}

#[test]
fn bench_reports_on_memory_and_sqlite() {
    let out = ok(&run(&[
        "bench",
        "memory://",
        "-n",
        "200",
        "-s",
        "16",
        "-c",
        "2",
        "--output",
        "json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["backend"], "memory");
    assert_eq!(report["results"][0]["phase"], "publish");
    assert_eq!(report["results"][1]["messages"], 200);
    assert!(report["results"][1]["msgs_per_sec"].as_f64().unwrap() > 0.0);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let table = ok(&run(&["bench", &url, "-n", "50", "-s", "8", "-c", "2"]));
    assert!(
        table.contains("msgs/s") && table.contains("consume") && table.contains("p99"),
        "{table}"
    );
}

#[test]
fn help_shows_an_example_per_command_and_completions_print() {
    for command in [
        "publish",
        "consume",
        "tail",
        "poison",
        "bench",
        "demo",
        "completions",
    ] {
        let help = ok(&run(&[command, "--help"]));
        assert!(help.contains("Example:"), "{command}: {help}");
    }
    let script = ok(&run(&["completions", "bash"]));
    assert!(script.contains("tidemill"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_requeue_moves_a_message_back_and_the_handler_then_succeeds() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use tidemill::middleware::PoisonQueueLayer;
    use tidemill::router::{HandlerError, HandlerResult};
    use tidemill::{Message, Router};
    use tidemill_any::SubscriberOptions;

    let url = "redis://127.0.0.1:6379";
    let topic = unique("orders");
    let poison = unique("poison");
    let pubsub = tidemill_any::connect(url).await.unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let handled = Arc::new(AtomicU64::new(0));
    let router = Router::new();
    router.layer(PoisonQueueLayer::new(pubsub.publisher(), poison.clone()));
    let subscriber = pubsub
        .subscriber(SubscriberOptions::group("billing"))
        .await
        .unwrap();
    router
        .handler("billing")
        .subscribe(topic.as_str(), subscriber)
        .handle({
            let failing = failing.clone();
            let handled = handled.clone();
            move |_msg: Message| {
                let failing = failing.clone();
                let handled = handled.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        return HandlerResult::<()>::Err(HandlerError::new(std::io::Error::other(
                            "card declined",
                        )));
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    pubsub
        .publisher()
        .publish(&topic, vec![Message::new("order #1")])
        .await
        .unwrap();

    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || tidemill().args(&args).output().unwrap())
    };
    let list = {
        let poison = poison.clone();
        move || {
            cli(vec![
                "poison".into(),
                "list".into(),
                url.into(),
                "--topic".into(),
                poison.clone(),
                "--wait".into(),
                "1s".into(),
                "--output".into(),
                "json".into(),
            ])
        }
    };
    // The failing handler sends the message to the poison topic.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let out = list().await.unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&ok(&out)).unwrap();
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    let md = &rows[0]["metadata"];
    assert!(
        md["tidemill_poison_reason"]
            .as_str()
            .unwrap()
            .contains("card declined"),
        "{md}"
    );
    assert_eq!(md["tidemill_poison_topic"], topic.as_str());
    assert_eq!(md["tidemill_poison_handler"], "billing");
    let id = rows[0]["id"].as_str().unwrap().to_owned();

    // Without --yes and a "no" on stdin nothing moves.
    let mut child = tidemill()
        .args([
            "poison", "requeue", url, "--topic", &poison, "--all", "--wait", "1s",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("[y/N]"));
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    failing.store(false, Ordering::SeqCst);
    let out = cli(vec![
        "poison".into(),
        "requeue".into(),
        url.into(),
        id.clone(),
        "--topic".into(),
        poison.clone(),
        "--wait".into(),
        "1s".into(),
        "--yes".into(),
    ])
    .await
    .unwrap();
    assert!(ok(&out).contains(&format!("requeued {id} to {topic}")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the requeued message was handled"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ok(&list().await.unwrap())).unwrap();
    assert!(rows.is_empty(), "the poison topic still holds {rows:?}");

    router.close().await.unwrap();
    running.await.unwrap().unwrap();
    pubsub.close().await.unwrap();
}

#[test]
fn demo_runs_on_the_memory_url() {
    let out = ok(&tidemill()
        .args([
            "demo",
            "--url",
            "memory://",
            "--interval",
            "20ms",
            "--count",
            "2",
        ])
        .output()
        .unwrap());
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("sending message"))
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("Hello! I got your message: Hello, tidemill!"))
            .count(),
        2,
        "{out}"
    );
}
