//! Carrying an OpenTelemetry [`Context`] in a message's [`Metadata`]: the W3C `traceparent`,
//! `tracestate` and `baggage` entries.

use std::fmt;
use std::sync::{Arc, LazyLock};

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tidemill::{Message, Metadata};

/// Writes propagation fields into a message's [`Metadata`].
///
/// ```
/// use opentelemetry::propagation::Injector;
/// use tidemill_otel::propagation::MetadataInjector;
///
/// let mut metadata = tidemill::Metadata::new();
/// MetadataInjector(&mut metadata).set("traceparent", "00-...".to_owned());
/// assert_eq!(metadata.get("traceparent"), Some("00-..."));
/// ```
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut Metadata);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

/// Reads propagation fields from a message's [`Metadata`].
///
/// ```
/// use opentelemetry::propagation::Extractor;
/// use tidemill_otel::propagation::MetadataExtractor;
///
/// let metadata = tidemill::Metadata::from_iter([("traceparent", "00-...")]);
/// assert_eq!(MetadataExtractor(&metadata).get("traceparent"), Some("00-..."));
/// ```
#[derive(Debug)]
pub struct MetadataExtractor<'a>(pub &'a Metadata);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

static W3C: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// Which propagator writes the trace context into metadata and reads it back.
///
/// The default is W3C Trace Context plus W3C Baggage, so traces cross messages without any
/// global set-up; [`Propagation::Global`] follows `opentelemetry::global`'s propagator instead.
///
/// ```
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
/// use tidemill_otel::propagation::Propagation;
///
/// let span = SpanContext::new(
///     TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
///     SpanId::from(0xb7ad6b7169203331_u64),
///     TraceFlags::SAMPLED,
///     true,
///     TraceState::default(),
/// );
/// let cx = opentelemetry::Context::new().with_remote_span_context(span);
/// let mut msg = tidemill::Message::new("");
/// Propagation::default().inject(&cx, &mut msg);
/// assert_eq!(
///     msg.metadata().get("traceparent"),
///     Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
/// );
/// let back = Propagation::default().extract(&msg);
/// assert_eq!(back.span().span_context().trace_id(), cx.span().span_context().trace_id());
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Propagation {
    /// W3C `traceparent`/`tracestate` and `baggage`.
    #[default]
    W3c,
    /// The propagator set with `opentelemetry::global::set_text_map_propagator` (a no-op one
    /// until something sets it).
    Global,
    /// A propagator of your own (B3, Jaeger, ...).
    Custom(Arc<dyn TextMapPropagator + Send + Sync>),
}

