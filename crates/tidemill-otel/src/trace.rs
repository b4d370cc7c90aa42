//! Traces: [`TracingPublisher`] puts the trace context into each message it publishes, and
//! [`TracingLayer`] runs each handling in a span that continues it.
//!
//! Spans are `tracing` spans (target `tidemill_otel`, level INFO) carrying the fields
//! `tracing-opentelemetry` turns into OpenTelemetry spans: `otel.name`, `otel.kind`, the
//! messaging semantic-convention attributes, and `otel.status_code` on failure. An application
//! keeps its own subscriber and exporter; without a `tracing-opentelemetry` layer the spans are
//! plain `tracing` spans (seen by `fmt` and friends) and the context a message carries is still
//! passed on to what its handler publishes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use async_trait::async_trait;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tidemill::middleware::correlation_id;
use tidemill::router::{Handler, HandlerContext, HandlerError};
use tidemill::{Message, Publisher, Result};
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::{field, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::common::{handler_and_topic, system_of, PerHandler};
use crate::propagation::{current_context, has_span, in_a_span, ProducedIn, Propagation};

/// The `messaging.system` used when the pub/sub's kind cannot be told from its type.
///
/// ```
/// assert_eq!(tidemill_otel::trace::DEFAULT_SYSTEM, "tidemill");
/// ```
pub const DEFAULT_SYSTEM: &str = "tidemill";

/// Which consumer group a traced handler reads as, for `messaging.consumer.group.name`.
///
/// ```
/// use tidemill_otel::{ConsumerGroup, TracingLayer};
/// let layer = TracingLayer::new().consumer_group(ConsumerGroup::HandlerName);
/// # drop(layer);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ConsumerGroup {
    /// No attribute.
    #[default]
    None,
    /// This group for every handler.
    Fixed(Arc<str>),
    /// The handler's name (for adapters whose group is the handler's name).
    HandlerName,
}

/// Router middleware that runs each handling in a consumer span continuing the trace the message
/// carries (see the [module docs](self)), and marks the span as failed when the handler fails.
///
/// The span's attributes: `messaging.system`, `messaging.destination.name` (the topic),
/// `messaging.operation` / `messaging.operation.type` / `messaging.operation.name` (`process`),
/// `messaging.message.id`, `messaging.message.conversation_id` (the correlation id, when set),
/// `messaging.consumer.group.name` (when configured) and `tidemill.handler`. Its name is
/// `process {topic}`. Events logged inside the handler belong to it.
///
/// Each message the handler returns remembers the span ([`ProducedIn`]), so the
/// [`TracingPublisher`] that publishes it makes its send span a child of this one.
///
/// ```
/// use tidemill_otel::{ConsumerGroup, TracingLayer};
///
/// let router = tidemill::Router::new();
/// router.layer(TracingLayer::new().system("redis").consumer_group(ConsumerGroup::HandlerName));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TracingLayer {
    system: Option<Arc<str>>,
    group: ConsumerGroup,
    propagation: Propagation,
}

impl TracingLayer {
    /// W3C propagation, `messaging.system` told from the subscriber's type, no consumer group.
    ///
    /// ```
    /// let layer = tidemill_otel::TracingLayer::new();
    /// # drop(layer);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `messaging.system` (e.g. `kafka`, `rabbitmq`, `redis`), instead of telling it from
    /// the subscriber's type.
    ///
    /// ```
    /// let layer = tidemill_otel::TracingLayer::new().system("kafka");
    /// # drop(layer);
    /// ```
    pub fn system(mut self, system: impl Into<Arc<str>>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets `messaging.consumer.group.name`.
    ///
    /// ```
    /// use tidemill_otel::{ConsumerGroup, TracingLayer};
    /// let layer = TracingLayer::new().consumer_group(ConsumerGroup::Fixed("billing".into()));
    /// # drop(layer);
    /// ```
    pub fn consumer_group(mut self, group: ConsumerGroup) -> Self {
        self.group = group;
        self
    }

    /// How the trace context is read from metadata (W3C by default).
    ///
    /// ```
    /// use tidemill_otel::{propagation::Propagation, TracingLayer};
    /// let layer = TracingLayer::new().propagation(Propagation::Global);
    /// # drop(layer);
    /// ```
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }
}

impl<S> Layer<S> for TracingLayer {
    type Service = Tracing<S>;

    fn layer(&self, inner: S) -> Tracing<S> {
        Tracing {
            inner,
            config: Arc::new(self.clone()),
            names: PerHandler::new(),
        }
    }
}

/// What the consumer span of one handler says, computed once.
struct Names {
    otel_name: String,
    system: Arc<str>,
    group: Option<Arc<str>>,
}

