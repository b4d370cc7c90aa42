//! [`CircuitBreakerLayer`]: stops calling a failing handler for a while.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Disposition, Handler, HandlerError};

/// The state of a circuit breaker.
///
/// ```
/// use tidemill::middleware::{CircuitBreakerLayer, CircuitState};
/// let layer = CircuitBreakerLayer::new().on_state_change(|from, to| {
///     if to == CircuitState::Open {
///         eprintln!("opened (was {from:?})");
///     }
/// });
/// # drop(layer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast with [`CircuitOpen`] until the open period ends.
    Open,
    /// The open period ended: a few trial calls go through; their outcome closes or reopens it.
    HalfOpen,
}

/// The error of a call refused by an open circuit breaker. Its disposition is
/// [`RetryAfter`](Disposition::RetryAfter) the time left until the breaker half-opens, so the
/// message comes back when a trial call may go through.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::CircuitOpen;
/// let err = CircuitOpen { retry_in: Duration::from_secs(3) };
/// assert!(err.to_string().contains("3s"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the circuit breaker is open; next trial in {retry_in:?}")]
pub struct CircuitOpen {
    /// The time left until the breaker half-opens.
    pub retry_in: Duration,
}

type IsFailure = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;
type OnStateChange = Arc<dyn Fn(CircuitState, CircuitState) + Send + Sync>;

/// Opens after a pattern of failures, fails fast while open, and half-opens after a period to let
/// trial calls through.
///
/// It opens when [`consecutive_failures`](Self::consecutive_failures) calls failed in a row
/// (default 5), or, if [`failure_rate`](Self::failure_rate) is set, when at least that share of
/// the last `window` calls failed. While open, calls fail at once with [`CircuitOpen`]. After
/// [`open_for`](Self::open_for) (default 30 s) it half-opens: up to
/// [`half_open_calls`](Self::half_open_calls) trial calls (default 1) go through; if they all
/// succeed it closes, if one fails it opens again.
///
/// Errors count as failures unless their disposition is [`Reject`](Disposition::Reject) or
/// [`Drop`](Disposition::Drop) (the message's fault, not the handler's dependency); change that
/// with [`is_failure`](Self::is_failure). Each handler the layer wraps gets its own breaker.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::CircuitBreakerLayer;
///
/// let breaker = CircuitBreakerLayer::new()
///     .consecutive_failures(3)
///     .failure_rate(0.5, 20)
///     .open_for(Duration::from_secs(10))
///     .half_open_calls(2)
///     .on_state_change(|from, to| eprintln!("circuit {from:?} -> {to:?}"));
/// tidemill::Router::new().layer(breaker);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    consecutive_failures: u32,
    failure_rate: Option<(f64, usize)>,
    open_for: Duration,
    half_open_calls: u32,
    is_failure: Option<IsFailure>,
    on_state_change: Option<OnStateChange>,
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("consecutive_failures", &self.consecutive_failures)
            .field("failure_rate", &self.failure_rate)
            .field("open_for", &self.open_for)
            .field("half_open_calls", &self.half_open_calls)
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// Opens after 5 failures in a row, for 30 s, then lets 1 trial call through.
    pub fn new() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: None,
            open_for: Duration::from_secs(30),
            half_open_calls: 1,
            is_failure: None,
            on_state_change: None,
        }
    }

    /// Opens after `n` failures in a row (at least 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// Also opens when at least `rate` (0 to 1) of the last `window` calls failed, once `window`
    /// calls were made.
    pub fn failure_rate(mut self, rate: f64, window: usize) -> Self {
        self.failure_rate = Some((rate.clamp(0.0, 1.0), window.max(1)));
        self
    }

    /// How long it stays open before half-opening.
    pub fn open_for(mut self, period: Duration) -> Self {
        self.open_for = period;
        self
    }

    /// How many trial calls go through while half-open (at least 1).
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.half_open_calls = n.max(1);
        self
    }

    /// Decides which errors count as failures.
    ///
    /// ```
    /// use tidemill::middleware::CircuitBreakerLayer;
    /// // Only timeouts say the dependency is in trouble.
    /// let layer = CircuitBreakerLayer::new()
    ///     .is_failure(|err| err.downcast_ref::<tidemill::middleware::TimeoutElapsed>().is_some());
    /// # drop(layer);
    /// ```
    pub fn is_failure(
        mut self,
        predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.is_failure = Some(Arc::new(predicate));
        self
    }

    /// Calls `hook` with the old and the new state whenever the state changes.
    pub fn on_state_change(
        mut self,
        hook: impl Fn(CircuitState, CircuitState) + Send + Sync + 'static,
    ) -> Self {
        self.on_state_change = Some(Arc::new(hook));
        self
    }

    fn counts(&self, err: &HandlerError) -> bool {
        match &self.is_failure {
            Some(p) => p(err),
            None => !matches!(err.disposition(), Disposition::Reject | Disposition::Drop),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker {
            inner,
            breaker: Arc::new(Breaker {
                config: self.clone(),
                state: Mutex::new(BreakerState {
                    state: CircuitState::Closed,
                    consecutive: 0,
                    recent: VecDeque::new(),
                    opened_at: None,
                    trials: 0,
                    trial_successes: 0,
                }),
            }),
        }
    }
}

