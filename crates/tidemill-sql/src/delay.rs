//! Delayed messages: the core's delay metadata
//! ([`DELAY_FOR_KEY`](tidemill::delay::DELAY_FOR_KEY), milliseconds after
//! publishing, or [`DELAY_UNTIL_KEY`](tidemill::delay::DELAY_UNTIL_KEY), Unix
//! milliseconds; set them with [`Delay`](tidemill::delay::Delay) or a
//! [`DelayedPublisher`](tidemill::components::delay::DelayedPublisher)) is turned by the
//! publisher into the row's `deliver_at`, and the subscriber delivers no sooner. The delivered
//! message no longer carries the delay keys.
//!
//! In [`Log`](crate::ConsumeMode::Log) mode a delayed message also holds back the messages after
//! it in its topic (order is kept); in [`Queue`](crate::ConsumeMode::Queue) mode each row waits
//! on its own.
//!
//! ```
//! use std::time::Duration;
//! use tidemill::delay::Delay;
//!
//! let mut msg = tidemill::Message::new("remind me");
//! Delay::For(Duration::from_secs(30)).apply(&mut msg);
//! // publish as usual: subscribers see it in 30 s
//! ```

use std::time::UNIX_EPOCH;

use tidemill::delay::{has_delay_keys, requested_delay, Delay};
use tidemill::Metadata;

/// The row's `deliver_at` (Unix ms) for a message published at `now`, and whether the
/// metadata carried delay keys (to be removed from the stored message). The core's
/// [`requested_delay`] reads the keys; a time in the past means now.
pub(crate) fn deliver_at(metadata: &Metadata, now: i64) -> (i64, bool) {
    let at = match requested_delay(metadata) {
        None => now,
        Some(Delay::For(d)) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        Some(Delay::Until(t)) => {
            let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            i64::try_from(ms).unwrap_or(i64::MAX).max(now)
        }
    };
    (at, has_delay_keys(metadata))
}
