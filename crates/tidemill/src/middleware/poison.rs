//! [`PoisonQueueLayer`]: sends messages that failed for good to a poison topic, then acks them.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::message::Message;
use crate::pubsub::Publisher;
use crate::router::{Disposition, Handler, HandlerContext, HandlerError};

/// Metadata key of a poisoned message: why it was poisoned (the error's text).
///
/// ```
/// use tidemill::middleware::POISON_REASON_KEY;
/// let poisoned = tidemill::Message::new("").with_metadata(POISON_REASON_KEY, "bad JSON");
/// assert_eq!(poisoned.metadata().get(POISON_REASON_KEY), Some("bad JSON"));
/// ```
pub const POISON_REASON_KEY: &str = "tidemill_poison_reason";
/// Metadata key of a poisoned message: the topic it was received from.
///
/// ```
/// use tidemill::middleware::POISON_TOPIC_KEY;
/// let poisoned = tidemill::Message::new("").with_metadata(POISON_TOPIC_KEY, "orders");
/// assert_eq!(poisoned.metadata().get(POISON_TOPIC_KEY), Some("orders"));
/// ```
pub const POISON_TOPIC_KEY: &str = "tidemill_poison_topic";
/// Metadata key of a poisoned message: the handler that failed on it.
///
/// ```
/// use tidemill::middleware::POISON_HANDLER_KEY;
/// let poisoned = tidemill::Message::new("").with_metadata(POISON_HANDLER_KEY, "billing");
/// assert_eq!(poisoned.metadata().get(POISON_HANDLER_KEY), Some("billing"));
/// ```
pub const POISON_HANDLER_KEY: &str = "tidemill_poison_handler";
/// Metadata key of a poisoned message: the type of the subscriber that received it.
///
/// ```
/// use tidemill::middleware::POISON_SUBSCRIBER_KEY;
/// let poisoned = tidemill::Message::new("").with_metadata(POISON_SUBSCRIBER_KEY, "tidemill::in_process::InProcessPubSub");
/// assert!(poisoned.metadata().get(POISON_SUBSCRIBER_KEY).unwrap().ends_with("InProcessPubSub"));
/// ```
pub const POISON_SUBSCRIBER_KEY: &str = "tidemill_poison_subscriber";

type Filter = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// Publishing a message to the poison topic failed; the message is nacked instead.
///
/// ```
/// use tidemill::middleware::PoisonPublishFailed;
/// let err = PoisonPublishFailed {
///     topic: "poison".into(),
///     reason: "bad JSON".into(),
///     source: tidemill::Error::Closed("publisher"),
/// };
/// assert!(err.to_string().contains("bad JSON"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("sending the message to the poison topic {topic:?} failed: {source} (the handling failed with: {reason})")]
pub struct PoisonPublishFailed {
    /// The poison topic.
    pub topic: String,
    /// Why the message was to be poisoned.
    pub reason: String,
    /// Why publishing failed.
    #[source]
    pub source: crate::Error,
}

/// Sends a message whose handling failed for good to a poison topic, then acks it.
///
/// "For good" is what is left after the layers inside it gave up: put retry *inside* the poison
/// queue (add the poison queue first) and a message is retried first and poisoned after the last
/// retry failed. Which errors go to the poison topic is decided by the [filter](Self::filter)
/// (default: every error except those that ask to come back later,
/// [`Disposition::RetryAfter`], such as an open circuit breaker's); the others pass through (and
/// are nacked). An error with [`Disposition::Reject`] always goes to the poison topic, one with
/// [`Disposition::Drop`] never.
///
/// The poisoned message keeps its id, payload and metadata, and gets
/// [`POISON_REASON_KEY`] (the error's text), [`POISON_TOPIC_KEY`], [`POISON_HANDLER_KEY`] and
/// [`POISON_SUBSCRIBER_KEY`] (from the [`HandlerContext`] the router provides). If publishing to
/// the poison topic fails, the message is nacked with a [`PoisonPublishFailed`] error.
///
/// ```
/// use tidemill::middleware::{PoisonQueueLayer, RetryLayer};
/// use tidemill::router::Disposition;
/// use tidemill::InProcessPubSub;
///
/// let pubsub = InProcessPubSub::new();
/// let router = tidemill::Router::new();
/// router
///     .layer(
///         PoisonQueueLayer::new(pubsub.clone(), "poison")
///             // only errors that will never succeed; the rest is nacked and comes back
///             .filter(|err| err.disposition() == Disposition::Reject),
///     )
///     .layer(RetryLayer::new().max_retries(3));
/// ```
#[derive(Clone)]
pub struct PoisonQueueLayer {
    publisher: Arc<dyn Publisher>,
    topic: Arc<str>,
    filter: Option<Filter>,
}

