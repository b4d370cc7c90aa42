//! Prometheus metrics per handler, publisher and subscriber, through a router layer and pub/sub
//! decorators.
//!
//! | metric (default namespace `tidemill`) | type | labels |
//! | --- | --- | --- |
//! | `tidemill_handler_messages_handled_total` | counter | `handler`, `topic` |
//! | `tidemill_handler_messages_failed_total` | counter | `handler`, `topic`, `disposition` |
//! | `tidemill_handler_duration_seconds` | histogram | `handler`, `topic` |
//! | `tidemill_handler_messages_in_flight` | gauge | `handler`, `topic` |
//! | `tidemill_handler_retries_total` | counter | `handler`, `topic` |
//! | `tidemill_poison_messages_total` | counter | `poison_topic`, `handler`, `topic` |
//! | `tidemill_publisher_messages_published_total` | counter | `topic` |
//! | `tidemill_publisher_messages_failed_total` | counter | `topic` |
//! | `tidemill_publisher_duration_seconds` | histogram (one observation a publish call) | `topic` |
//! | `tidemill_subscriber_messages_received_total` | counter | `topic` |
//! | `tidemill_subscriber_messages_acked_total` | counter | `topic` |
//! | `tidemill_subscriber_messages_nacked_total` | counter | `topic` |
//! | `tidemill_router_handler_deaths_total` | counter | `handler`, `restarted` (`true`/`false`) |
//! | `tidemill_router_dead_lettered_total` | counter | `handler`, `topic`, `dead_letter_topic` |
//! | `tidemill_router_rejects_kept_total` | counter | `handler`, `topic` |
//! | `tidemill_router_output_publish_failures_total` | counter | `handler`, `topic` (the output topic), `permanent` |
//! | `tidemill_messages_skipped_total` | counter | `handler`, `name` |
//!
//! The `router_*` counters come from the router's events ([`Metrics::router_events`], given to
//! [`Router::on_event`](tidemill::Router::on_event)); `messages_skipped` from
//! [`Metrics::record_skipped`] (give it to a CQRS processor's `on_skip`).
//!
//! "Handled" counts every handling that finished, failed or not; `disposition` says what the
//! failed handler asked for (`retry`, `retry_after`, `reject`, `drop`). Retries are counted by
//! [`Metrics::retry_hook`] given to the retry middleware's `on_retry`; poisoned messages by the
//! publisher decorator when it publishes to a topic named with
//! [`MetricsConfig::poison_topic`] (give the poison queue layer a [`Metrics::publisher`]), with
//! the handler and topic the poison queue wrote into their metadata, or by
//! [`Metrics::record_poisoned`].
//!
//! ```
//! use std::time::Duration;
//! use tidemill::middleware::{PoisonQueueLayer, RetryLayer};
//! use tidemill::InProcessPubSub;
//! use tidemill_otel::MetricsConfig;
//!
//! let pubsub = InProcessPubSub::new();
//! let metrics = MetricsConfig::new().poison_topic("poison").build();
//! let router = tidemill::Router::new();
//! router
//!     .layer(metrics.layer())
//!     .layer(PoisonQueueLayer::new(metrics.publisher(pubsub.clone()), "poison"))
//!     .layer(RetryLayer::new().on_retry(metrics.retry_hook()));
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tidemill::middleware::{POISON_HANDLER_KEY, POISON_TOPIC_KEY};
use tidemill::router::{Disposition, Handler, HandlerError, RouterEvent};
use tidemill::{
    Acker, Delivery, Message, Publisher, Result, Settle, Settlement, SubscribeInitializer,
    Subscriber, Subscription,
};
use tower::{Layer, Service};

use crate::common::{handler_and_topic, PerHandler};

/// The default histogram buckets, in seconds: 0.5 ms to 30 s.
///
/// ```
/// assert_eq!(tidemill_otel::metrics::DEFAULT_BUCKETS.first(), Some(&0.0005));
/// ```
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    handler: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    handler: String,
    topic: String,
    disposition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoisonLabels {
    poison_topic: String,
    handler: String,
    topic: String,
}

