//! [`DuplicatorLayer`]: handles every message twice, to prove the handler idempotent.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// Calls the handler twice with each message, one call after the other, and returns the outputs
/// of both. A handler that is not idempotent shows it (double effects, twice the outputs) in tests
/// and staging. If the first call fails, the second is not made.
///
/// ```
/// tidemill::Router::new().layer(tidemill::middleware::DuplicatorLayer::new());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DuplicatorLayer;

impl DuplicatorLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for DuplicatorLayer {
    type Service = Duplicator<S>;

    fn layer(&self, inner: S) -> Duplicator<S> {
        Duplicator { inner }
    }
}

/// The service of [`DuplicatorLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Duplicator<_> = tidemill::middleware::DuplicatorLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct Duplicator<S> {
    inner: S,
}

impl<S: Handler> Service<Message> for Duplicator<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let first = self.inner.call(msg.clone());
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let mut outputs = first.await?;
            outputs.extend(inner.ready().await?.call(msg).await?);
            Ok(outputs)
        })
    }
}
