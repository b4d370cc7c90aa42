//! [`CorrelationIdLayer`]: carries a correlation id from each message to what its handler
//! produces and publishes; [`CorrelationIdPublisher`] stamps it on messages published during the
//! handling.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::error::Result;
use crate::message::{new_uuid, Message};
use crate::pubsub::Publisher;
use crate::router::{Handler, HandlerError};

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The correlation id of the message being handled by the current task, inside a
/// [`CorrelationIdLayer`] (or [`with_correlation_id`]).
///
/// ```
/// use tidemill::middleware::{current_correlation_id, with_correlation_id};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(current_correlation_id(), None);
/// with_correlation_id("c-1", async {
///     assert_eq!(current_correlation_id().as_deref(), Some("c-1"));
/// })
/// .await;
/// # }
/// ```
pub fn current_correlation_id() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `fut` with `id` as the current correlation id. Tasks it spawns do not inherit it: wrap
/// their futures too.
pub async fn with_correlation_id<F: Future>(id: impl Into<Arc<str>>, fut: F) -> F::Output {
    CURRENT.scope(id.into(), fut).await
}

/// The metadata key of the correlation id.
///
/// ```
/// use tidemill::middleware::CORRELATION_ID_KEY;
/// let msg = tidemill::Message::new("").with_metadata(CORRELATION_ID_KEY, "c-1");
/// assert_eq!(tidemill::middleware::correlation_id(&msg), Some("c-1"));
/// ```
pub const CORRELATION_ID_KEY: &str = "correlation_id";

/// The correlation id of a message, if it has one.
///
/// ```
/// use tidemill::middleware::{correlation_id, set_correlation_id};
/// let mut msg = tidemill::Message::new("");
/// set_correlation_id(&mut msg, "c-1");
/// assert_eq!(correlation_id(&msg), Some("c-1"));
/// ```
pub fn correlation_id(msg: &Message) -> Option<&str> {
    msg.metadata().get(CORRELATION_ID_KEY)
}

/// Sets the correlation id of a message.
///
/// ```
/// let mut msg = tidemill::Message::new("");
/// tidemill::middleware::set_correlation_id(&mut msg, "c-9");
/// assert_eq!(msg.metadata().get("correlation_id"), Some("c-9"));
/// ```
pub fn set_correlation_id(msg: &mut Message, id: impl Into<String>) {
    msg.metadata_mut().set(CORRELATION_ID_KEY, id);
}

/// Reads the correlation id of each message (generating one when it has none), copies it onto
/// every message the handler returns, and makes it the [current](current_correlation_id) one while
/// the handler runs, so a [`CorrelationIdPublisher`] stamps it on what the handler publishes
/// itself.
///
/// ```
/// tidemill::Router::new().layer(tidemill::middleware::CorrelationIdLayer::new());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CorrelationIdLayer;

impl CorrelationIdLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CorrelationIdLayer {
    type Service = CorrelationId<S>;

    fn layer(&self, inner: S) -> CorrelationId<S> {
        CorrelationId { inner }
    }
}

/// The service of [`CorrelationIdLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::CorrelationId<_> = tidemill::middleware::CorrelationIdLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct CorrelationId<S> {
    inner: S,
}

impl<S: Handler> Service<Message> for CorrelationId<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut msg: Message) -> Self::Future {
        let id: Arc<str> = match correlation_id(&msg) {
            Some(id) => id.into(),
            None => {
                let id = new_uuid();
                set_correlation_id(&mut msg, &*id);
                id
            }
        };
        // Creating the future may already run handler code: do it within the scope too.
        let fut = CURRENT.sync_scope(id.clone(), || self.inner.call(msg));
        Box::pin(async move {
            let mut outputs = CURRENT.scope(id.clone(), fut).await?;
            for out in &mut outputs {
                if correlation_id(out).is_none() {
                    set_correlation_id(out, &*id);
                }
            }
            Ok(outputs)
        })
    }
}

/// A publisher decorator that sets the [current](current_correlation_id) correlation id on every
/// message without one. Messages that already carry an id keep it; outside a handling nothing is
/// set.
///
/// ```
/// use std::sync::Arc;
/// use tidemill::middleware::CorrelationIdPublisher;
/// use tidemill::Publisher;
///
/// let router = tidemill::Router::new();
/// router.decorate_publishers(|p| Arc::new(CorrelationIdPublisher::new(p)) as Arc<dyn Publisher>);
/// ```
#[derive(Clone, Debug)]
pub struct CorrelationIdPublisher<P> {
    inner: P,
}

impl<P: Publisher> CorrelationIdPublisher<P> {
    /// Wraps `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for CorrelationIdPublisher<P> {
    fn limits(&self) -> crate::Limits {
        self.inner.limits()
    }

    fn instance_id(&self) -> usize {
        self.inner.instance_id()
    }

    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        if let Some(id) = current_correlation_id() {
            for msg in &mut messages {
                if correlation_id(msg).is_none() {
                    set_correlation_id(msg, &*id);
                }
            }
        }
        self.inner.publish(topic, messages).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
