//! `tidemill poison` driven as a subprocess against the real local brokers: show, discard,
//! requeue by filter, and partial requeues that leave exactly the other messages.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod common;

use common::{failed, ok, payloads, run, run_with_stdin, unique};

/// Publishes messages to `poison` as the poison-queue middleware writes them (original topic
/// `orders`, handler `billing`), each with its own metadata; returns their ids in order.
fn publish_poisoned(
    url: &str,
    poison: &str,
    orders: &str,
    messages: &[(&str, &[(&str, &str)])],
) -> Vec<String> {
    let lines: String = messages
        .iter()
        .map(|(payload, metadata)| {
            let mut md = serde_json::json!({
                "tidemill_poison_topic": orders,
                "tidemill_poison_handler": "billing",
                "tidemill_poison_reason": "card declined",
            });
            for (k, v) in *metadata {
                md[*k] = (*v).into();
            }
            format!(
                "{}\n",
                serde_json::json!({"payload": payload, "metadata": md})
            )
        })
        .collect();
    let out = run_with_stdin(
        &["publish", url, poison, "--jsonl", "--output", "json"],
        Some(lines.as_bytes()),
    );
    let summary: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    summary["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

fn three(url: &str, poison: &str, orders: &str) -> Vec<String> {
    publish_poisoned(
        url,
        poison,
        orders,
        &[
            ("order #1", &[("n", "1")]),
            ("order #2", &[("n", "2")]),
            ("order #3", &[("n", "3")]),
        ],
    )
}

fn list(url: &str, poison: &str) -> Vec<serde_json::Value> {
    let out = ok(&run(&[
        "poison", "list", url, "--topic", poison, "--wait", "1s", "--output", "json",
    ]));
    serde_json::from_str(&out).unwrap()
}

fn listed_ids(url: &str, poison: &str) -> BTreeSet<String> {
    list(url, poison)
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// What group `group` gets from `topic` (a new group from the beginning, where the backend
/// has start positions).
fn consumed(url: &str, topic: &str, group: &str) -> Vec<String> {
    let mut args = vec![
        "consume",
        url,
        topic,
        "--group",
        group,
        "--idle-timeout",
        "3s",
        "--format",
        "json",
    ];
    if !url.starts_with("amqp") {
        args.extend(["--from", "beginning"]);
    }
    let mut got = payloads(&ok(&run(&args)));
    got.sort();
    got
}

#[test]
fn show_prints_one_message_in_full_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("show.db").display());
    let (poison, orders) = (unique("poison"), unique("orders"));
    let ids = three(&url, &poison, &orders);

    let out = ok(&run(&[
        "poison", "show", &url, &ids[1], "--topic", &poison, "--wait", "1s",
    ]));
    for line in [
        format!("id:             {}", ids[1]),
        format!("original topic: {orders}"),
        "handler:        billing".to_owned(),
        "reason:         card declined".to_owned(),
        "metadata:       n=2".to_owned(),
        "payload:\norder #2".to_owned(),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    assert!(
        !out.contains("order #1") && !out.contains("order #3"),
        "{out}"
    );

    let out = ok(&run(&[
        "poison", "show", &url, &ids[2], "--topic", &poison, "--wait", "1s", "--output", "json",
    ]));
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], ids[2].as_str());
    assert_eq!(shown["payload"], "order #3");
    assert_eq!(shown["metadata"]["tidemill_poison_topic"], orders.as_str());
    assert_eq!(shown["metadata"]["tidemill_poison_reason"], "card declined");
    assert_eq!(shown["metadata"]["n"], "3");

    let err = failed(&run(&[
        "poison",
        "show",
        &url,
        "no-such-id",
        "--topic",
        &poison,
        "--wait",
        "1s",
    ]));
    assert!(err.contains("no message no-such-id"), "{err}");
    // Looking changes nothing.
    assert_eq!(
        listed_ids(&url, &poison),
        set(&ids.iter().collect::<Vec<_>>())
    );
}

#[test]
fn discard_asks_first_and_removes_only_the_chosen_message() {
    let url = "redis://127.0.0.1:6379";
    let (poison, orders) = (unique("poison"), unique("orders"));
    let ids = three(url, &poison, &orders);
    let discard = [
        "poison", "discard", url, &ids[0], "--topic", &poison, "--wait", "1s",
    ];

    // Standard input is not a terminal and gives no answer: refused.
    let err = failed(&run_with_stdin(&discard, None));
    assert!(err.contains("[y/N]") && err.contains("--yes"), "{err}");
    // Answered "n": refused.
    let err = failed(&run_with_stdin(&discard, Some(b"n\n")));
    assert!(err.contains("aborted: nothing changed"), "{err}");
    assert_eq!(
        listed_ids(url, &poison),
        set(&ids.iter().collect::<Vec<_>>())
    );

    let mut yes = discard.to_vec();
    yes.extend(["--yes", "--output", "json"]);
    let out: serde_json::Value = serde_json::from_str(&ok(&run(&yes))).unwrap();
    assert_eq!(out["discard"][0]["id"], ids[0].as_str(), "{out}");
    assert_eq!(out["discard"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(listed_ids(url, &poison), set(&[&ids[1], &ids[2]]));
    // Nothing went to the original topic.
    assert!(consumed(url, &orders, &unique("g")).is_empty());
}

/// Requeues the middle one of three (on an offset backend, its ack alone must not commit past
/// the first), then the rest: each time the poison topic keeps exactly the others and the
/// original topic gets exactly the requeued ones.
fn partial_requeue_leaves_exactly_the_others(url: &str) {
    let (poison, orders) = (unique("poison"), unique("orders"));
    let ids = three(url, &poison, &orders);
    assert_eq!(
        listed_ids(url, &poison),
        set(&ids.iter().collect::<Vec<_>>())
    );

    let out = ok(&run(&[
        "poison", "requeue", url, &ids[1], "--topic", &poison, "--wait", "1s", "--yes",
    ]));
    assert!(
        out.contains(&format!("requeued {} to {orders}", ids[1])),
        "{out}"
    );
    assert_eq!(list(url, &poison).len(), 2);
    assert_eq!(listed_ids(url, &poison), set(&[&ids[0], &ids[2]]));
    // A look leaves them all there.
    assert_eq!(listed_ids(url, &poison), set(&[&ids[0], &ids[2]]));
    let group = unique("g");
    assert_eq!(consumed(url, &orders, &group), ["order #2"]);

    let out = ok(&run(&[
        "poison", "requeue", url, "--all", "--topic", &poison, "--wait", "1s", "--yes",
    ]));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("requeued")).count(),
        2,
        "{out}"
    );
    assert!(listed_ids(url, &poison).is_empty());
    assert_eq!(consumed(url, &orders, &group), ["order #1", "order #3"]);
}