/// The service of [`TracingLayer`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::Layer;
/// let handler = handler_fn(|_msg: tidemill::Message| async { HandlerResult::Ok(()) });
/// let traced: tidemill_otel::trace::Tracing<_> = tidemill_otel::TracingLayer::new().layer(handler);
/// # drop(traced);
/// ```
pub struct Tracing<S> {
    inner: S,
    config: Arc<TracingLayer>,
    names: PerHandler<Names>,
}

impl<S: Clone> Clone for Tracing<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            names: self.names.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Tracing<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Handler> Service<Message> for Tracing<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = TracingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let (handler, topic) = handler_and_topic(&msg);
        let config = &self.config;
        let names = self.names.get(handler, topic, |handler, topic| {
            let kind = HandlerContext::of(&msg).map(HandlerContext::subscriber);
            Names {
                otel_name: format!("process {topic}"),
                system: config
                    .system
                    .clone()
                    .unwrap_or_else(|| kind.and_then(system_of).unwrap_or(DEFAULT_SYSTEM).into()),
                group: match &config.group {
                    ConsumerGroup::None => None,
                    ConsumerGroup::Fixed(g) => Some(g.clone()),
                    ConsumerGroup::HandlerName => Some(handler.into()),
                },
            }
        });
        let span = tracing::info_span!(
            target: "tidemill_otel",
            "process",
            otel.name = %names.otel_name,
            otel.kind = "consumer",
            messaging.system = &*names.system,
            messaging.operation = "process",
            "messaging.operation.type" = "process",
            messaging.operation.name = "process",
            messaging.destination.name = topic,
            messaging.consumer.group.name = names.group.as_deref(),
            messaging.message.id = msg.id(),
            messaging.message.conversation_id = correlation_id(&msg),
            tidemill.handler = handler,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
            "error.type" = field::Empty,
        );
        let parent = config.propagation.extract(&msg);
        let produced_in = if span.is_disabled() {
            // No subscriber records this span: pass the incoming context on as it is.
            has_span(&parent).then_some(parent)
        } else {
            if has_span(&parent) {
                let _ = span.set_parent(parent);
            }
            None
        };
        let fut = {
            let _entered = span.enter();
            self.inner.call(msg)
        };
        // The outputs are published inside the handling: with no subscriber recording spans,
        // the incoming context is made current there, so the publisher continues its trace.
        let otel_cx = produced_in.clone().unwrap_or_else(Context::current);
        TracingFuture {
            inner: fut.with_context(otel_cx).instrument(span),
            produced_in,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Tracing`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::{Layer, Service};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handler = handler_fn(|msg: tidemill::Message| async { HandlerResult::Ok(msg) });
/// let mut traced = tidemill_otel::TracingLayer::new().layer(handler);
/// let future: tidemill_otel::trace::TracingFuture<_> = traced.call(tidemill::Message::new("x"));
/// assert_eq!(future.await.unwrap().len(), 1);
/// # }
/// ```
    pub struct TracingFuture<F> {
        #[pin]
        inner: Instrumented<WithContext<F>>,
        produced_in: Option<Context>,
    }
}

impl<F> Future for TracingFuture<F>
where
    F: Future<Output = Result<Vec<Message>, HandlerError>>,
{
    type Output = Result<Vec<Message>, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut result = std::task::ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.span();
        match &mut result {
            Ok(outputs) if !outputs.is_empty() => {
                let produced_in = match this.produced_in.take() {
                    Some(cx) => Some(cx),
                    None if !span.is_disabled() => Some(span.context()),
                    None => None,
                };
                if let Some(produced_in) = produced_in {
                    for out in outputs.iter_mut() {
                        out.extensions_mut().insert(ProducedIn(produced_in.clone()));
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", field::display(&*error));
                span.record("error.type", field::debug(error.disposition()));
            }
        }
        Poll::Ready(result)
    }
}

/// A publisher that publishes each batch in a producer span (`send {topic}`) and writes that
/// span's context into every message's metadata (`traceparent`, `tracestate`, `baggage` with
/// the default W3C propagation).
///
/// The send span's parent is the span the messages were produced in when a traced handler
/// returned them ([`ProducedIn`]), the current span otherwise, and, outside any span, the trace
/// context the first message already carries (so a [`Forwarder`] relaying messages from an
/// outbox continues the trace of the request that wrote them). Attributes: `messaging.system`,
/// `messaging.destination.name`, `messaging.operation` / `.type` / `.name` (`send`), and
/// `messaging.message.id` for one message or `messaging.batch.message_count` for more.
///
/// [`Forwarder`]: tidemill::components::forwarder::Forwarder
///
/// Wrap one publisher, or every publisher of a router with [`TracingPublisher::decorator`]:
///
/// ```
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt};
/// use tidemill_otel::TracingPublisher;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let router = tidemill::Router::new();
/// router.decorate_publishers(TracingPublisher::decorator());
///
/// let pubsub = InProcessPubSub::new();
/// let publisher = TracingPublisher::new(pubsub.clone());
/// publisher.publish_one("orders", Message::new("order #1")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TracingPublisher<P> {
    inner: P,
    system: Arc<str>,
    propagation: Propagation,
}

