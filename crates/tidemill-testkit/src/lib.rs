//! The conformance suite every tidemill pub/sub runs against itself, and test helpers.
//!
//! An adapter describes what it can do with [`Features`], says how to reach its broker with a
//! [`TestTarget`], and generates one test per scenario with [`conformance_tests!`]:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use tidemill::{InProcessPubSub, Publisher, Result, Subscriber};
//! use tidemill_testkit::{Broker, Features, TestTarget};
//!
//! struct InProcess;
//!
//! struct Connected(InProcessPubSub);
//!
//! #[async_trait]
//! impl Broker for Connected {
//!     async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
//!         Ok(Arc::new(self.0.clone()))
//!     }
//!     async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
//!         Ok(Arc::new(match group {
//!             Some(group) => self.0.with_group(group),
//!             None => self.0.clone(),
//!         }))
//!     }
//! }
//!
//! #[async_trait]
//! impl TestTarget for InProcess {
//!     fn features(&self) -> Features {
//!         Features {
//!             consumer_groups: true,
//!             guaranteed_order: true,
//!             require_single_instance: true,
//!             ..Features::default()
//!         }
//!     }
//!     async fn connect(&self) -> Result<Arc<dyn Broker>> {
//!         Ok(Arc::new(Connected(InProcessPubSub::new())))
//!     }
//! }
//!
//! tidemill_testkit::conformance_tests!(InProcess);
//! # fn main() {}
//! ```
//!
//! The suite runs in full mode unless `TIDEMILL_CONFORMANCE=quick` is set, which scales the
//! message counts down for local iteration. `TIDEMILL_CONFORMANCE_DEADLINE_SCALE` (e.g. `3`)
//! multiplies every deadline, for slow machines.
//!
//! The scenarios are in [`scenarios`], one public function each, so a test can also run a single
//! one; [`helpers`] holds what they are built from, for adapters' own tests.
//!
//! The scenario that restarts the broker is named `broker_restart_loses_nothing`: it stops a
//! server that other tests may share, so run it on its own (filter on `broker_restart`).
//!
//! How the scenarios use a [`Broker`]: each calls [`TestTarget::connect`] once and asks the
//! broker for as many publishers and subscribers as it needs (up to 50 of each at once, so they
//! should share the broker's connections), and closes each when done; closing one must end only
//! that one. With `consumer_groups` the scenarios subscribe with fresh group names, and a
//! subscriber continues where a closed one stopped by joining its group; without, they use
//! `subscriber(None)`. Before subscribing they call
//! [`initialize_topic`](tidemill::SubscribeInitializer::initialize_topic) where the subscriber
//! offers it. Test messages carry UUID ids, a sequence number and text with spaces, punctuation
//! and non-ASCII characters in their metadata, and some have payloads that are not UTF-8.
//!
//! `nack_loop_does_not_spin` measures the CPU time of the whole process, which tells something
//! only when each test has a process of its own, as under cargo-nextest; elsewhere it checks
//! redeliveries only.
#![deny(missing_docs)]

use std::future::Future;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tidemill::{BoxError, Publisher, Result, Subscriber};

pub mod dedup;
pub mod helpers;
pub mod scenarios;

pub use std::sync::Arc;
pub use tokio;

/// Restarts the broker: stops it and starts it again, returning once it accepts connections.
pub type RestartFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// What a pub/sub claims; the suite checks every claim and skips scenarios that need a feature
/// the pub/sub does not claim.
#[derive(Clone, Default)]
pub struct Features {
    /// Subscribers that share a group split the messages; different groups each get all.
    pub consumer_groups: bool,
    /// Every message is delivered exactly once, even across nacks of others and restarts. A
    /// publish call that failed and is made again may have stored its messages already; those
    /// may arrive twice.
    pub exactly_once: bool,
    /// Messages arrive in publish order, and no next message arrives while one is unsettled.
    pub guaranteed_order: bool,
    /// Order holds only while there is a single subscriber.
    pub guaranteed_order_with_single_subscriber: bool,
    /// Messages survive with no subscriber (and a broker restart, if `restart_broker` is set).
    pub persistent: bool,
    /// Publisher and subscriber must come from one instance (an in-process pub/sub).
    pub require_single_instance: bool,
    /// A new subscriber (or new group) receives messages published before it subscribed.
    pub new_subscriber_receives_old_messages: bool,
    /// How to restart the broker, for the scenario that restarts it in the middle of a stream.
    pub restart_broker: Option<RestartFn>,
    /// Scenarios this broker cannot pass because of a defect of the broker itself, not of the
    /// adapter: each is skipped with its reason printed. Only for test brokers standing in for
    /// the real thing, and only when another target (a mock of the real broker, say) runs the
    /// scenario instead; the suite cannot check that.
    pub broker_gaps: Vec<BrokerGap>,
}

/// A scenario a test broker cannot pass, and why (see [`Features::broker_gaps`]).
///
/// ```
/// use tidemill_testkit::{BrokerGap, Features};
/// let features = Features {
///     broker_gaps: vec![BrokerGap::new(
///         "concurrent_subscribe_and_close",
///         "the broker's group coordinator stalls under many joins and leaves",
///     )],
///     ..Features::default()
/// };
/// assert_eq!(features.broker_gaps[0].scenario(), "concurrent_subscribe_and_close");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerGap {
    scenario: &'static str,
    reason: &'static str,
}

