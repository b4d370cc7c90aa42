//! [`InProcessPubSub`]: a pub/sub inside one process, for tests, demos and wiring components of one
//! application together.
//!
//! How it behaves:
//!
//! | question | answer |
//! | --- | --- |
//! | who gets a message | every subscription of the topic without a group, and one member of every group |
//! | no subscriber | the message is dropped, unless the pub/sub is persistent (then new subscribers and new groups get the history) |
//! | consumers slower than producers | each subscription (or group) buffers up to `buffer_size` messages; then `publish` waits ([`WhenFull::Wait`], the default) or fails with [`Error::Full`] ([`WhenFull::Fail`]) |
//! | in flight | each subscription holds at most `max_in_flight` unsettled deliveries (default 1, which keeps order) |
//! | nack | the message comes back first, after the nack delay (default 100 ms), so a nack loop never spins a core; the messages behind it wait, which keeps order |
//! | nack with a delay (`nack_after`, a handler's `RetryAfter`) | the message is parked until due while the messages behind it go on; then it comes back before them |
//! | delay metadata ([`delay`](crate::delay)) | the message is parked until due without holding back the others, and delivered without the delay metadata; parked messages count against `buffer_size` |
//! | groups | a group lives as long as the pub/sub: with no member it keeps buffering, then applies `WhenFull` |
//! | close | streams end, publishing fails with `Closed`, buffered messages are dropped |
//!
//! Inside: the options (`config`), a registry of topics that fans a publish out to one queue per
//! subscription or group (`topic`), the queue that buffers and parks messages (`queue`), the
//! stream reading a queue (`subscription`) within its window of unsettled deliveries (`window`),
//! the settlement of those deliveries (`acker`), and the count of unsettled copies a blocking
//! publish waits for (`ack_wait`).

mod ack_wait;
mod acker;
mod config;
mod queue;
mod subscription;
mod topic;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use self::ack_wait::AckWait;
pub use self::config::{InProcessConfig, WhenFull};
use self::queue::Entry;
use self::subscription::Reader;
use self::topic::Shared;
use self::window::Window;
use crate::error::{validate_topic, Error, Result};
use crate::message::Message;
use crate::pubsub::{Publisher, SubscribeInitializer, Subscriber, Subscription};

/// A pub/sub inside one process. Cloning gives another handle on the same pub/sub.
///
/// It is both [`Publisher`] and [`Subscriber`]; [`InProcessPubSub::with_group`] gives a handle
/// whose subscriptions join a consumer group. See the [module docs](crate::in_process) for how
/// it behaves.
///
/// ```
/// use futures::StreamExt;
/// use tidemill::{InProcessPubSub, Message, Publisher, Subscriber};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let billing = pubsub.with_group("billing");
/// let mut a = billing.subscribe("orders").await?;
/// let mut b = billing.subscribe("orders").await?;
/// pubsub.publish("orders", vec![Message::new("1"), Message::new("2")]).await?;
/// // The two members of the group share the messages.
/// let (x, y) = (a.next().await.unwrap()?, b.next().await.unwrap()?);
/// assert_ne!(x.message().id(), y.message().id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InProcessPubSub {
    shared: Arc<Shared>,
    group: Option<Arc<str>>,
}

impl Default for InProcessPubSub {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InProcessPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessPubSub")
            .field("config", &self.shared.config)
            .field("group", &self.group)
            .finish()
    }
}

impl InProcessPubSub {
    /// A pub/sub with the default options.
    pub fn new() -> Self {
        Self::with_config(InProcessConfig::default())
    }

    /// A pub/sub with the given options.
    pub fn with_config(config: InProcessConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                topics: Mutex::new(HashMap::default()),
                closed: AtomicBool::new(false),
            }),
            group: None,
        }
    }

    /// A handle on the same pub/sub whose subscriptions join consumer group `group`.
    pub fn with_group(&self, group: impl Into<Arc<str>>) -> Self {
        Self {
            shared: self.shared.clone(),
            group: Some(group.into()),
        }
    }

    /// The options in force.
    pub fn config(&self) -> &InProcessConfig {
        &self.shared.config
    }
}

#[async_trait]
impl Publisher for InProcessPubSub {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        validate_topic(topic)?;
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("in-process pub/sub"));
        }
        if messages.is_empty() {
            return Ok(());
        }
        let targets = {
            let mut topics = shared.topics.lock();
            // Looked up by `&str`: a topic's name is copied only the first time.
            let t = match topics.get_mut(topic) {
                Some(t) => t,
                None => topics.entry(topic.into()).or_default(),
            };
            if shared.config.persistent {
                t.history.extend(messages.iter().cloned());
            }
            t.targets.clone()
        };
        let Some((last, rest)) = targets.split_last() else {
            return Ok(());
        };
        let wait = shared
            .config
            .block_publish_until_acked
            .then(|| Arc::new(AckWait::default()));
        for queue in rest {
            let entries = messages
                .iter()
                .map(|m| Entry::new(m.clone(), &wait))
                .collect();
            queue.push(topic, entries, &shared.config).await?;
        }
        let entries = messages.into_iter().map(|m| Entry::new(m, &wait)).collect();
        last.push(topic, entries, &shared.config).await?;
        if let Some(wait) = wait {
            wait.wait().await;
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shared.close();
        Ok(())
    }

    fn instance_id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }
}

#[async_trait]
impl Subscriber for InProcessPubSub {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        validate_topic(topic)?;
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("in-process pub/sub"));
        }
        let queue = shared.queue_for(topic, self.group.as_ref());
        let reader = Reader {
            shared: shared.clone(),
            topic: topic.into(),
            group: self.group.clone(),
            queue,
            window: Arc::new(Window::new(shared.config.max_in_flight)),
        };
        let stream = futures::stream::unfold(reader, |reader| async move {
            let delivery = reader.next_delivery().await?;
            Some((Ok(delivery), reader))
        });
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        self.shared.close();
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }

    fn max_in_flight(&self) -> Option<usize> {
        Some(self.shared.config.max_in_flight)
    }

    fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Dead letters go to the dead-letter topic of this pub/sub.
    fn dead_letter_publisher(&self) -> Option<Arc<dyn Publisher>> {
        Some(Arc::new(Self {
            shared: self.shared.clone(),
            group: None,
        }))
    }

    /// Handles on one pub/sub in one group are one subscriber; each group is another.
    fn instance_id(&self) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.group.hash(&mut h);
        (Arc::as_ptr(&self.shared) as usize) ^ (h.finish() as usize)
    }
}

#[async_trait]
impl SubscribeInitializer for InProcessPubSub {
    /// Creates the topic; on a handle with a group, also the group, which from then on keeps the
    /// messages published before its first member subscribes.
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        let mut topics = self.shared.topics.lock();
        let t = topics.entry(topic.into()).or_default();
        if let Some(group) = &self.group {
            t.group(group, &self.shared.config);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
