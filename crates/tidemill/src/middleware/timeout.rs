//! [`TimeoutLayer`]: cancels a handler that runs too long.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// Cancels the handler's future at the deadline; the message is then nacked (the error's
/// disposition is [`Retry`](crate::router::Disposition::Retry)). Inside a retry layer it limits
/// each attempt.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::TimeoutLayer;
///
/// tidemill::Router::new().layer(TimeoutLayer::new(Duration::from_secs(10)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer that gives each handling `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service of [`TimeoutLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Timeout<_> = tidemill::middleware::TimeoutLayer::new(std::time::Duration::from_secs(1)).layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

/// The error of a handling cancelled by [`TimeoutLayer`].
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::TimeoutElapsed;
/// assert!(TimeoutElapsed(Duration::from_secs(2)).to_string().contains("2s"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the handler did not finish within {0:?}")]
pub struct TimeoutElapsed(pub Duration);

impl<S: Handler> Service<Message> for Timeout<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fut = self.inner.call(msg);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(result) => result,
                Err(_) => Err(HandlerError::new(TimeoutElapsed(timeout))),
            }
        })
    }
}
