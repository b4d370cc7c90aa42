//! Processors: register typed handlers on a [`Router`], each reading its own subscription.
//!
//! - [`EventProcessor`]: one handler per subscription, in the consumer group named after the
//!   handler, so every handler gets every event of its type, and a handler added later starts
//!   from where its group starts, without replaying anything for the others.
//! - [`EventGroupProcessor`]: several handlers of different event types sharing one
//!   subscription, so events of those types on one topic are handled in the order they came.
//! - [`CommandProcessor`]: exactly one handler per command type, optionally answering requests.
//!
//! **Renaming a handler (or a group) changes its consumer group**: with a broker that keeps
//! history, the renamed handler starts as a new group, which may mean handling every message
//! again, or missing those sent in between.
//!
//! Handlers run on the router, inside its middleware (retry, poison queue, timeouts...). What
//! happens to a message that is not a plain success:
//!
//! | case | result |
//! | --- | --- |
//! | payload cannot be decoded | [`Error::Unmarshal`], rejected ([`Disposition::Reject`]) |
//! | no name in the metadata | [`Error::MissingName`], rejected, or acked with `ack_on_unknown` |
//! | a group gets a name it has no handler for | [`Error::UnknownName`], rejected, or acked with `ack_on_unknown` |
//! | a command no handler of the processor knows (a typo'd name) | [`Error::UnknownName`], rejected, or acked with `ack_on_unknown`: a command has exactly one handler |
//! | an event handler gets another event type (topics shared by several types) | skipped (acked), with a debug log and the [`ProcessorConfig::on_skip`] hook, for a metric |
//! | a command handler gets another command the processor has a handler for | skipped, likewise: that handler's business |
//! | the handler fails | the handler's [`HandlerError`] decides |
//!
//! A rejected message is never redelivered in a loop: the router sends it to the poison queue
//! if there is a poison queue layer, else to its dead-letter topic (see
//! [`RouterConfig::dead_letter`](tidemill::router::RouterConfig::dead_letter)), with the reason.
//!
//! Each handler's subscriber must read in the consumer group the constructor is given (its name
//! may add a prefix or suffix): a subscriber in another group, or one subscriber returned for
//! two groups, is refused with [`Error::GroupMismatch`] or [`Error::SharedSubscriber`].
//!
//! [`Disposition::Reject`]: tidemill::router::Disposition::Reject

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tidemill::router::Disposition;
use tidemill::{BoxError, HandlerError, HandlerResult, Message, Publisher, Router, Subscriber};

use crate::bus::{CommandBus, EventBus};
use crate::context::{Context, Env, ReplyKind};
use crate::error::{Error, Result};
use crate::handler::TypedHandler;
use crate::marshal::{JsonMarshaler, Marshaler};
use crate::name::Named;
use crate::topic::{self, TopicFn};
use crate::NAME_KEY;

/// Creates the subscriber of one handler (or group) from its name, which is meant to be its
/// consumer group.
///
/// ```
/// use std::sync::Arc;
/// use tidemill::{InProcessPubSub, Subscriber};
/// use tidemill_cqrs::processor::SubscriberConstructor;
///
/// let pubsub = InProcessPubSub::new();
/// let constructor: SubscriberConstructor = Arc::new(move |group: &str| {
///     Ok(Arc::new(pubsub.with_group(format!("billing.{group}"))) as Arc<dyn Subscriber>)
/// });
/// # drop(constructor);
/// ```
pub type SubscriberConstructor =
    Arc<dyn Fn(&str) -> tidemill::Result<Arc<dyn Subscriber>> + Send + Sync>;

/// Told of every message a handler skipped as not its business: the handler's name and the
/// message's name. Give it to a metrics counter.
pub type SkipHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

fn constructor<S, F>(f: F) -> SubscriberConstructor
where
    S: Subscriber,
    F: Fn(&str) -> tidemill::Result<S> + Send + Sync + 'static,
{
    Arc::new(move |group| f(group).map(|s| Arc::new(s) as Arc<dyn Subscriber>))
}

