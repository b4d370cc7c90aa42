//! Observability for tidemill: OpenTelemetry traces that follow messages, Prometheus metrics and
//! structured logs, all as publisher/subscriber decorators and router layers, so no adapter
//! carries any of it and a router that does not install them pays nothing.
//!
//! - **Traces** ([`trace`]): [`TracingPublisher`] writes the trace context into each message's
//!   metadata (W3C `traceparent`, `tracestate`, `baggage`) inside a `send {topic}` producer span;
//!   [`TracingLayer`] reads it back and runs the handler in a `process {topic}` consumer span
//!   that continues the trace, with OpenTelemetry's messaging attributes. The spans are
//!   `tracing` spans: the application's `tracing-opentelemetry` layer and exporter (OTLP to a
//!   collector or Jaeger, see `examples/otlp.rs`) turn them into OpenTelemetry spans.
//!   Through a transactional outbox the context travels in the stored rows: write it with
//!   [`Propagation::inject_current`](propagation::Propagation::inject_current) before
//!   publishing in the transaction, and give the forwarder a [`TracingPublisher`], which
//!   continues the trace a message carries when it publishes outside any span.
//! - **Metrics** ([`metrics`]): [`Metrics`] per handler, publisher and subscriber, with retries
//!   and poisoned messages, in your `prometheus-client` registry or its own; [`endpoint`]
//!   serves it at `/metrics`.
//! - **Logs** ([`logs`]): [`LoggingLayer`] logs each handling with its handler, topic, message
//!   id and correlation id; no payloads unless asked for.
//!
//! **What it costs** (`cargo bench -p tidemill-otel --bench overhead`, in-process pub/sub, two
//! handlings and two publishes a message, CPU time a message on a 2-core machine): metrics add
//! about 1-2 µs, the layers and decorators without an OpenTelemetry layer in the subscriber about
//! 2 µs, and traces with every span sampled 12-20 µs (three spans, nearly all of it inside
//! `tracing-opentelemetry` and the SDK: attributes, span start and end, the batch processor's
//! hand-off). Relative to handlers doing 100 µs of work each, traces cost 10-13% of throughput
//! and traces, metrics and logs together about 17%; with 20 µs handlers 26-38%. Configuring the
//! `tracing-opentelemetry` layer without locations, thread attributes and inactivity tracking
//! (`with_location(false)`, `with_threads(false)`, `with_tracked_inactivity(false)`) saves
//! about a fifth of the tracing cost; sampling saves less than one would hope, since unsampled
//! spans are still built.
//!
//! [`Observability`] installs the lot on a router:
//!
//! ```
//! use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, PublisherExt, Router};
//! use tidemill_otel::{endpoint::MetricsServer, Metrics, Observability, TracingPublisher};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! let router = Router::new();
//! Observability::new().metrics(metrics.clone()).install(&router);
//!
//! let pubsub = InProcessPubSub::new();
//! router
//!     .handler("greet")
//!     .subscribe("names", pubsub.clone())
//!     .publish_to("greetings", pubsub.clone())
//!     .handle(|msg: Message| async move {
//!         let name = String::from_utf8_lossy(msg.payload()).into_owned();
//!         HandlerResult::Ok(Message::new(format!("hello, {name}")))
//!     })?;
//! let server = MetricsServer::bind("127.0.0.1:0", metrics.registry().unwrap().clone()).await?;
//!
//! let running = tokio::spawn({
//!     let router = router.clone();
//!     async move { router.run().await }
//! });
//! router.running().await;
//! // Publishers outside the router are wrapped by hand.
//! let publisher = TracingPublisher::new(metrics.publisher(pubsub.clone()));
//! publisher.publish_one("names", Message::new("ada")).await?;
//! # while !metrics.encode().contains("tidemill_handler_messages_handled_total{handler=\"greet\",topic=\"names\"} 1") {
//! #     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! # }
//! router.close().await?;
//! running.await??;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod common;
pub mod endpoint;
pub mod logs;
pub mod metrics;
pub mod propagation;
pub mod trace;

use std::sync::Arc;

