//! [`IgnoreErrorsLayer`]: listed kinds of errors count as success.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

type Matcher = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// Treats errors of the listed kinds as success: the message is acked and nothing is published.
///
/// ```
/// use tidemill::middleware::IgnoreErrorsLayer;
///
/// let layer = IgnoreErrorsLayer::new()
///     .of_type::<std::num::ParseIntError>()
///     .when(|err| err.to_string().contains("already exists"));
/// tidemill::Router::new().layer(layer);
/// ```
#[derive(Clone, Default)]
pub struct IgnoreErrorsLayer {
    matchers: Vec<Matcher>,
}

impl fmt::Debug for IgnoreErrorsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IgnoreErrorsLayer")
            .field("matchers", &self.matchers.len())
            .finish()
    }
}

impl IgnoreErrorsLayer {
    /// Ignores nothing yet; add kinds with [`of_type`](Self::of_type) and [`when`](Self::when).
    pub fn new() -> Self {
        Self::default()
    }

    /// Ignores errors whose cause is an `E`.
    pub fn of_type<E: std::error::Error + 'static>(self) -> Self {
        self.when(|err| err.downcast_ref::<E>().is_some())
    }

    /// Ignores errors for which `predicate` is true.
    pub fn when(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.matchers.push(Arc::new(predicate));
        self
    }
}

impl<S> Layer<S> for IgnoreErrorsLayer {
    type Service = IgnoreErrors<S>;

    fn layer(&self, inner: S) -> IgnoreErrors<S> {
        IgnoreErrors {
            inner,
            matchers: self.matchers.clone().into(),
        }
    }
}

/// The service of [`IgnoreErrorsLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::IgnoreErrors<_> = tidemill::middleware::IgnoreErrorsLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct IgnoreErrors<S> {
    inner: S,
    matchers: Arc<[Matcher]>,
}

impl<S: fmt::Debug> fmt::Debug for IgnoreErrors<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IgnoreErrors")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: Handler> Service<Message> for IgnoreErrors<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fut = self.inner.call(msg);
        let matchers = self.matchers.clone();
        Box::pin(async move {
            match fut.await {
                Err(err) if matchers.iter().any(|m| m(&err)) => {
                    tracing::debug!(%err, "error ignored");
                    Ok(Vec::new())
                }
                other => other,
            }
        })
    }
}