/// Options of a processor.
///
/// ```
/// use tidemill::InProcessPubSub;
/// use tidemill_cqrs::{topic, CommandBus, EventBus, ProcessorConfig};
///
/// let pubsub = InProcessPubSub::new();
/// let config = ProcessorConfig::default()
///     .topic(topic::single("events"))
///     .ack_on_unknown(true)
///     .concurrency(4)
///     .event_bus(EventBus::new(pubsub.clone()))
///     .command_bus(CommandBus::new(pubsub.clone()))
///     .reply_publisher(pubsub);
/// # drop(config);
/// ```
pub struct ProcessorConfig<M = JsonMarshaler> {
    topic: Option<TopicFn>,
    marshaler: M,
    ack_on_unknown: bool,
    concurrency: usize,
    event_bus: Option<EventBus<M>>,
    command_bus: Option<CommandBus<M>>,
    reply_publisher: Option<Arc<dyn Publisher>>,
    on_skip: Option<SkipHook>,
}

impl Default for ProcessorConfig<JsonMarshaler> {
    fn default() -> Self {
        Self {
            topic: None,
            marshaler: JsonMarshaler,
            ack_on_unknown: false,
            concurrency: 1,
            event_bus: None,
            command_bus: None,
            reply_publisher: None,
            on_skip: None,
        }
    }
}

impl<M> ProcessorConfig<M> {
    /// The topic function, which must match the bus's. An [`EventProcessor`] calls it with the
    /// event's name (default `events.{name}`), a [`CommandProcessor`] with the command's name
    /// (default `commands.{name}`), an [`EventGroupProcessor`] with the group's name (default
    /// the topic `events` for every group).
    ///
    /// ```
    /// let config = tidemill_cqrs::ProcessorConfig::default().topic(tidemill_cqrs::topic::prefixed("billing."));
    /// # drop(config);
    /// ```
    pub fn topic(mut self, topic: TopicFn) -> Self {
        self.topic = Some(topic);
        self
    }

    /// The marshaler. Default [`JsonMarshaler`]. Changing it drops the buses set so far, which
    /// use the old one: set it first.
    ///
    /// ```
    /// # #[derive(Clone, Copy)] struct MyMarshaler;
    /// let config = tidemill_cqrs::ProcessorConfig::default().marshaler(MyMarshaler);
    /// # drop(config);
    /// ```
    pub fn marshaler<M2>(self, marshaler: M2) -> ProcessorConfig<M2> {
        ProcessorConfig {
            topic: self.topic,
            marshaler,
            ack_on_unknown: self.ack_on_unknown,
            concurrency: self.concurrency,
            event_bus: None,
            command_bus: None,
            reply_publisher: self.reply_publisher,
            on_skip: self.on_skip,
        }
    }

    /// Called for every message a handler skips as another handler's business (see the
    /// [module docs](crate::processor)), for a metric. They are logged at DEBUG either way.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let skipped = Arc::new(AtomicU64::new(0));
    /// let counter = skipped.clone();
    /// let config = tidemill_cqrs::ProcessorConfig::default()
    ///     .on_skip(move |_handler: &str, _name: &str| { counter.fetch_add(1, Ordering::Relaxed); });
    /// # drop(config);
    /// ```
    pub fn on_skip(mut self, hook: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        self.on_skip = Some(Arc::new(hook));
        self
    }

    /// Ack messages without a name, and messages a group has no handler for, instead of
    /// rejecting them. Default false.
    ///
    /// ```
    /// let config = tidemill_cqrs::ProcessorConfig::default().ack_on_unknown(true);
    /// # drop(config);
    /// ```
    pub fn ack_on_unknown(mut self, ack: bool) -> Self {
        self.ack_on_unknown = ack;
        self
    }

