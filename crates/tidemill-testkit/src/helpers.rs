//! Building blocks of the scenarios, public so that adapters' own tests can use them too.
//!
//! - fresh names: [`topic_name`], [`group_name`];
//! - recognisable messages: [`test_message`], [`keyed_message`], [`binary_message`], and the
//!   [`Expected`] set a test checks against;
//! - a [`Tally`] of what consumers received and how they settled it, fed by [`consume`] with a
//!   settlement [`Policy`];
//! - publishing: [`publish_batches`], [`publish_from_tasks`], [`publish_retrying`];
//! - time: [`within`] and [`step`] fail with a message that says where a test hung,
//!   [`next_delivery`] and [`expect_quiet`] wait on one subscription;
//! - [`process_cpu_time`], to tell waiting from spinning.
//!
//! ```
//! use std::time::Duration;
//! use tidemill::{InProcessPubSub, Publisher, Subscriber};
//! use tidemill_testkit::helpers::{self, Expected, Tally};
//!
//! # #[tokio::main] async fn main() {
//! let pubsub = InProcessPubSub::new();
//! let topic = helpers::topic_name();
//! let tally = Tally::new();
//! let subscription = pubsub.subscribe(&topic).await.unwrap();
//! let _consumer = helpers::spawn_consumer(subscription, tally.clone(), 0, helpers::ack_everything());
//!
//! let expected = Expected::numbered(10);
//! helpers::publish_batches(&pubsub, &topic, expected.messages(), 3).await.unwrap();
//! tally.wait_all_acked(&expected, Duration::from_secs(5)).await.unwrap();
//! tally.verify(&expected, true).unwrap();
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::{Delivery, Error, Message, Publisher, Result, Subscription};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Metadata key holding a test message's sequence number.
pub const SEQ_KEY: &str = "tidemill-test-seq";
/// Metadata key holding a test message's ordering key.
pub const KEY_KEY: &str = "tidemill-test-key";
/// Metadata key whose value ([`TEXT_VALUE`]) exercises spaces, punctuation and non-ASCII text.
pub const TEXT_KEY: &str = "tidemill-test-text";
/// The value every test message carries under [`TEXT_KEY`].
pub const TEXT_VALUE: &str = "spaces, commas; equals=signs / slashes and ünïcödé ✓";

/// How many items a failure message lists before it says how many more there are.
const LISTED: usize = 10;

/// A fresh topic name: `t_` and a UUID's 32 hex digits, valid on every broker tidemill supports
/// and unique, so that tests can share one broker.
///
/// ```
/// assert_ne!(tidemill_testkit::helpers::topic_name(), tidemill_testkit::helpers::topic_name());
/// ```
pub fn topic_name() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh consumer group name: `g_` and a UUID's 32 hex digits.
pub fn group_name() -> String {
    format!("g_{}", uuid::Uuid::new_v4().simple())
}

/// A message with a fresh UUID id, the payload `payload <seq>`, `seq` under [`SEQ_KEY`] and
/// [`TEXT_VALUE`] under [`TEXT_KEY`].
///
/// ```
/// let msg = tidemill_testkit::helpers::test_message(7);
/// assert_eq!(tidemill_testkit::helpers::seq_of(&msg), Some(7));
/// ```
pub fn test_message(seq: usize) -> Message {
    Message::new(format!("payload {seq}"))
        .with_metadata(SEQ_KEY, seq.to_string())
        .with_metadata(TEXT_KEY, TEXT_VALUE)
}

/// A [`test_message`] that also carries `key` under [`KEY_KEY`].
pub fn keyed_message(key: &str, seq: usize) -> Message {
    test_message(seq).with_metadata(KEY_KEY, key)
}

/// A [`test_message`] whose payload is not UTF-8: the sequence number in 8 bytes, then every byte
/// value from 0 to 255.
///
/// ```
/// let msg = tidemill_testkit::helpers::binary_message(1);
/// assert_eq!(msg.payload().len(), 8 + 256);
/// ```
pub fn binary_message(seq: usize) -> Message {
    let mut payload = (seq as u64).to_be_bytes().to_vec();
    payload.extend(0..=255u8);
    let mut msg = test_message(seq);
    msg.set_payload(Bytes::from(payload));
    msg
}

/// The sequence number a test message carries under [`SEQ_KEY`].
pub fn seq_of(msg: &Message) -> Option<usize> {
    msg.metadata().get(SEQ_KEY)?.parse().ok()
}

