//! Traces exported over OTLP to a collector or Jaeger, metrics served at `/metrics`.
//!
//! Start Jaeger (its all-in-one image takes OTLP on 4317/gRPC and 4318/HTTP and shows traces
//! on 16686):
//!
//! ```sh
//! docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one:latest
//! ```
//!
//! then run the example; `OTEL_EXPORTER_OTLP_ENDPOINT` points it at another collector (default
//! `http://localhost:4318`, OTLP over HTTP/protobuf):
//!
//! ```sh
//! cargo run -p tidemill-otel --example otlp --features otlp
//! ```
//!
//! Open <http://localhost:16686>, service `tidemill-otlp-example`: each `checkout` trace goes
//! `checkout` -> `send orders` -> `process orders` -> `send invoices` -> `process invoices`.
//! While the example runs, <http://127.0.0.1:9464/metrics> serves the Prometheus metrics.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, PublisherExt, Router};
use tidemill_otel::endpoint::MetricsServer;
use tidemill_otel::{Metrics, Observability, TracingPublisher};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables) itself.
    let exporter = SpanExporter::builder().with_http().build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("tidemill-otlp-example")
                .build(),
        )
        .build();
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with(tracing_subscriber::fmt::layer())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tidemill")))
        .init();

    let metrics = Metrics::new();
    let server = MetricsServer::bind("127.0.0.1:9464", metrics.registry().unwrap().clone()).await?;
    tracing::info!("metrics at http://{}/metrics", server.local_addr());

    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    Observability::new()
        .metrics(metrics.clone())
        .install(&router);
    router
        .handler("bill")
        .subscribe("orders", pubsub.clone())
        .publish_to("invoices", pubsub.clone())
        .handle(|msg: Message| async move {
            tracing::info!("billing the order");
            HandlerResult::Ok(Message::new(format!(
                "invoice for {}",
                String::from_utf8_lossy(msg.payload())
            )))
        })?;
    router
        .handler("mail")
        .subscribe("invoices", pubsub.clone())
        .handle(|_msg: Message| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tracing::info!("invoice mailed");
            HandlerResult::Ok(())
        })?;
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    // What an HTTP handler would do: publish inside the request's span.
    let publisher = TracingPublisher::new(metrics.publisher(pubsub.clone()));
    for i in 0..5 {
        let request = tracing::info_span!("checkout", otel.kind = "server", order = i);
        publisher
            .publish_one("orders", Message::new(format!("order #{i}")))
            .instrument(request)
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    router.close().await?;
    running.await??;
    server.shutdown().await?;
    provider.shutdown()?;
    Ok(())
}