    /// How many messages each handler runs at once. Default 1, which keeps order; the
    /// subscribers must allow as many unsettled deliveries.
    ///
    /// ```
    /// let config = tidemill_cqrs::ProcessorConfig::default().concurrency(8);
    /// # drop(config);
    /// ```
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The event bus handlers get from [`Context::event_bus`].
    ///
    /// ```
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let config = tidemill_cqrs::ProcessorConfig::default().event_bus(tidemill_cqrs::EventBus::new(pubsub));
    /// # drop(config);
    /// ```
    pub fn event_bus(mut self, bus: EventBus<M>) -> Self {
        self.event_bus = Some(bus);
        self
    }

    /// The command bus handlers get from [`Context::command_bus`].
    ///
    /// ```
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let config = tidemill_cqrs::ProcessorConfig::default().command_bus(tidemill_cqrs::CommandBus::new(pubsub));
    /// # drop(config);
    /// ```
    pub fn command_bus(mut self, bus: CommandBus<M>) -> Self {
        self.command_bus = Some(bus);
        self
    }

    /// The publisher replies to requests go out with. Without it, requests get no reply.
    ///
    /// ```
    /// let config = tidemill_cqrs::ProcessorConfig::default().reply_publisher(tidemill::InProcessPubSub::new());
    /// # drop(config);
    /// ```
    pub fn reply_publisher(mut self, publisher: impl Publisher) -> Self {
        self.reply_publisher = Some(Arc::new(publisher));
        self
    }
}

impl<M> fmt::Debug for ProcessorConfig<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("ack_on_unknown", &self.ack_on_unknown)
            .field("concurrency", &self.concurrency)
            .field("event_bus", &self.event_bus.is_some())
            .field("command_bus", &self.command_bus.is_some())
            .field("reply_publisher", &self.reply_publisher.is_some())
            .finish_non_exhaustive()
    }
}

/// A typed handler with its decoding, type-erased. Returns the encoded final reply, if any.
type Erased<M> = Arc<
    dyn Fn(Message, Context<M>) -> BoxFuture<'static, HandlerResult<Option<Bytes>>> + Send + Sync,
>;

type Encode<M, R> = fn(&M, &R) -> std::result::Result<Option<Bytes>, BoxError>;

fn erase<T, Args, R, H, M>(handler: H, encode: Encode<M, R>) -> Erased<M>
where
    T: Named + Send + 'static,
    R: Send + 'static,
    M: Marshaler<T>,
    H: TypedHandler<T, Args, M, R>,
{
    Arc::new(move |msg: Message, ctx: Context<M>| {
        let value = ctx.env().marshaler.unmarshal(msg.payload());
        let handler = handler.clone();
        Box::pin(async move {
            let value = value.map_err(|source| {
                HandlerError::reject(Error::Unmarshal {
                    name: T::name().into_owned(),
                    message_id: msg.id().to_owned(),
                    source,
                })
            })?;
            let env = ctx.env().clone();
            let out = handler.call(value, ctx).await?;
            encode(&env.marshaler, &out).map_err(|source| {
                HandlerError::reject(Error::Marshal {
                    name: crate::name::short_type_name::<R>(),
                    source,
                })
            })
        })
    })
}

struct Routes<M> {
    by_name: HashMap<String, Erased<M>>,
    /// What a name without a route here is.
    others: Others,
}

/// What a handler does with a message whose name it has no route for.
enum Others {
    /// Skip it: events of other types are other handlers' business.
    Skip,
    /// Unknown: rejected (a group's topic carries only its own types).
    Unknown,
    /// Skip it if the processor has a handler for that command, else it is unknown: a command
    /// has exactly one handler.
    KnownCommands(Arc<Mutex<HashMap<String, String>>>),
}

/// What all processors share: where they register and how they build subscriptions.
struct Base<M> {
    router: Router,
    subscribers: SubscriberConstructor,
    topic: TopicFn,
    ack_on_unknown: bool,
    concurrency: usize,
    env: Arc<Env<M>>,
    on_skip: Option<SkipHook>,
    /// Group -> subscriber identity, to refuse one subscriber for two groups.
    subscribers_seen: Mutex<Vec<(String, usize)>>,
}