/// The messages a test published, indexed by id, to check what arrived against.
///
/// ```
/// let expected = tidemill_testkit::helpers::Expected::numbered(3);
/// let first = &expected.messages()[0];
/// assert_eq!(expected.position(first.id()), Some(0));
/// assert!(expected.check_content(first).is_ok());
/// ```
#[derive(Clone, Default)]
pub struct Expected {
    messages: Vec<Message>,
    index: HashMap<Arc<str>, usize>,
}

impl Expected {
    /// The set of `messages`.
    pub fn new(messages: Vec<Message>) -> Self {
        let index = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.shared_id(), i))
            .collect();
        Self { messages, index }
    }

    /// `n` [`test_message`]s numbered from 0.
    pub fn numbered(n: usize) -> Self {
        Self::new((0..n).map(test_message).collect())
    }

    /// The messages, in the order given.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// How many messages there are.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Where the message with `id` is in the set.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether the set holds a message with `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The message with `id`.
    pub fn get(&self, id: &str) -> Option<&Message> {
        self.position(id).map(|i| &self.messages[i])
    }

    /// Adds `messages` to the set.
    pub fn extend(&mut self, messages: impl IntoIterator<Item = Message>) {
        for msg in messages {
            self.index.insert(msg.shared_id(), self.messages.len());
            self.messages.push(msg);
        }
    }

    /// Names a message for a failure message: `#<position> (<id>)`, or `foreign <id>`.
    pub fn describe(&self, id: &str) -> String {
        match self.position(id) {
            Some(i) => format!("#{i} ({id})"),
            None => format!("foreign {id}"),
        }
    }

    /// Checks that `got` carries the payload and metadata of the message with its id.
    pub fn check_content(&self, got: &Message) -> std::result::Result<(), String> {
        let Some(sent) = self.get(got.id()) else {
            return Err(format!("{} was never published", self.describe(got.id())));
        };
        if sent.payload() != got.payload() {
            return Err(format!(
                "{}: payload changed: sent {:?}, got {:?}",
                self.describe(got.id()),
                sent.payload(),
                got.payload()
            ));
        }
        for (k, v) in sent.metadata().iter() {
            if got.metadata().get(k) != Some(v) {
                return Err(format!(
                    "{}: metadata {k:?} changed: sent {v:?}, got {:?} (all received metadata: {:?})",
                    self.describe(got.id()),
                    got.metadata().get(k),
                    got.metadata()
                ));
            }
        }
        Ok(())
    }
}

/// Formats at most [`LISTED`] items and says how many more there are.
fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::new();
    let mut n = 0;
    for item in items {
        if n < LISTED {
            if n > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{item}");
        }
        n += 1;
    }
    if n > LISTED {
        let _ = write!(out, " and {} more", n - LISTED);
    }
    out
}

#[derive(Clone, Copy, Default)]
struct Record {
    deliveries: u32,
    acks: u32,
    rejections: u32,
    after_ack: u32,
}

#[derive(Default)]
struct TallyState {
    ids: HashMap<Arc<str>, Record>,
    /// Every delivery: which consumer got which message.
    log: Vec<(usize, Message)>,
    acked_ids: usize,
    errors: Vec<String>,
    error_count: usize,
    ended: Vec<usize>,
}

/// What a set of consumers received and how they settled it: deliveries per id, acks, nacks,
/// deliveries of ids already acked, stream errors and ended streams. Waiting on it reports what
/// is missing when time runs out.
///
/// Each consumer has a number, so per-consumer order can be checked afterwards.
#[derive(Default)]
pub struct Tally {
    state: Mutex<TallyState>,
    changed: Notify,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Records that `consumer` received `message`; returns how often its id has been delivered,
    /// this time included.
    pub fn on_delivery(&self, consumer: usize, message: &Message) -> u32 {
        let n = {
            let mut state = self.state.lock();
            let record = state.ids.entry(message.shared_id()).or_default();
            record.deliveries += 1;
            if record.acks > 0 {
                record.after_ack += 1;
            }
            let n = record.deliveries;
            state.log.push((consumer, message.clone()));
            n
        };
        self.changed.notify_waiters();
        n
    }