#[test]
fn partial_requeue_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    partial_requeue_leaves_exactly_the_others(&format!(
        "sqlite://{}",
        dir.path().join("p.db").display()
    ));
}

#[test]
fn partial_requeue_postgres() {
    partial_requeue_leaves_exactly_the_others("postgres://postgres@127.0.0.1:5432/test");
}

#[test]
fn partial_requeue_mysql() {
    partial_requeue_leaves_exactly_the_others("mysql://root@127.0.0.1:3306/test");
}

#[test]
fn partial_requeue_redis() {
    partial_requeue_leaves_exactly_the_others("redis://127.0.0.1:6379");
}

#[test]
fn partial_requeue_nats() {
    partial_requeue_leaves_exactly_the_others("nats://127.0.0.1:4222");
}

#[test]
fn partial_requeue_amqp() {
    partial_requeue_leaves_exactly_the_others(
        "amqp://guest:guest@127.0.0.1:5672/%2f?mode=work_queue",
    );
}

#[test]
fn partial_requeue_kafka() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:9092".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_err()
    {
        println!("skipped: no Kafka broker on 127.0.0.1:9092");
        return;
    }
    // One record per batch: the tansu test broker cannot fetch from inside a record batch
    // (docs/testing.md), which a group resuming mid-batch would need.
    partial_requeue_leaves_exactly_the_others(
        "kafka://127.0.0.1:9092?rdkafka.batch.num.messages=1",
    );
}

/// A router whose handler fails until told otherwise poisons three orders on NATS; a requeue
/// by filter sends back only the matching two, which the handler then handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_by_filter_sends_back_only_the_matching_ones_and_the_handler_succeeds() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tidemill::middleware::PoisonQueueLayer;
    use tidemill::router::{HandlerError, HandlerResult};
    use tidemill::{Message, Router};
    use tidemill_any::SubscriberOptions;

    let url = "nats://127.0.0.1:4222";
    let (orders, poison) = (unique("orders"), unique("poison"));
    let pubsub = tidemill_any::connect(url).await.unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let router = Router::new();
    router.layer(PoisonQueueLayer::new(pubsub.publisher(), poison.clone()));
    let subscriber = pubsub
        .subscriber(SubscriberOptions::group("billing"))
        .await
        .unwrap();
    router
        .handler("billing")
        .subscribe(orders.as_str(), subscriber)
        .handle({
            let (failing, handled) = (failing.clone(), handled.clone());
            move |msg: Message| {
                let (failing, handled) = (failing.clone(), handled.clone());
                async move {
                    if failing.load(Ordering::SeqCst) {
                        return HandlerResult::<()>::Err(HandlerError::new(std::io::Error::other(
                            "card declined",
                        )));
                    }
                    let payload = String::from_utf8_lossy(msg.payload()).into_owned();
                    handled.lock().unwrap().push(payload);
                    Ok(())
                }
            }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    pubsub
        .publisher()
        .publish(
            &orders,
            vec![
                Message::new("order #1").with_metadata("customer", "acme"),
                Message::new("order #2").with_metadata("customer", "globex"),
                Message::new("order #3").with_metadata("customer", "acme"),
            ],
        )
        .await
        .unwrap();

    // The command line blocks: off the runtime, which runs the router meanwhile.
    let listed = || {
        let (u, p) = (url.to_owned(), poison.clone());
        tokio::task::spawn_blocking(move || list(&u, &p))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = listed().await.unwrap();
        if rows.len() == 3 || Instant::now() > deadline {
            assert_eq!(rows.len(), 3, "{rows:?}");
            break;
        }
    }

    failing.store(false, Ordering::SeqCst);
    let (u, p) = (url.to_owned(), poison.clone());
    let out = tokio::task::spawn_blocking(move || {
        run(&[
            "poison",
            "requeue",
            &u,
            "--filter",
            "customer=acme",
            "--topic",
            &p,
            "--wait",
            "1s",
            "--yes",
        ])
    })
    .await
    .unwrap();
    let out = ok(&out);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("requeued")).count(),
        2,
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rows = listed().await.unwrap();
    let mut got = handled.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        ["order #1", "order #3"],
        "the requeued ones were handled, only they"
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["payload"], "order #2");
    assert_eq!(rows[0]["metadata"]["customer"], "globex");

    running.close().await.unwrap();
    pubsub.close().await.unwrap();
}
