//! Optimistic concurrency for projections: apply an event only if it is the next version.
//!
//! Events that change one entity carry the entity's version after the change. A projection
//! stores the version it has seen, and applies an event only when the event's version is the
//! next one. An event that comes too early (its predecessor is still on its way, say on another
//! topic or partition) is handed back to the broker with
//! [`HandlerError::retry_after`], and comes back later; an event already applied is skipped.

use std::time::Duration;

use tidemill::HandlerError;

/// An event that carries the version of the entity it changed.
///
/// ```
/// use tidemill_cqrs::Versioned;
///
/// struct EmployeeLeft { employee: u64, version: u64 }
/// impl Versioned for EmployeeLeft {
///     fn version(&self) -> u64 { self.version }
/// }
/// assert_eq!(EmployeeLeft { employee: 1, version: 2 }.version(), 2);
/// ```
pub trait Versioned {
    /// The entity's version after this event.
    fn version(&self) -> u64;
}

/// What to do with an event whose version was checked.
///
/// ```
/// use tidemill_cqrs::{VersionCheck, VersionGuard};
/// let guard = VersionGuard::new();
/// assert_eq!(guard.check(4, 5).unwrap(), VersionCheck::Apply);
/// assert_eq!(guard.check(5, 5).unwrap(), VersionCheck::AlreadyApplied);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionCheck {
    /// It is the next version: apply it, then store its version.
    Apply,
    /// It was applied already (a redelivery): skip it.
    AlreadyApplied,
}

/// An event came before the one it follows.
///
/// ```
/// let err = tidemill_cqrs::VersionConflict { current: 1, found: 3 };
/// assert_eq!(err.to_string(), "expected version 2, got 3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected version {}, got {found}", current + 1)]
pub struct VersionConflict {
    /// The version the projection has.
    pub current: u64,
    /// The event's version.
    pub found: u64,
}

/// Checks event versions against a projection's, and says when an early event should come
/// back.
///
/// ```
/// use std::time::Duration;
/// use tidemill::router::Disposition;
/// use tidemill_cqrs::{VersionCheck, VersionGuard};
///
/// let guard = VersionGuard::new().retry_after(Duration::from_millis(50));
/// assert_eq!(guard.check(1, 2).unwrap(), VersionCheck::Apply);
/// assert_eq!(guard.check(2, 2).unwrap(), VersionCheck::AlreadyApplied);
/// let early = guard.check(1, 3).unwrap_err();
/// assert_eq!(early.disposition(), Disposition::RetryAfter(Duration::from_millis(50)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct VersionGuard {
    retry_after: Duration,
}

impl Default for VersionGuard {
    fn default() -> Self {
        Self {
            retry_after: Duration::from_millis(100),
        }
    }
}

impl VersionGuard {
    /// A guard with the default delay (100 ms).
    ///
    /// ```
    /// let guard = tidemill_cqrs::VersionGuard::new();
    /// # drop(guard);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// How long an early event waits before it comes back. Default 100 ms.
    ///
    /// ```
    /// let guard = tidemill_cqrs::VersionGuard::new().retry_after(std::time::Duration::from_secs(1));
    /// # drop(guard);
    /// ```
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }

    /// Checks an event of version `incoming` against the projection's `current` version. An
    /// early event is an error whose disposition is [`RetryAfter`] the delay, with a
    /// [`VersionConflict`] as its cause.
    ///
    /// [`RetryAfter`]: tidemill::router::Disposition::RetryAfter
    ///
    /// ```
    /// let guard = tidemill_cqrs::VersionGuard::new();
    /// assert!(guard.check(0, 2).is_err()); // version 1 has not been applied yet
    /// ```
    pub fn check(&self, current: u64, incoming: u64) -> Result<VersionCheck, HandlerError> {
        if incoming <= current {
            Ok(VersionCheck::AlreadyApplied)
        } else if incoming == current + 1 {
            Ok(VersionCheck::Apply)
        } else {
            Err(HandlerError::retry_after(
                self.retry_after,
                VersionConflict {
                    current,
                    found: incoming,
                },
            ))
        }
    }

    /// [`check`](Self::check) with the event's own version.
    ///
    /// ```
    /// # use tidemill_cqrs::{VersionCheck, VersionGuard, Versioned};
    /// struct Renamed { version: u64 }
    /// impl Versioned for Renamed { fn version(&self) -> u64 { self.version } }
    /// let check = VersionGuard::new().check_event(0, &Renamed { version: 1 }).unwrap();
    /// assert_eq!(check, VersionCheck::Apply);
    /// ```
    pub fn check_event<E: Versioned + ?Sized>(
        &self,
        current: u64,
        event: &E,
    ) -> Result<VersionCheck, HandlerError> {
        self.check(current, event.version())
    }
}
