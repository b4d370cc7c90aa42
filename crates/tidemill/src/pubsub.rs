//! The contract every pub/sub keeps: [`Publisher`], [`Subscriber`], and the [`Delivery`] a
//! [`Subscription`] yields, settled exactly once through its [`Acker`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::error::Result;
use crate::limits::Limits;
use crate::message::Message;

/// Sends messages to topics.
///
/// `publish` returns once the broker has taken the messages as far as the adapter promises
/// (confirmed, flushed or committed: each adapter documents which). Implementations are
/// thread-safe and usable as `Arc<dyn Publisher>`; `Arc<P>` and `Box<P>` are publishers too.
///
/// # Example
///
/// ```
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let publisher: std::sync::Arc<dyn Publisher> = std::sync::Arc::new(pubsub.clone());
/// publisher.publish_one("orders", Message::new("order #1")).await?;
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `messages` to `topic`, in order.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()>;

    /// Flushes what was published and releases the connection. Closing twice is harmless.
    async fn close(&self) -> Result<()>;

    /// What this publisher accepts. Adapters check every message against it before sending
    /// and refuse what they cannot carry unchanged; callers may check first.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Message, Publisher};
    /// let limits = InProcessPubSub::new().limits();
    /// assert!(limits.check("orders", &Message::new("x")).is_ok());
    /// ```
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Identifies the underlying publisher, so two handles on one (clones, `Arc`s, decorators)
    /// compare equal and it is closed once.
    fn instance_id(&self) -> usize {
        self as *const Self as *const () as usize
    }
}

/// Receives messages from topics.
///
/// Which consumer group a subscriber belongs to is part of its configuration: subscribers that
/// share a group split the messages between them; different groups each get every message.
///
/// # Example
///
/// ```
/// use futures::StreamExt;
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt, Subscriber};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let mut subscription = pubsub.subscribe("greetings").await?;
/// pubsub.publish_one("greetings", Message::new("hi")).await?;
/// let delivery = subscription.next().await.unwrap()?;
/// assert_eq!(delivery.message().payload().as_ref(), b"hi");
/// delivery.ack();
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Starts receiving messages of `topic`. Dropping the subscription cancels it.
    async fn subscribe(&self, topic: &str) -> Result<Subscription>;

    /// Stops every subscription, returns what is in flight and releases the connection. Closing
    /// twice is harmless.
    async fn close(&self) -> Result<()>;

    /// This subscriber's way to create a topic ahead of subscribing, if it has one.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Subscriber};
    /// assert!(InProcessPubSub::new().as_initializer().is_some());
    /// ```
    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        None
    }

    /// How many deliveries of one subscription may be unsettled at once, if the subscriber
    /// limits it. The router refuses a handler whose concurrency exceeds it, since the extra
    /// workers would never be fed.
    ///
    /// ```
    /// use tidemill::in_process::{InProcessConfig, InProcessPubSub};
    /// use tidemill::Subscriber;
    /// let pubsub = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(8));
    /// assert_eq!(pubsub.max_in_flight(), Some(8));
    /// ```
    fn max_in_flight(&self) -> Option<usize> {
        None
    }

    /// The consumer group this subscriber reads in, if it has one.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Subscriber};
    /// assert_eq!(InProcessPubSub::new().with_group("billing").group(), Some("billing"));
    /// assert_eq!(InProcessPubSub::new().group(), None);
    /// ```
    fn group(&self) -> Option<&str> {
        None
    }

    /// A publisher on the same pub/sub, for messages rejected for good when no poison queue is
    /// configured: the router sends them to [`DEFAULT_DEAD_LETTER_TOPIC`] through it rather
    /// than redelivering them in a loop.
    ///
    /// [`DEFAULT_DEAD_LETTER_TOPIC`]: crate::router::DEFAULT_DEAD_LETTER_TOPIC
    fn dead_letter_publisher(&self) -> Option<Arc<dyn Publisher>> {
        None
    }

    /// Identifies the underlying subscriber, so two handles on one compare equal and it is
    /// closed once.
    fn instance_id(&self) -> usize {
        self as *const Self as *const () as usize
    }
}

/// Creates a topic (and whatever the broker needs behind it) ahead of subscribing, so that
/// messages published before the first subscription are kept.
///
/// ```
/// use tidemill::{InProcessPubSub, SubscribeInitializer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// InProcessPubSub::new().initialize_topic("orders").await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait SubscribeInitializer: Send + Sync {
    /// Creates `topic` if it does not exist.
    async fn initialize_topic(&self, topic: &str) -> Result<()>;
}

macro_rules! forward_pubsub {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<P: Publisher + ?Sized> Publisher for $ptr<P> {
            async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
                (**self).publish(topic, messages).await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
            fn limits(&self) -> Limits {
                (**self).limits()
            }
            fn instance_id(&self) -> usize {
                (**self).instance_id()
            }
        }

        #[async_trait]
        impl<S: Subscriber + ?Sized> Subscriber for $ptr<S> {
            async fn subscribe(&self, topic: &str) -> Result<Subscription> {
                (**self).subscribe(topic).await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
            fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
                (**self).as_initializer()
            }
            fn max_in_flight(&self) -> Option<usize> {
                (**self).max_in_flight()
            }
            fn group(&self) -> Option<&str> {
                (**self).group()
            }
            fn dead_letter_publisher(&self) -> Option<Arc<dyn Publisher>> {
                (**self).dead_letter_publisher()
            }
            fn instance_id(&self) -> usize {
                (**self).instance_id()
            }
        }
    )*};
}
forward_pubsub!(Arc, Box);

