//! The forwarder: publish through one topic now, deliver to the real destination later.
//!
//! A [`ForwarderPublisher`] wraps each message in an [`Envelope`] (destination topic, id,
//! payload, metadata) and publishes it to one *forwarder topic* on any publisher, for example a
//! SQL table written in the same transaction as the business data (the transactional outbox). A
//! [`Forwarder`] reads the forwarder topic with any subscriber, unwraps each envelope and
//! republishes the message to its destination with any publisher, acking the envelope only after
//! the republish succeeded.
//!
//! # Envelope format, version 1
//!
//! The envelope is a UTF-8 JSON object:
//!
//! ```json
//! {"v":1,"destination_topic":"orders","id":"m-1","payload":"aGVsbG8=","metadata":{"k":"v"}}
//! ```
//!
//! | field | meaning |
//! | --- | --- |
//! | `v` | the format version, `1` |
//! | `destination_topic` | where the forwarder publishes the message |
//! | `id` | the message id, kept as it was |
//! | `payload` | the payload bytes, standard base64 with padding |
//! | `metadata` | the message metadata, string to string (may be absent when empty) |
//!
//! A reader rejects other versions with [`EnvelopeError::UnsupportedVersion`]. The envelope
//! message itself gets a fresh id and a copy of the wrapped message's metadata (without the
//! [delay] keys, which are for the destination), so brokers and
//! publisher decorators around the forwarder publisher see it.
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::components::forwarder::{Forwarder, ForwarderConfig, ForwarderPublisher};
//! use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt, Subscriber};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pubsub = InProcessPubSub::new();
//! let config = ForwarderConfig::new("outbox");
//!
//! // Reads "outbox", delivers to each message's destination.
//! let forwarder = Forwarder::new(pubsub.clone(), pubsub.clone(), config.clone());
//! let running = tokio::spawn({
//!     let forwarder = forwarder.clone();
//!     async move { forwarder.run().await }
//! });
//! forwarder.running().await;
//!
//! let mut orders = pubsub.subscribe("orders").await?;
//! let publisher = ForwarderPublisher::new(pubsub.clone(), config);
//! publisher.publish_one("orders", Message::with_id("order-1", "{}")).await?;
//!
//! let delivery = orders.next().await.unwrap()?;
//! assert_eq!(delivery.message().id(), "order-1");
//! delivery.ack();
//! forwarder.close().await;
//! running.await??;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::components::delay;
use crate::error::{validate_topic, Error, Result};
use crate::message::{new_uuid, Message, Metadata};
use crate::middleware::{
    POISON_HANDLER_KEY, POISON_REASON_KEY, POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
use crate::pubsub::{Acker, Publisher, Subscriber};

/// The version of the envelope format this module writes.
///
/// ```
/// use tidemill::components::forwarder::{Envelope, ENVELOPE_VERSION};
/// let bytes = Envelope::new("t", tidemill::Message::new("")).encode();
/// assert!(bytes.starts_with(format!("{{\"v\":{ENVELOPE_VERSION},").as_bytes()));
/// ```
pub const ENVELOPE_VERSION: u32 = 1;

/// The forwarder topic used when none is configured.
///
/// ```
/// use tidemill::components::forwarder::{ForwarderConfig, DEFAULT_FORWARDER_TOPIC};
/// assert_eq!(ForwarderConfig::default().forwarder_topic(), DEFAULT_FORWARDER_TOPIC);
/// ```
pub const DEFAULT_FORWARDER_TOPIC: &str = "tidemill_forwarder";

/// Options shared by a [`ForwarderPublisher`] and its [`Forwarder`].
///
/// ```
/// use tidemill::components::forwarder::ForwarderConfig;
///
/// let config = ForwarderConfig::new("outbox").poison_topic("outbox.poison");
/// assert_eq!(config.forwarder_topic(), "outbox");
/// assert_eq!(config.poison_topic_name(), Some("outbox.poison"));
/// ```
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    forwarder_topic: Arc<str>,
    poison_topic: Option<Arc<str>>,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self::new(DEFAULT_FORWARDER_TOPIC)
    }
}