impl<M: Send + Sync + 'static> Base<M> {
    fn new(
        router: &Router,
        subscribers: SubscriberConstructor,
        config: ProcessorConfig<M>,
        default_topic: TopicFn,
    ) -> Self {
        Self {
            router: router.clone(),
            subscribers,
            topic: config.topic.unwrap_or(default_topic),
            ack_on_unknown: config.ack_on_unknown,
            concurrency: config.concurrency,
            on_skip: config.on_skip,
            subscribers_seen: Mutex::default(),
            env: Arc::new(Env {
                marshaler: Arc::new(config.marshaler),
                event_bus: config.event_bus,
                command_bus: config.command_bus,
                reply_publisher: config.reply_publisher,
            }),
        }
    }

    fn register(&self, handler: &str, topic_key: &str, routes: Routes<M>) -> Result<()> {
        let subscriber = (self.subscribers)(handler).map_err(|source| Error::Subscriber {
            group: handler.to_owned(),
            source,
        })?;
        if let Some(actual) = subscriber.group() {
            if !actual.contains(handler) {
                return Err(Error::GroupMismatch {
                    expected: handler.to_owned(),
                    actual: actual.to_owned(),
                });
            }
        }
        {
            let id = subscriber.instance_id();
            let mut seen = self.subscribers_seen.lock();
            if let Some((first, _)) = seen.iter().find(|(g, i)| *i == id && g != handler) {
                return Err(Error::SharedSubscriber {
                    first: first.clone(),
                    second: handler.to_owned(),
                });
            }
            seen.push((handler.to_owned(), id));
        }
        let topic = (self.topic)(topic_key);
        let routes = Arc::new(routes);
        let env = self.env.clone();
        let name: Arc<str> = handler.into();
        let ack_on_unknown = self.ack_on_unknown;
        let on_skip = self.on_skip.clone();
        self.router
            .handler(handler)
            .subscribe(topic, subscriber)
            .concurrency(self.concurrency)
            .handle(move |msg: Message| {
                dispatch(
                    msg,
                    name.clone(),
                    routes.clone(),
                    env.clone(),
                    ack_on_unknown,
                    on_skip.clone(),
                )
            })?;
        Ok(())
    }
}

fn unknown(err: Error, ack: bool) -> HandlerResult<()> {
    if ack {
        tracing::debug!(error = %err, "acking a message no handler knows");
        Ok(())
    } else {
        Err(HandlerError::reject(err))
    }
}

async fn dispatch<M: Send + Sync + 'static>(
    msg: Message,
    handler: Arc<str>,
    routes: Arc<Routes<M>>,
    env: Arc<Env<M>>,
    ack_on_unknown: bool,
    on_skip: Option<SkipHook>,
) -> HandlerResult<()> {
    let Some(name) = msg.metadata().get(NAME_KEY) else {
        return unknown(
            Error::MissingName {
                message_id: msg.id().to_owned(),
                key: NAME_KEY,
            },
            ack_on_unknown,
        );
    };
    let Some(route) = routes.by_name.get(name) else {
        let skip = match &routes.others {
            Others::Skip => true,
            Others::Unknown => false,
            Others::KnownCommands(known) => known.lock().contains_key(name),
        };
        if skip {
            tracing::debug!(
                handler = %handler, name, message_id = msg.id(),
                "skipping a message of a type this handler does not handle"
            );
            if let Some(hook) = &on_skip {
                hook(&handler, name);
            }
            return Ok(());
        }
        return unknown(
            Error::UnknownName {
                name: name.to_owned(),
                message_id: msg.id().to_owned(),
            },
            ack_on_unknown,
        );
    };
    let ctx = Context::new(msg.clone(), handler, env);
    let result = route(msg, ctx.clone()).await;
    if ctx.wants_reply() {
        let reply = match &result {
            Ok(Some(payload)) => Some(ReplyKind::Value(payload.clone())),
            Ok(None) => Some(ReplyKind::Done),
            // Only a final failure is answered: a retried request may still succeed.
            Err(err) if matches!(err.disposition(), Disposition::Reject | Disposition::Drop) => {
                Some(ReplyKind::Failed(err.to_string()))
            }
            Err(_) => None,
        };
        if let Some(reply) = reply {
            // A reply that cannot be sent is a failure of the handling: the request comes back.
            ctx.send_reply(reply, true)
                .await
                .map_err(HandlerError::new)?;
        }
    }
    result.map(drop)
}