impl PoisonLabels {
    /// The poison topic, and the handler and topic the message failed in: from the poison
    /// queue's metadata, else from the handling in progress.
    fn of(poison_topic: &str, msg: &Message) -> Self {
        let md = msg.metadata();
        let (handler, topic) = match (md.get(POISON_HANDLER_KEY), md.get(POISON_TOPIC_KEY)) {
            (Some(handler), Some(topic)) => (handler, topic),
            _ => handler_and_topic(msg),
        };
        Self {
            poison_topic: poison_topic.to_owned(),
            handler: handler.to_owned(),
            topic: topic.to_owned(),
        }
    }
}

/// Makes histograms with the configured buckets.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Options of [`Metrics`]: namespace, buckets, constant labels, poison topics.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use tidemill_otel::MetricsConfig;
///
/// let mut registry = Registry::default();
/// let metrics = MetricsConfig::new()
///     .namespace("shop")
///     .handler_buckets([0.001, 0.01, 0.1, 1.0])
///     .publish_buckets([0.001, 0.01, 0.1])
///     .label("service", "orders")
///     .poison_topic("orders.poison")
///     .register(&mut registry);
/// # drop(metrics);
/// ```
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    namespace: String,
    handler_buckets: Vec<f64>,
    publish_buckets: Vec<f64>,
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    poison_topics: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsConfig {
    /// Namespace `tidemill`, [`DEFAULT_BUCKETS`], no constant label, no poison topic.
    ///
    /// ```
    /// let config = tidemill_otel::MetricsConfig::new();
    /// # drop(config);
    /// ```
    pub fn new() -> Self {
        Self {
            namespace: "tidemill".to_owned(),
            handler_buckets: DEFAULT_BUCKETS.to_vec(),
            publish_buckets: DEFAULT_BUCKETS.to_vec(),
            labels: Vec::new(),
            poison_topics: Vec::new(),
        }
    }

    /// The prefix of every metric name (`{namespace}_handler_...`); empty for none.
    ///
    /// ```
    /// let m = tidemill_otel::MetricsConfig::new().namespace("shop").build();
    /// m.record_poisoned("p", &tidemill::Message::new(""));
    /// assert!(m.encode().contains("shop_poison_messages_total"));
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The buckets of the handler duration histogram, in seconds.
    ///
    /// ```
    /// let config = tidemill_otel::MetricsConfig::new().handler_buckets([0.01, 0.1, 1.0]);
    /// # drop(config);
    /// ```
    pub fn handler_buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.handler_buckets = buckets.into_iter().collect();
        self
    }

    /// The buckets of the publish duration histogram, in seconds.
    ///
    /// ```
    /// let config = tidemill_otel::MetricsConfig::new().publish_buckets([0.001, 0.01]);
    /// # drop(config);
    /// ```
    pub fn publish_buckets(mut self, buckets: impl IntoIterator<Item = f64>) -> Self {
        self.publish_buckets = buckets.into_iter().collect();
        self
    }

    /// A label with a fixed value on every metric (service, instance, region...).
    ///
    /// ```
    /// let m = tidemill_otel::MetricsConfig::new().label("service", "orders").build();
    /// m.record_poisoned("p", &tidemill::Message::new(""));
    /// assert!(m.encode().contains(r#"service="orders""#));
    /// ```
    pub fn label(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// A poison queue's topic: messages the publisher decorator publishes there are counted in
    /// `poison_messages_total`.
    ///
    /// ```
    /// let config = tidemill_otel::MetricsConfig::new().poison_topic("orders.poison");
    /// # drop(config);
    /// ```
    pub fn poison_topic(mut self, topic: impl Into<String>) -> Self {
        self.poison_topics.push(topic.into());
        self
    }

    /// Registers the metrics in your registry. Register once per registry: a second
    /// registration under the same namespace would expose every metric twice.
    ///
    /// ```
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// let metrics = tidemill_otel::MetricsConfig::new().register(&mut registry);
    /// assert!(metrics.registry().is_none());
    /// ```
    pub fn register(self, registry: &mut Registry) -> Metrics {
        Metrics::register_in(self, registry)
    }

    /// Registers the metrics in a registry of their own, served by
    /// [`Metrics::registry`] and [`Metrics::encode`].
    ///
    /// ```
    /// let metrics = tidemill_otel::MetricsConfig::new().build();
    /// metrics.record_poisoned("orders.poison", &tidemill::Message::new(""));
    /// assert!(metrics.encode().contains("tidemill_poison_messages_total"));
    /// ```
    pub fn build(self) -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics::register_in(self, &mut registry);
        let _ = metrics.inner.registry.set(Arc::new(registry));
        metrics
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeathLabels {
    handler: String,
    restarted: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    handler: String,
    topic: String,
    dead_letter_topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputFailureLabels {
    handler: String,
    topic: String,
    permanent: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    handler: String,
    name: String,
}

struct Inner {
    deaths: Family<DeathLabels, Counter>,
    dead_lettered: Family<DeadLetterLabels, Counter>,
    rejects_kept: Family<HandlerLabels, Counter>,
    output_failures: Family<OutputFailureLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    handled: Family<HandlerLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    duration: Family<HandlerLabels, Histogram, Buckets>,
    in_flight: Family<HandlerLabels, Gauge>,
    retries: Family<HandlerLabels, Counter>,
    poisoned: Family<PoisonLabels, Counter>,
    published: Family<TopicLabels, Counter>,
    publish_failed: Family<TopicLabels, Counter>,
    publish_duration: Family<TopicLabels, Histogram, Buckets>,
    received: Family<TopicLabels, Counter>,
    acked: Family<TopicLabels, Counter>,
    nacked: Family<TopicLabels, Counter>,
    poison_topics: Vec<String>,
    publishers: RwLock<HashMap<Box<str>, Arc<PublishInstruments>>>,
    registry: OnceLock<Arc<Registry>>,
}

/// A handle on the registered metrics: makes the router layer and the pub/sub decorators that
/// feed them. Cloning is cheap and shares the metrics.
///
/// ```
/// use tidemill_otel::Metrics;
///
/// let metrics = Metrics::new();
/// let router = tidemill::Router::new();
/// router
///     .layer(metrics.layer())
///     .decorate_publishers(metrics.publisher_decorator())
///     .decorate_subscribers(metrics.subscriber_decorator());
/// // The text exposition; a metric shows once it has a series (a handler, topic...).
/// let text = metrics.encode();
/// assert!(text.ends_with("# EOF\n"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("poison_topics", &self.inner.poison_topics)
            .field("own_registry", &self.inner.registry.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics with the default options, in a registry of their own.
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// # drop(metrics);
    /// ```
    pub fn new() -> Self {
        MetricsConfig::new().build()
    }

    fn register_in(config: MetricsConfig, registry: &mut Registry) -> Self {
        let handler_buckets = Buckets(config.handler_buckets.into());
        let publish_buckets = Buckets(config.publish_buckets.into());
        let inner = Inner {
            deaths: Family::default(),
            dead_lettered: Family::default(),
            rejects_kept: Family::default(),
            output_failures: Family::default(),
            skipped: Family::default(),
            handled: Family::default(),
            failed: Family::default(),
            duration: Family::new_with_constructor(handler_buckets),
            in_flight: Family::default(),
            retries: Family::default(),
            poisoned: Family::default(),
            published: Family::default(),
            publish_failed: Family::default(),
            publish_duration: Family::new_with_constructor(publish_buckets),
            received: Family::default(),
            acked: Family::default(),
            nacked: Family::default(),
            poison_topics: config.poison_topics,
            publishers: RwLock::default(),
            registry: OnceLock::new(),
        };
        let mut r = if config.namespace.is_empty() {
            registry
        } else {
            registry.sub_registry_with_prefix(&config.namespace)
        };
        if !config.labels.is_empty() {
            r = r.sub_registry_with_labels(config.labels.into_iter());
        }
        r.register(
            "router_handler_deaths",
            "Handler loops that died (panicked, lost their subscription), by whether they were restarted",
            inner.deaths.clone(),
        );
        r.register(
            "router_dead_lettered",
            "Messages rejected for good and sent to a dead-letter topic by the router",
            inner.dead_lettered.clone(),
        );
        r.register(
            "router_rejects_kept",
            "Messages rejected for good with no dead-letter destination, kept and redelivered after the reject delay",
            inner.rejects_kept.clone(),
        );
        r.register(
            "router_output_publish_failures",
            "Failures to publish a handler's outputs",
            inner.output_failures.clone(),
        );
        r.register(
            "messages_skipped",
            "Messages a handler skipped as another handler's business",
            inner.skipped.clone(),
        );
        r.register(
            "handler_messages_handled",
            "Messages whose handling finished, failed or not",
            inner.handled.clone(),
        );
        r.register(
            "handler_messages_failed",
            "Messages whose handler failed, by the disposition it asked for",
            inner.failed.clone(),
        );
        r.register_with_unit(
            "handler_duration",
            "How long handling a message took",
            Unit::Seconds,
            inner.duration.clone(),
        );
        r.register(
            "handler_messages_in_flight",
            "Messages being handled now",
            inner.in_flight.clone(),
        );
        r.register(
            "handler_retries",
            "Retries of a failed handling by the retry middleware",
            inner.retries.clone(),
        );
        r.register(
            "poison_messages",
            "Messages sent to a poison queue",
            inner.poisoned.clone(),
        );
        r.register(
            "publisher_messages_published",
            "Messages published",
            inner.published.clone(),
        );
        r.register(
            "publisher_messages_failed",
            "Messages whose publishing failed",
            inner.publish_failed.clone(),
        );
        r.register_with_unit(
            "publisher_duration",
            "How long a publish call took",
            Unit::Seconds,
            inner.publish_duration.clone(),
        );
        r.register(
            "subscriber_messages_received",
            "Messages delivered by subscriptions",
            inner.received.clone(),
        );
        r.register(
            "subscriber_messages_acked",
            "Deliveries acked",
            inner.acked.clone(),
        );
        r.register(
            "subscriber_messages_nacked",
            "Deliveries nacked (or dropped unsettled)",
            inner.nacked.clone(),
        );
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The registry the metrics are in, when they have their own ([`MetricsConfig::build`],
    /// [`Metrics::new`]); `None` when they were registered in yours.
    ///
    /// ```
    /// assert!(tidemill_otel::Metrics::new().registry().is_some());
    /// ```
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.inner.registry.get()
    }

    /// The metrics of their own registry in the text exposition format (empty when they were
    /// registered in yours: encode yours with [`crate::endpoint::encode`]).
    ///
    /// ```
    /// assert!(tidemill_otel::Metrics::new().encode().ends_with("# EOF\n"));
    /// ```
    pub fn encode(&self) -> String {
        self.registry()
            .map(|r| crate::endpoint::encode(r))
            .unwrap_or_default()
    }

    /// The router layer counting handlings, failures, durations and messages in flight.
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// tidemill::Router::new().layer(metrics.layer());
    /// ```
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
        }
    }

    /// Wraps a publisher to count what it publishes.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
    /// let metrics = tidemill_otel::Metrics::new();
    /// let publisher = metrics.publisher(InProcessPubSub::new());
    /// publisher.publish_one("orders", Message::new("x")).await?;
    /// assert!(metrics.encode().contains(r#"tidemill_publisher_messages_published_total{topic="orders"} 1"#));
    /// # Ok(()) }
    /// ```
    pub fn publisher<P: Publisher>(&self, inner: P) -> MetricsPublisher<P> {
        MetricsPublisher {
            inner,
            metrics: self.clone(),
        }
    }

    /// Wraps a subscriber to count what its subscriptions deliver and how it is settled.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt, Subscriber};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
    /// let metrics = tidemill_otel::Metrics::new();
    /// let pubsub = InProcessPubSub::new();
    /// let mut sub = metrics.subscriber(pubsub.clone()).subscribe("orders").await?;
    /// pubsub.publish_one("orders", Message::new("x")).await?;
    /// sub.next().await.unwrap()?.ack();
    /// assert!(metrics.encode().contains(r#"tidemill_subscriber_messages_acked_total{topic="orders"} 1"#));
    /// # Ok(()) }
    /// ```
    pub fn subscriber<S: Subscriber>(&self, inner: S) -> MetricsSubscriber<S> {
        MetricsSubscriber {
            inner,
            metrics: self.clone(),
        }
    }

    /// A decorator for [`Router::decorate_publishers`](tidemill::Router::decorate_publishers).
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// tidemill::Router::new().decorate_publishers(metrics.publisher_decorator());
    /// ```
    pub fn publisher_decorator(
        &self,
    ) -> impl Fn(Arc<dyn Publisher>) -> Arc<dyn Publisher> + Send + Sync + 'static {
        let metrics = self.clone();
        move |p| Arc::new(metrics.publisher(p)) as Arc<dyn Publisher>
    }

    /// A decorator for [`Router::decorate_subscribers`](tidemill::Router::decorate_subscribers).
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// tidemill::Router::new().decorate_subscribers(metrics.subscriber_decorator());
    /// ```
    pub fn subscriber_decorator(
        &self,
    ) -> impl Fn(Arc<dyn Subscriber>) -> Arc<dyn Subscriber> + Send + Sync + 'static {
        let metrics = self.clone();
        move |s| Arc::new(metrics.subscriber(s)) as Arc<dyn Subscriber>
    }

    /// Counts one retry of the handling of `msg` (its handler and topic come from the router's
    /// [`HandlerContext`](tidemill::router::HandlerContext)).
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// metrics.record_retry(&tidemill::Message::new(""));
    /// assert!(metrics.encode().contains(r#"tidemill_handler_retries_total{handler="unknown",topic="unknown"} 1"#));
    /// ```
    pub fn record_retry(&self, msg: &Message) {
        let (handler, topic) = handler_and_topic(msg);
        self.inner
            .retries
            .get_or_create(&HandlerLabels {
                handler: handler.to_owned(),
                topic: topic.to_owned(),
            })
            .inc();
    }

    /// A hook for the retry middleware's `on_retry` that counts each retry.
    ///
    /// ```
    /// use tidemill::middleware::RetryLayer;
    /// let metrics = tidemill_otel::Metrics::new();
    /// tidemill::Router::new().layer(RetryLayer::new().on_retry(metrics.retry_hook()));
    /// ```
    pub fn retry_hook(
        &self,
    ) -> impl Fn(&Message, &HandlerError, u32, Duration) + Send + Sync + 'static {
        let metrics = self.clone();
        move |msg, _, _, _| metrics.record_retry(msg)
    }

    /// Counts `msg` as sent to the poison queue `poison_topic`, for poison queues that do not
    /// publish through a [`Metrics::publisher`]. Its handler and topic come from the poison
    /// queue's metadata, or from the handling in progress.
    ///
    /// ```
    /// use tidemill::middleware::{POISON_HANDLER_KEY, POISON_TOPIC_KEY};
    /// let metrics = tidemill_otel::Metrics::new();
    /// let msg = tidemill::Message::new("")
    ///     .with_metadata(POISON_HANDLER_KEY, "bill")
    ///     .with_metadata(POISON_TOPIC_KEY, "orders");
    /// metrics.record_poisoned("orders.poison", &msg);
    /// assert!(metrics.encode().contains(
    ///     r#"tidemill_poison_messages_total{poison_topic="orders.poison",handler="bill",topic="orders"} 1"#
    /// ));
    /// ```
    pub fn record_poisoned(&self, poison_topic: &str, msg: &Message) {
        self.inner
            .poisoned
            .get_or_create(&PoisonLabels::of(poison_topic, msg))
            .inc();
    }

    /// An observer of the router's events that counts handler deaths, dead-lettered and kept
    /// rejects, and output publishing failures.
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// let router = tidemill::Router::new();
    /// router.on_event(metrics.router_events());
    /// ```
    pub fn router_events(&self) -> impl Fn(&RouterEvent<'_>) + Send + Sync + 'static {
        let inner = self.inner.clone();
        move |event| {
            // Each arm counts one sample; the counter's previous value is of no use here.
            let _ = match *event {
                RouterEvent::HandlerDied {
                    handler,
                    restart_in,
                    ..
                } => inner
                    .deaths
                    .get_or_create(&DeathLabels {
                        handler: handler.to_owned(),
                        restarted: if restart_in.is_some() {
                            "true"
                        } else {
                            "false"
                        },
                    })
                    .inc(),
                RouterEvent::DeadLettered {
                    handler,
                    topic,
                    dead_letter_topic,
                    ..
                } => inner
                    .dead_lettered
                    .get_or_create(&DeadLetterLabels {
                        handler: handler.to_owned(),
                        topic: topic.to_owned(),
                        dead_letter_topic: dead_letter_topic.to_owned(),
                    })
                    .inc(),
                RouterEvent::RejectNotDeadLettered { handler, topic, .. } => inner
                    .rejects_kept
                    .get_or_create(&HandlerLabels {
                        handler: handler.to_owned(),
                        topic: topic.to_owned(),
                    })
                    .inc(),
                RouterEvent::OutputPublishFailed {
                    handler,
                    output_topic,
                    permanent,
                } => inner
                    .output_failures
                    .get_or_create(&OutputFailureLabels {
                        handler: handler.to_owned(),
                        topic: output_topic.to_owned(),
                        permanent: if permanent { "true" } else { "false" },
                    })
                    .inc(),
                _ => 0,
            };
        }
    }

    /// Counts a message that `handler` skipped as not its business (a CQRS processor's
    /// `on_skip`), by the message's name.
    ///
    /// ```
    /// let metrics = tidemill_otel::Metrics::new();
    /// metrics.record_skipped("billing", "OrderShipped");
    /// assert!(metrics.encode().contains(
    ///     r#"tidemill_messages_skipped_total{handler="billing",name="OrderShipped"} 1"#
    /// ));
    /// ```
    pub fn record_skipped(&self, handler: &str, name: &str) {
        self.inner
            .skipped
            .get_or_create(&SkipLabels {
                handler: handler.to_owned(),
                name: name.to_owned(),
            })
            .inc();
    }

    fn publish_instruments(&self, topic: &str) -> Arc<PublishInstruments> {
        if let Some(found) = self.inner.publishers.read().get(topic) {
            return found.clone();
        }
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        let poison = self.inner.poison_topics.iter().any(|p| p == topic);
        let instruments = Arc::new(PublishInstruments {
            published: self.inner.published.get_or_create_owned(&labels),
            failed: self.inner.publish_failed.get_or_create_owned(&labels),
            duration: self.inner.publish_duration.get_or_create_owned(&labels),
            poison,
        });
        self.inner
            .publishers
            .write()
            .entry(topic.into())
            .or_insert(instruments)
            .clone()
    }

    fn handler_instruments(&self, handler: &str, topic: &str) -> HandlerInstruments {
        let labels = HandlerLabels {
            handler: handler.to_owned(),
            topic: topic.to_owned(),
        };
        HandlerInstruments {
            handled: self.inner.handled.get_or_create_owned(&labels),
            duration: self.inner.duration.get_or_create_owned(&labels),
            in_flight: self.inner.in_flight.get_or_create_owned(&labels),
            labels,
        }
    }

    fn record_failure(&self, labels: &HandlerLabels, disposition: Disposition) {
        let disposition = match disposition {
            Disposition::Retry => "retry",
            Disposition::RetryAfter(_) => "retry_after",
            Disposition::Reject => "reject",
            Disposition::Drop => "drop",
            _ => "other",
        };
        self.inner
            .failed
            .get_or_create(&FailedLabels {
                handler: labels.handler.clone(),
                topic: labels.topic.clone(),
                disposition,
            })
            .inc();
    }
}

