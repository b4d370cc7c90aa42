//! Where a handling's results go: its outputs to the output topic, and a message rejected for
//! good to a dead-letter topic. Publishing the outputs of a handler with middleware happens
//! inside the middleware ([`PublishOutputs`] is the innermost service), so retry and poison
//! queue layers see its failures like any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::events::RouterEvent;
use super::handler::{Handler, HandlerError};
use super::run::LoopContext;
use crate::error::Error;
use crate::message::Message;
use crate::middleware::{correlation_id, current_correlation_id, set_correlation_id};

/// The topic a message rejected for good goes to when no poison queue took it and no other
/// dead-letter destination is configured: on the subscriber's own pub/sub
/// ([`Subscriber::dead_letter_publisher`](crate::Subscriber::dead_letter_publisher)).
///
/// ```
/// assert_eq!(tidemill::router::DEFAULT_DEAD_LETTER_TOPIC, "tidemill_dead_letter");
/// ```
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "tidemill_dead_letter";

/// Publishing a handler's outputs failed. Its [`HandlerError`] is a
/// [`Reject`](super::Disposition::Reject) when the failure can never go away
/// ([`Error::is_permanent`]: the broker refuses these messages), a retry otherwise.
///
/// ```
/// use tidemill::router::OutputPublishFailed;
/// let err = OutputPublishFailed {
///     handler: "greeter".into(),
///     topic: "greetings".into(),
///     source: tidemill::Error::invalid_topic("greetings", "no such stream"),
/// };
/// assert!(err.to_string().starts_with("invalid topic name"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{source} (publishing the outputs of handler {handler:?} to {topic:?})")]
pub struct OutputPublishFailed {
    /// The handler whose outputs they were.
    pub handler: String,
    /// The output topic.
    pub topic: String,
    /// Why publishing failed.
    #[source]
    pub source: Error,
}

/// A handler returned messages but has no output topic.
#[derive(Debug, thiserror::Error)]
#[error("handler {handler:?} returned {count} messages but has no output topic (`publish_to`)")]
pub struct NoOutputTopic {
    /// The handler.
    pub handler: String,
    /// How many messages it returned.
    pub count: usize,
}

impl LoopContext {
    /// Publishes outputs to the handler's output topic, with the current correlation id on each
    /// that has none. A failure is a [`HandlerError`] classified as described on
    /// [`OutputPublishFailed`].
    pub(crate) async fn publish_outputs(&self, outputs: Vec<Message>) -> Result<(), HandlerError> {
        let Some((topic, publisher)) = &self.output else {
            return Err(HandlerError::reject(NoOutputTopic {
                handler: self.name.to_string(),
                count: outputs.len(),
            }));
        };
        let mut outputs = outputs;
        if let Some(id) = current_correlation_id() {
            for out in &mut outputs {
                if correlation_id(out).is_none() {
                    set_correlation_id(out, &*id);
                }
            }
        }
        match publisher.publish(topic, outputs).await {
            Ok(()) => {
                self.output_failures
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(source) => {
                let permanent = source.is_permanent();
                self.events.emit(RouterEvent::OutputPublishFailed {
                    handler: &self.name,
                    output_topic: topic,
                    permanent,
                });
                tracing::warn!(
                    handler = %self.name, output_topic = %topic, permanent, error = %source,
                    "publishing the handler's outputs failed"
                );
                let err = OutputPublishFailed {
                    handler: self.name.to_string(),
                    topic: topic.to_string(),
                    source,
                };
                Err(if permanent {
                    HandlerError::reject(err)
                } else {
                    HandlerError::new(err)
                })
            }
        }
    }

    /// The wait before a message whose outputs could not be published comes back: growing with
    /// each failure in a row, so a broker that is away is not hammered.
    pub(crate) fn output_retry_delay(&self) -> std::time::Duration {
        let n = self
            .output_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.retry_backoff.delay(n)
    }

    /// Sends a message rejected for good to the dead-letter topic and says whether to ack it
    /// (sent) or nack it with a long delay (nowhere to send it: kept, not spun).
    pub(crate) async fn dead_letter(&self, original: Message, error: &HandlerError) -> bool {
        let reason = error.to_string();
        let id = original.shared_id();
        let failure = match &self.dead_letter {
            Some((publisher, dl_topic)) => {
                let message = crate::middleware::poison::mark_poisoned(
                    original,
                    &reason,
                    &self.name,
                    &self.topic,
                    self.context.subscriber,
                );
                match publisher.publish(dl_topic, vec![message]).await {
                    Ok(()) => {
                        tracing::error!(
                            handler = %self.name, topic = %self.topic, message_id = %id,
                            dead_letter_topic = %dl_topic, %reason,
                            "message rejected; sent to the dead-letter topic"
                        );
                        self.events.emit(RouterEvent::DeadLettered {
                            handler: &self.name,
                            topic: &self.topic,
                            message_id: &id,
                            dead_letter_topic: dl_topic,
                            reason: &reason,
                        });
                        return true;
                    }
                    Err(err) => format!(
                        "{reason}; sending it to the dead-letter topic {dl_topic:?} failed: {err}"
                    ),
                }
            }
            None => format!(
                "{reason}; no dead-letter destination (add a poison queue layer, \
                 RouterConfig::dead_letter, or use a subscriber that has one)"
            ),
        };
        tracing::error!(
            handler = %self.name, topic = %self.topic, message_id = %id, reason = %failure,
            "message rejected but not dead-lettered; it comes back after the reject delay"
        );
        self.events.emit(RouterEvent::RejectNotDeadLettered {
            handler: &self.name,
            topic: &self.topic,
            message_id: &id,
            reason: &failure,
        });
        false
    }
}

/// The innermost service of a handler with middleware: calls the handler, then publishes what
/// it returned, so the layers around see a publishing failure as the handling's failure. It
/// returns the published messages, for layers that count them.
#[derive(Clone)]
pub(crate) struct PublishOutputs<S> {
    pub(crate) inner: S,
    pub(crate) ctx: Arc<LoopContext>,
}

impl<S: Handler> Service<Message> for PublishOutputs<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = Pin<Box<dyn Future<Output = Result<Vec<Message>, HandlerError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fut = self.inner.call(msg);
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let outputs = fut.await?;
            if !outputs.is_empty() {
                ctx.publish_outputs(outputs.clone()).await?;
            }
            Ok(outputs)
        })
    }
}