macro_rules! processor_common {
    ($processor:ident, $default_topic:expr) => {
        impl $processor<JsonMarshaler> {
            /// A processor with the default options, registering on `router`, creating each
            /// subscriber with `subscribers` (called with the consumer group's name).
            ///
            /// ```
            /// let pubsub = tidemill::InProcessPubSub::new();
            /// let router = tidemill::Router::new();
            /// let groups = move |group: &str| Ok(pubsub.with_group(group));
            /// let events = tidemill_cqrs::EventProcessor::new(&router, groups.clone());
            /// let event_groups = tidemill_cqrs::EventGroupProcessor::new(&router, groups.clone());
            /// let commands = tidemill_cqrs::CommandProcessor::new(&router, groups);
            /// # drop((events, event_groups, commands));
            /// ```
            pub fn new<S, F>(router: &Router, subscribers: F) -> Self
            where
                S: Subscriber,
                F: Fn(&str) -> tidemill::Result<S> + Send + Sync + 'static,
            {
                Self::with_config(router, subscribers, ProcessorConfig::default())
            }
        }

        impl<M: Send + Sync + 'static> $processor<M> {
            /// A processor with the given options.
            ///
            /// ```
            /// let pubsub = tidemill::InProcessPubSub::new();
            /// let router = tidemill::Router::new();
            /// let config = tidemill_cqrs::ProcessorConfig::default().ack_on_unknown(true);
            /// let events = tidemill_cqrs::EventProcessor::with_config(
            ///     &router,
            ///     move |group: &str| Ok(pubsub.with_group(group)),
            ///     config,
            /// );
            /// # drop(events);
            /// ```
            pub fn with_config<S, F>(
                router: &Router,
                subscribers: F,
                config: ProcessorConfig<M>,
            ) -> Self
            where
                S: Subscriber,
                F: Fn(&str) -> tidemill::Result<S> + Send + Sync + 'static,
            {
                Self::with_constructor(router, constructor(subscribers), config)
            }

            /// A processor whose subscribers come from an already type-erased constructor.
            ///
            /// ```
            /// use std::sync::Arc;
            /// use tidemill::Subscriber;
            /// use tidemill_cqrs::processor::SubscriberConstructor;
            ///
            /// let pubsub = tidemill::InProcessPubSub::new();
            /// let constructor: SubscriberConstructor =
            ///     Arc::new(move |group: &str| Ok(Arc::new(pubsub.with_group(group)) as Arc<dyn Subscriber>));
            /// let router = tidemill::Router::new();
            /// let commands = tidemill_cqrs::CommandProcessor::with_constructor(
            ///     &router,
            ///     constructor,
            ///     tidemill_cqrs::ProcessorConfig::default(),
            /// );
            /// # drop(commands);
            /// ```
            pub fn with_constructor(
                router: &Router,
                subscribers: SubscriberConstructor,
                config: ProcessorConfig<M>,
            ) -> Self {
                Self {
                    base: Base::new(router, subscribers, config, $default_topic),
                    names: Default::default(),
                }
            }
        }

        impl<M> fmt::Debug for $processor<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($processor))
                    .field("handlers", &*self.names.lock())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Runs typed event handlers, each on its own subscription in the consumer group named after
