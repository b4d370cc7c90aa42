//! The requeuer: moves messages from a topic (typically a poison topic) back to the topic they
//! came from, after a delay, counting how often.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::Service;

use crate::components::delay::Delay;
use crate::message::Message;
use crate::middleware::{
    POISON_HANDLER_KEY, POISON_REASON_KEY, POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
use crate::pubsub::{Publisher, Subscriber};
use crate::router::{HandlerError, Router, RouterError};

/// Metadata key: how many times the requeuer has moved the message back.
///
/// ```
/// use tidemill::components::requeuer::REQUEUE_COUNT_KEY;
/// let msg = tidemill::Message::new("").with_metadata(REQUEUE_COUNT_KEY, "2");
/// let requeues: u32 = msg.metadata().get(REQUEUE_COUNT_KEY).unwrap().parse().unwrap();
/// assert_eq!(requeues, 2);
/// ```
pub const REQUEUE_COUNT_KEY: &str = "tidemill_requeue_count";

/// A message has no destination to be moved back to.
///
/// ```
/// use tidemill::components::requeuer::NoDestination;
/// let err = NoDestination { key: "origin".into() };
/// assert!(err.to_string().contains("origin"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the message has no {key:?} metadata to say where it came from")]
pub struct NoDestination {
    /// The metadata key that was looked for.
    pub key: String,
}

/// Moves each message of a topic back to the topic named in its metadata
/// ([`POISON_TOPIC_KEY`] by default, as the poison queue sets it), with a delay (as
/// [`Delay::For`] metadata, honoured by pub/subs that support delays) and the count of requeues
/// in [`REQUEUE_COUNT_KEY`]. The poison metadata is removed.
///
/// After [`max_requeues`](Self::max_requeues), a message goes to the
/// [exhausted topic](Self::exhausted_topic) if one is set, and is otherwise left where it is
/// (nacked with the delay, at least 1 s). A message without a destination is rejected ([`NoDestination`]).
///
/// The requeuer is a handler: [`register`](Self::register) adds it to a router, or pass it to
/// [`HandlerBuilder::service`](crate::router::HandlerBuilder::service) to add layers of your own.
///
/// ```
/// use std::time::Duration;
/// use tidemill::components::requeuer::Requeuer;
/// use tidemill::InProcessPubSub;
///
/// # fn main() -> Result<(), tidemill::router::RouterError> {
/// let pubsub = InProcessPubSub::new();
/// let router = tidemill::Router::new();
/// Requeuer::new(pubsub.clone())
///     .delay(Duration::from_secs(30))
///     .backoff(2.0)
///     .max_requeues(5)
///     .exhausted_topic("poison.exhausted")
///     .register(&router, "requeuer", "poison", pubsub.clone())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Requeuer {
    publisher: Arc<dyn Publisher>,
    delay: Duration,
    backoff: f64,
    destination_key: Arc<str>,
    max_requeues: Option<u32>,
    exhausted_topic: Option<Arc<str>>,
}

impl fmt::Debug for Requeuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requeuer")
            .field("delay", &self.delay)
            .field("backoff", &self.backoff)
            .field("destination_key", &self.destination_key)
            .field("max_requeues", &self.max_requeues)
            .field("exhausted_topic", &self.exhausted_topic)
            .finish_non_exhaustive()
    }
}

impl Requeuer {
    /// A requeuer publishing with `publisher`; no delay, no limit.
    pub fn new(publisher: impl Publisher) -> Self {
        Self {
            publisher: Arc::new(publisher),
            delay: Duration::ZERO,
            backoff: 1.0,
            destination_key: POISON_TOPIC_KEY.into(),
            max_requeues: None,
            exhausted_topic: None,
        }
    }

    /// Delays each message by `delay` (times the backoff for later requeues).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Multiplies the delay by `factor` for each earlier requeue of the message (at least 1).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor.max(1.0);
        self
    }

    /// The metadata key that names the destination topic. Default [`POISON_TOPIC_KEY`].
    ///
    /// ```
    /// use tidemill::components::requeuer::Requeuer;
    /// let requeuer = Requeuer::new(tidemill::InProcessPubSub::new()).destination_key("origin_topic");
    /// # drop(requeuer);
    /// ```
    pub fn destination_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.destination_key = key.into();
        self
    }

    /// Requeues a message at most `n` times.
    pub fn max_requeues(mut self, n: u32) -> Self {
        self.max_requeues = Some(n);
        self
    }

    /// Where messages requeued `max_requeues` times go.
    pub fn exhausted_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.exhausted_topic = Some(topic.into());
        self
    }

    /// The delay before requeue number `n` (from 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// let r = tidemill::components::requeuer::Requeuer::new(tidemill::InProcessPubSub::new())
    ///     .delay(Duration::from_secs(1))
    ///     .backoff(3.0);
    /// assert_eq!(r.delay_for(3), Duration::from_secs(9));
    /// ```
    pub fn delay_for(&self, n: u32) -> Duration {
        self.delay
            .mul_f64(self.backoff.powi(n.saturating_sub(1).min(1024) as i32))
    }

    /// Adds the requeuer to `router` as handler `name`, reading `topic` with `subscriber`.
    pub fn register(
        self,
        router: &Router,
        name: impl Into<String>,
        topic: impl Into<String>,
        subscriber: impl Subscriber,
    ) -> Result<(), RouterError> {
        router
            .handler(name)
            .subscribe(topic, subscriber)
            .service(self)
    }
}

impl Service<Message> for Requeuer {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(destination) = msg.metadata().get(&this.destination_key).map(str::to_owned)
            else {
                return Err(HandlerError::reject(NoDestination {
                    key: this.destination_key.to_string(),
                }));
            };
            let done: u32 = msg
                .metadata()
                .get(REQUEUE_COUNT_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if this.max_requeues.is_some_and(|max| done >= max) {
                let Some(exhausted) = &this.exhausted_topic else {
                    // Leave it where it is, without spinning on it.
                    let later = this.delay.max(Duration::from_secs(1));
                    return Err(HandlerError::retry_after(
                        later,
                        RequeuesExhausted { requeues: done },
                    ));
                };
                this.publisher.publish(exhausted, vec![msg]).await?;
                return Ok(Vec::new());
            }
            let mut out = Message::from_parts(msg.shared_id(), msg.payload().clone(), {
                let mut md = msg.metadata().clone();
                for key in [
                    POISON_REASON_KEY,
                    POISON_TOPIC_KEY,
                    POISON_HANDLER_KEY,
                    POISON_SUBSCRIBER_KEY,
                ] {
                    md.remove(key);
                }
                if &*this.destination_key != POISON_TOPIC_KEY {
                    md.remove(&this.destination_key);
                }
                md.set(REQUEUE_COUNT_KEY, (done + 1).to_string());
                md
            });
            let delay = this.delay_for(done + 1);
            if !delay.is_zero() {
                Delay::For(delay).apply(&mut out);
            }
            this.publisher.publish(&destination, vec![out]).await?;
            Ok(Vec::new())
        })
    }
}

/// A message was requeued as often as allowed and no exhausted topic is set; it is nacked.
///
/// ```
/// use tidemill::components::requeuer::RequeuesExhausted;
/// assert!(RequeuesExhausted { requeues: 5 }.to_string().contains('5'));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the message was requeued {requeues} times, the most allowed")]
pub struct RequeuesExhausted {
    /// How many times it was requeued.
    pub requeues: u32,
}