struct PublishInstruments {
    published: Counter,
    failed: Counter,
    duration: Histogram,
    /// Whether the topic is a poison queue's.
    poison: bool,
}

struct HandlerInstruments {
    handled: Counter,
    duration: Histogram,
    in_flight: Gauge,
    labels: HandlerLabels,
}

/// Router middleware feeding the handler metrics; made by [`Metrics::layer`].
///
/// ```
/// let layer: tidemill_otel::MetricsLayer = tidemill_otel::Metrics::new().layer();
/// tidemill::Router::new().layer(layer);
/// ```
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            instruments: PerHandler::new(),
        }
    }
}

/// The service of [`MetricsLayer`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::Layer;
/// let handler = handler_fn(|_msg: tidemill::Message| async { HandlerResult::Ok(()) });
/// let svc: tidemill_otel::metrics::MetricsService<_> = tidemill_otel::Metrics::new().layer().layer(handler);
/// # drop(svc);
/// ```
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
    instruments: PerHandler<HandlerInstruments>,
}

impl<S: Clone> Clone for MetricsService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
            instruments: self.instruments.clone(),
        }
    }
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S: Handler> Service<Message> for MetricsService<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let (handler, topic) = handler_and_topic(&msg);
        let instruments = self.instruments.get(handler, topic, |h, t| {
            self.metrics.handler_instruments(h, t)
        });
        instruments.in_flight.inc();
        let started = Instant::now();
        MetricsFuture {
            inner: self.inner.call(msg),
            guard: InFlight {
                instruments,
                metrics: self.metrics.clone(),
                started,
            },
        }
    }
}

