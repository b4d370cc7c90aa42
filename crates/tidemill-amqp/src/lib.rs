//! RabbitMQ (AMQP 0-9-1) for tidemill, on [`lapin`].
//!
//! [`AmqpPublisher`] and [`AmqpSubscriber`] put tidemill's [`Publisher`](tidemill::Publisher) and
//! [`Subscriber`](tidemill::Subscriber) on a RabbitMQ broker. A [`Topology`] says which
//! exchanges, queues and bindings stand behind topics and consumer groups.
//!
//! # Example
//!
//! The seed's events service publishes to one topic exchange; the booking service reads every
//! event change, the search service only new events:
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber, Topology};
//!
//! # #[tokio::main] async fn main() -> tidemill::Result<()> {
//! let config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")
//!     .topology(Topology::topic_exchange("doc-events").durable(false));
//! let booking = AmqpSubscriber::connect(config.clone().group("booking")).await?;
//! let search = AmqpSubscriber::connect(config.clone().group("search")).await?;
//! let mut all_changes = booking.subscribe("event.#").await?;
//! let mut created = search.subscribe("event.created.*").await?;
//!
//! let events = AmqpPublisher::connect(config).await?;
//! events.publish_one("event.created.europe", Message::new("Metallica, Berlin")).await?;
//! events.publish_one("event.updated.europe", Message::new("sold out")).await?;
//!
//! for expected in ["Metallica, Berlin", "sold out"] {
//!     let delivery = all_changes.next().await.unwrap()?;
//!     assert_eq!(delivery.message().payload().as_ref(), expected.as_bytes());
//!     delivery.ack();
//! }
//! let delivery = created.next().await.unwrap()?;
//! assert_eq!(delivery.message().payload().as_ref(), b"Metallica, Berlin");
//! delivery.ack();
//!
//! events.close().await?;
//! booking.close().await?;
//! search.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! | question | answer |
//! | --- | --- |
//! | delivery | at least once: a delivery is acked to the broker only when it is acked in tidemill; an unacked delivery of a lost connection is redelivered |
//! | exactly once | no: after a crash or a lost connection between processing and the ack reaching the broker, a message comes again (same id, for deduplication) |
//! | ordering | a `publish` call's messages go over one channel, in order; successive calls keep their order with confirms on (each returns once its messages are queued; without confirms, calls may take different channels of the pool). Kept for a single subscriber with prefetch 1 (the default), even across nacks held up to `max_held_nack_delay`; several consumers of one queue, a larger prefetch, delay-queue nacks and `max_deliveries` reorder |
//! | persistence | with a durable topology (the default), exchanges and queues survive a broker restart and messages are persistent; `publish` returns after the broker confirmed them. A group's queue keeps messages while the group has no member; a subscriber without group has an exclusive queue, which exists only while it is connected |
//! | publishing during an outage | `publish` reconnects and sends again what was not confirmed, until `publish_timeout` (30 s); then it fails. Never success without a confirm |
//! | nack | requeued at the head of its queue after `nack_delay` (10 ms) or the delay given; a delay up to `max_held_nack_delay` (1 s) is waited out holding the message; a longer one moves it to a per-delay TTL queue that dead-letters it back (no plugin) |
//! | poison messages | with `max_deliveries(n)`, the n-th nack moves the message to `<queue>.dead` |
//! | reconnect | exponential backoff (100 ms to 5 s); every subscription declares its exchange, queue (exclusive and auto-delete ones too) and binding again and resumes consuming |
//! | close | publisher: waits for publishes under way; subscriber: stops consuming, nacks what was buffered and not yet handed out, waits up to `close_timeout` for the rest to be settled |
//!
//! # How options map onto the broker
//!
//! | tidemill | RabbitMQ |
//! | --- | --- |
//! | topic | an exchange ([`Topology::durable_pubsub`]), a queue ([`Topology::work_queue`]) or a routing key / binding pattern ([`Topology::topic_exchange`]) |
//! | consumer group ([`AmqpConfig::group`]) | a queue shared by the group's subscribers (competing consumers) |
//! | no group | an exclusive, auto-delete queue per subscription |
//! | message id | `message_id` property |
//! | metadata | headers; `correlation_id` and `content_type` in their properties (see [`codec`]) |
//! | [`AmqpConfig::prefetch`] | `basic.qos` prefetch count per subscription channel |
//! | [`AmqpConfig::confirms`] | `confirm.select` on the publisher's channels |
//! | [`AmqpConfig::mandatory`] | the `mandatory` publish flag; a returned message fails the publish |
//! | [`AmqpConfig::channel_pool_size`] | channels of the publisher's connection |
//! | [`Topology::durable`] | durable exchanges and queues, delivery mode 2; non-durable: auto-delete group queues, delivery mode 1 |
//! | [`AmqpConfig::nack_delay`] | `basic.nack` with requeue, or a queue with `x-message-ttl` and `x-dead-letter-exchange` |
//! | [`AmqpConfig::max_deliveries`] | an `x-tidemill-deliveries` header, a dead-letter queue |
//! | `amqps://`, [`AmqpConfig::tls_ca_certificate`], [`AmqpConfig::tls_client_identity`] | TLS (rustls) |
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod codec;
pub mod config;
mod connection;
mod declare;
pub mod error;
pub mod publisher;
pub mod subscriber;
pub mod topology;

pub use config::{AmqpConfig, DEFAULT_URL};
pub use error::AmqpError;
pub use lapin;
pub use publisher::AmqpPublisher;
pub use subscriber::AmqpSubscriber;
pub use topology::Topology;
