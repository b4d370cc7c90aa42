//! [`RetryLayer`]: retries a failed handling in place with exponential backoff.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::message::Message;
use crate::router::{Disposition, Handler, HandlerError};

type Predicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;
type OnRetry = Arc<dyn Fn(&Message, &HandlerError, u32, Duration) + Send + Sync>;

/// Retries a failed handling of the same message, waiting `initial_interval`, then each wait
/// `multiplier` times the last, capped at `max_interval`, at most `max_retries` times and (if
/// set) no longer than `max_elapsed` in all. Errors whose disposition is not
/// [`Retry`](Disposition::Retry) (rejected, dropped, or to come back later) are not retried.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::RetryLayer;
///
/// let retry = RetryLayer::new()
///     .max_retries(5)
///     .initial_interval(Duration::from_millis(100))
///     .multiplier(2.0)
///     .max_interval(Duration::from_secs(5))
///     .max_elapsed(Duration::from_secs(30))
///     .jitter(0.1)
///     .retry_if(|err| err.downcast_ref::<std::io::Error>().is_some())
///     .on_retry(|msg, err, attempt, delay| {
///         eprintln!("retry {attempt} of {} in {delay:?}: {err}", msg.id())
///     });
/// tidemill::Router::new().layer(retry);
/// ```
#[derive(Clone)]
pub struct RetryLayer {
    max_retries: u32,
    initial_interval: Duration,
    max_interval: Duration,
    multiplier: f64,
    max_elapsed: Option<Duration>,
    jitter: f64,
    predicate: Option<Predicate>,
    on_retry: Option<OnRetry>,
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_retries", &self.max_retries)
            .field("initial_interval", &self.initial_interval)
            .field("max_interval", &self.max_interval)
            .field("multiplier", &self.multiplier)
            .field("max_elapsed", &self.max_elapsed)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// Three retries, 100 ms apart at first, doubling, at most 10 s apart, no jitter.
    pub fn new() -> Self {
        Self {
            max_retries: 3,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            multiplier: 2.0,
            max_elapsed: None,
            jitter: 0.0,
            predicate: None,
            on_retry: None,
        }
    }

    /// How many times to retry after the first attempt.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The wait before the first retry.
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.initial_interval = d;
        self
    }

    /// The longest wait between two attempts.
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d;
        self
    }

    /// How much each wait grows over the last (at least 1).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m.max(1.0);
        self
    }

    /// No retry starts after this much time since the first attempt.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }

    /// Spreads each wait randomly by up to this fraction either way (0 to 1; default 0).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Retries only errors for which `predicate` is true.
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Calls `hook` before each retry with the message, the error, the retry's number (from 1)
    /// and the wait before it.
    pub fn on_retry(
        mut self,
        hook: impl Fn(&Message, &HandlerError, u32, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// The wait before retry number `retry` (from 1), before jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let retry = tidemill::middleware::RetryLayer::new()
    ///     .initial_interval(Duration::from_millis(100))
    ///     .multiplier(2.0)
    ///     .max_interval(Duration::from_millis(300));
    /// assert_eq!(retry.interval(1), Duration::from_millis(100));
    /// assert_eq!(retry.interval(2), Duration::from_millis(200));
    /// assert_eq!(retry.interval(3), Duration::from_millis(300));
    /// ```
    pub fn interval(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.saturating_sub(1) as i32);
        let secs = self.initial_interval.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.max_interval.as_secs_f64()))
    }

    fn delay(&self, retry: u32) -> Duration {
        let base = self.interval(retry);
        if self.jitter == 0.0 {
            return base;
        }
        let spread = rand::random_range(-self.jitter..=self.jitter);
        base.mul_f64(1.0 + spread)
    }

    fn should_retry(&self, err: &HandlerError) -> bool {
        err.disposition() == Disposition::Retry && self.predicate.as_ref().is_none_or(|p| p(err))
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// The service of [`RetryLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Retry<_> = tidemill::middleware::RetryLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    config: Arc<RetryLayer>,
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S: Handler> Service<Message> for Retry<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        // The first attempt uses the readiness reserved by poll_ready; retries use a clone.
        let first = self.inner.call(msg.clone());
        let mut inner = self.inner.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let mut result = first.await;
            let mut retry = 0;
            while let Err(err) = &result {
                retry += 1;
                if retry > config.max_retries || !config.should_retry(err) {
                    break;
                }
                let delay = config.delay(retry);
                if config
                    .max_elapsed
                    .is_some_and(|max| started.elapsed() + delay > max)
                {
                    break;
                }
                if let Some(hook) = &config.on_retry {
                    hook(&msg, err, retry, delay);
                }
                tokio::time::sleep(delay).await;
                result = match inner.ready().await {
                    Ok(svc) => svc.call(msg.clone()).await,
                    Err(err) => Err(err),
                };
            }
            result
        })
    }
}
