//! A [`DelayedPublisher`] that sets delay metadata on the messages it publishes. The metadata
//! itself (keys, [`Delay`], the parser) is part of the message contract, in
//! [`tidemill::delay`](crate::delay); its items are re-exported here.
//!
//! Pub/subs that support delays honour it; the [`InProcessPubSub`](crate::InProcessPubSub) holds
//! such a message back until it is due, without holding back the others, and delivers it without
//! the delay metadata.
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
use std::time::Duration;

use async_trait::async_trait;

use crate::delay::has_delay_keys;
pub use crate::delay::{clear_delay, delay_of, Delay, DELAY_FOR_KEY, DELAY_UNTIL_KEY};
use crate::error::Result;
use crate::message::Message;
use crate::pubsub::Publisher;

type DelayFn = Arc<dyn Fn(&Message) -> Option<Delay> + Send + Sync>;

/// A publisher decorator that delays messages: each message without delay metadata gets the
/// delay its function returns (none by default).
///
/// ```
/// use std::time::Duration;
/// use tidemill::components::delay::DelayedPublisher;
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let publisher = DelayedPublisher::new(InProcessPubSub::new())
///     .default_delay(Duration::from_secs(5));
/// publisher.publish_one("reminders", Message::new("later")).await?;
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
                if has_delay_keys(msg.metadata()) {
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
