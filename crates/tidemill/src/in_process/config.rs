//! [`InProcessConfig`] and [`WhenFull`]: the options of an in-process pub/sub.

use std::time::Duration;

/// What `publish` does when a subscription's buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until the consumer made room (back-pressure).
    #[default]
    Wait,
    /// Fail at once with [`Error::Full`]. Subscriptions before the full one in the fan-out may
    /// already hold the messages.
    Fail,
}

/// Options of an [`InProcessPubSub`].
///
/// ```
/// use std::time::Duration;
/// use tidemill::in_process::{InProcessConfig, WhenFull};
///
/// let config = InProcessConfig::default()
///     .buffer_size(64)
///     .persistent(true)
///     .when_full(WhenFull::Fail)
///     .nack_delay(Duration::from_millis(50))
///     .max_in_flight(8);
/// let pubsub = tidemill::InProcessPubSub::with_config(config);
/// # drop(pubsub);
/// ```
#[derive(Clone, Debug)]
pub struct InProcessConfig {
    pub(super) buffer_size: usize,
    pub(super) persistent: bool,
    pub(super) block_publish_until_acked: bool,
    pub(super) when_full: WhenFull,
    pub(super) nack_delay: Duration,
    pub(super) max_in_flight: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            buffer_size: 1024,
            persistent: false,
            block_publish_until_acked: false,
            when_full: WhenFull::Wait,
            nack_delay: crate::options::DEFAULT_NACK_DELAY,
            max_in_flight: 1,
        }
    }
}

impl InProcessConfig {
    /// How many messages each subscription (or group) buffers. Default 1024; at least 1.
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size.max(1);
        self
    }

    /// Keep every message published, and give the history to new subscriptions and new groups.
    /// Memory then grows with the history: it is meant for tests and short-lived processes.
    /// Default off.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// `publish` returns only when every subscription that got the messages acked them (or went
    /// away). Default off.
    pub fn block_publish_until_acked(mut self, block: bool) -> Self {
        self.block_publish_until_acked = block;
        self
    }

    /// What `publish` does when a buffer is full. Default [`WhenFull::Wait`].
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// How long a nacked message waits before it comes back. Default 100 ms ([`DEFAULT_NACK_DELAY`](crate::options::DEFAULT_NACK_DELAY)).
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// How many unsettled deliveries one subscription may hold. Default 1, which delivers in
    /// order even across plain nacks; raise it to match a router handler's concurrency. At least 1.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }
}
