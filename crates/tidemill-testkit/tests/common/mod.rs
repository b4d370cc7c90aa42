//! A [`TestTarget`] on tidemill's in-process pub/sub, optionally with one fault injected, to
//! show that the suite notices it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::in_process::InProcessConfig;
use tidemill::{
    Acker, Delivery, Error, InProcessPubSub, Message, Publisher, Result, Settle, Settlement,
    SubscribeInitializer, Subscriber, Subscription,
};
use tidemill_testkit::helpers::seq_of;
use tidemill_testkit::{Broker, Features, TestTarget};

/// A way to break the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// None: the pub/sub as it is.
    None,
    /// The publisher silently drops every message whose sequence number is 5 modulo 97.
    Loses,
    /// The publisher sends every message whose sequence number is 7 modulo 50 twice.
    Duplicates,
    /// The publisher also sends each message to the topic it published to before.
    Leaks,
    /// Nacks (and unsettled drops) act as acks.
    NackIsAck,
    /// Acked messages with a sequence number of 1 modulo 10 come back 100 ms later.
    RedeliversAcked,
    /// Closing a publisher never returns.
    CloseHangs,
}

/// The in-process pub/sub as a target: one fresh pub/sub per scenario.
pub struct Target {
    pub config: InProcessConfig,
    pub features: Features,
    pub fault: Fault,
}

impl Target {
    /// The default configuration: `max_in_flight` 1, not persistent.
    pub fn default_config() -> Self {
        Self {
            config: InProcessConfig::default(),
            features: Features {
                consumer_groups: true,
                exactly_once: true,
                guaranteed_order: true,
                require_single_instance: true,
                ..Features::default()
            },
            fault: Fault::None,
        }
    }

    /// Persistent, with 64 deliveries in flight per subscription (so no order is claimed).
    pub fn persistent() -> Self {
        Self {
            // A short nack delay: the fault scenarios nack a lot and have a deadline.
            config: InProcessConfig::default()
                .persistent(true)
                .max_in_flight(64)
                .nack_delay(std::time::Duration::from_millis(10)),
            features: Features {
                consumer_groups: true,
                persistent: true,
                new_subscriber_receives_old_messages: true,
                require_single_instance: true,
                ..Features::default()
            },
            fault: Fault::None,
        }
    }

    /// The default configuration, claiming no consumer groups: every subscriber is on its own.
    pub fn without_groups() -> Self {
        Self {
            features: Features {
                consumer_groups: false,
                ..Self::default_config().features
            },
            ..Self::default_config()
        }
    }

    /// This target with `fault`.
    pub fn with_fault(self, fault: Fault) -> Self {
        Self { fault, ..self }
    }

    /// This target with `config`.
    pub fn with_config(self, config: InProcessConfig) -> Self {
        Self { config, ..self }
    }
}

#[async_trait]
impl TestTarget for Target {
    fn features(&self) -> Features {
        self.features.clone()
    }

    async fn connect(&self) -> Result<Arc<dyn Broker>> {
        Ok(Arc::new(InProcessBroker {
            pubsub: InProcessPubSub::with_config(self.config.clone()),
            fault: self.fault,
        }))
    }
}

struct InProcessBroker {
    pubsub: InProcessPubSub,
    fault: Fault,
}

#[async_trait]
impl Broker for InProcessBroker {
    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(PublisherHandle {
            pubsub: self.pubsub.clone(),
            closed: AtomicBool::new(false),
            fault: self.fault,
            last_topic: Mutex::new(None),
        }))
    }

    async fn subscriber(&self, group: Option<&str>) -> Result<Arc<dyn Subscriber>> {
        let scoped = match group {
            Some(group) => self.pubsub.with_group(group),
            None => self.pubsub.clone(),
        };
        Ok(Arc::new(SubscriberHandle {
            scoped,
            root: self.pubsub.clone(),
            closed: tokio::sync::watch::Sender::new(false),
            fault: self.fault,
        }))
    }
}