/// the handler.
///
/// See the [module docs](crate::processor) for the warning about renaming handlers and for what
/// happens to messages that cannot be handled.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill::{HandlerResult, InProcessPubSub, Router};
/// use tidemill_cqrs::{EventBus, EventProcessor, Named};
///
/// #[derive(Serialize, Deserialize)]
/// struct UserSignedUp { email: String }
/// impl Named for UserSignedUp {}
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// let processor = EventProcessor::new(&router, {
///     let pubsub = pubsub.clone();
///     move |group: &str| Ok(pubsub.with_group(group))
/// });
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// processor.handle("send_welcome_email", move |e: UserSignedUp| {
///     let tx = tx.clone();
///     async move {
///         tx.send(e.email).ok();
///         HandlerResult::Ok(())
///     }
/// })?;
///
/// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
/// router.running().await;
/// EventBus::new(pubsub.clone())
///     .publish(&UserSignedUp { email: "ada@example.com".into() })
///     .await?;
/// assert_eq!(rx.recv().await.unwrap(), "ada@example.com");
/// router.close().await?;
/// run.await??;
/// # Ok(()) }
/// ```
pub struct EventProcessor<M = JsonMarshaler> {
    base: Base<M>,
    names: Mutex<Vec<String>>,
}

processor_common!(EventProcessor, topic::prefixed("events."));

impl<M: Send + Sync + 'static> EventProcessor<M> {
    /// Registers `handler` for events of type `E` under `handler_name`, which is also its
    /// consumer group. Names are unique within the router.
    ///
    /// Renaming a handler later changes its consumer group: with a broker that keeps history,
    /// the renamed handler starts as a new group.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderPlaced { id: u64 }
    /// impl tidemill_cqrs::Named for OrderPlaced {}
    ///
    /// async fn reserve_stock(order: OrderPlaced) -> tidemill::HandlerResult<()> {
    ///     println!("reserving for {}", order.id);
    ///     Ok(())
    /// }
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let events = tidemill_cqrs::EventProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
    /// events.handle("reserve_stock", reserve_stock)?;
    /// assert_eq!(router.handler_names(), ["reserve_stock"]);
    /// # Ok(()) }
    /// ```
    pub fn handle<E, Args, H>(&self, handler_name: &str, handler: H) -> Result<()>
    where
        E: Named + Send + 'static,
        M: Marshaler<E>,
        H: TypedHandler<E, Args, M, ()>,
    {
        let name = E::name();
        let routes = Routes {
            by_name: HashMap::from([(name.to_string(), erase(handler, |_, _| Ok(None)))]),
            others: Others::Skip,
        };
        self.base.register(handler_name, &name, routes)?;
        self.names.lock().push(handler_name.to_owned());
        Ok(())
    }
}

/// Runs groups of typed event handlers, each group on one subscription in the consumer group
/// named after the group, so that events of different types on one topic are handled one at a
/// time in the order they came (e.g. an employee's transfer before their leaving).
///
/// The bus must send every event of the group to the group's topic: with the defaults, configure
/// the bus with [`topic::single("events")`](crate::topic::single).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill::{HandlerResult, InProcessPubSub, Router};
/// use tidemill_cqrs::{EventGroupProcessor, Named, ProcessorConfig};
///
/// #[derive(Serialize, Deserialize)]
/// struct EmployeeTransferred { employee: u64, to: String }
/// impl Named for EmployeeTransferred {}
///
/// #[derive(Serialize, Deserialize)]
/// struct EmployeeLeft { employee: u64 }
/// impl Named for EmployeeLeft {}
///
/// # fn main() -> tidemill_cqrs::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// let processor = EventGroupProcessor::with_config(
///     &router,
///     move |group: &str| Ok(pubsub.with_group(group)),
///     ProcessorConfig::default().ack_on_unknown(true),
/// );
/// processor
///     .group("employee-related")
///     .on(|e: EmployeeTransferred| async move { HandlerResult::Ok(()) })
///     .on(|e: EmployeeLeft| async move { HandlerResult::Ok(()) })
///     .register()?;
/// # Ok(()) }
/// ```
pub struct EventGroupProcessor<M = JsonMarshaler> {
    base: Base<M>,
    names: Mutex<Vec<String>>,
}

processor_common!(EventGroupProcessor, topic::single("events"));

