//! [`EventBus`] and [`CommandBus`]: publish typed events and send typed commands.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use tidemill::{Message, Metadata, Publisher};

use crate::error::{Error, Result};
use crate::marshal::{JsonMarshaler, Marshaler};
use crate::name::Named;
use crate::topic::{self, TopicFn};
use crate::{CONTENT_TYPE_KEY, NAME_KEY};

/// A hook that adjusts each outgoing message before it is published: metadata, a key to
/// partition or order by, a fixed id.
///
/// ```
/// use std::sync::Arc;
/// use tidemill_cqrs::bus::OnSend;
///
/// let hook: OnSend = Arc::new(|msg, outgoing| {
///     msg.metadata_mut().set("service", "billing");
///     println!("sending {} to {}", outgoing.name(), outgoing.topic());
/// });
/// # drop(hook);
/// ```
pub type OnSend = Arc<dyn Fn(&mut Message, &Outgoing<'_>) + Send + Sync>;

/// What an [`OnSend`] hook learns about the value being sent.
///
/// ```
/// use tidemill_cqrs::bus::Outgoing;
///
/// fn partition_key(outgoing: &Outgoing<'_>) -> Option<String> {
///     outgoing.value::<u64>().map(|id| id.to_string())
/// }
/// # let _ = partition_key;
/// ```
pub struct Outgoing<'a> {
    name: &'a str,
    topic: &'a str,
    value: &'a (dyn Any + Send + Sync),
}

impl<'a> Outgoing<'a> {
    /// The command's or event's name.
    ///
    /// ```
    /// let hook: tidemill_cqrs::bus::OnSend = std::sync::Arc::new(|msg, outgoing| {
    ///     msg.metadata_mut().set("sent_as", outgoing.name());
    /// });
    /// # drop(hook);
    /// ```
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The topic it goes to.
    ///
    /// ```
    /// let hook: tidemill_cqrs::bus::OnSend = std::sync::Arc::new(|msg, outgoing| {
    ///     msg.metadata_mut().set("sent_to", outgoing.topic());
    /// });
    /// # drop(hook);
    /// ```
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The value, if it is a `T`.
    ///
    /// ```
    /// struct OrderPlaced { customer: u64 }
    /// let hook: tidemill_cqrs::bus::OnSend = std::sync::Arc::new(|msg, outgoing| {
    ///     if let Some(order) = outgoing.value::<OrderPlaced>() {
    ///         msg.metadata_mut().set("customer_id", order.customer.to_string());
    ///     }
    /// });
    /// # drop(hook);
    /// ```
    pub fn value<T: Any>(&self) -> Option<&'a T> {
        self.value.downcast_ref()
    }
}

impl fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Options of an [`EventBus`] or a [`CommandBus`].
///
/// ```
/// use std::sync::Arc;
/// use tidemill_cqrs::{topic, BusConfig, CommandBus};
///
/// let bus = CommandBus::with_config(
///     tidemill::InProcessPubSub::new(),
///     BusConfig::default()
///         .topic(topic::prefixed("billing.commands."))
///         .on_send(Arc::new(|msg, _| msg.metadata_mut().set("origin", "api"))),
/// );
/// # drop(bus);
/// ```
pub struct BusConfig<M = JsonMarshaler> {
    topic: Option<TopicFn>,
    marshaler: M,
    on_send: Option<OnSend>,
}

impl Default for BusConfig<JsonMarshaler> {
    fn default() -> Self {
        Self {
            topic: None,
            marshaler: JsonMarshaler,
            on_send: None,
        }
    }
}

impl<M> BusConfig<M> {
    /// The topic function. Default [`topic::prefixed`] with `events.` for an event bus and
    /// `commands.` for a command bus.
    ///
    /// ```
    /// let config = tidemill_cqrs::BusConfig::default().topic(tidemill_cqrs::topic::single("events"));
    /// # drop(config);
    /// ```
    pub fn topic(mut self, topic: TopicFn) -> Self {
        self.topic = Some(topic);
        self
    }

    /// The marshaler. Default [`JsonMarshaler`].
    ///
    /// ```
    /// # #[derive(Clone, Copy)] struct MyMarshaler;
    /// let config = tidemill_cqrs::BusConfig::default().marshaler(MyMarshaler);
    /// # drop(config);
    /// ```
    pub fn marshaler<M2>(self, marshaler: M2) -> BusConfig<M2> {
        BusConfig {
            topic: self.topic,
            marshaler,
            on_send: self.on_send,
        }
    }