impl ForwarderConfig {
    /// Envelopes travel through `forwarder_topic`.
    pub fn new(forwarder_topic: impl Into<Arc<str>>) -> Self {
        Self {
            forwarder_topic: forwarder_topic.into(),
            poison_topic: None,
        }
    }

    /// Where the forwarder publishes envelopes it cannot read (with the poison queue's metadata
    /// keys, such as [`POISON_REASON_KEY`]), then acks them. Without it they are nacked and
    /// stay on the forwarder topic.
    pub fn poison_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.poison_topic = Some(topic.into());
        self
    }

    /// The forwarder topic.
    pub fn forwarder_topic(&self) -> &str {
        &self.forwarder_topic
    }

    /// The poison topic, if set.
    pub fn poison_topic_name(&self) -> Option<&str> {
        self.poison_topic.as_deref()
    }
}

/// Why an envelope could not be read.
///
/// ```
/// use tidemill::components::forwarder::{Envelope, EnvelopeError};
/// let err = Envelope::decode(br#"{"v":2}"#).unwrap_err();
/// assert!(matches!(err, EnvelopeError::UnsupportedVersion(2)));
/// assert!(err.to_string().contains("version 2"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The payload is not an envelope's JSON.
    #[error("the envelope is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The envelope is of a version this reader does not know.
    #[error(
        "envelope version {0} is not supported (this reader knows version {ENVELOPE_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// A required field is missing.
    #[error("the envelope has no {0:?} field")]
    MissingField(&'static str),
    /// The payload field is not valid base64.
    #[error("the envelope's payload is not valid base64: {0}")]
    Payload(#[from] base64::DecodeError),
    /// The destination topic is not a valid topic name.
    #[error("the envelope's destination topic is invalid: {0}")]
    Destination(#[source] Error),
}

/// A message and the topic it is meant for, as carried through the forwarder topic.
///
/// ```
/// use tidemill::components::forwarder::Envelope;
/// use tidemill::Message;
///
/// let envelope = Envelope::new("orders", Message::with_id("m-1", "hi").with_metadata("k", "v"));
/// let bytes = envelope.encode();
/// let back = Envelope::decode(&bytes).unwrap();
/// assert_eq!(back.destination_topic(), "orders");
/// assert!(back.message().same_content(envelope.message()));
/// ```
#[derive(Clone, Debug)]
pub struct Envelope {
    destination_topic: String,
    message: Message,
}

#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    destination_topic: &'a str,
    id: &'a str,
    payload: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<&'a str, &'a str>,
}

/// Every field but the version is optional here, so that an envelope of another version is
/// reported as such rather than as a missing field.
#[derive(Deserialize)]
struct WireIn<'a> {
    v: u32,
    #[serde(borrow, default)]
    destination_topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Envelope {
    /// An envelope carrying `message` to `destination_topic`.
    pub fn new(destination_topic: impl Into<String>, message: Message) -> Self {
        Self {
            destination_topic: destination_topic.into(),
            message,
        }
    }

    /// The topic the message is meant for.
    pub fn destination_topic(&self) -> &str {
        &self.destination_topic
    }

    /// The carried message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Splits the envelope into destination topic and message.
    ///
    /// ```
    /// use tidemill::components::forwarder::Envelope;
    /// let (topic, msg) = Envelope::new("t", tidemill::Message::with_id("1", "")).into_parts();
    /// assert_eq!((topic.as_str(), msg.id()), ("t", "1"));
    /// ```
    pub fn into_parts(self) -> (String, Message) {
        (self.destination_topic, self.message)
    }

    /// The envelope in the format of [version 1](self#envelope-format-version-1).
    ///
    /// ```
    /// use tidemill::components::forwarder::Envelope;
    /// let bytes = Envelope::new("t", tidemill::Message::with_id("1", "hello")).encode();
    /// assert_eq!(
    ///     &bytes[..],
    ///     br#"{"v":1,"destination_topic":"t","id":"1","payload":"aGVsbG8="}"#
    /// );
    /// ```
    pub fn encode(&self) -> Bytes {
        let wire = WireOut {
            v: ENVELOPE_VERSION,
            destination_topic: &self.destination_topic,
            id: self.message.id(),
            payload: base64::engine::general_purpose::STANDARD.encode(self.message.payload()),
            metadata: self.message.metadata().iter().collect(),
        };
        // Strings and string maps always serialize.
        Bytes::from(serde_json::to_vec(&wire).expect("an envelope always serializes"))
    }

    /// Reads an envelope written by [`encode`](Self::encode).
    ///
    /// ```
    /// use tidemill::components::forwarder::{Envelope, EnvelopeError};
    /// assert!(matches!(Envelope::decode(b"nope"), Err(EnvelopeError::Json(_))));
    /// assert!(matches!(
    ///     Envelope::decode(br#"{"v":9,"destination_topic":"t","id":"1","payload":""}"#),
    ///     Err(EnvelopeError::UnsupportedVersion(9))
    /// ));
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes)?;
        if wire.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(wire.v));
        }
        let destination_topic = wire
            .destination_topic
            .ok_or(EnvelopeError::MissingField("destination_topic"))?;
        let id = wire.id.ok_or(EnvelopeError::MissingField("id"))?;
        let payload = wire.payload.ok_or(EnvelopeError::MissingField("payload"))?;
        validate_topic(&destination_topic).map_err(EnvelopeError::Destination)?;
        let payload = base64::engine::general_purpose::STANDARD.decode(payload.as_bytes())?;
        let metadata: Metadata = wire.metadata.into_iter().collect();
        Ok(Self {
            destination_topic: destination_topic.into_owned(),
            message: Message::from_parts(&*id, payload, metadata),
        })
    }

    /// The envelope as a message for the forwarder topic: a fresh id, the encoded envelope as
    /// payload, and a copy of the carried message's metadata.
    ///
    /// ```
    /// use tidemill::components::forwarder::Envelope;
    /// let msg = tidemill::Message::with_id("1", "x").with_metadata("k", "v");
    /// let wrapped = Envelope::new("t", msg).into_message();
    /// assert_ne!(wrapped.id(), "1");
    /// assert_eq!(wrapped.metadata().get("k"), Some("v"));
    /// ```
    pub fn into_message(self) -> Message {
        let payload = self.encode();
        let mut message = Message::from_parts(new_uuid(), payload, self.message.metadata().clone());
        // A delay is meant for the destination, not for the trip through the forwarder topic.
        delay::clear_delay(&mut message);
        message
    }
}

