//! The scenarios: one function per behaviour of the contract, each taking the target under test.
//!
//! Every scenario connects once, uses fresh topic and group names (so scenarios can run at the
//! same time against one broker), finishes within a deadline (a hang is a failure that names
//! where it hung), and panics with what was lost, duplicated or out of order. A scenario that
//! needs a feature the target does not claim prints `skipped: needs <feature>` and returns.
//! Message counts are those of [`Mode::Full`], about a tenth in
//! [`Mode::Quick`].
//!
//! [`conformance_tests!`](crate::conformance_tests) generates one test per scenario.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemill::{Publisher, Subscriber, Subscription};

use crate::helpers::{self, Stage};
use crate::{Broker, Features, Mode, TestTarget};

mod delivery;
mod groups;
mod limits;
mod resilience;
mod router;
mod settlement;

pub use delivery::*;
pub use groups::*;
pub use limits::*;
pub use resilience::*;
pub use router::*;
pub use settlement::*;

/// How long one call of the pub/sub (connect, subscribe, publish, close) may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// What a scenario works with.
struct Ctx {
    name: &'static str,
    features: Features,
    broker: Arc<dyn Broker>,
    mode: Mode,
    stage: Stage,
    publishers: Mutex<Vec<Arc<dyn Publisher>>>,
    subscribers: Mutex<Vec<Arc<dyn Subscriber>>>,
}

impl Ctx {
    /// `full` in full mode, a tenth of it (at least 1) in quick mode.
    fn count(&self, full: usize) -> usize {
        self.mode.count(full)
    }

    fn stage(&self, what: impl Into<String>) {
        self.stage.set(what);
    }

    fn exactly_once(&self) -> bool {
        self.features.exactly_once
    }

    /// `Some(group)` when the target has consumer groups: how a scenario asks for a subscriber
    /// that continues where another of the same group left off.
    fn group<'a>(&self, group: &'a str) -> Option<&'a str> {
        self.features.consumer_groups.then_some(group)
    }

    async fn publisher(&self) -> Arc<dyn Publisher> {
        let publisher = helpers::step(
            format!("{}: creating a publisher", self.name),
            helpers::scaled(CALL_LIMIT),
            self.broker.publisher(),
        )
        .await;
        self.publishers.lock().push(publisher.clone());
        publisher
    }

    async fn subscriber(&self, group: Option<&str>) -> Arc<dyn Subscriber> {
        let subscriber = helpers::step(
            format!("{}: creating a subscriber (group {group:?})", self.name),
            helpers::scaled(CALL_LIMIT),
            self.broker.subscriber(group),
        )
        .await;
        self.subscribers.lock().push(subscriber.clone());
        subscriber
    }

    /// A subscriber of `group` if the target has groups, the default subscriber otherwise.
    async fn member(&self, group: &str) -> Arc<dyn Subscriber> {
        self.subscriber(self.group(group)).await
    }

    /// Initializes `topic` if the subscriber can, then subscribes.
    async fn subscribe(&self, subscriber: &dyn Subscriber, topic: &str) -> Subscription {
        if let Some(init) = subscriber.as_initializer() {
            helpers::step(
                format!("{}: initializing topic {topic}", self.name),
                helpers::scaled(CALL_LIMIT),
                init.initialize_topic(topic),
            )
            .await;
        }
        helpers::step(
            format!("{}: subscribing to topic {topic}", self.name),
            helpers::scaled(CALL_LIMIT),
            subscriber.subscribe(topic),
        )
        .await
    }

    async fn publish(
        &self,
        publisher: &dyn Publisher,
        topic: &str,
        messages: &[tidemill::Message],
        batch: usize,
    ) {
        helpers::step(
            format!(
                "{}: publishing {} messages to {topic}",
                self.name,
                messages.len()
            ),
            helpers::scaled(CALL_LIMIT) * 4,
            helpers::publish_batches(publisher, topic, messages, batch),
        )
        .await
    }

    async fn close_subscriber(&self, subscriber: &dyn Subscriber) {
        helpers::step(
            format!("{}: closing a subscriber", self.name),
            helpers::scaled(CALL_LIMIT),
            subscriber.close(),
        )
        .await
    }

    /// Closes everything the scenario created; closing twice is harmless by contract.
    async fn finish(&self) {
        self.stage("closing the subscribers and publishers");
        let subscribers = std::mem::take(&mut *self.subscribers.lock());
        for s in subscribers {
            self.close_subscriber(&*s).await;
        }
        let publishers = std::mem::take(&mut *self.publishers.lock());
        for p in publishers {
            helpers::step(
                format!("{}: closing a publisher", self.name),
                helpers::scaled(CALL_LIMIT),
                p.close(),
            )
            .await;
        }
    }
}

/// Prints the skip line and returns false when the target lacks what a scenario needs.
fn claims(ok: bool, needs: &str) -> bool {
    if !ok {
        println!("skipped: needs {needs}");
    }
    ok
}

/// Connects, runs `body` within `limit` (scaled), then closes what it created.
async fn run<F, Fut>(target: Arc<dyn TestTarget>, name: &'static str, limit: Duration, body: F)
where
    F: FnOnce(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(gap) = target
        .features()
        .broker_gaps
        .iter()
        .find(|g| g.scenario() == name)
    {
        println!("skipped: a gap of this test broker: {}", gap.reason());
        return;
    }
    let stage = Stage::default();
    stage.set("connecting");
    let limit = helpers::scaled(limit);
    let scenario = async {
        let broker = helpers::step(
            format!("{name}: connecting"),
            helpers::scaled(CALL_LIMIT),
            target.connect(),
        )
        .await;
        let ctx = Arc::new(Ctx {
            name,
            features: target.features(),
            broker,
            mode: Mode::from_env(),
            stage: stage.clone(),
            publishers: Mutex::default(),
            subscribers: Mutex::default(),
        });
        body(ctx.clone()).await;
        ctx.finish().await;
    };
    helpers::within(name, limit, &stage, scenario).await;
}

/// The next delivery of `subscription`, skipping error items; panics if the stream ends or
/// nothing arrives within `wait`.
async fn must_next(
    name: &str,
    subscription: &mut Subscription,
    wait: Duration,
    what: &str,
) -> tidemill::Delivery {
    loop {
        match helpers::next_delivery(subscription, wait).await {
            helpers::Next::Delivery(d) => return d,
            helpers::Next::Error(_) => continue,
            helpers::Next::Ended => panic!("{name}: the stream ended while waiting for {what}"),
            helpers::Next::TimedOut => panic!("{name}: {what} did not arrive within {wait:?}"),
        }
    }
}

/// Panics with `name: problem` when a check failed.
fn check(name: &str, result: Result<(), String>) {
    if let Err(problem) = result {
        panic!("{name}: {problem}");
    }
}