    /// A hook called on every outgoing message before it is published. Default none.
    ///
    /// ```
    /// let config = tidemill_cqrs::BusConfig::default()
    ///     .on_send(std::sync::Arc::new(|msg, _| msg.metadata_mut().set("service", "api")));
    /// # drop(config);
    /// ```
    pub fn on_send(mut self, hook: OnSend) -> Self {
        self.on_send = Some(hook);
        self
    }
}

impl<M> fmt::Debug for BusConfig<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("topic", &self.topic.is_some())
            .field("on_send", &self.on_send.is_some())
            .finish_non_exhaustive()
    }
}

/// What both buses share.
pub(crate) struct Core<M> {
    publisher: Arc<dyn Publisher>,
    topic: TopicFn,
    marshaler: Arc<M>,
    on_send: Option<OnSend>,
    metadata: Metadata,
}

impl<M> Clone for Core<M> {
    fn clone(&self) -> Self {
        Self {
            publisher: self.publisher.clone(),
            topic: self.topic.clone(),
            marshaler: self.marshaler.clone(),
            on_send: self.on_send.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

impl<M: Send + Sync + 'static> Core<M> {
    fn new(publisher: Arc<dyn Publisher>, config: BusConfig<M>, prefix: &str) -> Self {
        Self {
            publisher,
            topic: config.topic.unwrap_or_else(|| topic::prefixed(prefix)),
            marshaler: Arc::new(config.marshaler),
            on_send: config.on_send,
            metadata: Metadata::new(),
        }
    }

    pub(crate) async fn send<T>(&self, value: &T, extra: Option<&Metadata>) -> Result<()>
    where
        T: Named + Send + Sync + 'static,
        M: Marshaler<T>,
    {
        let name = T::name();
        let topic = (self.topic)(&name);
        let payload = self
            .marshaler
            .marshal(value)
            .map_err(|source| Error::Marshal {
                name: name.to_string(),
                source,
            })?;
        let mut msg = Message::new(payload);
        let metadata = msg.metadata_mut();
        metadata.extend_from(&self.metadata);
        if let Some(extra) = extra {
            metadata.extend_from(extra);
        }
        metadata.set(NAME_KEY, &*name);
        metadata.set(CONTENT_TYPE_KEY, self.marshaler.content_type());
        if let Some(hook) = &self.on_send {
            hook(
                &mut msg,
                &Outgoing {
                    name: &name,
                    topic: &topic,
                    value,
                },
            );
        }
        self.publisher.publish(&topic, vec![msg]).await?;
        Ok(())
    }

    fn with_metadata(&self, metadata: &Metadata) -> Self {
        let mut core = self.clone();
        core.metadata.extend_from(metadata);
        core
    }
}

macro_rules! bus_common {
    ($bus:ident, $prefix:literal) => {
        impl $bus<JsonMarshaler> {
            /// A bus with the default options: JSON, the default topic function, no hook.
            ///
            /// ```
            /// let events = tidemill_cqrs::EventBus::new(tidemill::InProcessPubSub::new());
            /// let commands = tidemill_cqrs::CommandBus::new(tidemill::InProcessPubSub::new());
            /// # drop((events, commands));
            /// ```
            pub fn new(publisher: impl Publisher) -> Self {
                Self::with_config(publisher, BusConfig::default())
            }
        }

        impl<M: Send + Sync + 'static> $bus<M> {
            /// A bus with the given options.
            ///
            /// ```
            /// use tidemill_cqrs::{topic, BusConfig, EventBus};
            /// let bus = EventBus::with_config(
            ///     tidemill::InProcessPubSub::new(),
            ///     BusConfig::default().topic(topic::by_name()),
            /// );
            /// assert_eq!(bus.topic_for("OrderPlaced"), "OrderPlaced");
            /// ```
            pub fn with_config(publisher: impl Publisher, config: BusConfig<M>) -> Self {
                Self {
                    core: Core::new(Arc::new(publisher), config, $prefix),
                }
            }

            /// The same bus, adding `metadata` to every message it sends (after what the bus
            /// already adds, before the hook).
            ///
            /// ```
            /// let bus = tidemill_cqrs::EventBus::new(tidemill::InProcessPubSub::new());
            /// let tenant = bus.with_metadata(&tidemill::Metadata::from_iter([("tenant", "acme")]));
            /// # drop(tenant);
            /// ```
            pub fn with_metadata(&self, metadata: &Metadata) -> Self {
                Self {
                    core: self.core.with_metadata(metadata),
                }
            }

            /// The marshaler.
            ///
            /// ```
            /// use tidemill_cqrs::{CommandBus, JsonMarshaler};
            /// let bus = CommandBus::new(tidemill::InProcessPubSub::new());
            /// let _json: &JsonMarshaler = bus.marshaler();
            /// ```
            pub fn marshaler(&self) -> &M {
                &self.core.marshaler
            }

            /// The topic a value named `name` goes to.
            ///
            /// ```
            /// let bus = tidemill_cqrs::CommandBus::new(tidemill::InProcessPubSub::new());
            /// assert_eq!(bus.topic_for("SendEmail"), "commands.SendEmail");
            /// ```
            pub fn topic_for(&self, name: &str) -> String {
                (self.core.topic)(name)
            }
        }

        impl<M> Clone for $bus<M> {
            fn clone(&self) -> Self {
                Self {
                    core: self.core.clone(),
                }
            }
        }

        impl<M> fmt::Debug for $bus<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($bus))
                    .field("metadata", &self.core.metadata)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Publishes events: values of types that say what happened (`UserSignedUp`, in the past
/// tense), to every handler that cares.
///
/// The event's [name](Named) goes in the metadata under [`NAME_KEY`], the topic comes from the
/// topic function (default `events.{name}`). Cloning is cheap.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill_cqrs::{EventBus, Named};
///
/// #[derive(Serialize, Deserialize)]
/// struct UserSignedUp {
///     email: String,
/// }
/// impl Named for UserSignedUp {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_cqrs::Result<()> {
/// let bus = EventBus::new(tidemill::InProcessPubSub::new());
/// assert_eq!(bus.topic_for("UserSignedUp"), "events.UserSignedUp");
/// bus.publish(&UserSignedUp { email: "ada@example.com".into() }).await?;
/// # Ok(()) }
/// ```
pub struct EventBus<M = JsonMarshaler> {
    core: Core<M>,
}

bus_common!(EventBus, "events.");

impl<M: Send + Sync + 'static> EventBus<M> {
    /// Publishes `event`.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct OrderPlaced { id: u64 }
    /// impl tidemill_cqrs::Named for OrderPlaced {}
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_cqrs::Result<()> {
    /// let bus = tidemill_cqrs::EventBus::new(tidemill::InProcessPubSub::new());
    /// bus.publish(&OrderPlaced { id: 1 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish<E>(&self, event: &E) -> Result<()>
    where
        E: Named + Send + Sync + 'static,
        M: Marshaler<E>,
    {
        self.core.send(event, None).await
    }
}

/// Sends commands: values of types that ask for something to be done (`SendNotification`, in
/// the imperative), to the one handler of their type.
///
/// The command's [name](Named) goes in the metadata under [`NAME_KEY`], the topic comes from the
/// topic function (default `commands.{name}`). Cloning is cheap.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill_cqrs::{CommandBus, Named};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendNotification {
///     to: String,
/// }
/// impl Named for SendNotification {}
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_cqrs::Result<()> {
/// let bus = CommandBus::new(tidemill::InProcessPubSub::new());
/// bus.send(&SendNotification { to: "ada".into() }).await?;
/// # Ok(()) }
/// ```
pub struct CommandBus<M = JsonMarshaler> {
    core: Core<M>,
}

bus_common!(CommandBus, "commands.");

impl<M: Send + Sync + 'static> CommandBus<M> {
    /// Sends `command`.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct ShipOrder { id: u64 }
    /// impl tidemill_cqrs::Named for ShipOrder {}
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_cqrs::Result<()> {
    /// let bus = tidemill_cqrs::CommandBus::new(tidemill::InProcessPubSub::new());
    /// bus.send(&ShipOrder { id: 1 }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send<C>(&self, command: &C) -> Result<()>
    where
        C: Named + Send + Sync + 'static,
        M: Marshaler<C>,
    {
        self.core.send(command, None).await
    }

    pub(crate) fn core(&self) -> &Core<M> {
        &self.core
    }
}
