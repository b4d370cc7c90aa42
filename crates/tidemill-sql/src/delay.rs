//! Delayed messages: the core's delay metadata
//! ([`DELAY_FOR_KEY`](tidemill::components::delay::DELAY_FOR_KEY), milliseconds after
//! publishing, or [`DELAY_UNTIL_KEY`](tidemill::components::delay::DELAY_UNTIL_KEY), Unix
//! milliseconds; set them with [`Delay`](tidemill::components::delay::Delay) or a
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
//! use tidemill::components::delay::Delay;
//!
//! let mut msg = tidemill::Message::new("remind me");
//! Delay::For(Duration::from_secs(30)).apply(&mut msg);
//! // publish as usual: subscribers see it in 30 s
//! ```

use tidemill::components::delay::{DELAY_FOR_KEY, DELAY_UNTIL_KEY};
use tidemill::Metadata;

/// The row's `deliver_at` (Unix ms) for a message published at `now`, and whether the
/// metadata carried delay keys. [`DELAY_FOR_KEY`] wins over [`DELAY_UNTIL_KEY`], as in the core;
/// malformed values are ignored.
pub(crate) fn deliver_at(metadata: &Metadata, now: i64) -> (i64, bool) {
    if metadata.is_empty() {
        return (now, false);
    }
    let has = metadata.contains_key(DELAY_FOR_KEY) || metadata.contains_key(DELAY_UNTIL_KEY);
    if let Some(ms) = metadata
        .get(DELAY_FOR_KEY)
        .and_then(|v| v.parse::<i64>().ok())
    {
        return (now + ms.max(0), has);
    }
    if let Some(at) = metadata
        .get(DELAY_UNTIL_KEY)
        .and_then(|v| v.parse::<i64>().ok())
    {
        return (at.max(now), has);
    }
    (now, has)
}
