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
//! | nack | the message comes back first, after the nack delay (default 10 ms), so a nack loop never spins a core; the messages behind it wait, which keeps order |
//! | nack with a delay (`nack_after`, a handler's `RetryAfter`) | the message is parked until due while the messages behind it go on; then it comes back before them |
//! | delay metadata ([`delay`](crate::delay)) | the message is parked until due without holding back the others, and delivered without the delay metadata; parked messages count against `buffer_size` |
//! | groups | a group lives as long as the pub/sub: with no member it keeps buffering, then applies `WhenFull` |
//! | close | streams end, publishing fails with `Closed`, buffered messages are dropped |

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::delay;
use crate::error::{validate_topic, Error, Result};
use crate::message::Message;
use crate::pubsub::{
    Acker, Delivery, Publisher, Settle, Settlement, SubscribeInitializer, Subscriber, Subscription,
};

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
    buffer_size: usize,
    persistent: bool,
    block_publish_until_acked: bool,
    when_full: WhenFull,
    nack_delay: Duration,
    max_in_flight: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            buffer_size: 1024,
            persistent: false,
            block_publish_until_acked: false,
            when_full: WhenFull::Wait,
            nack_delay: Duration::from_millis(10),
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

    /// How long a nacked message waits before it comes back. Default 10 ms.
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
                topics: Mutex::new(HashMap::new()),
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
            let t = topics.entry(topic.into()).or_default();
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

struct Shared {
    config: InProcessConfig,
    topics: Mutex<HashMap<Arc<str>, Topic>>,
    closed: AtomicBool,
}

impl Shared {
    /// The queue a new subscription reads: its own, or its group's.
    fn queue_for(&self, topic: &str, group: Option<&Arc<str>>) -> Arc<Queue> {
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.into()).or_default();
        let queue = match group {
            Some(group) => t.group(group, &self.config),
            None => {
                let queue = Arc::new(Queue::new(self.config.buffer_size));
                queue
                    .state
                    .lock()
                    .items
                    .extend(t.history.iter().cloned().map(Entry::plain));
                t.subscriptions.push(queue.clone());
                t.rebuild_targets();
                queue
            }
        };
        queue.members.fetch_add(1, Ordering::Relaxed);
        queue
    }

    fn unsubscribe(&self, topic: &str, queue: &Arc<Queue>, grouped: bool) {
        if queue.members.fetch_sub(1, Ordering::Relaxed) > 1 || grouped {
            return;
        }
        if let Some(t) = self.topics.lock().get_mut(topic) {
            t.subscriptions.retain(|q| !Arc::ptr_eq(q, queue));
            t.rebuild_targets();
        }
        queue.close();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let topics = std::mem::take(&mut *self.topics.lock());
        for topic in topics.values() {
            for queue in topic.targets.iter() {
                queue.close();
            }
        }
    }
}

#[derive(Default)]
struct Topic {
    subscriptions: Vec<Arc<Queue>>,
    groups: HashMap<Arc<str>, Arc<Queue>>,
    /// Every subscription and group queue: what a publish fans out to.
    targets: Arc<[Arc<Queue>]>,
    history: Vec<Message>,
}

impl Topic {
    fn group(&mut self, group: &Arc<str>, config: &InProcessConfig) -> Arc<Queue> {
        if let Some(queue) = self.groups.get(group) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::new(config.buffer_size));
        queue
            .state
            .lock()
            .items
            .extend(self.history.iter().cloned().map(Entry::plain));
        self.groups.insert(group.clone(), queue.clone());
        self.rebuild_targets();
        queue
    }

    fn rebuild_targets(&mut self) {
        self.targets = self
            .subscriptions
            .iter()
            .chain(self.groups.values())
            .cloned()
            .collect();
    }
}

/// Waits, for `block_publish_until_acked`, until every copy of a publish was settled or dropped.
#[derive(Default)]
struct AckWait {
    remaining: AtomicUsize,
    done: Notify,
}

