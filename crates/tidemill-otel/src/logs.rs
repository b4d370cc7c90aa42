//! Structured logs of each handling as `tracing` events.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tidemill::middleware::CORRELATION_ID_KEY;
use tidemill::router::{Disposition, Handler, HandlerError};
use tidemill::{Message, Metadata};
use tower::{Layer, Service};

use crate::common::handler_and_topic;

/// Router middleware logging each handling as a `tracing` event (target `tidemill_otel`) with
/// the fields `handler`, `topic`, `message_id`, `correlation_id`, `duration_ms` and, on
/// failure, `error` and `disposition`.
///
/// A success is logged at DEBUG with `outputs` (how many messages the handler returned); a
/// failure at WARN, or ERROR when the message is rejected. Payloads stay out of the logs unless
/// [`with_payload`](Self::with_payload) asks for them.
///
/// ```
/// use tidemill_otel::LoggingLayer;
/// tidemill::Router::new().layer(LoggingLayer::new().with_payload(256));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LoggingLayer {
    payload: Option<usize>,
}

impl LoggingLayer {
    /// Logs without payloads.
    ///
    /// ```
    /// let layer = tidemill_otel::LoggingLayer::new();
    /// # drop(layer);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the payload (as lossy UTF-8, cut after `max_bytes`) to each event as `payload`.
    /// Payloads may hold personal data: ask for them only where the logs may hold it too.
    ///
    /// ```
    /// let layer = tidemill_otel::LoggingLayer::new().with_payload(128);
    /// # drop(layer);
    /// ```
    pub fn with_payload(mut self, max_bytes: usize) -> Self {
        self.payload = Some(max_bytes);
        self
    }
}

impl<S> Layer<S> for LoggingLayer {
    type Service = Logging<S>;

    fn layer(&self, inner: S) -> Logging<S> {
        Logging {
            inner,
            payload: self.payload,
        }
    }
}

/// The service of [`LoggingLayer`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::Layer;
/// let handler = handler_fn(|_msg: tidemill::Message| async { HandlerResult::Ok(()) });
/// let svc: tidemill_otel::logs::Logging<_> = tidemill_otel::LoggingLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct Logging<S> {
    inner: S,
    payload: Option<usize>,
}

/// What an event says about the message, taken before the handler owns it.
struct Fields {
    handler: Arc<str>,
    topic: Arc<str>,
    id: Arc<str>,
    // Shares the message's map: a reference count, not a copy.
    metadata: Metadata,
    payload: Option<PayloadField>,
    started: Instant,
}

impl<S: Handler> Service<Message> for Logging<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = LoggingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fields = tracing::enabled!(target: "tidemill_otel", tracing::Level::WARN).then(|| {
            let (handler, topic) = handler_and_topic(&msg);
            Fields {
                handler: handler.into(),
                topic: topic.into(),
                id: msg.shared_id(),
                metadata: msg.metadata().clone(),
                payload: self
                    .payload
                    .map(|max| PayloadField::new(msg.payload().clone(), max)),
                started: Instant::now(),
            }
        });
        LoggingFuture {
            inner: self.inner.call(msg),
            fields,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Logging`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::{Layer, Service};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handler = handler_fn(|_msg: tidemill::Message| async { HandlerResult::Ok(()) });
/// let mut svc = tidemill_otel::LoggingLayer::new().layer(handler);
/// let future: tidemill_otel::logs::LoggingFuture<_> = svc.call(tidemill::Message::new(""));
/// future.await.unwrap();
/// # }
/// ```
    pub struct LoggingFuture<F> {
        #[pin]
        inner: F,
        fields: Option<Fields>,
    }
}

impl<F> Future for LoggingFuture<F>
where
    F: Future<Output = Result<Vec<Message>, HandlerError>>,
{
    type Output = Result<Vec<Message>, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(f) = this.fields.take() {
            log(&f, &result);
        }
        Poll::Ready(result)
    }
}

fn log(f: &Fields, result: &Result<Vec<Message>, HandlerError>) {
    let duration_ms = f.started.elapsed().as_secs_f64() * 1000.0;
    let correlation_id = f.metadata.get(CORRELATION_ID_KEY);
    let payload = f.payload.as_ref().map(tracing::field::display);
    match result {
        Ok(outputs) => tracing::debug!(
            target: "tidemill_otel",
            handler = &*f.handler,
            topic = &*f.topic,
            message_id = &*f.id,
            correlation_id,
            duration_ms,
            outputs = outputs.len(),
            payload,
            "message handled"
        ),
        Err(error) if error.disposition() == Disposition::Reject => tracing::error!(
            target: "tidemill_otel",
            handler = &*f.handler,
            topic = &*f.topic,
            message_id = &*f.id,
            correlation_id,
            duration_ms,
            error = %error,
            disposition = ?error.disposition(),
            payload,
            "message rejected"
        ),
        Err(error) => tracing::warn!(
            target: "tidemill_otel",
            handler = &*f.handler,
            topic = &*f.topic,
            message_id = &*f.id,
            correlation_id,
            duration_ms,
            error = %error,
            disposition = ?error.disposition(),
            payload,
            "message failed"
        ),
    }
}

/// A payload shown as lossy UTF-8, cut after a number of bytes.
struct PayloadField {
    payload: Bytes,
    max: usize,
}

impl PayloadField {
    fn new(payload: Bytes, max: usize) -> Self {
        Self { payload, max }
    }
}

impl fmt::Display for PayloadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.payload.len().min(self.max);
        f.write_str(&String::from_utf8_lossy(&self.payload[..cut]))?;
        if cut < self.payload.len() {
            write!(f, "... ({} bytes)", self.payload.len())?;
        }
        Ok(())
    }
}
