//! A trace started in a request continues through a transactional outbox (SQLite), the
//! forwarder and the handler that consumes the forwarded message, as one trace.

mod common;

use std::time::Duration;

use common::{assert_child, find, telemetry};
use opentelemetry::trace::SpanKind;
use tidemill::components::forwarder::{Forwarder, ForwarderConfig};
use tidemill::{HandlerResult, InProcessPubSub, Message, Router};
use tidemill_otel::propagation::Propagation;
use tidemill_otel::{Observability, TracingPublisher};
use tidemill_sql::{SqlConfig, SqlPool, SqlPubSub, SubscriberOverrides};
use tokio::sync::mpsc;
use tracing::Instrument;

#[tokio::test(flavor = "current_thread")]
async fn one_trace_from_request_through_outbox_and_forwarder_to_handler() {
    let telemetry = telemetry();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let sql = SqlPubSub::connect(SqlConfig::from_url(url).unwrap())
        .await
        .unwrap();
    sql.initialize().await.unwrap();
    let forwarding = ForwarderConfig::new("outbox");
    let outbox = sql.outbox().forwarding(forwarding.clone());

    // The broker the forwarder delivers to, and the service consuming there.
    let broker = InProcessPubSub::new();
    let router = Router::new();
    Observability::new().without_logging().install(&router);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    router
        .handler("ship")
        .subscribe("orders.placed", broker.clone())
        .handle(move |msg: Message| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send(msg.id().to_owned()).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let forwarder = Forwarder::new(
        sql.subscriber_with(SubscriberOverrides::new().group("forwarder"))
            .unwrap(),
        TracingPublisher::new(broker.clone()).system("tidemill"),
        forwarding,
    );
    let forwarding_task = tokio::spawn({
        let forwarder = forwarder.clone();
        async move { forwarder.run().await }
    });
    forwarder.running().await;

    // The request: its write and its event commit together; the event carries the request's
    // trace context in its metadata.
    async {
        let SqlPool::Sqlite(pool) = sql.pool() else {
            unreachable!("a SQLite URL")
        };
        let mut order = Message::with_id("order-1", r#"{"order":1}"#);
        Propagation::W3c.inject_current(&mut order);
        assert!(order.metadata().get("traceparent").is_some());
        let mut tx = pool.begin().await.unwrap();
        outbox
            .publish_in_tx(&mut tx, "orders.placed", vec![order])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(tracing::info_span!("request", otel.kind = "server"))
    .await;

    let id = tokio::time::timeout(Duration::from_secs(20), seen.recv())
        .await
        .expect("the forwarded message is handled")
        .unwrap();
    assert_eq!(id, "order-1");

    forwarder.close().await;
    forwarding_task.await.unwrap().unwrap();
    router.close().await.unwrap();
    running.await.unwrap().unwrap();

    let spans = telemetry.spans();
    let request = find(&spans, "request");
    let send = find(&spans, "send orders.placed");
    let process = find(&spans, "process orders.placed");
    assert_eq!(
        request.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_child(send, request);
    assert_child(process, send);
}
