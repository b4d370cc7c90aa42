//! How topics and consumer groups map onto exchanges, queues and bindings.
//!
//! | preset | publish goes to | a consumer group is | a subscriber without group gets |
//! | --- | --- | --- | --- |
//! | [`Topology::durable_pubsub`] | fanout exchange named like the topic | durable queue `<topic>.<group>` bound to it: groups each get every message, members share them | an exclusive, auto-delete queue of its own |
//! | [`Topology::work_queue`] | the default exchange, routing key = topic, into the durable queue named like the topic | ignored: every subscriber competes for the one queue | the same shared queue |
//! | [`Topology::topic_exchange`] | one topic exchange, routing key = topic | durable queue `<group>.<pattern>` bound with the subscribed pattern (`*` one word, `#` any number) | an exclusive, auto-delete queue bound with the pattern |
//!
//! Each preset has a non-durable variant ([`Topology::durable`]`(false)`): exchanges and queues
//! are not durable, group queues are deleted when their last consumer leaves, and messages are
//! sent transient, for tests and data that may be lost on a broker restart.

use std::fmt;
use std::sync::Arc;

use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use tidemill::{validate_topic, Error, Result};

type NameFn = Arc<dyn Fn(&str) -> String + Send + Sync>;
type QueueFn = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preset {
    PubSub,
    WorkQueue,
    TopicExchange,
}

/// The exchanges, queues and bindings behind topics and consumer groups. Start from a preset and
/// change what you need; see the [module docs](crate::topology) for the presets.
///
/// ```
/// use tidemill_amqp::Topology;
///
/// // The seed's events service: one topic exchange "events", queues bound with patterns,
/// // and queues named after the consuming service, as in `evts_booking`.
/// let topology = Topology::topic_exchange("events")
///     .queue_name(|_pattern, group| format!("evts_{group}"));
/// assert_eq!(topology.exchange_for("event.created.europe"), "events");
/// assert_eq!(topology.queue_for("event.#", "booking"), "evts_booking");
/// ```
#[derive(Clone)]
pub struct Topology {
    preset: Preset,
    exchange: NameFn,
    exchange_kind: ExchangeKind,
    routing_key: NameFn,
    binding_key: NameFn,
    queue: QueueFn,
    durable: bool,
    queue_arguments: FieldTable,
    exchange_arguments: FieldTable,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("preset", &self.preset)
            .field("exchange_kind", &self.exchange_kind)
            .field("durable", &self.durable)
            .field("queue_arguments", &self.queue_arguments)
            .field("exchange_arguments", &self.exchange_arguments)
            .finish_non_exhaustive()
    }
}

impl Default for Topology {
    /// [`Topology::durable_pubsub`].
    fn default() -> Self {
        Self::durable_pubsub()
    }
}

impl Topology {
    /// Durable pub/sub: a fanout exchange per topic (named like the topic) and a durable queue
    /// per consumer group, `<topic>.<group>`. Groups each get every message; the members of a
    /// group share them. The default.
    ///
    /// ```
    /// let t = tidemill_amqp::Topology::durable_pubsub();
    /// assert_eq!(t.exchange_for("orders"), "orders");
    /// assert_eq!(t.queue_for("orders", "billing"), "orders.billing");
    /// ```
    pub fn durable_pubsub() -> Self {
        Self {
            preset: Preset::PubSub,
            exchange: Arc::new(|topic| topic.to_owned()),
            exchange_kind: ExchangeKind::Fanout,
            routing_key: Arc::new(|_| String::new()),
            binding_key: Arc::new(|_| String::new()),
            queue: Arc::new(|topic, group| format!("{topic}.{group}")),
            durable: true,
            queue_arguments: FieldTable::default(),
            exchange_arguments: FieldTable::default(),
        }
    }