    /// Records that the message with `id` is being acked.
    pub fn on_ack(&self, id: &str) {
        {
            let mut state = self.state.lock();
            let state = &mut *state;
            if let Some(record) = state.ids.get_mut(id) {
                record.acks += 1;
                if record.acks == 1 {
                    state.acked_ids += 1;
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Records that the message with `id` is being nacked (or dropped unsettled).
    pub fn on_reject(&self, id: &str) {
        if let Some(record) = self.state.lock().ids.get_mut(id) {
            record.rejections += 1;
        }
    }

    /// Records an error item of `consumer`'s stream.
    pub fn on_error(&self, consumer: usize, error: &Error) {
        let mut state = self.state.lock();
        state.error_count += 1;
        if state.errors.len() < LISTED {
            state.errors.push(format!("consumer {consumer}: {error}"));
        }
    }

    /// Records that `consumer`'s stream ended.
    pub fn on_end(&self, consumer: usize) {
        self.state.lock().ended.push(consumer);
        self.changed.notify_waiters();
    }

    /// How many deliveries there were in all.
    pub fn deliveries(&self) -> usize {
        self.state.lock().log.len()
    }

    /// How many distinct ids were acked.
    pub fn acked_ids(&self) -> usize {
        self.state.lock().acked_ids
    }

    /// How often the message with `id` was delivered.
    pub fn deliveries_of(&self, id: &str) -> u32 {
        self.state.lock().ids.get(id).map_or(0, |r| r.deliveries)
    }

    /// How often the message with `id` was acked.
    pub fn acks_of(&self, id: &str) -> u32 {
        self.state.lock().ids.get(id).map_or(0, |r| r.acks)
    }

    /// The consumers whose stream ended.
    pub fn ended(&self) -> Vec<usize> {
        self.state.lock().ended.clone()
    }

    /// How many error items the streams yielded.
    pub fn errors(&self) -> usize {
        self.state.lock().error_count
    }

    /// The messages `consumer` received, in the order it received them (every consumer's if
    /// `None`).
    pub fn received(&self, consumer: Option<usize>) -> Vec<Message> {
        self.state
            .lock()
            .log
            .iter()
            .filter(|(c, _)| consumer.is_none_or(|want| *c == want))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// How many deliveries each consumer got.
    pub fn per_consumer(&self) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for (c, _) in self.state.lock().log.iter() {
            *counts.entry(*c).or_default() += 1;
        }
        counts
    }

    /// A one-line account: deliveries, acked ids, errors and ended streams.
    pub fn summary(&self) -> String {
        let state = self.state.lock();
        let mut out = format!(
            "{} deliveries, {} ids acked",
            state.log.len(),
            state.acked_ids
        );
        if state.error_count > 0 {
            let _ = write!(
                out,
                ", {} stream errors ({})",
                state.error_count,
                state.errors.join("; ")
            );
        }
        if !state.ended.is_empty() {
            let _ = write!(out, ", streams ended: consumers {}", list(&state.ended));
        }
        out
    }

    async fn wait(&self, timeout: Duration, mut done: impl FnMut(&TallyState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done(&self.state.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.state.lock());
            }
        }
    }

    /// Waits until `n` deliveries were recorded; false if `timeout` passed first.
    pub async fn wait_deliveries(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.log.len() >= n).await
    }

    /// Waits until `n` distinct ids were acked; false if `timeout` passed first.
    pub async fn wait_acked_ids(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.acked_ids >= n).await
    }

    /// Waits until every message of `expected` was acked at least once. On timeout the error
    /// says how many were acked and which are missing.
    pub async fn wait_all_acked(
        &self,
        expected: &Expected,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let start = Instant::now();
        let all = |s: &TallyState| {
            // The count is a cheap first test: ids from elsewhere can only make it larger.
            s.acked_ids >= expected.len()
                && expected
                    .messages()
                    .iter()
                    .all(|m| s.ids.get(m.id()).is_some_and(|r| r.acks > 0))
        };
        if self.wait(timeout, all).await {
            return Ok(());
        }
        let missing = self.missing(expected);
        Err(format!(
            "after {:?}, {} of {} messages acked; never acked: {} ({})",
            start.elapsed(),
            expected.len() - missing.len(),
            expected.len(),
            list(missing.iter().map(|id| self.describe_id(expected, id))),
            self.summary()
        ))
    }

    fn missing(&self, expected: &Expected) -> Vec<Arc<str>> {
        let state = self.state.lock();
        expected
            .messages()
            .iter()
            .filter(|m| state.ids.get(m.id()).is_none_or(|r| r.acks == 0))
            .map(Message::shared_id)
            .collect()
    }

    fn describe_id(&self, expected: &Expected, id: &str) -> String {
        let record = self.state.lock().ids.get(id).copied().unwrap_or_default();
        if record.deliveries == 0 {
            format!("{} never delivered", expected.describe(id))
        } else {
            format!(
                "{} delivered {}x, rejected {}x",
                expected.describe(id),
                record.deliveries,
                record.rejections
            )
        }
    }

    /// Checks the tally against `expected`: every message acked, no foreign id delivered, and,
    /// with `exactly_once`, no id acked twice and none delivered after its ack. The error lists
    /// what was lost, duplicated or foreign.
    pub fn verify(
        &self,
        expected: &Expected,
        exactly_once: bool,
    ) -> std::result::Result<(), String> {
        self.verify_exempting(expected, exactly_once, &HashSet::new())
    }

    /// [`verify`](Self::verify), but ids in `published_again` may arrive more than once even
    /// with `exactly_once`: a publish call that failed may still have been stored, so
    /// publishing it again can store it twice, and no broker without publish-side
    /// deduplication can tell the copies apart.
    pub fn verify_exempting(
        &self,
        expected: &Expected,
        exactly_once: bool,
        published_again: &HashSet<Arc<str>>,
    ) -> std::result::Result<(), String> {
        let mut problems = Vec::new();
        let missing = self.missing(expected);
        if !missing.is_empty() {
            problems.push(format!(
                "lost {} of {}: {}",
                missing.len(),
                expected.len(),
                list(missing.iter().map(|id| self.describe_id(expected, id)))
            ));
        }
        let state = self.state.lock();
        let mut foreign: Vec<&Arc<str>> = state
            .ids
            .keys()
            .filter(|id| !expected.contains(id))
            .collect();
        foreign.sort();
        if !foreign.is_empty() {
            problems.push(format!(
                "{} foreign messages arrived: {}",
                foreign.len(),
                list(foreign.iter().map(|id| {
                    let msg = state.log.iter().find(|(_, m)| m.id() == &***id);
                    match msg.and_then(|(_, m)| m.metadata().get(SEQ_KEY)) {
                        Some(seq) => format!("{id} (seq {seq} of another set)"),
                        None => id.to_string(),
                    }
                }))
            ));
        }
        if exactly_once {
            let mut twice: Vec<(usize, Record)> = state
                .ids
                .iter()
                .filter(|(_, r)| r.acks > 1 || r.after_ack > 0)
                .filter(|(id, _)| !published_again.contains(*id))
                .filter_map(|(id, r)| Some((expected.position(id)?, *r)))
                .collect();
            twice.sort_by_key(|(i, _)| *i);
            if !twice.is_empty() {
                problems.push(format!(
                    "{} duplicated although exactly-once is claimed: {}",
                    twice.len(),
                    list(twice.iter().map(|(i, r)| format!(
                        "{} acked {}x, delivered {}x after its ack",
                        expected.describe(expected.messages()[*i].id()),
                        r.acks,
                        r.after_ack
                    )))
                ));
            }
        }
        drop(state);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{} [{}]", problems.join("; "), self.summary()))
        }
    }

