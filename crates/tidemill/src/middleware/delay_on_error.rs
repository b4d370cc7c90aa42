//! [`DelayOnErrorLayer`]: a failed message comes back after a growing delay.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Disposition, Handler, HandlerError};

/// Turns a failure to be retried ([`Disposition::Retry`]) into a nack with a delay
/// ([`Disposition::RetryAfter`]): `initial`, then `multiplier` times longer on each failure of
/// the same message, capped at `max`. Unlike [`RetryLayer`](super::RetryLayer), nothing waits in
/// the handler: the subscriber holds the message back, and other messages go on meanwhile
/// (where the pub/sub delivers past a delayed nack, as the in-process one does).
///
/// Failures are counted per message id in memory, for at most
/// [`max_tracked`](Self::max_tracked) messages; a success forgets the count.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::DelayOnErrorLayer;
///
/// let layer = DelayOnErrorLayer::new(Duration::from_secs(1))
///     .multiplier(2.0)
///     .max(Duration::from_secs(60));
/// assert_eq!(layer.delay(3), Duration::from_secs(4));
/// tidemill::Router::new().layer(layer);
/// ```
#[derive(Clone, Debug)]
pub struct DelayOnErrorLayer {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    max_tracked: usize,
}

impl DelayOnErrorLayer {
    /// Delays the first redelivery by `initial`, doubling each time, at most 10 minutes.
    pub fn new(initial: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max: Duration::from_secs(600),
            max_tracked: 10_000,
        }
    }

    /// How much each delay grows over the last (at least 1).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m.max(1.0);
        self
    }

    /// The longest delay.
    pub fn max(mut self, d: Duration) -> Self {
        self.max = d;
        self
    }

    /// How many failing messages are tracked at once; beyond that, counts start over.
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = tidemill::middleware::DelayOnErrorLayer::new(Duration::from_secs(1)).max_tracked(1000);
    /// # drop(layer);
    /// ```
    pub fn max_tracked(mut self, n: usize) -> Self {
        self.max_tracked = n.max(1);
        self
    }

    /// The delay after failure number `failure` (from 1).
    pub fn delay(&self, failure: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(failure.saturating_sub(1).min(1024) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }
}

impl<S> Layer<S> for DelayOnErrorLayer {
    type Service = DelayOnError<S>;

    fn layer(&self, inner: S) -> DelayOnError<S> {
        DelayOnError {
            inner,
            config: Arc::new(self.clone()),
            failures: Arc::default(),
        }
    }
}

/// The service of [`DelayOnErrorLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::DelayOnError<_> = tidemill::middleware::DelayOnErrorLayer::new(std::time::Duration::from_secs(1)).layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct DelayOnError<S> {
    inner: S,
    config: Arc<DelayOnErrorLayer>,
    failures: Arc<Mutex<HashMap<Arc<str>, u32>>>,
}

impl<S: fmt::Debug> fmt::Debug for DelayOnError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayOnError")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Handler> Service<Message> for DelayOnError<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let id = msg.shared_id();
        let fut = self.inner.call(msg);
        let config = self.config.clone();
        let failures = self.failures.clone();
        Box::pin(async move {
            match fut.await {
                Ok(outputs) => {
                    failures.lock().remove(&id);
                    Ok(outputs)
                }
                Err(err) if err.disposition() == Disposition::Retry => {
                    let n = {
                        let mut map = failures.lock();
                        if map.len() >= config.max_tracked && !map.contains_key(&id) {
                            map.clear();
                        }
                        let n = map.entry(id).or_insert(0);
                        *n += 1;
                        *n
                    };
                    let delay = config.delay(n);
                    Err(err.with_disposition(Disposition::RetryAfter(delay)))
                }
                Err(err) => {
                    failures.lock().remove(&id);
                    Err(err)
                }
            }
        })
    }
}
