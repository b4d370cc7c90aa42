//! [`Context`]: what a handler knows about the message it handles, and how it sends follow-ups
//! and replies.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tidemill::middleware::CORRELATION_ID_KEY;
use tidemill::{Message, Metadata, Publisher};

use crate::bus::{CommandBus, EventBus};
use crate::error::{Error, Result};
use crate::marshal::{JsonMarshaler, Marshaler};
use crate::{
    NAME_KEY, PROPAGATED_KEYS, REPLY_FINAL_KEY, REPLY_STATUS_KEY, REPLY_TO_KEY, REPLY_VALUE_KEY,
    REQUEST_ID_KEY,
};

/// What the handlers of one processor share.
pub(crate) struct Env<M> {
    pub(crate) marshaler: Arc<M>,
    pub(crate) event_bus: Option<EventBus<M>>,
    pub(crate) command_bus: Option<CommandBus<M>>,
    pub(crate) reply_publisher: Option<Arc<dyn Publisher>>,
}

/// The handling of one message: the message itself, its metadata and correlation id, and the
/// buses to send follow-ups with.
///
/// Follow-ups sent through [`event_bus`](Self::event_bus), [`command_bus`](Self::command_bus)
/// or a bus passed through [`follow_up`](Self::follow_up) carry the correlation id and the
/// trace context (`traceparent`, `tracestate`, `baggage`) of the message on.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill::{HandlerError, InProcessPubSub, Router};
/// use tidemill_cqrs::{Context, EventBus, EventProcessor, Named, ProcessorConfig};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { id: u64 }
/// impl Named for OrderPlaced {}
///
/// #[derive(Serialize, Deserialize)]
/// struct InvoiceIssued { order: u64 }
/// impl Named for InvoiceIssued {}
///
/// # fn main() -> tidemill_cqrs::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// let config = ProcessorConfig::default().event_bus(EventBus::new(pubsub.clone()));
/// let processor = EventProcessor::with_config(&router, {
///     let pubsub = pubsub.clone();
///     move |group: &str| Ok(pubsub.with_group(group))
/// }, config);
/// processor.handle("issue_invoice", |order: OrderPlaced, ctx: Context| async move {
///     println!("order {} (correlation {:?})", order.id, ctx.correlation_id());
///     let events = ctx.event_bus().expect("configured above");
///     events.publish(&InvoiceIssued { order: order.id }).await.map_err(HandlerError::new)?;
///     Ok(())
/// })?;
/// # Ok(()) }
/// ```
pub struct Context<M = JsonMarshaler> {
    message: Message,
    handler: Arc<str>,
    env: Arc<Env<M>>,
}

impl<M> Clone for Context<M> {
    fn clone(&self) -> Self {
        Self {
            message: self.message.clone(),
            handler: self.handler.clone(),
            env: self.env.clone(),
        }
    }
}