    /// Durable work queue: one durable queue per topic, named like the topic, fed through the
    /// default exchange. Every subscriber, whatever its group, competes for its messages.
    ///
    /// ```
    /// let t = tidemill_amqp::Topology::work_queue();
    /// assert_eq!(t.exchange_for("jobs"), "");
    /// assert_eq!(t.routing_key_for("jobs"), "jobs");
    /// assert_eq!(t.queue_for("jobs", "any"), "jobs");
    /// ```
    pub fn work_queue() -> Self {
        Self {
            preset: Preset::WorkQueue,
            exchange: Arc::new(|_| String::new()),
            exchange_kind: ExchangeKind::Direct,
            routing_key: Arc::new(|topic| topic.to_owned()),
            binding_key: Arc::new(|topic| topic.to_owned()),
            queue: Arc::new(|topic, _| topic.to_owned()),
            durable: true,
            queue_arguments: FieldTable::default(),
            exchange_arguments: FieldTable::default(),
        }
    }

    /// Topic routing: every topic is published to the one topic exchange `exchange` with the
    /// topic as routing key (`event.created.europe`); a subscription's topic is a binding
    /// pattern where `*` matches one dot-separated word and `#` any number of words
    /// (`event.created.*`, `event.#`). Group queues are durable, named `<group>.<pattern>`.
    ///
    /// ```
    /// let t = tidemill_amqp::Topology::topic_exchange("events");
    /// assert_eq!(t.routing_key_for("event.created.europe"), "event.created.europe");
    /// assert_eq!(t.binding_key_for("event.#"), "event.#");
    /// assert_eq!(t.queue_for("event.#", "booking"), "booking.event.#");
    /// ```
    pub fn topic_exchange(exchange: impl Into<String>) -> Self {
        let exchange: String = exchange.into();
        Self {
            preset: Preset::TopicExchange,
            exchange: Arc::new(move |_| exchange.clone()),
            exchange_kind: ExchangeKind::Topic,
            routing_key: Arc::new(|topic| topic.to_owned()),
            binding_key: Arc::new(|topic| topic.to_owned()),
            queue: Arc::new(|topic, group| format!("{group}.{topic}")),
            durable: true,
            queue_arguments: FieldTable::default(),
            exchange_arguments: FieldTable::default(),
        }
    }