    /// Checks that no message was delivered again after it was acked.
    pub fn verify_none_after_ack(&self, expected: &Expected) -> std::result::Result<(), String> {
        let state = self.state.lock();
        let mut again: Vec<(String, u32)> = state
            .ids
            .iter()
            .filter(|(_, r)| r.after_ack > 0)
            .map(|(id, r)| (expected.describe(id), r.after_ack))
            .collect();
        again.sort();
        if again.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} acked messages were delivered again: {}",
            again.len(),
            list(
                again
                    .iter()
                    .map(|(id, n)| format!("{id} {n}x after its ack"))
            )
        ))
    }
}

/// How a consumer settles one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// [`Delivery::ack`].
    Ack,
    /// [`Delivery::nack`]: back after the adapter's nack delay.
    Nack,
    /// [`Delivery::nack_after`] the given delay.
    NackAfter(Duration),
    /// Drop the delivery unsettled, which counts as a nack.
    Drop,
}

/// Decides how to settle a delivery, given the message and how often its id has been delivered
/// (this time included).
pub type Policy = Arc<dyn Fn(&Message, u32) -> Decision + Send + Sync>;

/// A [`Policy`] that acks every delivery.
pub fn ack_everything() -> Policy {
    Arc::new(|_, _| Decision::Ack)
}