impl AckWait {
    async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One outstanding copy for an [`AckWait`]; dropping it (on ack, or with its queue) counts it off.
struct AckToken(Arc<AckWait>);

impl AckToken {
    fn new(wait: &Arc<AckWait>) -> Self {
        wait.remaining.fetch_add(1, Ordering::AcqRel);
        Self(wait.clone())
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

struct Entry {
    message: Message,
    _token: Option<AckToken>,
}

impl Entry {
    fn new(message: Message, wait: &Option<Arc<AckWait>>) -> Self {
        Self {
            message,
            _token: wait.as_ref().map(AckToken::new),
        }
    }

    fn plain(message: Message) -> Self {
        Self {
            message,
            _token: None,
        }
    }
}

/// The buffer of one subscription or one group.
struct Queue {
    capacity: usize,
    members: AtomicUsize,
    state: Mutex<QueueState>,
    readable: Notify,
    writable: Notify,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Entry>,
    /// Nacked messages with the time they are due; they go before `items`, in nack order.
    redeliveries: VecDeque<(Instant, Entry)>,
    /// Delayed messages and messages nacked with a delay, earliest due first; they go before
    /// `items` once due and hold nothing back until then.
    parked: BinaryHeap<Parked>,
    /// Orders parked messages due at the same time by arrival.
    parked_seq: u64,
    readers_waiting: bool,
    writers_waiting: bool,
    closed: bool,
}

/// A message held back until `due`.
struct Parked {
    due: Instant,
    seq: u64,
    entry: Entry,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Parked {}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Parked {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl QueueState {
    fn park(&mut self, due: Instant, entry: Entry) {
        let seq = self.parked_seq;
        self.parked_seq += 1;
        self.parked.push(Parked { due, seq, entry });
    }

    /// Adds a published entry: parked if its metadata asks for a delay, queued otherwise.
    fn admit(&mut self, mut entry: Entry) {
        if entry.message.metadata().is_empty() {
            self.items.push_back(entry);
            return;
        }
        match delay::delay_of(&entry.message) {
            Some(wait) => {
                delay::clear_delay(&mut entry.message);
                self.park(Instant::now() + wait, entry);
            }
            None => {
                // A delay long past is spent: deliver without it.
                delay::clear_delay(&mut entry.message);
                self.items.push_back(entry);
            }
        }
    }
}

enum Next {
    Entry(Entry),
    WaitUntil(Instant),
    Wait,
    Closed,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            members: AtomicUsize::new(0),
            state: Mutex::new(QueueState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// Adds `n` entries, waiting for room or failing as configured. Returns early, without
    /// error, if the queue is closed because its subscription went away.
    async fn push(
        &self,
        topic: &str,
        mut entries: Vec<Entry>,
        config: &InProcessConfig,
    ) -> Result<()> {
        let n = entries.len();
        let mut entries = entries.drain(..).peekable();
        loop {
            let writable = self.writable.notified();
            let wake_readers;
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Ok(());
                }
                let held = state.items.len() + state.parked.len();
                if config.when_full == WhenFull::Fail && held + n > self.capacity {
                    return Err(Error::Full {
                        topic: topic.to_owned(),
                        capacity: self.capacity,
                    });
                }
                let room = self.capacity.saturating_sub(held);
                for entry in entries.by_ref().take(room) {
                    state.admit(entry);
                }
                wake_readers = std::mem::take(&mut state.readers_waiting);
                if entries.peek().is_some() {
                    state.writers_waiting = true;
                }
            }
            if wake_readers {
                self.readable.notify_waiters();
            }
            if entries.peek().is_none() {
                return Ok(());
            }
            writable.await;
        }
    }

    fn poll_next(&self) -> Next {
        let mut state = self.state.lock();
        if state.closed {
            return Next::Closed;
        }
        if let Some((due, _)) = state.redeliveries.front() {
            let due = *due;
            if due <= Instant::now() {
                let (_, entry) = state.redeliveries.pop_front().expect("checked above");
                return Next::Entry(entry);
            }
            state.readers_waiting = true;
            return Next::WaitUntil(due);
        }
        let parked_due = state.parked.peek().map(|p| p.due);
        let entry = match parked_due {
            Some(due) if due <= Instant::now() => state.parked.pop().map(|p| p.entry),
            _ => state.items.pop_front(),
        };
        match entry {
            Some(entry) => {
                // Hysteresis: wake a waiting publisher once half the buffer is free, not on
                // every message, so producer and consumer do not ping-pong.
                if state.writers_waiting
                    && state.items.len() + state.parked.len() <= self.capacity / 2
                {
                    state.writers_waiting = false;
                    drop(state);
                    self.writable.notify_waiters();
                }
                Next::Entry(entry)
            }
            None => {
                state.readers_waiting = true;
                match parked_due {
                    Some(due) => Next::WaitUntil(due),
                    None => Next::Wait,
                }
            }
        }
    }

    async fn pop(&self) -> Option<Entry> {
        loop {
            let readable = self.readable.notified();
            match self.poll_next() {
                Next::Entry(entry) => return Some(entry),
                Next::Closed => return None,
                Next::Wait => readable.await,
                Next::WaitUntil(due) => {
                    tokio::select! {
                        _ = readable => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
            }
        }
    }

    fn redeliver(&self, entry: Entry, delay: Duration) {
        let wake = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state
                .redeliveries
                .push_back((Instant::now() + delay, entry));
            std::mem::take(&mut state.readers_waiting)
        };
        if wake {
            self.readable.notify_waiters();
        }
    }

    /// Parks a message nacked with an explicit delay: it holds nothing back while it waits.
    fn park_nacked(&self, entry: Entry, delay: Duration) {
        let wake = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.park(Instant::now() + delay, entry);
            std::mem::take(&mut state.readers_waiting)
        };
        if wake {
            self.readable.notify_waiters();
        }
    }

    fn close(&self) {
        let dropped = {
            let mut state = self.state.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.items),
                std::mem::take(&mut state.redeliveries),
                std::mem::take(&mut state.parked),
            )
        };
        drop(dropped);
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }
}

/// How many deliveries of one subscription are unsettled, and the waker of a stream waiting for
/// one to settle.
struct Window {
    in_flight: AtomicUsize,
    max: usize,
    waker: AtomicWaker,
}

impl Window {
    fn new(max: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max,
            waker: AtomicWaker::new(),
        }
    }