impl<M: Send + Sync + 'static> EventGroupProcessor<M> {
    /// Starts a group named `name`, which is also its consumer group and its handler's name on
    /// the router.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderPlaced { id: u64 }
    /// impl tidemill_cqrs::Named for OrderPlaced {}
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let processor = tidemill_cqrs::EventGroupProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
    /// processor
    ///     .group("orders")
    ///     .on(|_: OrderPlaced| async { tidemill::HandlerResult::Ok(()) })
    ///     .register()?;
    /// assert_eq!(router.handler_names(), ["orders"]);
    /// # Ok(()) }
    /// ```
    pub fn group(&self, name: &str) -> GroupBuilder<'_, M> {
        GroupBuilder {
            processor: self,
            name: name.to_owned(),
            by_name: HashMap::new(),
            error: None,
        }
    }
}

/// The handlers of one group of an [`EventGroupProcessor`]; see there for an example.
///
/// ```
/// let pubsub = tidemill::InProcessPubSub::new();
/// let router = tidemill::Router::new();
/// let processor = tidemill_cqrs::EventGroupProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
/// let builder = processor.group("empty");
/// assert!(format!("{builder:?}").contains("empty"));
/// ```
#[must_use = "a group is registered only by `register`"]
pub struct GroupBuilder<'a, M> {
    processor: &'a EventGroupProcessor<M>,
    name: String,
    by_name: HashMap<String, Erased<M>>,
    error: Option<Error>,
}

impl<M> fmt::Debug for GroupBuilder<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupBuilder")
            .field("name", &self.name)
            .field("events", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<M: Send + Sync + 'static> GroupBuilder<'_, M> {
    /// Adds the group's handler of events of type `E`. A second handler of one type makes
    /// [`register`](Self::register) fail.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Shipped { id: u64 }
    /// impl tidemill_cqrs::Named for Shipped {}
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let processor = tidemill_cqrs::EventGroupProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
    /// let twice = processor
    ///     .group("shipping")
    ///     .on(|_: Shipped| async { tidemill::HandlerResult::Ok(()) })
    ///     .on(|_: Shipped| async { tidemill::HandlerResult::Ok(()) })
    ///     .register();
    /// assert!(matches!(twice, Err(tidemill_cqrs::Error::DuplicateGroupHandler { .. })));
    /// # Ok(()) }
    /// ```
    pub fn on<E, Args, H>(mut self, handler: H) -> Self
    where
        E: Named + Send + 'static,
        M: Marshaler<E>,
        H: TypedHandler<E, Args, M, ()>,
    {
        let name = E::name().into_owned();
        match self.by_name.entry(name) {
            std::collections::hash_map::Entry::Occupied(entry) => {
                self.error.get_or_insert(Error::DuplicateGroupHandler {
                    group: self.name.clone(),
                    name: entry.key().clone(),
                });
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(erase(handler, |_, _| Ok(None)));
            }
        }
        self
    }

    /// Registers the group on the router.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Shipped { id: u64 }
    /// impl tidemill_cqrs::Named for Shipped {}
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let processor = tidemill_cqrs::EventGroupProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
    /// processor
    ///     .group("shipping")
    ///     .on(|_: Shipped| async { tidemill::HandlerResult::Ok(()) })
    ///     .register()?;
    /// # Ok(()) }
    /// ```
    pub fn register(self) -> Result<()> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let routes = Routes {
            by_name: self.by_name,
            others: Others::Unknown,
        };
        self.processor
            .base
            .register(&self.name, &self.name, routes)?;
        self.processor.names.lock().push(self.name);
        Ok(())
    }
}