/// Settles `delivery` as decided and records it in `tally`.
pub fn settle(delivery: Delivery, decision: Decision, tally: &Tally) {
    let id = delivery.message().shared_id();
    match decision {
        Decision::Ack => {
            // Recorded before acking, so that a redelivery racing the ack counts as after it.
            tally.on_ack(&id);
            delivery.ack();
        }
        Decision::Nack => {
            tally.on_reject(&id);
            delivery.nack();
        }
        Decision::NackAfter(delay) => {
            tally.on_reject(&id);
            delivery.nack_after(delay);
        }
        Decision::Drop => {
            tally.on_reject(&id);
            drop(delivery);
        }
    }
}

/// Reads `subscription` to its end, recording every delivery in `tally` as consumer number
/// `consumer` and settling it as `policy` decides.
pub async fn consume(
    mut subscription: Subscription,
    tally: Arc<Tally>,
    consumer: usize,
    policy: Policy,
) {
    while let Some(item) = subscription.next().await {
        match item {
            Ok(delivery) => {
                let n = tally.on_delivery(consumer, delivery.message());
                let decision = policy(delivery.message(), n);
                settle(delivery, decision, &tally);
            }
            Err(err) => tally.on_error(consumer, &err),
        }
    }
    tally.on_end(consumer);
}

/// Runs [`consume`] on a task of its own; dropping the returned [`Tasks`] cancels it (dropping
/// the subscription).
pub fn spawn_consumer(
    subscription: Subscription,
    tally: Arc<Tally>,
    consumer: usize,
    policy: Policy,
) -> Tasks {
    let mut tasks = Tasks::default();
    tasks.spawn(consume(subscription, tally, consumer, policy));
    tasks
}