/// Takes the message out of the in-flight gauge even when its future is dropped unfinished.
struct InFlight {
    instruments: Arc<HandlerInstruments>,
    metrics: Metrics,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instruments.in_flight.dec();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`].
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tower::{Layer, Service};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let metrics = tidemill_otel::Metrics::new();
/// let handler = handler_fn(|_msg: tidemill::Message| async { HandlerResult::Ok(()) });
/// let mut svc = metrics.layer().layer(handler);
/// let future: tidemill_otel::metrics::MetricsFuture<_> = svc.call(tidemill::Message::new(""));
/// future.await.unwrap();
/// assert!(metrics.encode().contains(r#"tidemill_handler_messages_handled_total{handler="unknown",topic="unknown"} 1"#));
/// # }
/// ```
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Vec<Message>, HandlerError>>,
{
    type Output = Result<Vec<Message>, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let i = &this.guard.instruments;
        i.handled.inc();
        i.duration
            .observe(this.guard.started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            this.guard
                .metrics
                .record_failure(&i.labels, error.disposition());
        }
        Poll::Ready(result)
    }
}

/// A publisher counting what it publishes; made by [`Metrics::publisher`].
#[derive(Clone, Debug)]
pub struct MetricsPublisher<P> {
    inner: P,
    metrics: Metrics,
}