/// Runs typed command handlers: exactly one per command type, each on its own subscription in
/// the consumer group named after the handler.
///
/// Handlers registered with [`handle_with_result`](Self::handle_with_result) answer requests
/// sent through [`RequestReply`](crate::RequestReply) with their result; those registered with
/// [`handle`](Self::handle) answer with success or failure only. Replies need
/// [`ProcessorConfig::reply_publisher`]. A failure is answered only when it is final
/// ([`Disposition::Reject`] or [`Disposition::Drop`]); a retried request stays unanswered until a
/// later attempt settles it. A rejected command goes to the poison queue, or without one to the
/// router's dead-letter topic; it is answered once.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill::{HandlerResult, InProcessPubSub, Router};
/// use tidemill_cqrs::{CommandProcessor, Error, Named};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendNotification { to: String }
/// impl Named for SendNotification {}
///
/// # fn main() -> tidemill_cqrs::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// let processor = CommandProcessor::new(&router, move |group: &str| Ok(pubsub.with_group(group)));
/// processor.handle("notify", |c: SendNotification| async move { HandlerResult::Ok(()) })?;
/// let second = processor.handle("notify_again", |c: SendNotification| async move { HandlerResult::Ok(()) });
/// assert!(matches!(second, Err(Error::DuplicateCommandHandler { .. })));
/// # Ok(()) }
/// ```
pub struct CommandProcessor<M = JsonMarshaler> {
    base: Base<M>,
    /// Command name -> handler name, shared with the handlers to tell a typo from another
    /// handler's command.
    names: Arc<Mutex<HashMap<String, String>>>,
}

processor_common!(CommandProcessor, topic::prefixed("commands."));

impl<M: Send + Sync + 'static> CommandProcessor<M> {
    /// Registers `handler` for commands of type `C` under `handler_name`, which is also its
    /// consumer group. A second handler of one command type is an error.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct ShipOrder { id: u64 }
    /// impl tidemill_cqrs::Named for ShipOrder {}
    ///
    /// async fn ship(command: ShipOrder, ctx: tidemill_cqrs::Context) -> tidemill::HandlerResult<()> {
    ///     println!("shipping {} ({:?})", command.id, ctx.correlation_id());
    ///     Ok(())
    /// }
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let commands = tidemill_cqrs::CommandProcessor::new(&router, move |g: &str| Ok(pubsub.with_group(g)));
    /// commands.handle("ship_order", ship)?;
    /// # Ok(()) }
    /// ```
    pub fn handle<C, Args, H>(&self, handler_name: &str, handler: H) -> Result<()>
    where
        C: Named + Send + 'static,
        M: Marshaler<C>,
        H: TypedHandler<C, Args, M, ()>,
    {
        self.add::<C>(handler_name, erase(handler, |_, _| Ok(None)))
    }

    /// Registers `handler`, whose result answers requests, for commands of type `C`.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct QuotePrice { nights: u32 }
    /// impl tidemill_cqrs::Named for QuotePrice {}
    ///
    /// # fn main() -> tidemill_cqrs::Result<()> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// let commands = tidemill_cqrs::CommandProcessor::with_config(
    ///     &router,
    ///     { let pubsub = pubsub.clone(); move |g: &str| Ok(pubsub.with_group(g)) },
    ///     tidemill_cqrs::ProcessorConfig::default().reply_publisher(pubsub),
    /// );
    /// commands.handle_with_result("quote", |c: QuotePrice| async move {
    ///     tidemill::HandlerResult::Ok(c.nights * 120)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn handle_with_result<C, R, Args, H>(&self, handler_name: &str, handler: H) -> Result<()>
    where
        C: Named + Send + 'static,
        R: Send + 'static,
        M: Marshaler<C> + Marshaler<R>,
        H: TypedHandler<C, Args, M, R>,
    {
        self.add::<C>(
            handler_name,
            erase(handler, |m: &M, r: &R| m.marshal(r).map(Some)),
        )
    }

    fn add<C: Named>(&self, handler_name: &str, route: Erased<M>) -> Result<()> {
        let name = C::name().into_owned();
        if let Some(existing) = self.names.lock().get(&name) {
            return Err(Error::DuplicateCommandHandler {
                name,
                existing: existing.clone(),
            });
        }
        let routes = Routes {
            by_name: HashMap::from([(name.clone(), route)]),
            others: Others::KnownCommands(self.names.clone()),
        };
        self.base.register(handler_name, &name, routes)?;
        self.names.lock().insert(name, handler_name.to_owned());
        Ok(())
    }
}
