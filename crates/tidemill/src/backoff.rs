//! [`Backoff`]: exponential waits with jitter, shared by every part that retries (router
//! restarts, output publishing, adapters' reconnects).

use std::time::Duration;

/// Exponential backoff: the first wait is `initial`, each next one `multiplier` times the last,
/// capped at `max`; `jitter` (0 to 1) takes up to that fraction off each wait at random, so many
/// clients retrying together spread out.
///
/// ```
/// use std::time::Duration;
/// use tidemill::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(0.0);
/// assert_eq!(backoff.delay(0), Duration::from_millis(100));
/// assert_eq!(backoff.delay(1), Duration::from_millis(200));
/// assert_eq!(backoff.delay(10), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, with 50% jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// Waits from `initial` doubling up to `max`, with 50% jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// How much each wait grows over the last (at least 1). Default 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// The fraction (0 to 1) that may be taken off each wait at random. Default 0.5.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The first wait.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait before retry number `attempt` (0 for the first retry), jitter applied.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = tidemill::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    /// let wait = backoff.delay(0);
    /// assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(64) as i32);
        let base = self.initial.mul_f64(factor.min(1e9)).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let keep = 1.0 - self.jitter * rand::random::<f64>();
        base.mul_f64(keep).max(Duration::from_millis(1).min(base))
    }
}

/// A [`Backoff`] with its count of attempts, for a loop that retries until it succeeds (a
/// reconnect): each failure waits longer, a success starts over.
///
/// ```
/// use std::time::Duration;
/// use tidemill::backoff::Retries;
/// use tidemill::Backoff;
///
/// let mut retries = Retries::new(Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).jitter(0.0));
/// assert_eq!(retries.next_delay(), Duration::from_millis(10));
/// assert_eq!(retries.next_delay(), Duration::from_millis(20));
/// retries.reset();
/// assert_eq!(retries.next_delay(), Duration::from_millis(10));
/// ```
#[derive(Clone, Debug)]
pub struct Retries {
    backoff: Backoff,
    attempt: u32,
}

impl Retries {
    /// Starts counting at the first attempt.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            attempt: 0,
        }
    }

    /// The wait before the next attempt; each call counts one more.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Starts over, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
