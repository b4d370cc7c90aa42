//! Tidemill: event-driven applications in Rust.
//!
//! One API to publish and consume messages over any broker ([`Publisher`], [`Subscriber`]), a
//! [`Router`] that runs handlers with middleware, and the components the patterns on top are
//! built from. Adapters for real brokers live in their own crates (`tidemill-redis`,
//! `tidemill-nats`, `tidemill-amqp`, `tidemill-sql`, `tidemill-kafka`); this crate holds the
//! contract, the [`InProcessPubSub`] and the router.
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{InProcessPubSub, Message, PublisherExt, Router, Subscriber};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pubsub = InProcessPubSub::new();
//! let router = Router::new();
//! router
//!     .handler("shout")
//!     .subscribe("words", pubsub.clone())
//!     .publish_to("shouts", pubsub.clone())
//!     .handle(|msg| async move {
//!         let text = String::from_utf8_lossy(msg.payload()).to_uppercase();
//!         Ok(Message::new(text))
//!     })?;
//! let mut shouts = pubsub.subscribe("shouts").await?;
//! let running = router.start().await?; // in the background, every handler subscribed
//! pubsub.publish_one("words", Message::new("hello")).await?;
//! let delivery = shouts.next().await.unwrap()?;
//! assert_eq!(delivery.message().payload().as_ref(), b"HELLO");
//! delivery.ack();
//! running.close().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod backoff;
pub mod components;
pub mod delay;
pub mod error;
pub mod in_process;
pub mod limits;
pub mod message;
pub mod middleware;
pub mod options;
pub mod pubsub;
mod redact;
pub mod router;

pub use backoff::Backoff;
pub use error::{validate_topic, BoxError, Error, Result};
pub use in_process::InProcessPubSub;
pub use limits::Limits;
pub use message::{new_uuid, Extensions, Message, Metadata};
pub use options::StartPosition;
pub use pubsub::{
    Acker, Delivery, Publisher, PublisherExt, Settle, Settlement, SubscribeInitializer, Subscriber,
    Subscription,
};
pub use redact::redact_url;
pub use router::{HandlerError, HandlerResult, Router};

// The README's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