impl<M> fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("handler", &self.handler)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl<M: Send + Sync + 'static> Context<M> {
    pub(crate) fn new(message: Message, handler: Arc<str>, env: Arc<Env<M>>) -> Self {
        Self {
            message,
            handler,
            env,
        }
    }

    pub(crate) fn env(&self) -> &Arc<Env<M>> {
        &self.env
    }

    /// The message as received.
    ///
    /// ```
    /// fn log(ctx: &tidemill_cqrs::Context) {
    ///     println!("handling message {}", ctx.message().id());
    /// }
    /// # let _ = log;
    /// ```
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message's metadata.
    ///
    /// ```
    /// fn tenant(ctx: &tidemill_cqrs::Context) -> Option<&str> {
    ///     ctx.metadata().get("tenant")
    /// }
    /// # let _ = tenant;
    /// ```
    pub fn metadata(&self) -> &Metadata {
        self.message.metadata()
    }

    /// The command's or event's name, from the metadata.
    ///
    /// ```
    /// fn log(ctx: &tidemill_cqrs::Context) {
    ///     println!("handling {:?}", ctx.name());
    /// }
    /// # let _ = log;
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.message.metadata().get(NAME_KEY)
    }

    /// The name of the handler running, which is also its consumer group.
    ///
    /// ```
    /// fn log(ctx: &tidemill_cqrs::Context) {
    ///     println!("in handler {}", ctx.handler_name());
    /// }
    /// # let _ = log;
    /// ```
    pub fn handler_name(&self) -> &str {
        &self.handler
    }

    /// The message's correlation id, if it has one.
    ///
    /// ```
    /// fn log(ctx: &tidemill_cqrs::Context) {
    ///     println!("correlation id {:?}", ctx.correlation_id());
    /// }
    /// # let _ = log;
    /// ```
    pub fn correlation_id(&self) -> Option<&str> {
        self.message.metadata().get(CORRELATION_ID_KEY)
    }

    /// The metadata follow-ups carry: the correlation id (the message's id when it has none, so
    /// a chain that starts here stays correlated) and whichever of `traceparent`, `tracestate`
    /// and `baggage` the message has.
    ///
    /// Useful with [`EventBus::with_metadata`] and [`CommandBus::with_metadata`] for buses the
    /// processor was not configured with; [`follow_up`](Self::follow_up) does that for you.
    ///
    /// ```
    /// fn carrying(ctx: &tidemill_cqrs::Context, bus: &tidemill_cqrs::EventBus) -> tidemill_cqrs::EventBus {
    ///     bus.with_metadata(&ctx.propagated_metadata())
    /// }
    /// # let _ = carrying;
    /// ```
    pub fn propagated_metadata(&self) -> Metadata {
        let source = self.message.metadata();
        let mut out = Metadata::new();
        out.set(
            CORRELATION_ID_KEY,
            self.correlation_id().unwrap_or(self.message.id()),
        );
        for key in PROPAGATED_KEYS {
            if let Some(value) = source.get(key) {
                out.set(key, value);
            }
        }
        out
    }

    /// `bus`, sending with this message's correlation id and trace context.
    ///
    /// ```
    /// # use tidemill_cqrs::{Context, EventBus};
    /// fn notify(ctx: &Context, events: &EventBus) -> EventBus {
    ///     ctx.follow_up(events)
    /// }
    /// # let _ = notify;
    /// ```
    pub fn follow_up<B: FollowUp>(&self, bus: &B) -> B {
        bus.carrying(&self.propagated_metadata())
    }

    /// The processor's event bus, if it was configured with one, carrying this message's
    /// correlation id and trace context.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct InvoiceIssued { order: u64 }
    /// impl tidemill_cqrs::Named for InvoiceIssued {}
    ///
    /// async fn follow_up(ctx: tidemill_cqrs::Context) -> tidemill::HandlerResult<()> {
    ///     if let Some(events) = ctx.event_bus() {
    ///         events.publish(&InvoiceIssued { order: 1 }).await.map_err(tidemill::HandlerError::new)?;
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = follow_up;
    /// ```
    pub fn event_bus(&self) -> Option<EventBus<M>> {
        self.env.event_bus.as_ref().map(|bus| self.follow_up(bus))
    }

    /// The processor's command bus, if it was configured with one, carrying this message's
    /// correlation id and trace context.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct ShipOrder { order: u64 }
    /// impl tidemill_cqrs::Named for ShipOrder {}
    ///
    /// async fn follow_up(ctx: tidemill_cqrs::Context) -> tidemill::HandlerResult<()> {
    ///     if let Some(commands) = ctx.command_bus() {
    ///         commands.send(&ShipOrder { order: 1 }).await.map_err(tidemill::HandlerError::new)?;
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = follow_up;
    /// ```
    pub fn command_bus(&self) -> Option<CommandBus<M>> {
        self.env.command_bus.as_ref().map(|bus| self.follow_up(bus))
    }

    /// Whether the sender waits for replies (the message is a request sent through
    /// [`RequestReply`](crate::RequestReply)) and the processor can send them.
    ///
    /// ```
    /// fn log(ctx: &tidemill_cqrs::Context) {
    ///     if ctx.wants_reply() {
    ///         println!("someone waits for the answer");
    ///     }
    /// }
    /// # let _ = log;
    /// ```
    pub fn wants_reply(&self) -> bool {
        self.env.reply_publisher.is_some()
            && self.message.metadata().contains_key(REPLY_TO_KEY)
            && self.message.metadata().contains_key(REQUEST_ID_KEY)
    }

    /// Sends one reply now, ahead of the final one the processor sends when the handler
    /// returns: for handlers that answer a request with several values. Does nothing when
    /// nobody waits for replies ([`wants_reply`](Self::wants_reply) is false).
    ///
    /// ```
    /// async fn progress(ctx: tidemill_cqrs::Context) -> tidemill::HandlerResult<u32> {
    ///     for step in 1..3u32 {
    ///         ctx.reply(&step).await.map_err(tidemill::HandlerError::new)?;
    ///     }
    ///     Ok(3) // the final reply
    /// }
    /// # let _ = progress;
    /// ```
    pub async fn reply<R>(&self, value: &R) -> Result<()>
    where
        M: Marshaler<R>,
    {
        if !self.wants_reply() {
            return Ok(());
        }
        let payload = self
            .env
            .marshaler
            .marshal(value)
            .map_err(|source| Error::Marshal {
                name: crate::name::short_type_name::<R>(),
                source,
            })?;
        self.send_reply(ReplyKind::Value(payload), false).await
    }

    pub(crate) async fn send_reply(&self, kind: ReplyKind, last: bool) -> Result<()> {
        let (Some(publisher), Some(topic), Some(request_id)) = (
            &self.env.reply_publisher,
            self.message.metadata().get(REPLY_TO_KEY),
            self.message.metadata().get(REQUEST_ID_KEY),
        ) else {
            return Ok(());
        };
        let (status, has_value, payload) = match kind {
            ReplyKind::Value(payload) => ("ok", true, payload),
            ReplyKind::Done => ("ok", false, Bytes::new()),
            ReplyKind::Failed(text) => ("error", false, Bytes::from(text)),
        };
        let mut reply = Message::new(payload);
        let metadata = reply.metadata_mut();
        metadata.extend_from(&self.propagated_metadata());
        metadata.set(REQUEST_ID_KEY, request_id);
        metadata.set(REPLY_STATUS_KEY, status);
        metadata.set(REPLY_FINAL_KEY, if last { "true" } else { "false" });
        metadata.set(REPLY_VALUE_KEY, if has_value { "true" } else { "false" });
        publisher.publish(topic, vec![reply]).await?;
        Ok(())
    }
}

/// What a reply carries.
pub(crate) enum ReplyKind {
    Value(Bytes),
    Done,
    Failed(String),
}

/// A bus that can carry a handled message's correlation id and trace context on to what it
/// sends: [`EventBus`] and [`CommandBus`].
///
/// ```
/// use tidemill::Metadata;
/// use tidemill_cqrs::context::FollowUp;
/// use tidemill_cqrs::EventBus;
///
/// let bus = EventBus::new(tidemill::InProcessPubSub::new());
/// let carrying = bus.carrying(&Metadata::from_iter([("correlation_id", "c-1")]));
/// # drop(carrying);
/// ```
pub trait FollowUp: Sized {
    /// The same bus, adding `metadata` to what it sends.
    fn carrying(&self, metadata: &Metadata) -> Self;
}

impl<M: Send + Sync + 'static> FollowUp for EventBus<M> {
    fn carrying(&self, metadata: &Metadata) -> Self {
        self.with_metadata(metadata)
    }
}

impl<M: Send + Sync + 'static> FollowUp for CommandBus<M> {
    fn carrying(&self, metadata: &Metadata) -> Self {
        self.with_metadata(metadata)
    }
}
