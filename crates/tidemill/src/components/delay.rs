//! Delayed messages: metadata that asks the pub/sub to deliver a message no sooner than a
//! duration after publishing or a point in time, and a [`DelayedPublisher`] that sets it.
//!
//! Pub/subs that support delays honour it; the [`InProcessPubSub`](crate::InProcessPubSub) holds
//! such a message back until it is due, without holding back the others, and delivers it without
//! the delay metadata. Where both keys are set, [`DELAY_FOR_KEY`] wins (it does not depend on the
//! clocks of publisher and pub/sub agreeing).
//!
//! ```
//! use std::time::Duration;
//! use tidemill::components::delay::{self, Delay};
//! use tidemill::Message;
//!
//! let mut msg = Message::new("remind me");
//! Delay::For(Duration::from_secs(30)).apply(&mut msg);
//! assert_eq!(delay::delay_of(&msg), Some(Duration::from_secs(30)));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::Result;
use crate::message::Message;
use crate::pubsub::Publisher;

/// Metadata key: deliver no sooner than this many milliseconds after publishing.
///
/// ```
/// use tidemill::components::delay::{delay_of, DELAY_FOR_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_FOR_KEY, "1500");
/// assert_eq!(delay_of(&msg), Some(std::time::Duration::from_millis(1500)));
/// ```
pub const DELAY_FOR_KEY: &str = "tidemill_delay_for_ms";
/// Metadata key: deliver no sooner than this time, in milliseconds since the Unix epoch (UTC).
///
/// ```
/// use tidemill::components::delay::{delay_of, DELAY_UNTIL_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_UNTIL_KEY, "99999999999999");
/// assert!(delay_of(&msg).is_some()); // far in the future
/// ```
pub const DELAY_UNTIL_KEY: &str = "tidemill_delay_until_ms";

/// How long to hold a message back.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tidemill::components::delay::Delay;
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
    /// use tidemill::components::delay::{Delay, DELAY_FOR_KEY, DELAY_UNTIL_KEY};
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
/// use tidemill::components::delay::{delay_of, DELAY_UNTIL_KEY};
/// let msg = tidemill::Message::new("").with_metadata(DELAY_UNTIL_KEY, "0");
/// assert_eq!(delay_of(&msg), None); // long due
/// ```
pub fn delay_of(msg: &Message) -> Option<Duration> {
    let md = msg.metadata();
    if md.is_empty() {
        return None;
    }
    if let Some(ms) = md.get(DELAY_FOR_KEY).and_then(|v| v.parse::<u64>().ok()) {
        return (ms > 0).then(|| Duration::from_millis(ms));
    }
    let until = md.get(DELAY_UNTIL_KEY)?.parse::<u64>().ok()?;
    let until = UNIX_EPOCH + Duration::from_millis(until);
    until
        .duration_since(SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

/// Removes the delay metadata from `msg`; returns whether there was any.
///
/// ```
/// use std::time::Duration;
/// use tidemill::components::delay::{clear_delay, Delay};
/// let mut msg = tidemill::Message::new("");
/// Delay::For(Duration::from_secs(1)).apply(&mut msg);
/// assert!(clear_delay(&mut msg));
/// assert!(msg.metadata().is_empty());
/// ```
pub fn clear_delay(msg: &mut Message) -> bool {
    let md = msg.metadata();
    // Look before changing: changing shared metadata copies it.
    if !md.contains_key(DELAY_FOR_KEY) && !md.contains_key(DELAY_UNTIL_KEY) {
        return false;
    }
    let md = msg.metadata_mut();
    let a = md.remove(DELAY_FOR_KEY).is_some();
    let b = md.remove(DELAY_UNTIL_KEY).is_some();
    a || b
}

type DelayFn = Arc<dyn Fn(&Message) -> Option<Delay> + Send + Sync>;

/// A publisher decorator that delays messages: each message without delay metadata gets the
/// delay its function returns (none by default).
///
/// ```
/// use std::time::Duration;
/// use tidemill::components::delay::DelayedPublisher;
/// use tidemill::{InProcessPubSub, Message, Publisher};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let publisher = DelayedPublisher::new(InProcessPubSub::new())
///     .default_delay(Duration::from_secs(5));
/// publisher.publish("reminders", vec![Message::new("later")]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DelayedPublisher<P> {
    inner: P,
    delay: Option<DelayFn>,
}

impl<P: fmt::Debug> fmt::Debug for DelayedPublisher<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedPublisher")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<P: Publisher> DelayedPublisher<P> {
    /// Wraps `inner`; without a delay set it passes messages on as they are.
    pub fn new(inner: P) -> Self {
        Self { inner, delay: None }
    }

    /// Delays every message by `delay`.
    pub fn default_delay(self, delay: Duration) -> Self {
        self.delay_with(move |_| Some(Delay::For(delay)))
    }

    /// Delays each message by what `f` returns for it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidemill::components::delay::{Delay, DelayedPublisher};
    /// let publisher = DelayedPublisher::new(tidemill::InProcessPubSub::new()).delay_with(|msg| {
    ///     (msg.metadata().get("kind") == Some("reminder")).then(|| Delay::For(Duration::from_secs(60)))
    /// });
    /// # drop(publisher);
    /// ```
    pub fn delay_with(
        mut self,
        f: impl Fn(&Message) -> Option<Delay> + Send + Sync + 'static,
    ) -> Self {
        self.delay = Some(Arc::new(f));
        self
    }
}

#[async_trait]
impl<P: Publisher> Publisher for DelayedPublisher<P> {
    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        if let Some(f) = &self.delay {
            for msg in &mut messages {
                let md = msg.metadata();
                if md.contains_key(DELAY_FOR_KEY) || md.contains_key(DELAY_UNTIL_KEY) {
                    continue;
                }
                if let Some(delay) = f(msg) {
                    delay.apply(msg);
                }
            }
        }
        self.inner.publish(topic, messages).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