    /// Whether exchanges and queues survive a broker restart and messages are persistent
    /// (delivery mode 2). With `false`, group queues are also deleted once their last consumer
    /// leaves. Default `true`.
    ///
    /// ```
    /// let t = tidemill_amqp::Topology::durable_pubsub().durable(false);
    /// assert!(!t.is_durable());
    /// ```
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The exchange a topic is published to (`""` is the default exchange, which needs no
    /// declaration and routes by queue name).
    pub fn exchange_name(mut self, name: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.exchange = Arc::new(name);
        self
    }

    /// The kind of exchange declared (fanout, direct, topic, headers).
    pub fn exchange_kind(mut self, kind: ExchangeKind) -> Self {
        self.exchange_kind = kind;
        self
    }

    /// The routing key a topic is published with.
    pub fn routing_key(mut self, key: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.routing_key = Arc::new(key);
        self
    }

    /// The binding key a subscription's topic binds its queue with.
    pub fn binding_key(mut self, key: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.binding_key = Arc::new(key);
        self
    }

    /// The queue of consumer group `group` subscribing to `topic` (called as `f(topic, group)`).
    pub fn queue_name(
        mut self,
        name: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.queue = Arc::new(name);
        self
    }

    /// Adds an argument to every queue declared (e.g. `x-queue-type`, `x-max-length`).
    ///
    /// ```
    /// use tidemill_amqp::{lapin::types::AMQPValue, Topology};
    /// let t = Topology::durable_pubsub().queue_argument("x-max-length", AMQPValue::LongLongInt(10_000));
    /// # drop(t);
    /// ```
    pub fn queue_argument(mut self, key: &str, value: AMQPValue) -> Self {
        self.queue_arguments.insert(key.into(), value);
        self
    }

    /// Adds an argument to every exchange declared (e.g. `alternate-exchange`).
    pub fn exchange_argument(mut self, key: &str, value: AMQPValue) -> Self {
        self.exchange_arguments.insert(key.into(), value);
        self
    }

    /// Whether exchanges and queues are durable and messages persistent.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The exchange `topic` is published to.
    pub fn exchange_for(&self, topic: &str) -> String {
        (self.exchange)(topic)
    }

    /// The routing key `topic` is published with.
    pub fn routing_key_for(&self, topic: &str) -> String {
        (self.routing_key)(topic)
    }

    /// The binding key a subscription to `topic` uses.
    pub fn binding_key_for(&self, topic: &str) -> String {
        (self.binding_key)(topic)
    }

    /// The queue consumer group `group` reads `topic` from.
    pub fn queue_for(&self, topic: &str, group: &str) -> String {
        (self.queue)(topic, group)
    }

    pub(crate) fn exchange_kind_value(&self) -> ExchangeKind {
        self.exchange_kind.clone()
    }

    pub(crate) fn queue_arguments(&self) -> &FieldTable {
        &self.queue_arguments
    }

    pub(crate) fn exchange_arguments(&self) -> &FieldTable {
        &self.exchange_arguments
    }

    /// Whether every subscriber reads the one shared queue, group or not.
    pub(crate) fn shared_queue(&self) -> bool {
        self.preset == Preset::WorkQueue
    }

    fn wildcards_allowed_in_subscriptions(&self) -> bool {
        matches!(self.exchange_kind, ExchangeKind::Topic)
    }

    /// Checks a topic about to be published to.
    pub(crate) fn validate_publish(&self, topic: &str) -> Result<()> {
        validate_topic(topic)?;
        if topic.contains(['*', '#']) {
            return Err(Error::invalid_topic(
                topic,
                "`*` and `#` are wildcards for subscriptions, not part of a published topic",
            ));
        }
        check_name(topic, "exchange", &self.exchange_for(topic))?;
        check_short(topic, "routing key", &self.routing_key_for(topic))
    }

    /// Checks a topic (or pattern) about to be subscribed to.
    pub(crate) fn validate_subscribe(&self, topic: &str, group: Option<&str>) -> Result<()> {
        validate_topic(topic)?;
        if topic.contains(['*', '#']) && !self.wildcards_allowed_in_subscriptions() {
            return Err(Error::invalid_topic(
                topic,
                "`*` and `#` patterns need a topic exchange (Topology::topic_exchange)",
            ));
        }
        check_name(topic, "exchange", &self.exchange_for(topic))?;
        check_short(topic, "binding key", &self.binding_key_for(topic))?;
        if let Some(group) = group {
            check_name(topic, "queue", &self.queue_for(topic, group))?;
        }
        Ok(())
    }
}

fn check_short(topic: &str, what: &str, value: &str) -> Result<()> {
    if value.len() > 255 {
        return Err(Error::invalid_topic(
            topic,
            format!("the {what} {value:?} is longer than 255 bytes"),
        ));
    }
    Ok(())
}

fn check_name(topic: &str, what: &str, name: &str) -> Result<()> {
    check_short(topic, &format!("{what} name"), name)?;
    if name.starts_with("amq.") {
        return Err(Error::invalid_topic(
            topic,
            format!("the {what} name {name:?} starts with `amq.`, which the broker reserves"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_topics() {
        let pubsub = Topology::durable_pubsub();
        assert!(pubsub.validate_publish("orders").is_ok());
        assert!(pubsub.validate_publish("amq.direct").is_err());
        assert!(pubsub.validate_publish("a.*").is_err());
        assert!(pubsub.validate_subscribe("a.#", Some("g")).is_err());
        assert!(pubsub.validate_publish(&"x".repeat(256)).is_err());
        let topic = Topology::topic_exchange("events");
        assert!(topic.validate_subscribe("event.#", Some("g")).is_ok());
        assert!(topic.validate_publish("event.#").is_err());
    }
}