/// A publisher that sends every message, wrapped in an [`Envelope`], to the forwarder topic of
/// its [`ForwarderConfig`] on the publisher it wraps. A [`Forwarder`] delivers them.
///
/// ```
/// use tidemill::components::forwarder::{ForwarderConfig, ForwarderPublisher};
/// use tidemill::{InProcessPubSub, Message, Publisher, PublisherExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let publisher = ForwarderPublisher::new(InProcessPubSub::new(), ForwarderConfig::new("outbox"));
/// publisher.publish_one("orders", Message::new("order #1")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ForwarderPublisher<P> {
    inner: P,
    config: ForwarderConfig,
}

impl<P: Publisher> ForwarderPublisher<P> {
    /// Wraps `inner`: what is published through the result goes to the forwarder topic on it.
    pub fn new(inner: P, config: ForwarderConfig) -> Self {
        Self { inner, config }
    }

    /// The wrapped publisher.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

#[async_trait]
impl<P: Publisher> Publisher for ForwarderPublisher<P> {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        validate_topic(topic)?;
        let wrapped = messages
            .into_iter()
            .map(|m| Envelope::new(topic, m).into_message())
            .collect();
        self.inner
            .publish(&self.config.forwarder_topic, wrapped)
            .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

/// What stopped a [`Forwarder`].
///
/// ```
/// use tidemill::components::forwarder::{Forwarder, ForwarderConfig, ForwarderError};
/// use tidemill::InProcessPubSub;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pubsub = InProcessPubSub::new();
/// let forwarder = Forwarder::new(pubsub.clone(), pubsub, ForwarderConfig::default());
/// forwarder.close().await;
/// forwarder.run().await.unwrap(); // closed before it ran: returns at once
/// assert!(matches!(forwarder.run().await, Err(ForwarderError::AlreadyRunning)));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwarderError {
    /// `run` was called while the forwarder was already running, or after it ran.
    #[error("the forwarder is already running or has run")]
    AlreadyRunning,
    /// Subscribing to the forwarder topic failed.
    #[error("the forwarder could not subscribe to {topic:?}: {source}")]
    Subscribe {
        /// The forwarder topic.
        topic: String,
        /// The cause.
        #[source]
        source: Error,
    },
}

/// Delivers the envelopes of the forwarder topic to their destinations.
///
/// [`run`](Self::run) subscribes to the forwarder topic and handles one envelope at a time (which
/// keeps the order of the forwarder topic): it republishes the carried message to its destination
/// and acks the envelope once the republish succeeded, or nacks it so it comes back. An envelope
/// that cannot be read ([`EnvelopeError`]) goes to the poison topic if one is configured and is
/// acked after that publish succeeded; otherwise it is nacked. Nothing is ever acked unsent.
///
/// [`close`](Self::close) stops receiving, lets the envelope in hand finish and returns once
/// `run` has returned. The forwarder does not close the subscriber and publisher it was given.
/// Cloning gives another handle on the same forwarder.
///
/// See the [module docs](self) for an example.
///
/// ```
/// use tidemill::components::forwarder::{Forwarder, ForwarderConfig};
/// use tidemill::InProcessPubSub;
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = InProcessPubSub::new();
/// let forwarder = Forwarder::new(pubsub.clone(), pubsub.clone(), ForwarderConfig::new("outbox"));
/// let task = tokio::spawn({
///     let forwarder = forwarder.clone();
///     async move { forwarder.run().await }
/// });
/// forwarder.running().await;
/// forwarder.close().await;
/// task.await??;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<ForwarderInner>,
}