impl BrokerGap {
    /// Scenario `scenario` (its function name in [`scenarios`]) is skipped because of `reason`.
    pub fn new(scenario: &'static str, reason: &'static str) -> Self {
        Self { scenario, reason }
    }

    /// The scenario's name.
    pub fn scenario(&self) -> &'static str {
        self.scenario
    }

    /// Why the broker cannot pass it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// One broker connection for one scenario.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A publisher.
    async fn publisher(&self) -> Result<Arc<dyn Publisher>>;

    /// A subscriber in consumer group `group`, or the adapter's default without a group: one that
    /// receives every message published after it subscribed and, where the target claims
    /// `new_subscriber_receives_old_messages`, also those published to the topic before.
    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>>;
}

/// A pub/sub under test.
#[async_trait]
pub trait TestTarget: Send + Sync + 'static {
    /// What the pub/sub claims.
    fn features(&self) -> Features;

    /// Connects to the broker; called once per scenario.
    async fn connect(&self) -> Result<Arc<dyn Broker>>;
}

/// How much work the scenarios do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Scaled-down counts for local iteration.
    Quick,
    /// The full counts, which CI runs.
    Full,
}

impl Mode {
    /// How many of something to use: `full` in full mode, a tenth of it (at least 1) in quick
    /// mode.
    ///
    /// ```
    /// use tidemill_testkit::Mode;
    /// assert_eq!(Mode::Full.count(5_000), 5_000);
    /// assert_eq!(Mode::Quick.count(5_000), 500);
    /// assert_eq!(Mode::Quick.count(3), 1);
    /// ```
    pub fn count(self, full: usize) -> usize {
        match self {
            Mode::Full => full,
            Mode::Quick => (full / 10).max(1),
        }
    }

    /// `Quick` when `TIDEMILL_CONFORMANCE=quick`, `Full` otherwise.
    pub fn from_env() -> Self {
        match std::env::var("TIDEMILL_CONFORMANCE").as_deref() {
            Ok("quick") => Mode::Quick,
            _ => Mode::Full,
        }
    }
}

/// Runs one scenario the way the generated tests do: on a fresh multi-threaded runtime with two
/// workers, building the target inside it (so that it may spawn tasks) with `make`.
///
/// ```no_run
/// use std::sync::Arc;
/// use tidemill_testkit::{run_scenario, scenarios, TestTarget};
///
/// fn check_publish_subscribe(target: Arc<dyn TestTarget>) {
///     run_scenario(move || target, scenarios::publish_subscribe);
/// }
/// ```
pub fn run_scenario<S, Fut>(make: impl FnOnce() -> Arc<dyn TestTarget>, scenario: S)
where
    S: FnOnce(Arc<dyn TestTarget>) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(async move { scenario(make()).await });
}

/// Generates the conformance suite for a target: `conformance_tests!(<expression building the
/// target>)` expands to a module `conformance` with one `#[test]` per scenario of
/// [`scenarios`], each running on a multi-threaded runtime of two workers (see
/// [`run_scenario`]). The expression is evaluated once per test, inside its runtime; its type
/// implements [`TestTarget`]. It is expanded inside the generated module, which imports
/// everything of the calling module: plain names and `crate::` paths work, `super::` paths
/// point one level too low.
///
/// To run the suite against several targets, call it once per module:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use tidemill_testkit::{Broker, Features, TestTarget};
/// # struct Target(bool);
/// # impl Target {
/// #     fn new(persistent: bool) -> Self {
/// #         Target(persistent)
/// #     }
/// # }
/// # #[async_trait::async_trait]
/// # impl TestTarget for Target {
/// #     fn features(&self) -> Features {
/// #         Features { persistent: self.0, ..Features::default() }
/// #     }
/// #     async fn connect(&self) -> tidemill::Result<Arc<dyn Broker>> {
/// #         Err(tidemill::Error::Config("an example".into()))
/// #     }
/// # }
/// mod plain {
///     tidemill_testkit::conformance_tests!(crate::Target::new(false));
/// }
/// mod persistent {
///     tidemill_testkit::conformance_tests!(crate::Target::new(true));
/// }
/// # fn main() {}
/// ```
///
/// The expansion refers to everything through `$crate`, so the calling crate needs no
/// dependency on tokio.
#[macro_export]
macro_rules! conformance_tests {
    ($target:expr $(,)?) => {
        /// The tidemill conformance suite, one test per scenario.
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__conformance_tests! {
                ($target)
                publish_subscribe,
                concurrent_publishers_and_subscribers,
                many_topics_concurrently,
                nacked_messages_come_back,
                no_next_message_while_one_is_unacked,
                continue_after_subscriber_close,
                concurrent_subscribe_and_close,
                continue_after_many_nacks,
                order_per_key,
                many_publishers_closed_after_their_share,
                topics_are_isolated,
                settlement_ends_a_message_lifetime,
                cancelled_subscription_ends_and_returns_deliveries,
                new_subscriber_receives_old_messages,
                broker_restart_loses_nothing,
                consumer_groups_each_get_all,
                nack_loop_does_not_spin,
                every_delivery_settled_once,
                exactly_once_across_nacks,
                router_close_under_load_loses_nothing,
                metadata_is_refused_as_the_limits_say_or_carried_unchanged,
            }
        }
    };
}

/// One test per scenario named; used by [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (($target:expr) $($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            $crate::run_scenario(
                || -> $crate::Arc<dyn $crate::TestTarget> { $crate::Arc::new($target) },
                $crate::scenarios::$scenario,
            );
        }
    )*};
}