/// Tasks that are aborted when this is dropped, so that a failing test leaves nothing running.
#[derive(Default)]
pub struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Spawns `task` onto the current runtime.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }

    /// Takes over the tasks of `other`.
    pub fn append(&mut self, mut other: Tasks) {
        self.0.append(&mut other.0);
    }

    /// How many tasks are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no task is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Aborts every task and waits until they are gone (their subscriptions dropped).
    pub async fn abort(mut self) {
        let handles = std::mem::take(&mut self.0);
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    }

    /// Waits for every task to finish, passing on a panic of any of them.
    pub async fn join(mut self) {
        for h in std::mem::take(&mut self.0) {
            if let Err(err) = h.await {
                if err.is_panic() {
                    std::panic::resume_unwind(err.into_panic());
                }
            }
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Publishes `messages` to `topic` in calls of at most `batch` messages, in order.
pub async fn publish_batches(
    publisher: &(impl Publisher + ?Sized),
    topic: &str,
    messages: &[Message],
    batch: usize,
) -> Result<()> {
    for chunk in messages.chunks(batch.max(1)) {
        publisher.publish(topic, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Publishes `messages` from `tasks` concurrent tasks, each taking a contiguous share and
/// publishing it in order in calls of at most `batch` messages; task `i` uses
/// `publishers[i % publishers.len()]`. Returns the first error.
pub async fn publish_from_tasks(
    publishers: &[Arc<dyn Publisher>],
    topic: &str,
    messages: &[Message],
    tasks: usize,
    batch: usize,
) -> Result<()> {
    assert!(
        !publishers.is_empty(),
        "publish_from_tasks needs a publisher"
    );
    let tasks = tasks.clamp(1, messages.len().max(1));
    let share = messages.len().div_ceil(tasks);
    let handles: Vec<_> = messages
        .chunks(share.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let publisher = publishers[i % publishers.len()].clone();
            let topic = topic.to_owned();
            let chunk = chunk.to_vec();
            tokio::spawn(async move { publish_batches(&*publisher, &topic, &chunk, batch).await })
        })
        .collect();
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                first_err.get_or_insert(err);
            }
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => panic!("a publishing task was cancelled: {err}"),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Publishes `messages` as one call, again and again after `pause` while it fails, for at most
/// `give_up`: at-least-once publishing, since a failed call may still have been taken. Returns how
/// many attempts failed, or the last error once `give_up` has passed.
pub async fn publish_retrying(
    publisher: &(impl Publisher + ?Sized),
    topic: &str,
    messages: Vec<Message>,
    pause: Duration,
    give_up: Duration,
) -> Result<u32> {
    let deadline = Instant::now() + give_up;
    let mut failures = 0;
    loop {
        match publisher.publish(topic, messages.clone()).await {
            Ok(()) => return Ok(failures),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The deadline scale set by [`set_deadline_scale`], as `f64` bits; 0 while unset.
static DEADLINE_SCALE: AtomicU64 = AtomicU64::new(0);

/// Sets the factor by which this process's deadlines are multiplied, overriding
/// `TIDEMILL_CONFORMANCE_DEADLINE_SCALE`; ignored unless positive and finite.
///
/// ```
/// tidemill_testkit::helpers::set_deadline_scale(2.0);
/// assert_eq!(tidemill_testkit::helpers::deadline_scale(), 2.0);
/// ```
pub fn set_deadline_scale(scale: f64) {
    if scale.is_finite() && scale > 0.0 {
        DEADLINE_SCALE.store(scale.to_bits(), Ordering::Relaxed);
    }
}

/// The factor by which deadlines are multiplied: the one [`set_deadline_scale`] set, else
/// `TIDEMILL_CONFORMANCE_DEADLINE_SCALE` (a positive number, e.g. `3` for a slow CI machine),
/// else 1.
pub fn deadline_scale() -> f64 {
    let set = DEADLINE_SCALE.load(Ordering::Relaxed);
    if set != 0 {
        return f64::from_bits(set);
    }
    std::env::var("TIDEMILL_CONFORMANCE_DEADLINE_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0)
}

/// `limit` multiplied by [`deadline_scale`].
pub fn scaled(limit: Duration) -> Duration {
    limit.mul_f64(deadline_scale())
}

/// What a test is doing right now, for the message of a deadline that passes.
///
/// ```
/// let stage = tidemill_testkit::helpers::Stage::default();
/// stage.set("publishing");
/// assert_eq!(stage.current(), "publishing");
/// ```
#[derive(Clone, Default)]
pub struct Stage(Arc<Mutex<String>>);

impl Stage {
    /// Says what the test does from now on.
    pub fn set(&self, what: impl Into<String>) {
        *self.0.lock() = what.into();
    }

    /// What the test does.
    pub fn current(&self) -> String {
        self.0.lock().clone()
    }
}

/// Runs `fut`, panicking if it takes longer than `limit`: a hang is a failure, and the message
/// names `name` and the `stage` it hung in.
pub async fn within<T>(
    name: &str,
    limit: Duration,
    stage: &Stage,
    fut: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{name}: did not finish within {limit:?}; it hung while {}",
            stage.current()
        ),
    }
}

/// Awaits one operation of a pub/sub, panicking with `what` if it fails or takes longer than
/// `limit`.
pub async fn step<T>(
    what: impl fmt::Display,
    limit: Duration,
    fut: impl Future<Output = Result<T>>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => panic!("{what} failed: {err}"),
        Err(_) => panic!("{what} hung: no answer within {limit:?}"),
    }
}

/// What [`next_delivery`] got.
#[derive(Debug)]
pub enum Next {
    /// A delivery.
    Delivery(Delivery),
    /// An error item; the stream goes on.
    Error(Error),
    /// The stream ended.
    Ended,
    /// Nothing arrived in time.
    TimedOut,
}

/// The next item of `subscription`, or [`Next::TimedOut`] after `timeout`.
pub async fn next_delivery(subscription: &mut Subscription, timeout: Duration) -> Next {
    match tokio::time::timeout(timeout, subscription.next()).await {
        Ok(Some(Ok(d))) => Next::Delivery(d),
        Ok(Some(Err(e))) => Next::Error(e),
        Ok(None) => Next::Ended,
        Err(_) => Next::TimedOut,
    }
}

/// Watches `subscription` for `quiet`; returns the first delivery that arrived in that time, if
/// any. Error items are skipped.
pub async fn expect_quiet(subscription: &mut Subscription, quiet: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(d))) => return Some(d),
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The CPU time (user and system) this process has used so far, where the platform tells.
///
/// ```
/// if let Some(t) = tidemill_testkit::helpers::process_cpu_time() {
///     assert!(t > std::time::Duration::ZERO);
/// }
/// ```
pub fn process_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
                return None;
            }
            usage
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Some(tv(usage.ru_utime) + tv(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}
