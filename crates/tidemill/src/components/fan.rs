//! Fan-in (many topics into one) and fan-out (one subscription to many in-process subscribers),
//! both run as handlers of a [`Router`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::in_process::{InProcessConfig, InProcessPubSub};
use crate::message::Message;
use crate::pubsub::{Publisher, Subscriber, Subscription};
use crate::router::{HandlerResult, Router, RouterError};

/// The message without its in-process extensions, which belong to the handling that received it.
fn content_of(msg: Message) -> Message {
    let (id, payload, metadata) = msg.into_parts();
    Message::from_parts(id, payload, metadata)
}

/// Moves the messages of several topics into one.
///
/// [`register`](Self::register) adds one handler per source topic to a router (named
/// `fan_in:<target>:<source>`), which republishes each message unchanged (same id, payload and
/// metadata) to the target topic and acks it once published. Router-wide middleware applies.
///
/// ```
/// use tidemill::components::fan::FanIn;
/// use tidemill::InProcessPubSub;
///
/// # fn main() -> Result<(), tidemill::router::RouterError> {
/// let pubsub = InProcessPubSub::new();
/// let router = tidemill::Router::new();
/// FanIn::new("all_events", pubsub.clone())
///     .source("orders", pubsub.clone())
///     .source("payments", pubsub.clone())
///     .register(&router)?;
/// assert_eq!(router.handler_names().len(), 2);
/// # Ok(()) }
/// ```
#[must_use = "a fan-in does nothing until registered"]
pub struct FanIn {
    target: String,
    publisher: Arc<dyn Publisher>,
    sources: Vec<(String, Arc<dyn Subscriber>)>,
}

impl std::fmt::Debug for FanIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanIn")
            .field("target", &self.target)
            .field(
                "sources",
                &self.sources.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl FanIn {
    /// A fan-in into `target`, published with `publisher`.
    pub fn new(target: impl Into<String>, publisher: impl Publisher) -> Self {
        Self {
            target: target.into(),
            publisher: Arc::new(publisher),
            sources: Vec::new(),
        }
    }

    /// Adds a source topic and the subscriber to read it with.
    pub fn source(mut self, topic: impl Into<String>, subscriber: impl Subscriber) -> Self {
        self.sources.push((topic.into(), Arc::new(subscriber)));
        self
    }

    /// Adds the fan-in's handlers to `router`.
    pub fn register(self, router: &Router) -> Result<(), RouterError> {
        for (source, subscriber) in self.sources {
            router
                .handler(format!("fan_in:{}:{source}", self.target))
                .subscribe(source, subscriber)
                .publish_to(self.target.clone(), self.publisher.clone())
                .handle(|msg: Message| async move { HandlerResult::Ok(content_of(msg)) })?;
        }
        Ok(())
    }
}

/// Reads a topic once and gives every message to any number of in-process subscribers.
///
/// `FanOut` is a [`Subscriber`]: subscribe to it (before or while the router runs) as to any
/// pub/sub. [`add_topic`](Self::add_topic) adds a handler to a router (named `fan_out:<topic>`)
/// that reads the topic from the upstream subscriber and publishes each message to the fan-out's
/// own in-process pub/sub; the upstream message is acked only once every local subscription has
/// acked its copy. A message that arrives while nobody subscribed locally is dropped (acked).
///
/// ```
/// use futures::StreamExt;
/// use tidemill::components::fan::FanOut;
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt, Subscriber};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = InProcessPubSub::new();
/// let router = tidemill::Router::new();
/// let fan_out = FanOut::new();
/// fan_out.add_topic(&router, "prices", upstream.clone())?;
/// let mut a = fan_out.subscribe("prices").await?;
/// let mut b = fan_out.subscribe("prices").await?;
///
/// let run = tokio::spawn({
///     let router = router.clone();
///     async move { router.run().await }
/// });
/// router.running().await;
/// upstream.publish_one("prices", Message::new("42")).await?;
/// for sub in [&mut a, &mut b] {
///     let delivery = sub.next().await.unwrap()?;
///     assert_eq!(delivery.message().payload().as_ref(), b"42");
///     delivery.ack();
/// }
/// router.close().await?;
/// run.await??;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct FanOut {
    local: InProcessPubSub,
}

impl Default for FanOut {
    fn default() -> Self {
        Self::new()
    }
}

impl FanOut {
    /// A fan-out whose local subscriptions hold up to 1024 messages each.
    pub fn new() -> Self {
        Self::with_config(InProcessConfig::default())
    }

    /// A fan-out whose local pub/sub has the given options (whatever they say, publishing to it
    /// waits until every local subscription acked).
    ///
    /// ```
    /// use tidemill::components::fan::FanOut;
    /// use tidemill::in_process::InProcessConfig;
    /// let fan_out = FanOut::with_config(InProcessConfig::default().buffer_size(16));
    /// # drop(fan_out);
    /// ```
    pub fn with_config(config: InProcessConfig) -> Self {
        Self {
            local: InProcessPubSub::with_config(config.block_publish_until_acked(true)),
        }
    }

    /// Adds a handler to `router` that feeds `topic`, read with `upstream`, to the local
    /// subscriptions of the same topic.
    pub fn add_topic(
        &self,
        router: &Router,
        topic: impl Into<String>,
        upstream: impl Subscriber,
    ) -> Result<(), RouterError> {
        let topic = topic.into();
        router
            .handler(format!("fan_out:{topic}"))
            .subscribe(topic.clone(), upstream)
            .publish_to(topic, self.local.clone())
            .handle(|msg: Message| async move { HandlerResult::Ok(content_of(msg)) })
    }
}

#[async_trait]
impl Subscriber for FanOut {
    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        self.local.subscribe(topic).await
    }

    async fn close(&self) -> Result<()> {
        Subscriber::close(&self.local).await
    }
}
