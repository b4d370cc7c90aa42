//! CQRS on tidemill: commands and events as plain Rust types, sent over any pub/sub and handled
//! by typed async functions on a [`Router`](tidemill::Router).
//!
//! - [`EventBus::publish`] and [`CommandBus::send`] encode a value with a
//!   [`Marshaler`] (JSON by default), put its [name](Named) in the metadata
//!   and publish it to the topic the [topic function](topic) gives for that name.
//! - [`EventProcessor`], [`EventGroupProcessor`] and [`CommandProcessor`] register handlers on a
//!   router you pass in, so router-wide middleware (retry, poison queue, timeouts) applies.
//!   Each handler (or group) reads its own subscription, made by a subscriber constructor called
//!   with the handler's name: use it as the consumer group.
//! - Handlers get a [`Context`]: the message, its correlation id, and buses whose follow-ups
//!   carry the correlation id and trace context on.
//! - [`RequestReply`] sends a command and awaits its handler's typed result, error, or several
//!   replies, with a timeout.
//! - [`VersionGuard`] checks event versions in projections; early events come back later.
//!
//! Subscriber constructors are synchronous: an adapter that connects asynchronously (such as
//! `tidemill-redis`'s `RedisSubscriber::connect`) goes in a [`LazySubscriber`], which connects
//! when the router subscribes:
//!
//! ```
//! use tidemill_cqrs::{EventProcessor, LazySubscriber};
//!
//! let pubsub = tidemill::InProcessPubSub::new();
//! let router = tidemill::Router::new();
//! let processor = EventProcessor::new(&router, move |group: &str| {
//!     let (pubsub, group) = (pubsub.clone(), group.to_owned());
//!     Ok(LazySubscriber::new(move || {
//!         let (pubsub, group) = (pubsub.clone(), group.clone());
//!         // e.g. RedisSubscriber::connect(config.clone().group(group))
//!         async move { Ok(pubsub.with_group(group)) }
//!     }))
//! });
//! # drop(processor);
//! ```
//!
//! Events are named in the past tense (`UserSignedUp`): adding a reaction is adding a handler.
//! Commands are named in the imperative (`SendNotification`) and have exactly one handler.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tidemill::{HandlerResult, InProcessPubSub, Router};
//! use tidemill_cqrs::{CommandBus, CommandProcessor, Context, EventBus, EventProcessor, Named, ProcessorConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SignUp { email: String }
//! impl Named for SignUp {}
//!
//! #[derive(Serialize, Deserialize)]
//! struct UserSignedUp { email: String }
//! impl Named for UserSignedUp {}
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pubsub = InProcessPubSub::new();
//! let router = Router::new();
//! let groups = {
//!     let pubsub = pubsub.clone();
//!     move |group: &str| Ok(pubsub.with_group(group))
//! };
//!
//! let commands = CommandProcessor::with_config(
//!     &router,
//!     groups.clone(),
//!     ProcessorConfig::default().event_bus(EventBus::new(pubsub.clone())),
//! );
//! commands.handle("sign_up", |c: SignUp, ctx: Context| async move {
//!     let events = ctx.event_bus().unwrap();
//!     events.publish(&UserSignedUp { email: c.email }).await.map_err(tidemill::HandlerError::new)?;
//!     Ok(())
//! })?;
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let events = EventProcessor::new(&router, groups);
//! events.handle("welcome_email", move |e: UserSignedUp| {
//!     let tx = tx.clone();
//!     async move { tx.send(e.email).ok(); HandlerResult::Ok(()) }
//! })?;
//!
//! let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
//! router.running().await;
//! CommandBus::new(pubsub.clone()).send(&SignUp { email: "ada@example.com".into() }).await?;
//! assert_eq!(rx.recv().await.unwrap(), "ada@example.com");
//! router.close().await?;
//! run.await??;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod bus;
pub mod context;
pub mod error;
pub mod handler;
pub mod lazy;
pub mod marshal;
pub mod name;
pub mod processor;
pub mod reply;
pub mod topic;
pub mod version;

