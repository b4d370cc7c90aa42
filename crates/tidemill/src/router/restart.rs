//! [`RestartPolicy`]: what the router does when a handler's loop dies.

use std::time::Duration;

use crate::backoff::Backoff;

/// What happens when a handler's loop dies while the router runs (a panic outside any
/// recoverer, a subscription that ended, a service that can take no more messages). Either way
/// the death is logged at ERROR and reported as a [`RouterEvent`](super::RouterEvent), and the
/// deliveries it held are nacked, not lost.
///
/// A restart subscribes again. In a consumer group, what the dead loop held comes back to the
/// new subscription; a subscription without a group starts again where its subscriber's start
/// position says, and on brokers that keep such a subscription's position in memory only (the
/// in-process pub/sub, Redis without a group) what the old one had not yet delivered is gone.
///
/// The default restarts up to 5 times, waiting 100 ms doubling up to 10 s; the count starts
/// over once a loop has run for a minute. When the policy gives up, the router closes and
/// [`Router::run`](super::Router::run) returns
/// [`RouterError::HandlerFailed`](super::RouterError::HandlerFailed).
///
/// ```
/// use std::time::Duration;
/// use tidemill::router::{RestartPolicy, RouterConfig};
/// use tidemill::Backoff;
///
/// let strict = RouterConfig::default().restart_policy(RestartPolicy::Never);
/// let patient = RouterConfig::default().restart_policy(RestartPolicy::restart(
///     100,
///     Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
/// ));
/// # drop((strict, patient));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// The first death closes the router with an error.
    Never,
    /// Subscribe again after a backoff, up to `max_restarts` times in a row.
    Restart {
        /// How many restarts in a row before giving up.
        max_restarts: u32,
        /// The waits between them.
        backoff: Backoff,
    },
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self::restart(5, Backoff::default())
    }
}

/// A loop that ran this long without dying starts its restart count over.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl RestartPolicy {
    /// Restarts up to `max_restarts` times in a row, waiting as `backoff` says.
    pub fn restart(max_restarts: u32, backoff: Backoff) -> Self {
        Self::Restart {
            max_restarts,
            backoff,
        }
    }

    /// The wait before restart number `restarts` (0 for the first), or `None` to give up.
    pub(crate) fn next(&self, restarts: u32) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::Restart {
                max_restarts,
                backoff,
            } => (restarts < *max_restarts).then(|| backoff.delay(restarts)),
        }
    }
}