/// A publisher whose `close` ends this handle only. Closing an `InProcessPubSub` handle closes
/// the whole pub/sub, which the scenario's other publishers and subscribers still use.
struct PublisherHandle {
    pubsub: InProcessPubSub,
    closed: AtomicBool,
    fault: Fault,
    last_topic: Mutex<Option<String>>,
}

fn seq_is(msg: &Message, modulo: usize, rest: usize) -> bool {
    seq_of(msg).is_some_and(|s| s % modulo == rest)
}

#[async_trait]
impl Publisher for PublisherHandle {
    async fn publish(&self, topic: &str, mut messages: Vec<Message>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        match self.fault {
            Fault::Loses => messages.retain(|m| !seq_is(m, 97, 5)),
            Fault::Duplicates => {
                let again: Vec<Message> = messages
                    .iter()
                    .filter(|m| seq_is(m, 50, 7))
                    .cloned()
                    .collect();
                messages.extend(again);
            }
            Fault::Leaks => {
                let before = self.last_topic.lock().replace(topic.to_owned());
                if let Some(before) = before.filter(|t| t != topic) {
                    self.pubsub.publish(&before, messages.clone()).await?;
                }
            }
            _ => {}
        }
        self.pubsub.publish(topic, messages).await
    }

    async fn close(&self) -> Result<()> {
        if self.fault == Fault::CloseHangs {
            std::future::pending::<()>().await;
        }
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// A subscriber whose `close` ends the subscriptions made through this handle only (dropping
/// them, so that their unsettled deliveries go back to their group).
struct SubscriberHandle {
    scoped: InProcessPubSub,
    root: InProcessPubSub,
    closed: tokio::sync::watch::Sender<bool>,
    fault: Fault,
}

#[async_trait]
impl Subscriber for SubscriberHandle {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        if *self.closed.borrow() {
            return Err(Error::Closed("subscriber"));
        }
        let inner = self.scoped.subscribe(topic).await?;
        let closed = self.closed.subscribe();
        let fault = self.fault;
        let (root, name) = (self.root.clone(), topic.to_owned());
        let stream = futures::stream::unfold((Some(inner), closed), move |(inner, mut closed)| {
            let (root, name) = (root.clone(), name.clone());
            async move {
                let mut inner = inner?;
                let closing = async {
                    if closed.wait_for(|c| *c).await.is_err() {
                        // The handle is gone without closing: the subscription lives on.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    biased;
                    _ = closing => None,
                    item = inner.next() => {
                        let item = item?.map(|d| inject(d, fault, &root, &name));
                        Some((item, (Some(inner), closed)))
                    }
                }
            }
        });
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        self.closed.send_replace(true);
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        self.scoped.as_initializer()
    }
}

/// Settles a delivery the faulty way.
struct FaultySettle {
    inner: Acker,
    fault: Fault,
    pubsub: InProcessPubSub,
    topic: String,
    message: Message,
}

impl Settle for FaultySettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        match (self.fault, settlement) {
            (Fault::NackIsAck, _) => self.inner.ack(),
            (Fault::RedeliversAcked, Settlement::Ack) => {
                self.inner.ack();
                if seq_is(&self.message, 10, 1) {
                    let Self {
                        pubsub,
                        topic,
                        message,
                        ..
                    } = *self;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = pubsub.publish(&topic, vec![message]).await;
                    });
                }
            }
            (_, settlement) => self.inner.settle(settlement),
        }
    }
}

fn inject(delivery: Delivery, fault: Fault, pubsub: &InProcessPubSub, topic: &str) -> Delivery {
    if !matches!(fault, Fault::NackIsAck | Fault::RedeliversAcked) {
        return delivery;
    }
    let (message, inner) = delivery.into_parts();
    let settle = FaultySettle {
        inner,
        fault,
        pubsub: pubsub.clone(),
        topic: topic.to_owned(),
        message: message.clone(),
    };
    Delivery::new(message, Acker::new(settle))
}