impl fmt::Debug for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::W3c => f.write_str("W3c"),
            Self::Global => f.write_str("Global"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl Propagation {
    /// A custom propagator.
    ///
    /// ```
    /// use opentelemetry_sdk::propagation::TraceContextPropagator;
    /// let p = tidemill_otel::propagation::Propagation::custom(TraceContextPropagator::new());
    /// # drop(p);
    /// ```
    pub fn custom(propagator: impl TextMapPropagator + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(propagator))
    }

    /// Writes `cx` into the message's metadata (nothing when `cx` holds no valid span and no
    /// baggage).
    ///
    /// ```
    /// let mut msg = tidemill::Message::new("");
    /// tidemill_otel::propagation::Propagation::W3c.inject(&opentelemetry::Context::new(), &mut msg);
    /// assert!(msg.metadata().is_empty());
    /// ```
    pub fn inject(&self, cx: &Context, message: &mut Message) {
        self.inject_metadata(cx, message.metadata_mut());
    }

    /// Writes `cx` into `metadata`.
    ///
    /// ```
    /// let mut md = tidemill::Metadata::new();
    /// tidemill_otel::propagation::Propagation::W3c.inject_metadata(&opentelemetry::Context::new(), &mut md);
    /// assert!(md.is_empty()); // no span, nothing to carry
    /// ```
    pub fn inject_metadata(&self, cx: &Context, metadata: &mut Metadata) {
        let mut injector = MetadataInjector(metadata);
        match self {
            Self::W3c => W3C.inject_context(cx, &mut injector),
            Self::Global => opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(cx, &mut injector)
            }),
            Self::Custom(p) => p.inject_context(cx, &mut injector),
        }
    }

    /// Writes the current context (the current `tracing` span's, or OpenTelemetry's current
    /// one) into the message, for messages that do not go through a
    /// [`TracingPublisher`](crate::TracingPublisher): rows written to a transactional outbox,
    /// say, so that the forwarder's handling continues the trace of the request that wrote them.
    ///
    /// ```
    /// use tidemill_otel::propagation::Propagation;
    /// let mut msg = tidemill::Message::new("order placed");
    /// Propagation::W3c.inject_current(&mut msg); // no span here: nothing to write
    /// assert!(msg.metadata().get("traceparent").is_none());
    /// ```
    pub fn inject_current(&self, message: &mut Message) {
        self.inject(&current_context(), message);
    }

    /// Reads the context a message carries (an empty context when it carries none).
    ///
    /// ```
    /// use opentelemetry::trace::TraceContextExt;
    /// let msg = tidemill::Message::new("");
    /// let cx = tidemill_otel::propagation::Propagation::W3c.extract(&msg);
    /// assert!(!cx.span().span_context().is_valid());
    /// ```
    pub fn extract(&self, message: &Message) -> Context {
        self.extract_metadata(message.metadata())
    }

    /// Reads the context `metadata` carries.
    ///
    /// ```
    /// use opentelemetry::trace::TraceContextExt;
    /// let md = tidemill::Metadata::from_iter([(
    ///     "traceparent",
    ///     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    /// )]);
    /// let cx = tidemill_otel::propagation::Propagation::W3c.extract_metadata(&md);
    /// assert!(cx.span().span_context().is_remote());
    /// ```
    pub fn extract_metadata(&self, metadata: &Metadata) -> Context {
        let extractor = MetadataExtractor(metadata);
        match self {
            Self::W3c => W3C.extract(&extractor),
            Self::Global => {
                opentelemetry::global::get_text_map_propagator(|p| p.extract(&extractor))
            }
            Self::Custom(p) => p.extract(&extractor),
        }
    }
}

/// The current context: the current `tracing` span's when it has one, OpenTelemetry's otherwise.
pub(crate) fn current_context() -> Context {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::Span::current();
    if span.is_none() || span.is_disabled() {
        Context::current()
    } else {
        span.context()
    }
}

/// Whether the code runs inside a span (a recorded `tracing` one, or OpenTelemetry's current):
/// [`current_context`] without building the context.
pub(crate) fn in_a_span() -> bool {
    let span = tracing::Span::current();
    (!span.is_none() && !span.is_disabled()) || has_span(&Context::current())
}

/// Whether `cx` holds a span worth continuing.
pub(crate) fn has_span(cx: &Context) -> bool {
    cx.has_active_span() && cx.span().span_context().is_valid()
}

/// The context a message was produced in, put in its extensions by
/// [`TracingLayer`](crate::TracingLayer) on every message a handler returns, so that the
/// [`TracingPublisher`](crate::TracingPublisher) that publishes it later, outside the handler's
/// span, still makes the handling span the parent of the publishing span.
///
/// Extensions stay in the process; on the wire the context travels as metadata.
///
/// ```
/// use tidemill_otel::propagation::ProducedIn;
/// let mut msg = tidemill::Message::new("");
/// msg.extensions_mut().insert(ProducedIn(opentelemetry::Context::new()));
/// assert!(ProducedIn::of(&msg).is_some());
/// ```
#[derive(Clone, Debug)]
pub struct ProducedIn(pub Context);

impl ProducedIn {
    /// The context a message was produced in, if a traced handler produced it.
    pub fn of(message: &Message) -> Option<&Context> {
        message.extensions().get::<ProducedIn>().map(|p| &p.0)
    }
}
