//! Metrics scraped over HTTP after a known workload with failures, retries, a redelivery, a
//! poisoned message and a failed publish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tidemill::middleware::{PoisonQueueLayer, RetryLayer};
use tidemill::router::HandlerError;
use tidemill::{InProcessPubSub, Message, Publisher, Router};
use tidemill_otel::endpoint::MetricsServer;
use tidemill_otel::{MetricsConfig, Observability};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` over plain HTTP/1.1; returns the status line, headers and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

type Samples = HashMap<String, Vec<(BTreeMap<String, String>, f64)>>;

/// Parses the samples of a text exposition (label values here hold no commas or quotes).
fn parse(text: &str) -> Samples {
    let mut samples: Samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        samples
            .entry(name.to_owned())
            .or_default()
            .push((labels, value.parse().unwrap()));
    }
    samples
}

/// The value of the series `name` whose labels are exactly `labels` plus `service="test"`.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.insert("service".into(), "test".into());
    samples
        .get(name)
        .and_then(|series| series.iter().find(|(l, _)| *l == want))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name}{want:?} in {:#?}", samples.get(name)))
}

#[tokio::test]
async fn metrics_after_a_known_workload() {
    let mut registry = Registry::default();
    let metrics = MetricsConfig::new()
        .namespace("shop")
        .label("service", "test")
        .handler_buckets([0.001, 0.1, 10.0])
        .poison_topic("orders.poison")
        .register(&mut registry);
    let registry = Arc::new(registry);
    let server = MetricsServer::bind("127.0.0.1:0", registry.clone())
        .await
        .unwrap();

    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    Observability::none()
        .metrics(metrics.clone())
        .install(&router);
    router.layer(PoisonQueueLayer::new(
        metrics.publisher(pubsub.clone()),
        "orders.poison",
    ));
    router.layer(
        RetryLayer::new()
            .max_retries(2)
            .initial_interval(Duration::from_millis(1))
            .on_retry(metrics.retry_hook()),
    );
    // How many times each message was attempted, to fail some only the first time.
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    router
        .handler("process")
        .subscribe("orders", pubsub.clone())
        .publish_to("shipments", pubsub.clone())
        .handle(move |msg: Message| {
            let attempt = {
                let mut attempts = attempts.lock();
                let n = attempts.entry(msg.id().to_owned()).or_default();
                *n += 1;
                *n
            };
            async move {
                match msg.payload().as_ref() {
                    b"ok" => Ok(vec![Message::new("shipment")]),
                    b"drop" => Err(HandlerError::drop_message("not for us")),
                    // Retried in place by the retry middleware.
                    b"flaky" if attempt == 1 => {
                        Err(HandlerError::new(std::io::Error::other("flaky")))
                    }
                    // Nacked, then redelivered by the pub/sub.
                    b"later" if attempt == 1 => Err(HandlerError::retry_after(
                        Duration::from_millis(1),
                        "not yet",
                    )),
                    // Sent to the poison topic by the poison queue, then acked.
                    b"poison" => Err(HandlerError::reject("cannot be parsed")),
                    _ => Ok(vec![]),
                }
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let publisher = metrics.publisher(pubsub.clone());
    let workload = [
        "ok", "ok", "drop", "ok", "flaky", "later", "ok", "drop", "poison", "ok",
    ];
    for payload in workload {
        publisher
            .publish("orders", vec![Message::new(payload)])
            .await
            .unwrap();
    }
    // A failed publish of two messages.
    let closed = InProcessPubSub::new();
    closed.close().await.unwrap();
    let failing = metrics.publisher(closed);
    assert!(failing
        .publish("audit", vec![Message::new("a"), Message::new("b")])
        .await
        .is_err());

    // 10 messages, one of them handled twice (nacked, then redelivered).
    let handled = "shop_handler_messages_handled_total";
    let mut samples = Samples::new();
    for _ in 0..500 {
        let (_, body) = http_get(server.local_addr(), "/metrics").await;
        samples = parse(&body);
        if samples.contains_key(handled)
            && value(
                &samples,
                handled,
                &[("handler", "process"), ("topic", "orders")],
            ) == 11.0
            && value(
                &samples,
                "shop_subscriber_messages_acked_total",
                &[("topic", "orders")],
            ) == 10.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router.close().await.unwrap();
    running.await.unwrap().unwrap();

    let (head, body) = http_get(server.local_addr(), "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"));
    let s = parse(&body);
    assert_eq!(samples.len(), s.len());
    let h = [("handler", "process"), ("topic", "orders")];
    assert_eq!(value(&s, handled, &h), 11.0);
    assert_eq!(
        value(
            &s,
            "shop_handler_messages_failed_total",
            &[h[0], h[1], ("disposition", "drop")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "shop_handler_messages_failed_total",
            &[h[0], h[1], ("disposition", "retry_after")]
        ),
        1.0
    );
    assert_eq!(value(&s, "shop_handler_duration_seconds_count", &h), 11.0);
    assert_eq!(
        value(
            &s,
            "shop_handler_duration_seconds_bucket",
            &[h[0], h[1], ("le", "+Inf")]
        ),
        11.0
    );
    assert_eq!(value(&s, "shop_handler_messages_in_flight", &h), 0.0);
    assert_eq!(value(&s, "shop_handler_retries_total", &h), 1.0);

    let topic = |t: &'static str| [("topic", t)];
    assert_eq!(
        value(
            &s,
            "shop_publisher_messages_published_total",
            &topic("orders")
        ),
        10.0
    );
    assert_eq!(
        value(
            &s,
            "shop_publisher_duration_seconds_count",
            &topic("orders")
        ),
        10.0
    );
    assert_eq!(
        value(
            &s,
            "shop_publisher_messages_published_total",
            &topic("shipments")
        ),
        5.0
    );
    assert_eq!(
        value(
            &s,
            "shop_publisher_messages_published_total",
            &topic("orders.poison")
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "shop_poison_messages_total",
            &[("poison_topic", "orders.poison"), h[0], h[1]]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "shop_publisher_messages_failed_total", &topic("audit")),
        2.0
    );
    assert_eq!(
        value(&s, "shop_publisher_duration_seconds_count", &topic("audit")),
        1.0
    );

    assert_eq!(
        value(
            &s,
            "shop_subscriber_messages_received_total",
            &topic("orders")
        ),
        11.0
    );
    assert_eq!(
        value(&s, "shop_subscriber_messages_acked_total", &topic("orders")),
        10.0
    );
    assert_eq!(
        value(
            &s,
            "shop_subscriber_messages_nacked_total",
            &topic("orders")
        ),
        1.0
    );

    let (head, _) = http_get(server.local_addr(), "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn router_events_are_counted() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tidemill::router::{RestartPolicy, RouterConfig};
    use tidemill::{Backoff, PublisherExt};
    use tidemill_otel::Metrics;

    let metrics = Metrics::new();
    let ps = InProcessPubSub::new();
    let mut dead =
        tidemill::Subscriber::subscribe(&ps, tidemill::router::DEFAULT_DEAD_LETTER_TOPIC)
            .await
            .unwrap();
    let router = Router::with_config(RouterConfig::default().restart_policy(
        RestartPolicy::restart(
            3,
            Backoff::new(Duration::from_millis(5), Duration::from_millis(10)),
        ),
    ));
    router.on_event(metrics.router_events());
    let panicked = Arc::new(AtomicBool::new(false));
    router
        .handler("h")
        // A group keeps what the dead loop held for its restart.
        .subscribe("in", ps.with_group("g"))
        .handle(move |msg| {
            let first = !panicked.swap(true, Ordering::SeqCst);
            async move {
                if first {
                    panic!("once");
                }
                if msg.id() == "bad" {
                    return Err(HandlerError::reject("undecodable"));
                }
                Ok(())
            }
        })
        .unwrap();
    let running = router.start().await.unwrap();
    ps.publish_one("in", Message::with_id("first", ""))
        .await
        .unwrap();
    ps.publish_one("in", Message::with_id("bad", ""))
        .await
        .unwrap();
    let dl = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut dead))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(dl.message().id(), "bad");
    dl.ack();
    let text = metrics.encode();
    assert!(
        text.contains(r#"tidemill_router_handler_deaths_total{handler="h",restarted="true"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tidemill_router_dead_lettered_total{handler="h",topic="in",dead_letter_topic="tidemill_dead_letter"} 1"#),
        "{text}"
    );
    running.close().await.unwrap();
}