impl<P: Publisher> TracingPublisher<P> {
    /// Wraps `inner`; `messaging.system` is told from its type when it is a tidemill adapter.
    pub fn new(inner: P) -> Self {
        let system = system_of(std::any::type_name::<P>()).unwrap_or(DEFAULT_SYSTEM);
        Self {
            inner,
            system: system.into(),
            propagation: Propagation::default(),
        }
    }

    /// Sets `messaging.system`.
    ///
    /// ```
    /// let p = tidemill_otel::TracingPublisher::new(tidemill::InProcessPubSub::new()).system("kafka");
    /// # drop(p);
    /// ```
    pub fn system(mut self, system: impl Into<Arc<str>>) -> Self {
        self.system = system.into();
        self
    }

    /// How the trace context is written into metadata (W3C by default).
    ///
    /// ```
    /// use tidemill_otel::{propagation::Propagation, TracingPublisher};
    /// let p = TracingPublisher::new(tidemill::InProcessPubSub::new()).propagation(Propagation::Global);
    /// # drop(p);
    /// ```
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// The wrapped publisher.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl TracingPublisher<Arc<dyn Publisher>> {
    /// A decorator for [`Router::decorate_publishers`](tidemill::Router::decorate_publishers)
    /// wrapping every publisher of the router.
    ///
    /// ```
    /// tidemill::Router::new().decorate_publishers(tidemill_otel::TracingPublisher::decorator());
    /// ```
    pub fn decorator() -> impl Fn(Arc<dyn Publisher>) -> Arc<dyn Publisher> + Send + Sync + 'static
    {
        Self::decorator_with(|p| p)
    }

    /// Like [`decorator`](Self::decorator), configuring each wrapped publisher with `configure`.
    ///
    /// ```
    /// let decorator = tidemill_otel::TracingPublisher::decorator_with(|p| p.system("nats"));
    /// tidemill::Router::new().decorate_publishers(decorator);
    /// ```
    pub fn decorator_with(
        configure: impl Fn(Self) -> Self + Send + Sync + 'static,
    ) -> impl Fn(Arc<dyn Publisher>) -> Arc<dyn Publisher> + Send + Sync + 'static {
        move |publisher| Arc::new(configure(TracingPublisher::new(publisher))) as Arc<dyn Publisher>
    }
}

#[async_trait]
impl<P: Publisher> Publisher for TracingPublisher<P> {
    fn limits(&self) -> tidemill::Limits {
        self.inner.limits()
    }

    fn instance_id(&self) -> usize {
        self.inner.instance_id()
    }

    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        if messages.is_empty() {
            return self.inner.publish(topic, messages).await;
        }
        let span = tracing::info_span!(
            target: "tidemill_otel",
            "send",
            otel.name = %format_args!("send {topic}"),
            otel.kind = "producer",
            messaging.system = &*self.system,
            messaging.operation = "send",
            "messaging.operation.type" = "send",
            messaging.operation.name = "send",
            messaging.destination.name = topic,
            messaging.message.id = field::Empty,
            messaging.batch.message_count = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        );
        let produced_in = ProducedIn::of(&messages[0]).cloned();
        let cx = if span.is_disabled() {
            produced_in.unwrap_or_else(current_context)
        } else {
            match produced_in {
                Some(parent) => {
                    let _ = span.set_parent(parent);
                }
                None if !in_a_span() => {
                    // Published outside any span, as a forwarder relays stored messages:
                    // continue the trace the message already carries.
                    let carried = self.propagation.extract(&messages[0]);
                    if has_span(&carried) {
                        let _ = span.set_parent(carried);
                    }
                }
                None => {
                    // Inside a span, such as a handling whose outputs the router publishes:
                    // its whole context is the parent, baggage included.
                    let _ = span.set_parent(current_context());
                }
            }
            if messages.len() == 1 {
                span.record("messaging.message.id", messages[0].id());
            } else {
                span.record("messaging.batch.message_count", messages.len());
                // Messages produced in other spans than the first are linked to.
                let first = cx_span_id(ProducedIn::of(&messages[0]));
                for msg in &messages[1..] {
                    if let Some(other) = ProducedIn::of(msg) {
                        if cx_span_id(Some(other)) != first {
                            span.add_link(other.span().span_context().clone());
                        }
                    }
                }
            }
            span.context()
        };
        for msg in &mut messages {
            self.propagation.inject(&cx, msg);
        }
        let result = self
            .inner
            .publish(topic, messages)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", field::display(error));
        }
        result
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

fn cx_span_id(cx: Option<&Context>) -> Option<opentelemetry::trace::SpanId> {
    cx.map(|cx| cx.span().span_context().span_id())
}