pub use logs::LoggingLayer;
pub use metrics::{Metrics, MetricsConfig, MetricsLayer, MetricsPublisher, MetricsSubscriber};
pub use trace::{ConsumerGroup, TracingLayer, TracingPublisher};

/// Installs traces, metrics and logs on a [`Router`](tidemill::Router), each only if asked for.
///
/// Traces and logs are on by default, metrics once a [`Metrics`] is given. Layers are added
/// router-wide in the order tracing, metrics, logging (tracing outermost, so the other two
/// record inside the handling span); publishers are wrapped in a [`TracingPublisher`] around a
/// [`MetricsPublisher`], subscribers in a [`MetricsSubscriber`]. Install before adding other
/// router-wide middleware to have it run inside the span.
///
/// ```
/// use tidemill_otel::{ConsumerGroup, LoggingLayer, Metrics, Observability, TracingLayer};
///
/// let router = tidemill::Router::new();
/// Observability::new()
///     .tracing(TracingLayer::new().consumer_group(ConsumerGroup::HandlerName))
///     .metrics(Metrics::new())
///     .logging(LoggingLayer::new())
///     .install(&router);
/// ```
#[derive(Clone, Debug)]
pub struct Observability {
    tracing: Option<TracingLayer>,
    metrics: Option<Metrics>,
    logging: Option<LoggingLayer>,
    system: Option<Arc<str>>,
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    /// Traces and logs with default options, no metrics.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::new();
    /// # drop(obs);
    /// ```
    pub fn new() -> Self {
        Self {
            tracing: Some(TracingLayer::new()),
            metrics: None,
            logging: Some(LoggingLayer::new()),
            system: None,
        }
    }

    /// Nothing at all; add what you want.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::none().metrics(tidemill_otel::Metrics::new());
    /// # drop(obs);
    /// ```
    pub fn none() -> Self {
        Self {
            tracing: None,
            metrics: None,
            logging: None,
            system: None,
        }
    }

    /// Traces with this layer's options.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::none().tracing(tidemill_otel::TracingLayer::new());
    /// # drop(obs);
    /// ```
    pub fn tracing(mut self, layer: TracingLayer) -> Self {
        self.tracing = Some(layer);
        self
    }

    /// No traces.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::new().without_tracing();
    /// # drop(obs);
    /// ```
    pub fn without_tracing(mut self) -> Self {
        self.tracing = None;
        self
    }

    /// Metrics into `metrics`.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::new().metrics(tidemill_otel::Metrics::new());
    /// # drop(obs);
    /// ```
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Logs with this layer's options.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::none().logging(tidemill_otel::LoggingLayer::new().with_payload(64));
    /// # drop(obs);
    /// ```
    pub fn logging(mut self, layer: LoggingLayer) -> Self {
        self.logging = Some(layer);
        self
    }

    /// No logs.
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::new().without_logging();
    /// # drop(obs);
    /// ```
    pub fn without_logging(mut self) -> Self {
        self.logging = None;
        self
    }

    /// `messaging.system` of the publishers' send spans (the router hands decorators
    /// type-erased publishers, whose kind cannot be told from their type).
    ///
    /// ```
    /// let obs = tidemill_otel::Observability::new().publisher_system("redis");
    /// # drop(obs);
    /// ```
    pub fn publisher_system(mut self, system: impl Into<Arc<str>>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Adds the layers and decorators to `router`; they apply to handlers started from now on.
    ///
    /// ```
    /// tidemill_otel::Observability::new().install(&tidemill::Router::new());
    /// ```
    pub fn install(&self, router: &tidemill::Router) {
        if let Some(layer) = &self.tracing {
            router.layer(layer.clone());
        }
        if let Some(metrics) = &self.metrics {
            router.layer(metrics.layer());
        }
        if let Some(layer) = self.logging {
            router.layer(layer);
        }
        if self.tracing.is_some() {
            let system = self.system.clone();
            router.decorate_publishers(TracingPublisher::decorator_with(move |p| match &system {
                Some(system) => p.system(system.clone()),
                None => p,
            }));
        }
        if let Some(metrics) = &self.metrics {
            router.decorate_publishers(metrics.publisher_decorator());
            router.decorate_subscribers(metrics.subscriber_decorator());
        }
    }
}