impl fmt::Debug for PoisonQueueLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoisonQueueLayer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PoisonQueueLayer {
    /// Poisons to `topic` through `publisher`.
    pub fn new(publisher: impl Publisher, topic: impl Into<Arc<str>>) -> Self {
        Self {
            publisher: Arc::new(publisher),
            topic: topic.into(),
            filter: None,
        }
    }

    /// Poisons only errors for which `filter` is true (and rejected ones), replacing the default.
    pub fn filter(
        mut self,
        filter: impl Fn(&HandlerError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    fn poisons(&self, err: &HandlerError) -> bool {
        match err.disposition() {
            Disposition::Drop => false,
            Disposition::Reject => true,
            Disposition::RetryAfter(_) if self.filter.is_none() => false,
            _ => self.filter.as_ref().is_none_or(|f| f(err)),
        }
    }
}

impl<S> Layer<S> for PoisonQueueLayer {
    type Service = PoisonQueue<S>;

    fn layer(&self, inner: S) -> PoisonQueue<S> {
        PoisonQueue {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// The service of [`PoisonQueueLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::PoisonQueue<_> = tidemill::middleware::PoisonQueueLayer::new(tidemill::InProcessPubSub::new(), "poison").layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct PoisonQueue<S> {
    inner: S,
    config: Arc<PoisonQueueLayer>,
}

impl<S: fmt::Debug> fmt::Debug for PoisonQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoisonQueue")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

/// `msg` with the poison queue's metadata, without its in-process extensions (they describe this
/// handling, not the poisoned message).
fn poisoned(msg: Message, reason: &str) -> Message {
    let (handler, topic, subscriber) = match HandlerContext::of(&msg) {
        Some(c) => (
            c.handler().to_owned(),
            c.topic().to_owned(),
            c.subscriber().to_owned(),
        ),
        None => Default::default(),
    };
    mark_poisoned(msg, reason, &handler, &topic, &subscriber)
}

/// `msg` without its extensions, with the poison metadata: shared by the poison queue and the
/// router's dead-lettering, so both write the same keys.
pub(crate) fn mark_poisoned(
    msg: Message,
    reason: &str,
    handler: &str,
    topic: &str,
    subscriber: &str,
) -> Message {
    let (id, payload, metadata) = msg.into_parts();
    let mut msg = Message::from_parts(id, payload, metadata);
    let md = msg.metadata_mut();
    md.set(POISON_REASON_KEY, reason);
    md.set(POISON_TOPIC_KEY, topic);
    md.set(POISON_HANDLER_KEY, handler);
    md.set(POISON_SUBSCRIBER_KEY, subscriber);
    msg
}

impl<S: Handler> Service<Message> for PoisonQueue<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fut = self.inner.call(msg.clone());
        let config = self.config.clone();
        Box::pin(async move {
            let err = match fut.await {
                Ok(outputs) => return Ok(outputs),
                Err(err) if !config.poisons(&err) => return Err(err),
                Err(err) => err,
            };
            let reason = err.to_string();
            let id = msg.shared_id();
            let message = poisoned(msg, &reason);
            match config.publisher.publish(&config.topic, vec![message]).await {
                Ok(()) => {
                    tracing::warn!(message_id = %id, poison_topic = %config.topic, %reason, "message sent to the poison topic");
                    Ok(Vec::new())
                }
                Err(source) => Err(HandlerError::new(PoisonPublishFailed {
                    topic: config.topic.to_string(),
                    reason,
                    source,
                })),
            }
        })
    }
}