pub use bus::{BusConfig, CommandBus, EventBus};
pub use context::Context;
pub use error::{Error, Result};
pub use handler::TypedHandler;
pub use lazy::LazySubscriber;
#[cfg(feature = "protobuf")]
pub use marshal::ProtobufMarshaler;
pub use marshal::{JsonMarshaler, Marshaler};
pub use name::Named;
pub use processor::{CommandProcessor, EventGroupProcessor, EventProcessor, ProcessorConfig};
pub use reply::{RequestReply, RequestReplyConfig};
pub use version::{VersionCheck, VersionConflict, VersionGuard, Versioned};

/// The metadata key of a command's or event's [name](Named).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_cqrs::Result<()> {
/// use futures::StreamExt;
/// use tidemill::Subscriber;
/// use tidemill_cqrs::{EventBus, Named, CONTENT_TYPE_KEY, NAME_KEY};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { id: u64 }
/// impl Named for OrderPlaced {}
///
/// let pubsub = tidemill::InProcessPubSub::new();
/// let mut orders = pubsub.subscribe("events.OrderPlaced").await?;
/// EventBus::new(pubsub.clone()).publish(&OrderPlaced { id: 1 }).await?;
/// let delivery = orders.next().await.unwrap()?;
/// assert_eq!(delivery.message().metadata().get(NAME_KEY), Some("OrderPlaced"));
/// assert_eq!(delivery.message().metadata().get(CONTENT_TYPE_KEY), Some("application/json"));
/// # Ok(()) }
/// ```
pub const NAME_KEY: &str = "name";

/// The metadata key of the payload's media type, as the [`Marshaler`] says.
///
/// ```
/// assert_eq!(tidemill_cqrs::CONTENT_TYPE_KEY, "content_type");
/// ```
pub const CONTENT_TYPE_KEY: &str = "content_type";

/// The metadata keys of trace context a handler's follow-ups carry on, besides the correlation
/// id ([`tidemill::middleware::CORRELATION_ID_KEY`]): W3C Trace Context and Baggage.
///
/// ```
/// assert!(tidemill_cqrs::PROPAGATED_KEYS.contains(&"traceparent"));
/// ```
pub const PROPAGATED_KEYS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// The metadata key of the topic a request's replies go to.
///
/// ```
/// fn is_request(msg: &tidemill::Message) -> bool {
///     msg.metadata().contains_key(tidemill_cqrs::REPLY_TO_KEY)
/// }
/// assert!(!is_request(&tidemill::Message::new("")));
/// ```
pub const REPLY_TO_KEY: &str = "reply_to";

/// The metadata key of a request's id, which its replies carry too.
///
/// ```
/// let msg = tidemill::Message::new("").with_metadata(tidemill_cqrs::REQUEST_ID_KEY, "r-1");
/// assert_eq!(msg.metadata().get("request_id"), Some("r-1"));
/// ```
pub const REQUEST_ID_KEY: &str = "request_id";

/// The metadata key of a reply's status: `ok` or `error` (then the payload is the error as
/// text).
///
/// ```
/// fn failed(reply: &tidemill::Message) -> bool {
///     reply.metadata().get(tidemill_cqrs::REPLY_STATUS_KEY) == Some("error")
/// }
/// # let _ = failed;
/// ```
pub const REPLY_STATUS_KEY: &str = "reply_status";

/// The metadata key saying whether a reply is the last one of its request (`true` or `false`).
///
/// ```
/// fn last(reply: &tidemill::Message) -> bool {
///     reply.metadata().get(tidemill_cqrs::REPLY_FINAL_KEY) == Some("true")
/// }
/// # let _ = last;
/// ```
pub const REPLY_FINAL_KEY: &str = "reply_final";

/// The metadata key saying whether a reply's payload holds a value (`true` or `false`).
///
/// ```
/// fn has_value(reply: &tidemill::Message) -> bool {
///     reply.metadata().get(tidemill_cqrs::REPLY_VALUE_KEY) == Some("true")
/// }
/// # let _ = has_value;
/// ```
pub const REPLY_VALUE_KEY: &str = "reply_value";
