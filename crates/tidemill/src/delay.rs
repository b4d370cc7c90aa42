//! Delay metadata, part of the message contract: the keys that ask a pub/sub to deliver a
//! message no sooner than a duration after publishing or a point in time, and the one parser of
//! them that every pub/sub supporting delays uses ([`requested_delay`]).
//!
//! Pub/subs that support delays honour it (the [`InProcessPubSub`](crate::InProcessPubSub) and
//! `tidemill-sql`); they deliver the message without the delay metadata. Where both keys are set,
//! [`DELAY_FOR_KEY`] wins (it does not depend on the clocks of publisher and pub/sub agreeing).
//! Malformed values are ignored. A [`DelayedPublisher`](crate::components::delay::DelayedPublisher)
//! sets the metadata on every message it publishes.
//!
//! ```
//! use std::time::Duration;
//! use tidemill::delay::{self, Delay};
//! use tidemill::Message;
//!
//! let mut msg = Message::new("remind me");
//! Delay::For(Duration::from_secs(30)).apply(&mut msg);
//! assert_eq!(delay::delay_of(&msg), Some(Duration::from_secs(30)));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::{Message, Metadata};

/// Metadata key: deliver no sooner than this many milliseconds after publishing.
///
/// ```
/// use tidemill::delay::{delay_of, DELAY_FOR_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_FOR_KEY, "1500");
/// assert_eq!(delay_of(&msg), Some(std::time::Duration::from_millis(1500)));
/// ```
pub const DELAY_FOR_KEY: &str = "tidemill_delay_for_ms";
/// Metadata key: deliver no sooner than this time, in milliseconds since the Unix epoch (UTC).
///
/// ```
/// use tidemill::delay::{delay_of, DELAY_UNTIL_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_UNTIL_KEY, "99999999999999");
/// assert!(delay_of(&msg).is_some()); // far in the future
/// ```
pub const DELAY_UNTIL_KEY: &str = "tidemill_delay_until_ms";

/// How long to hold a message back.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tidemill::delay::Delay;
/// let soon = Delay::For(Duration::from_secs(10));
/// let at_noon = Delay::Until(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
/// assert_ne!(soon, at_noon);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delay {
    /// For this long after publishing.
    For(Duration),
    /// Until this time.
    Until(SystemTime),
}

impl Delay {
    /// Sets the delay metadata on `msg`: for [`Delay::For`] both keys (the time computed from
    /// now), for [`Delay::Until`] the time only.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tidemill::delay::{Delay, DELAY_FOR_KEY, DELAY_UNTIL_KEY};
    ///
    /// let mut msg = tidemill::Message::new("");
    /// Delay::Until(SystemTime::UNIX_EPOCH + Duration::from_secs(1)).apply(&mut msg);
    /// assert_eq!(msg.metadata().get(DELAY_UNTIL_KEY), Some("1000"));
    /// assert_eq!(msg.metadata().get(DELAY_FOR_KEY), None);
    /// ```
    pub fn apply(self, msg: &mut Message) {
        let md = msg.metadata_mut();
        match self {
            Delay::For(d) => {
                md.set(DELAY_FOR_KEY, d.as_millis().to_string());
                md.set(
                    DELAY_UNTIL_KEY,
                    unix_millis(SystemTime::now() + d).to_string(),
                );
            }
            Delay::Until(t) => {
                md.remove(DELAY_FOR_KEY);
                md.set(DELAY_UNTIL_KEY, unix_millis(t).to_string());
            }
        }
    }
}

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// How long from now `msg` asks to be held back, if it carries delay metadata and is not yet
/// due. Malformed values are ignored.
///
/// ```
/// use tidemill::delay::{delay_of, DELAY_UNTIL_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_UNTIL_KEY, "0");
/// assert_eq!(delay_of(&msg), None); // long due
/// ```
pub fn delay_of(msg: &Message) -> Option<Duration> {
    let remaining = match requested_delay(msg.metadata())? {
        Delay::For(d) => d,
        Delay::Until(until) => until.duration_since(SystemTime::now()).ok()?,
    };
    (!remaining.is_zero()).then_some(remaining)
}

/// The delay `metadata` asks for: [`DELAY_FOR_KEY`] if it holds a number of milliseconds, else
/// [`DELAY_UNTIL_KEY`] if it holds a time; `None` if neither is there or well-formed. This is
/// the one reading of the delay keys; a pub/sub turns it into its own form (a timer, a column).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use tidemill::delay::{requested_delay, Delay, DELAY_FOR_KEY, DELAY_UNTIL_KEY};
/// use tidemill::Metadata;
///
/// let mut md = Metadata::new();
/// assert_eq!(requested_delay(&md), None);
/// md.set(DELAY_UNTIL_KEY, "1000");
/// assert_eq!(requested_delay(&md), Some(Delay::Until(UNIX_EPOCH + Duration::from_secs(1))));
/// md.set(DELAY_FOR_KEY, "250");
/// assert_eq!(requested_delay(&md), Some(Delay::For(Duration::from_millis(250))));
/// md.set(DELAY_FOR_KEY, "soon");
/// assert_eq!(requested_delay(&md), Some(Delay::Until(UNIX_EPOCH + Duration::from_secs(1))));
/// ```
pub fn requested_delay(metadata: &Metadata) -> Option<Delay> {
    if metadata.is_empty() {
        return None;
    }
    if let Some(ms) = metadata
        .get(DELAY_FOR_KEY)
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Delay::For(Duration::from_millis(ms)));
    }
    let until = metadata.get(DELAY_UNTIL_KEY)?.parse::<u64>().ok()?;
    Some(Delay::Until(UNIX_EPOCH + Duration::from_millis(until)))
}

/// Whether `metadata` holds either delay key, well-formed or not.
///
/// ```
/// use tidemill::delay::{has_delay_keys, DELAY_FOR_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_FOR_KEY, "not a number");
/// assert!(has_delay_keys(msg.metadata()));
/// ```
pub fn has_delay_keys(metadata: &Metadata) -> bool {
    metadata.contains_key(DELAY_FOR_KEY) || metadata.contains_key(DELAY_UNTIL_KEY)
}

/// Removes the delay metadata from `msg`; returns whether there was any.
///
/// ```
/// use std::time::Duration;
/// use tidemill::delay::{clear_delay, Delay};
/// let mut msg = tidemill::Message::new("");
/// Delay::For(Duration::from_secs(1)).apply(&mut msg);
/// assert!(clear_delay(&mut msg));
/// assert!(msg.metadata().is_empty());
/// ```
pub fn clear_delay(msg: &mut Message) -> bool {
    // Look before changing: changing shared metadata copies it.
    if !has_delay_keys(msg.metadata()) {
        return false;
    }
    let md = msg.metadata_mut();
    let a = md.remove(DELAY_FOR_KEY).is_some();
    let b = md.remove(DELAY_UNTIL_KEY).is_some();
    a || b
}
