//! [`RandomFailLayer`] and [`RandomPanicLayer`]: failures on purpose, for chaos testing.

use std::task::{Context, Poll};

use futures::future::Either;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// The error of a handling failed on purpose by [`RandomFailLayer`].
///
/// ```
/// use tidemill::middleware::{IgnoreErrorsLayer, RandomFailure};
/// // Count the chaos failures as success, to see what the rest of the system does.
/// let layer = IgnoreErrorsLayer::new().of_type::<RandomFailure>();
/// # drop(layer);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("random failure (chaos testing)")]
pub struct RandomFailure;

/// Fails a share of the messages with [`RandomFailure`] (a retryable error) without calling the
/// handler, to test how the rest of the system copes.
///
/// ```
/// // One message in ten fails.
/// tidemill::Router::new().layer(tidemill::middleware::RandomFailLayer::new(0.1));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RandomFailLayer {
    probability: f64,
}

impl RandomFailLayer {
    /// Fails each message with `probability` (0 to 1).
    pub fn new(probability: f64) -> Self {
        Self {
            probability: probability.clamp(0.0, 1.0),
        }
    }
}

impl<S> Layer<S> for RandomFailLayer {
    type Service = RandomFail<S>;

    fn layer(&self, inner: S) -> RandomFail<S> {
        RandomFail {
            inner,
            probability: self.probability,
        }
    }
}

/// The service of [`RandomFailLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::RandomFail<_> = tidemill::middleware::RandomFailLayer::new(0.5).layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct RandomFail<S> {
    inner: S,
    probability: f64,
}

impl<S: Handler> Service<Message> for RandomFail<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = Either<futures::future::Ready<Result<Vec<Message>, HandlerError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        if rand::random_bool(self.probability) {
            Either::Left(futures::future::ready(Err(HandlerError::new(
                RandomFailure,
            ))))
        } else {
            Either::Right(self.inner.call(msg))
        }
    }
}

/// Panics in a share of the handlings, before the handler is called, to test that a
/// [`RecovererLayer`](super::RecovererLayer) outside it keeps everything running.
///
/// ```
/// use tidemill::middleware::{RandomPanicLayer, RecovererLayer};
/// tidemill::Router::new()
///     .layer(RecovererLayer::new())
///     .layer(RandomPanicLayer::new(0.01));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RandomPanicLayer {
    probability: f64,
}

impl RandomPanicLayer {
    /// Panics with `probability` (0 to 1).
    pub fn new(probability: f64) -> Self {
        Self {
            probability: probability.clamp(0.0, 1.0),
        }
    }
}

impl<S> Layer<S> for RandomPanicLayer {
    type Service = RandomPanic<S>;

    fn layer(&self, inner: S) -> RandomPanic<S> {
        RandomPanic {
            inner,
            probability: self.probability,
        }
    }
}

/// The service of [`RandomPanicLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::RandomPanic<_> = tidemill::middleware::RandomPanicLayer::new(0.0).layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct RandomPanic<S> {
    inner: S,
    probability: f64,
}

impl<S: Handler> Service<Message> for RandomPanic<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        if rand::random_bool(self.probability) {
            panic!("random panic (chaos testing) on message {}", msg.id());
        }
        self.inner.call(msg)
    }
}