impl<P> MetricsPublisher<P> {
    /// The wrapped publisher.
    ///
    /// ```
    /// let p = tidemill_otel::Metrics::new().publisher(tidemill::InProcessPubSub::new());
    /// let _inner: &tidemill::InProcessPubSub = p.inner();
    /// ```
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

#[async_trait]
impl<P: Publisher> Publisher for MetricsPublisher<P> {
    fn limits(&self) -> tidemill::Limits {
        self.inner.limits()
    }

    fn instance_id(&self) -> usize {
        self.inner.instance_id()
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let instruments = self.metrics.publish_instruments(topic);
        let count = messages.len() as u64;
        let poisoned: Vec<PoisonLabels> = if instruments.poison {
            messages
                .iter()
                .map(|m| PoisonLabels::of(topic, m))
                .collect()
        } else {
            Vec::new()
        };
        let started = Instant::now();
        let result = self.inner.publish(topic, messages).await;
        instruments
            .duration
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                instruments.published.inc_by(count);
                for labels in &poisoned {
                    self.metrics.inner.poisoned.get_or_create(labels).inc();
                }
            }
            Err(_) => {
                instruments.failed.inc_by(count);
            }
        }
        result
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// A subscriber counting deliveries and their settlements; made by [`Metrics::subscriber`].
#[derive(Clone, Debug)]
pub struct MetricsSubscriber<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> MetricsSubscriber<S> {
    /// The wrapped subscriber.
    ///
    /// ```
    /// let s = tidemill_otel::Metrics::new().subscriber(tidemill::InProcessPubSub::new());
    /// let _inner: &tidemill::InProcessPubSub = s.inner();
    /// ```
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[derive(Clone)]
struct SettleCounters {
    acked: Counter,
    nacked: Counter,
}

/// Counts a settlement, then settles at the broker.
struct CountingSettle {
    counters: SettleCounters,
    acker: Acker,
}

impl Settle for CountingSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        match settlement {
            Settlement::Ack => self.counters.acked.inc(),
            Settlement::Nack { .. } => self.counters.nacked.inc(),
        };
        self.acker.settle(settlement);
    }
}

#[async_trait]
impl<S: Subscriber> Subscriber for MetricsSubscriber<S> {
    fn max_in_flight(&self) -> Option<usize> {
        self.inner.max_in_flight()
    }

    fn group(&self) -> Option<&str> {
        self.inner.group()
    }

    fn dead_letter_publisher(&self) -> Option<std::sync::Arc<dyn Publisher>> {
        self.inner.dead_letter_publisher()
    }

    fn instance_id(&self) -> usize {
        self.inner.instance_id()
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        let subscription = self.inner.subscribe(topic).await?;
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        let inner = &self.metrics.inner;
        let received = inner.received.get_or_create_owned(&labels);
        let counters = SettleCounters {
            acked: inner.acked.get_or_create_owned(&labels),
            nacked: inner.nacked.get_or_create_owned(&labels),
        };
        let topic = subscription.topic().to_owned();
        let deliveries = subscription.map(move |item| {
            item.map(|delivery| {
                received.inc();
                let (message, acker) = delivery.into_parts();
                Delivery::new(
                    message,
                    Acker::new(CountingSettle {
                        counters: counters.clone(),
                        acker,
                    }),
                )
            })
        });
        Ok(Subscription::new(topic, deliveries))
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        self.inner.as_initializer()
    }
}
