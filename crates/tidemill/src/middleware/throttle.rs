//! [`ThrottleLayer`]: at most N messages per period through a handler.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// Governor's clock on tokio's time, so a paused test clock governs the limiter too.
#[derive(Clone, Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.start))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Lets at most `count` messages per `period` into the handler it wraps (a GCRA rate limiter from
/// the `governor` crate): messages are spaced `period / count` apart, with bursts of up to
/// [`burst`](Self::burst) messages (default 1, evenly spaced). A message waits for its turn
/// before the handler is called; it is not nacked.
///
/// Each handler the layer wraps gets its own limiter, shared by all its concurrent calls.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::ThrottleLayer;
///
/// // Ten messages a second, one every 100 ms.
/// tidemill::Router::new().layer(ThrottleLayer::new(10, Duration::from_secs(1)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ThrottleLayer {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

impl ThrottleLayer {
    /// At most `count` messages per `period` (`count` at least 1, `period` at least 1 ns).
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            count: NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN),
            period: period.max(Duration::from_nanos(1)),
            burst: NonZeroU32::MIN,
        }
    }

    /// How many messages may pass at once after a quiet spell. Default 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = tidemill::middleware::ThrottleLayer::new(100, Duration::from_secs(1)).burst(10);
    /// # drop(layer);
    /// ```
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self
    }

    fn limiter(&self, clock: TokioClock) -> Limiter {
        let interval = (self.period / self.count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("the interval is not zero")
            .allow_burst(self.burst);
        RateLimiter::direct_with_clock(quota, clock)
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        let clock = TokioClock {
            start: Instant::now(),
        };
        Throttle {
            inner,
            limiter: Arc::new(self.limiter(clock.clone())),
            clock,
            wait: None,
            permitted: false,
        }
    }
}

/// The service of [`ThrottleLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Throttle<_> = tidemill::middleware::ThrottleLayer::new(10, std::time::Duration::from_secs(1)).layer(handler);
/// # drop(svc);
/// ```
pub struct Throttle<S> {
    inner: S,
    limiter: Arc<Limiter>,
    clock: TokioClock,
    wait: Option<Pin<Box<Sleep>>>,
    /// A permit taken from the limiter, not yet used by a call.
    permitted: bool,
}

impl<S: Clone> Clone for Throttle<S> {
    fn clone(&self) -> Self {
        // A clone starts without a permit: permits are per call, not per service.
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            clock: self.clock.clone(),
            wait: None,
            permitted: false,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Throttle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

impl<S: Handler> Service<Message> for Throttle<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        while !self.permitted {
            if let Some(wait) = self.wait.as_mut() {
                std::task::ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.limiter.check() {
                Ok(()) => self.permitted = true,
                Err(not_until) => {
                    let delay = not_until.wait_time_from(self.clock.now());
                    self.wait = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        self.permitted = false;
        self.inner.call(msg)
    }
}