/// The service of [`CircuitBreakerLayer`]. Clones share the breaker.
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::CircuitBreaker<_> = tidemill::middleware::CircuitBreakerLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> CircuitBreaker<S> {
    /// The breaker's state now.
    ///
    /// ```
    /// use tidemill::middleware::{CircuitBreakerLayer, CircuitState};
    /// use tower::Layer;
    /// let svc = CircuitBreakerLayer::new().layer(());
    /// assert_eq!(svc.state(), CircuitState::Closed);
    /// ```
    pub fn state(&self) -> CircuitState {
        let mut st = self.breaker.state.lock();
        self.breaker.refresh(&mut st);
        st.state
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.state.lock().state)
            .finish()
    }
}

struct Breaker {
    config: CircuitBreakerLayer,
    state: Mutex<BreakerState>,
}

struct BreakerState {
    state: CircuitState,
    consecutive: u32,
    /// Outcomes of the last calls while closed, true for a failure.
    recent: VecDeque<bool>,
    opened_at: Option<Instant>,
    trials: u32,
    trial_successes: u32,
}

/// Whether a call may go through, and as what.
enum Admission {
    Normal,
    Trial,
    Refused(Duration),
}

impl Breaker {
    fn set(&self, st: &mut BreakerState, to: CircuitState) {
        let from = st.state;
        if from == to {
            return;
        }
        st.state = to;
        match to {
            CircuitState::Open => st.opened_at = Some(Instant::now()),
            CircuitState::HalfOpen => {
                st.trials = 0;
                st.trial_successes = 0;
            }
            CircuitState::Closed => {
                st.consecutive = 0;
                st.recent.clear();
                st.opened_at = None;
            }
        }
        tracing::info!(?from, ?to, "circuit breaker state changed");
        if let Some(hook) = &self.config.on_state_change {
            hook(from, to);
        }
    }

    /// Half-opens an open breaker whose period is over.
    fn refresh(&self, st: &mut BreakerState) {
        if st.state == CircuitState::Open
            && st
                .opened_at
                .is_some_and(|at| at.elapsed() >= self.config.open_for)
        {
            self.set(st, CircuitState::HalfOpen);
        }
    }

    fn admit(&self) -> Admission {
        let mut st = self.state.lock();
        self.refresh(&mut st);
        match st.state {
            CircuitState::Closed => Admission::Normal,
            CircuitState::HalfOpen if st.trials < self.config.half_open_calls => {
                st.trials += 1;
                Admission::Trial
            }
            // The trials are under way; come back about when they should be done.
            CircuitState::HalfOpen => {
                Admission::Refused(self.config.open_for.min(Duration::from_secs(1)))
            }
            CircuitState::Open => {
                let since = st.opened_at.map_or(Duration::ZERO, |at| at.elapsed());
                Admission::Refused(self.config.open_for.saturating_sub(since))
            }
        }
    }

    fn record(&self, admission: &Admission, failed: bool) {
        let mut st = self.state.lock();
        match admission {
            Admission::Trial => {
                if st.state != CircuitState::HalfOpen {
                    return;
                }
                if failed {
                    self.set(&mut st, CircuitState::Open);
                } else {
                    st.trial_successes += 1;
                    if st.trial_successes >= self.config.half_open_calls {
                        self.set(&mut st, CircuitState::Closed);
                    }
                }
            }
            Admission::Normal => {
                if st.state != CircuitState::Closed {
                    return;
                }
                st.consecutive = if failed { st.consecutive + 1 } else { 0 };
                let mut open = st.consecutive >= self.config.consecutive_failures;
                if let Some((rate, window)) = self.config.failure_rate {
                    st.recent.push_back(failed);
                    while st.recent.len() > window {
                        st.recent.pop_front();
                    }
                    if st.recent.len() == window {
                        let failures = st.recent.iter().filter(|f| **f).count();
                        open |= failures as f64 >= rate * window as f64;
                    }
                }
                if open {
                    self.set(&mut st, CircuitState::Open);
                }
            }
            Admission::Refused(_) => {}
        }
    }
}

impl<S: Handler> Service<Message> for CircuitBreaker<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let admission = self.breaker.admit();
        if let Admission::Refused(retry_in) = admission {
            return Box::pin(futures::future::ready(Err(HandlerError::retry_after(
                retry_in,
                CircuitOpen { retry_in },
            ))));
        }
        let fut = self.inner.call(msg);
        let mut outcome = Outcome {
            breaker: self.breaker.clone(),
            admission: Some(admission),
        };
        Box::pin(async move {
            let result = fut.await;
            let failed = match &result {
                Ok(_) => false,
                Err(err) => outcome.breaker.config.counts(err),
            };
            outcome.record(failed);
            result
        })
    }
}

/// Records a call's outcome; a call dropped before it finished (cancelled, timed out outside the
/// breaker) counts as a failure, so a half-open breaker does not wait forever for its trial.
struct Outcome {
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
}

impl Outcome {
    fn record(&mut self, failed: bool) {
        if let Some(admission) = self.admission.take() {
            self.breaker.record(&admission, failed);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record(true);
    }
}