struct ForwarderInner {
    subscriber: Arc<dyn Subscriber>,
    subscriber_kind: &'static str,
    publisher: Arc<dyn Publisher>,
    config: ForwarderConfig,
    started: AtomicBool,
    stop: CancellationToken,
    /// false until subscribed; true while running; the sender is dropped-or-set when done.
    state: watch::Sender<RunState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Idle,
    Running,
    Done,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.inner.config)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder reading the forwarder topic with `subscriber` and republishing with
    /// `publisher`.
    pub fn new(
        subscriber: impl Subscriber,
        publisher: impl Publisher,
        config: ForwarderConfig,
    ) -> Self {
        let subscriber_kind = std::any::type_name_of_val(&subscriber);
        Self {
            inner: Arc::new(ForwarderInner {
                subscriber: Arc::new(subscriber),
                subscriber_kind,
                publisher: Arc::new(publisher),
                config,
                started: AtomicBool::new(false),
                stop: CancellationToken::new(),
                state: watch::channel(RunState::Idle).0,
            }),
        }
    }

    /// Runs until [`close`](Self::close) or until the subscription ends.
    pub async fn run(&self) -> Result<(), ForwarderError> {
        let inner = &self.inner;
        if inner.started.swap(true, Ordering::AcqRel) {
            return Err(ForwarderError::AlreadyRunning);
        }
        // Whatever happens below, `close` and `running` must not wait forever.
        let _done = DoneGuard(&inner.state);
        if inner.stop.is_cancelled() {
            return Ok(());
        }
        let topic = inner.config.forwarder_topic();
        let mut subscription = inner.subscriber.subscribe(topic).await.map_err(|source| {
            ForwarderError::Subscribe {
                topic: topic.to_owned(),
                source,
            }
        })?;
        inner.state.send_replace(RunState::Running);
        loop {
            let item = tokio::select! {
                biased;
                _ = inner.stop.cancelled() => break,
                item = subscription.next() => item,
            };
            match item {
                Some(Ok(delivery)) => {
                    let (message, acker) = delivery.into_parts();
                    self.forward(message, acker).await;
                }
                Some(Err(error)) => {
                    tracing::warn!(topic, %error, "forwarder subscription error");
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Waits until the forwarder has subscribed (or has stopped).
    pub async fn running(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|s| *s != RunState::Idle).await;
    }

    /// Stops receiving, waits for the envelope in hand and for `run` to return.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        if !self.inner.started.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|s| *s == RunState::Done).await;
    }

    async fn forward(&self, envelope: Message, acker: Acker) {
        let inner = &self.inner;
        match Envelope::decode(envelope.payload()) {
            Ok(decoded) => {
                let (topic, message) = decoded.into_parts();
                let id = message.shared_id();
                match inner.publisher.publish(&topic, vec![message]).await {
                    Ok(()) => acker.ack(),
                    Err(error) => {
                        tracing::warn!(
                            message_id = %id, destination = %topic, %error,
                            "forwarding failed; the envelope will come back"
                        );
                        acker.nack();
                    }
                }
            }
            Err(error) => self.poison(envelope, acker, error).await,
        }
    }

    async fn poison(&self, envelope: Message, acker: Acker, error: EnvelopeError) {
        let inner = &self.inner;
        let Some(poison_topic) = &inner.config.poison_topic else {
            tracing::error!(
                envelope_id = envelope.id(), %error,
                "cannot read an envelope and no poison topic is set; nacking it"
            );
            acker.nack();
            return;
        };
        let id = envelope.shared_id();
        let poisoned = envelope
            .with_metadata(POISON_REASON_KEY, error.to_string())
            .with_metadata(POISON_TOPIC_KEY, inner.config.forwarder_topic())
            .with_metadata(POISON_HANDLER_KEY, "forwarder")
            .with_metadata(POISON_SUBSCRIBER_KEY, inner.subscriber_kind);
        match inner.publisher.publish(poison_topic, vec![poisoned]).await {
            Ok(()) => {
                tracing::warn!(envelope_id = %id, %error, "unreadable envelope sent to the poison topic");
                acker.ack();
            }
            Err(publish_error) => {
                tracing::error!(
                    envelope_id = %id, %error, %publish_error,
                    "cannot send an unreadable envelope to the poison topic; nacking it"
                );
                acker.nack();
            }
        }
    }
}

struct DoneGuard<'a>(&'a watch::Sender<RunState>);

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.0.send_replace(RunState::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_binary_payload_and_metadata() {
        let payload: Vec<u8> = (0..=255).collect();
        let msg = Message::with_id("id-1", payload.clone())
            .with_metadata("a", "1")
            .with_metadata("ü", "\"quoted\"");
        let back = Envelope::decode(&Envelope::new("dest", msg.clone()).encode()).unwrap();
        assert_eq!(back.destination_topic(), "dest");
        assert!(back.message().same_content(&msg));
    }

    #[test]
    fn malformed_envelopes_are_typed_errors() {
        assert!(matches!(
            Envelope::decode(br#"{"v":1,"destination_topic":"t","id":"1","payload":"%%"}"#),
            Err(EnvelopeError::Payload(_))
        ));
        assert!(matches!(
            Envelope::decode(br#"{"v":1,"destination_topic":"","id":"1","payload":""}"#),
            Err(EnvelopeError::Destination(_))
        ));
        assert!(matches!(
            Envelope::decode(br#"{"v":1,"id":"1","payload":""}"#),
            Err(EnvelopeError::MissingField("destination_topic"))
        ));
        assert!(matches!(
            Envelope::decode(br#"{"id":"1"}"#),
            Err(EnvelopeError::Json(_))
        ));
    }
}