/// Conveniences on every [`Publisher`].
pub trait PublisherExt: Publisher {
    /// Publishes a single message.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Message, PublisherExt};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
    /// InProcessPubSub::new().publish_one("t", Message::new("x")).await?;
    /// # Ok(()) }
    /// ```
    fn publish_one<'a>(
        &'a self,
        topic: &'a str,
        message: Message,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>
    where
        Self: Sync,
    {
        // `publish`'s own future, not another box around it.
        self.publish(topic, vec![message])
    }
}

impl<P: Publisher + ?Sized> PublisherExt for P {}

/// A stream of [`Delivery`]s from one topic. Dropping it cancels the subscription: the stream
/// ends, and deliveries not yet settled come back to the broker when they are dropped.
///
/// An `Err` item reports a problem the subscription lived through (it keeps going); the stream
/// ends (`None`) when the subscription or its subscriber is closed.
pub struct Subscription {
    topic: Arc<str>,
    stream: Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>,
}

impl Subscription {
    /// Wraps an adapter's stream of deliveries.
    ///
    /// ```
    /// use tidemill::{Acker, Delivery, Message, Subscription};
    /// let items = vec![Ok(Delivery::new(Message::new("x"), Acker::noop()))];
    /// let subscription = Subscription::new("t", futures::stream::iter(items));
    /// assert_eq!(subscription.topic(), "t");
    /// ```
    pub fn new(
        topic: impl Into<Arc<str>>,
        stream: impl Stream<Item = Result<Delivery>> + Send + 'static,
    ) -> Self {
        Self {
            topic: topic.into(),
            stream: Box::pin(stream),
        }
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How a delivery was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Processed: the broker may forget the message.
    Ack,
    /// Not processed: the broker delivers the message again, after `delay` if given (the
    /// adapter's configured nack delay otherwise).
    Nack {
        /// How long to wait before the message comes back.
        delay: Option<Duration>,
    },
}

/// How an adapter settles one delivery at its broker. Called at most once per delivery.
///
/// `settle` must not block: adapters whose broker needs a round trip hand the settlement to a
/// task of theirs, and their subscriber's `close` waits for those to finish.
///
/// ```
/// use tidemill::{Acker, Settle, Settlement};
///
/// struct Print;
/// impl Settle for Print {
///     fn settle(self: Box<Self>, settlement: Settlement) {
///         println!("{settlement:?}");
///     }
/// }
/// Acker::new(Print).ack();
/// ```
pub trait Settle: Send + 'static {
    /// Settles the delivery.
    fn settle(self: Box<Self>, settlement: Settlement);
}

/// The right to settle one delivery. Settling consumes it, so a delivery cannot be settled twice;
/// dropping it unsettled counts as a nack.
pub struct Acker {
    settle: Option<Box<dyn Settle>>,
}

impl Acker {
    /// An acker that settles through `settle`.
    pub fn new(settle: impl Settle) -> Self {
        Self {
            settle: Some(Box::new(settle)),
        }
    }

    /// An acker with nothing to settle, for pub/subs that forget messages once delivered.
    ///
    /// ```
    /// tidemill::Acker::noop().nack();
    /// ```
    pub fn noop() -> Self {
        Self { settle: None }
    }

    /// Acknowledges: the message was processed.
    pub fn ack(self) {
        self.settle(Settlement::Ack);
    }

    /// Rejects: the message comes back after the adapter's nack delay.
    pub fn nack(self) {
        self.settle(Settlement::Nack { delay: None });
    }

    /// Rejects: the message comes back after `delay`.
    pub fn nack_after(self, delay: Duration) {
        self.settle(Settlement::Nack { delay: Some(delay) });
    }

    /// Settles as given.
    pub fn settle(mut self, settlement: Settlement) {
        if let Some(settle) = self.settle.take() {
            settle.settle(settlement);
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        if let Some(settle) = self.settle.take() {
            settle.settle(Settlement::Nack { delay: None });
        }
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("settled", &self.settle.is_none())
            .finish()
    }
}

/// A received message together with the right to settle it.
///
/// ```
/// use tidemill::{Acker, Delivery, Message};
///
/// let delivery = Delivery::new(Message::new("x"), Acker::noop());
/// let (message, acker) = delivery.into_parts();
/// assert_eq!(message.payload().as_ref(), b"x");
/// acker.ack();
/// ```
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    acker: Acker,
}

impl Delivery {
    /// A delivery of `message`, settled through `acker`.
    pub fn new(message: Message, acker: Acker) -> Self {
        Self { message, acker }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, to change it before handing it on.
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }

    /// Acknowledges the message.
    pub fn ack(self) {
        self.acker.ack();
    }

    /// Rejects the message: it comes back after the adapter's nack delay.
    pub fn nack(self) {
        self.acker.nack();
    }

    /// Rejects the message: it comes back after `delay`.
    pub fn nack_after(self, delay: Duration) {
        self.acker.nack_after(delay);
    }

    /// Separates the message from the right to settle it.
    pub fn into_parts(self) -> (Message, Acker) {
        (self.message, self.acker)
    }
}
