//! Traces follow messages: publish -> handle -> publish -> handle is one trace of parent/child
//! spans, on one pub/sub and across two.

mod common;

use std::time::Duration;

use common::{assert_child, attr, find, telemetry};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use tidemill::router::HandlerError;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router};
use tidemill_otel::propagation::Propagation;
use tidemill_otel::{Observability, TracingPublisher};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Runs "orders" on `first` -> handler `enrich` -> "enriched" on `second` -> handler `ship`,
/// with the first publish inside a `request` span, and checks the trace.
async fn publish_handle_publish_handle(first: InProcessPubSub, second: InProcessPubSub) {
    let telemetry = telemetry();
    let router = Router::new();
    Observability::new().install(&router);
    let (done, mut shipped) = mpsc::unbounded_channel::<Message>();
    router
        .handler("enrich")
        .subscribe("orders", first.clone())
        .publish_to("enriched", second.clone())
        .handle(|msg: Message| async move {
            tracing::info!("enriching");
            HandlerResult::Ok(Message::new(format!(
                "{}!",
                String::from_utf8_lossy(msg.payload())
            )))
        })
        .unwrap();
    router
        .handler("ship")
        .subscribe("enriched", second.clone())
        .handle(move |msg: Message| {
            let done = done.clone();
            async move {
                done.send(msg).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let publisher = TracingPublisher::new(first.clone());
    let baggage = Context::current_with_baggage([KeyValue::new("tenant", "t-1")]);
    let guard = baggage.attach();
    let request = tracing::info_span!("request", otel.kind = "server");
    publisher
        .publish("orders", vec![Message::with_id("order-1", "order")])
        .instrument(request)
        .await
        .unwrap();
    drop(guard);

    let received = tokio::time::timeout(Duration::from_secs(5), shipped.recv())
        .await
        .unwrap()
        .unwrap();
    router.close().await.unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(received.metadata().get("baggage"), Some("tenant=t-1"));
    assert!(received.metadata().get("traceparent").is_some());

    let spans = telemetry.spans();
    let request = find(&spans, "request");
    let send_orders = find(&spans, "send orders");
    let process_orders = find(&spans, "process orders");
    let send_enriched = find(&spans, "send enriched");
    let process_enriched = find(&spans, "process enriched");
    assert_child(send_orders, request);
    assert_child(process_orders, send_orders);
    assert_child(send_enriched, process_orders);
    assert_child(process_enriched, send_enriched);
    assert_eq!(spans.len(), 5, "{spans:#?}");

    assert_eq!(send_orders.span_kind, SpanKind::Producer);
    assert_eq!(process_orders.span_kind, SpanKind::Consumer);
    assert_eq!(
        attr(process_orders, "messaging.system").as_deref(),
        Some("in_process")
    );
    assert_eq!(
        attr(process_orders, "messaging.destination.name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attr(process_orders, "messaging.operation").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr(process_orders, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr(process_orders, "messaging.message.id").as_deref(),
        Some("order-1")
    );
    assert_eq!(
        attr(process_orders, "tidemill.handler").as_deref(),
        Some("enrich")
    );
    assert_eq!(
        attr(send_orders, "messaging.message.id").as_deref(),
        Some("order-1")
    );
    assert_eq!(
        attr(send_enriched, "messaging.destination.name").as_deref(),
        Some("enriched")
    );
    assert_eq!(
        attr(send_enriched, "messaging.operation").as_deref(),
        Some("send")
    );
    // The event logged in the handler belongs to its span.
    assert!(process_orders.events.iter().any(|e| e.name == "enriching"));
    assert_eq!(process_orders.status, Status::Unset);
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_through_two_hops_on_one_pubsub() {
    let pubsub = InProcessPubSub::new();
    publish_handle_publish_handle(pubsub.clone(), pubsub).await;
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_across_two_pubsubs() {
    publish_handle_publish_handle(InProcessPubSub::new(), InProcessPubSub::new()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_handling_marks_its_span() {
    let telemetry = telemetry();
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    Observability::new()
        .tracing(
            tidemill_otel::TracingLayer::new()
                .consumer_group(tidemill_otel::ConsumerGroup::Fixed("billing".into())),
        )
        .install(&router);
    let (done, mut failed) = mpsc::unbounded_channel::<()>();
    router
        .handler("bill")
        .subscribe("invoices", pubsub.clone())
        .handle(move |_msg: Message| {
            let done = done.clone();
            async move {
                done.send(()).unwrap();
                HandlerResult::<()>::Err(HandlerError::drop_message("no such customer"))
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    pubsub
        .publish("invoices", vec![Message::new("x")])
        .await
        .unwrap();
    failed.recv().await.unwrap();
    router.close().await.unwrap();
    running.await.unwrap().unwrap();

    let spans = telemetry.spans();
    let process = find(&spans, "process invoices");
    assert_eq!(process.status, Status::error("no such customer"));
    assert_eq!(attr(process, "error.type").as_deref(), Some("Drop"));
    assert_eq!(
        attr(process, "messaging.consumer.group.name").as_deref(),
        Some("billing")
    );
    // No trace came in: the handling starts one.
    assert_eq!(
        process.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
}

/// Without an OpenTelemetry layer the spans record nothing, yet the trace a message carries is
/// passed on to what its handler publishes.
#[tokio::test(flavor = "current_thread")]
async fn context_passes_through_without_a_tracing_subscriber() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    Observability::new().install(&router);
    router
        .handler("relay")
        .subscribe("in", pubsub.clone())
        .publish_to("out", pubsub.clone())
        .handle(|_msg: Message| async { HandlerResult::Ok(Message::new("relayed")) })
        .unwrap();
    let mut out = tidemill::Subscriber::subscribe(&pubsub, "out")
        .await
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    pubsub
        .publish(
            "in",
            vec![Message::new("x").with_metadata("traceparent", traceparent)],
        )
        .await
        .unwrap();
    let delivery = futures::StreamExt::next(&mut out).await.unwrap().unwrap();
    let cx = Propagation::W3c.extract(delivery.message());
    assert_eq!(
        cx.span().span_context().trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    delivery.ack();
    router.close().await.unwrap();
    running.await.unwrap().unwrap();
}