    fn poll_acquire(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Only the subscription's stream acquires, so load-then-add does not race with itself.
        if self.in_flight.load(Ordering::Acquire) < self.max {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.in_flight.load(Ordering::Acquire) < self.max {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == self.max {
            self.waker.wake();
        }
    }
}

/// The state behind one subscription's stream.
struct Reader {
    shared: Arc<Shared>,
    topic: Arc<str>,
    group: Option<Arc<str>>,
    queue: Arc<Queue>,
    window: Arc<Window>,
}

impl Reader {
    async fn next_delivery(&self) -> Option<Delivery> {
        futures::future::poll_fn(|cx| self.window.poll_acquire(cx)).await;
        let Some(entry) = self.queue.pop().await else {
            self.window.release();
            return None;
        };
        let message = entry.message.clone();
        let settle = InProcessSettle {
            queue: self.queue.clone(),
            window: self.window.clone(),
            entry,
            nack_delay: self.shared.config.nack_delay,
        };
        Some(Delivery::new(message, Acker::new(settle)))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared
            .unsubscribe(&self.topic, &self.queue, self.group.is_some());
    }
}

struct InProcessSettle {
    queue: Arc<Queue>,
    window: Arc<Window>,
    entry: Entry,
    nack_delay: Duration,
}

impl Settle for InProcessSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let this = *self;
        match settlement {
            Settlement::Ack => drop(this.entry),
            Settlement::Nack { delay: None } => this.queue.redeliver(this.entry, this.nack_delay),
            Settlement::Nack { delay: Some(delay) } => this.queue.park_nacked(this.entry, delay),
        }
        this.window.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn fan_out_to_every_subscription() {
        let ps = InProcessPubSub::new();
        let mut a = ps.subscribe("t").await.unwrap();
        let mut b = ps.subscribe("t").await.unwrap();
        ps.publish("t", vec![Message::with_id("1", "x")])
            .await
            .unwrap();
        assert_eq!(a.next().await.unwrap().unwrap().message().id(), "1");
        assert_eq!(b.next().await.unwrap().unwrap().message().id(), "1");
    }

    #[tokio::test]
    async fn no_subscriber_drops_unless_persistent() {
        let ps = InProcessPubSub::new();
        ps.publish("t", vec![Message::with_id("1", "")])
            .await
            .unwrap();
        let mut s = ps.subscribe("t").await.unwrap();
        ps.publish("t", vec![Message::with_id("2", "")])
            .await
            .unwrap();
        assert_eq!(s.next().await.unwrap().unwrap().message().id(), "2");

        let ps = InProcessPubSub::with_config(InProcessConfig::default().persistent(true));
        ps.publish("t", vec![Message::with_id("1", "")])
            .await
            .unwrap();
        let mut s = ps.subscribe("t").await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap().message().id(), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn nack_comes_back_first_after_the_delay() {
        let ps = InProcessPubSub::new();
        let mut s = ps.subscribe("t").await.unwrap();
        ps.publish(
            "t",
            vec![Message::with_id("1", ""), Message::with_id("2", "")],
        )
        .await
        .unwrap();
        let start = Instant::now();
        s.next().await.unwrap().unwrap().nack();
        let again = s.next().await.unwrap().unwrap();
        assert_eq!(again.message().id(), "1");
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        again.ack();
        assert_eq!(s.next().await.unwrap().unwrap().message().id(), "2");
    }

    #[tokio::test(start_paused = true)]
    async fn nack_with_a_delay_lets_the_others_pass() {
        let ps = InProcessPubSub::new();
        let mut s = ps.subscribe("t").await.unwrap();
        ps.publish(
            "t",
            vec![Message::with_id("1", ""), Message::with_id("2", "")],
        )
        .await
        .unwrap();
        let start = Instant::now();
        s.next()
            .await
            .unwrap()
            .unwrap()
            .nack_after(Duration::from_secs(1));
        let next = s.next().await.unwrap().unwrap();
        assert_eq!(
            (next.message().id(), start.elapsed()),
            ("2", Duration::ZERO)
        );
        next.ack();
        let again = s.next().await.unwrap().unwrap();
        assert_eq!(
            (again.message().id(), start.elapsed()),
            ("1", Duration::from_secs(1))
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_does_not_block_other_topics() {
        let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(2));
        // Nobody reads "slow": its buffer fills and its publisher waits.
        let _slow = ps.subscribe("slow").await.unwrap();
        let blocked = tokio::spawn({
            let ps = ps.clone();
            async move {
                let msgs = (0..10).map(|_| Message::new("")).collect();
                ps.publish("slow", msgs).await
            }
        });
        let mut fast = ps.subscribe("fast").await.unwrap();
        for i in 0..100 {
            ps.publish("fast", vec![Message::with_id(i.to_string(), "")])
                .await
                .unwrap();
            let d = fast.next().await.unwrap().unwrap();
            assert_eq!(d.message().id(), i.to_string());
            d.ack();
        }
        assert!(
            !blocked.is_finished(),
            "the slow topic's publisher still waits"
        );
        blocked.abort();
    }

    #[tokio::test]
    async fn full_buffer_fails_when_configured() {
        let ps = InProcessPubSub::with_config(
            InProcessConfig::default()
                .buffer_size(2)
                .when_full(WhenFull::Fail),
        );
        let _s = ps.subscribe("t").await.unwrap();
        ps.publish("t", vec![Message::new(""), Message::new("")])
            .await
            .unwrap();
        let err = ps.publish("t", vec![Message::new("")]).await.unwrap_err();
        assert!(matches!(err, Error::Full { capacity: 2, .. }), "{err}");
    }

    #[tokio::test]
    async fn full_buffer_waits_by_default() {
        let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(2));
        let mut s = ps.subscribe("t").await.unwrap();
        let publisher = ps.clone();
        let task = tokio::spawn(async move {
            let msgs = (0..10)
                .map(|i| Message::with_id(i.to_string(), ""))
                .collect();
            publisher.publish("t", msgs).await
        });
        for i in 0..10 {
            let d = s.next().await.unwrap().unwrap();
            assert_eq!(d.message().id(), i.to_string());
            d.ack();
        }
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn window_holds_back_the_next_message() {
        let ps = InProcessPubSub::new();
        let mut s = ps.subscribe("t").await.unwrap();
        ps.publish("t", vec![Message::new(""), Message::new("")])
            .await
            .unwrap();
        let first = s.next().await.unwrap().unwrap();
        let held = tokio::time::timeout(Duration::from_millis(50), s.next()).await;
        assert!(
            held.is_err(),
            "a second delivery while the first is unsettled"
        );
        first.ack();
        assert!(s.next().await.is_some());
    }

    #[tokio::test]
    async fn block_until_acked() {
        let ps = InProcessPubSub::with_config(
            InProcessConfig::default().block_publish_until_acked(true),
        );
        let mut s = ps.subscribe("t").await.unwrap();
        let publisher = ps.clone();
        let task =
            tokio::spawn(async move { publisher.publish("t", vec![Message::new("")]).await });
        let d = s.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished());
        d.ack();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropped_subscription_unblocks_publisher() {
        let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(1));
        let s = ps.subscribe("t").await.unwrap();
        let publisher = ps.clone();
        let task = tokio::spawn(async move {
            publisher
                .publish("t", vec![Message::new(""), Message::new("")])
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn close_ends_streams_and_rejects_publish() {
        let ps = InProcessPubSub::new();
        let mut s = ps.subscribe("t").await.unwrap();
        Publisher::close(&ps).await.unwrap();
        assert!(s.next().await.is_none());
        assert!(ps
            .publish("t", vec![Message::new("")])
            .await
            .unwrap_err()
            .is_closed());
    }

    #[tokio::test]
    async fn group_nack_goes_to_another_member() {
        let ps = InProcessPubSub::new().with_group("g");
        let mut a = ps.subscribe("t").await.unwrap();
        let mut b = ps.subscribe("t").await.unwrap();
        ps.publish("t", vec![Message::with_id("1", "")])
            .await
            .unwrap();
        let d = a.next().await.unwrap().unwrap();
        drop(d); // dropped unsettled: a nack
        drop(a);
        assert_eq!(b.next().await.unwrap().unwrap().message().id(), "1");
    }
}
