//! NATS for tidemill: a JetStream [`NatsPublisher`] and [`NatsSubscriber`] (persistent,
//! acknowledged, consumer groups), a core NATS pair ([`CoreNatsPublisher`],
//! [`CoreNatsSubscriber`]: not persistent, queue groups), and a JetStream key-value
//! [`KvDeduplicationStore`], on the `async-nats` client.
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_nats::{NatsConfig, NatsPublisher, NatsSubscriber};
//!
//! # #[tokio::main] async fn main() -> tidemill::Result<()> {
//! let config = NatsConfig::new("nats://127.0.0.1:4222");
//! let topic = format!("doc.orders-{}", tidemill::new_uuid());
//!
//! // A group's durable consumer starts at the beginning of the stream by default.
//! let subscriber = NatsSubscriber::connect(config.clone().group("billing")).await?;
//! let publisher = NatsPublisher::connect(config).await?;
//! publisher
//!     .publish_one(&topic, Message::new("order #1").with_metadata("kind", "created"))
//!     .await?; // returns once the server stored it
//!
//! let mut orders = subscriber.subscribe(&topic).await?;
//! let delivery = orders.next().await.unwrap()?;
//! assert_eq!(delivery.message().payload().as_ref(), b"order #1");
//! assert_eq!(delivery.message().metadata().get("kind"), Some("created"));
//! delivery.ack(); // acknowledged to the server now, not before
//!
//! publisher.close().await?;
//! subscriber.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees (JetStream)
//!
//! | | |
//! | --- | --- |
//! | delivery | at-least-once: a message is acknowledged to the server only when its delivery is acked; a nack, a dropped delivery or an expired ack wait brings it back |
//! | publish | returns `Ok` once the server acknowledged storing every message; retried with the same `Nats-Msg-Id` while the server is away, so within the duplicate window a retry never stores a message twice |
//! | persistence | file-backed streams by default: messages survive subscribers being away and server restarts |
//! | ordering | by default publish order within a topic while nothing is nacked or redelivered (a nack or an ack-wait expiry lets later messages pass); with [`NatsConfig::max_in_flight`]`(1)` strict publish order across nacks, for all members of a group together, at the cost of one round trip per message |
//! | exactly-once | not claimed: the server drops republished duplicates, and with [`NatsConfig::double_ack`] every ack is confirmed by the server (the suite's exactly-once scenario and a clean server restart pass), but server 2.9 loses confirmed acks when it is killed (SIGKILL), so a message may come twice; pair with [`KvDeduplicationStore`] for effectively-once handling |
//! | nack delay | 100 ms by default, or as given per nack (`-NAK {"delay"}`) |
//! | delays | no delayed publishing (JetStream has no scheduled delivery before server 2.12) |
//! | reconnect | the client reconnects with backoff (100 ms to 5 s) forever; subscriptions pull again, re-creating a lost consumer |
//! | close | publishers have nothing pending (publish awaits acks); subscribers return unsettled deliveries (nack) and wait for pending settlements |
//!
//! # How options map onto JetStream
//!
//! | tidemill | NATS |
//! | --- | --- |
//! | topic | subject (validated: no wildcards, no empty tokens, no whitespace, not `$…`/`_INBOX.…`) |
//! | stream | the stream whose subjects cover the topic; else one created per topic, named after it ([`NatsConfig::stream_prefix`] + the topic with `.` and other symbols escaped), with [`NatsConfig::retention`], [`NatsConfig::storage`], [`NatsConfig::max_age`], [`NatsConfig::duplicate_window`]; [`StreamProvisioning::ExistingBySubject`] never creates |
//! | message id | `Nats-Msg-Id` header (server-side deduplication) |
//! | metadata | NATS headers, one per entry (keys starting with `Nats-` are refused) |
//! | group | durable pull consumer named after the group, filter subject = topic; members pull from it and share the messages |
//! | no group | ephemeral pull consumer per subscription (fan-out), removed on close or after [`NatsConfig::inactive_threshold`] |
//! | [`NatsConfig::start_position`] | `deliver_policy` `all` (Beginning) / `new` (End) / `by_start_time` (Time) / `by_start_sequence` (Offset) |
//! | ack / nack | `+ACK` / `-NAK {"delay": …}`; with [`NatsConfig::double_ack`] each is confirmed by the server and resent until it is |
//! | long handlers | `+WPI` (in progress) every third of [`NatsConfig::ack_wait`] while a delivery is unsettled |
//! | [`NatsConfig::max_deliveries`] | with [`NatsConfig::dead_letter_subject`]: after the last delivery is nacked (or its ack wait runs out) the message is published to that subject with headers `Tidemill-Dead-Letter-Reason`, `-Topic`, `-Sequence`, then terminated (`+TERM`); without: the consumer's `max_deliver` |
//! | [`NatsConfig::max_in_flight`] / [`NatsConfig::batch_size`] | consumer `max_ack_pending` / messages per pull request |
//!
//! # Server version
//!
//! Works with nats-server 2.9 (tested with 2.9.10) and later. Two things differ on 2.9: the
//! client's `create_key_value` fails there, so [`KvDeduplicationStore`] creates its bucket's
//! stream itself; and 2.9 drops a consumer's `filter_subjects` (plural) and lets a create change
//! an existing durable, so the subscriber uses one `filter_subject` and checks an existing
//! durable's filter itself ([`NatsError::ConsumerMismatch`]).
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod config;
pub mod connection;
pub mod core_nats;
pub mod dedup;
pub mod error;
pub mod publisher;
pub mod subscriber;
pub mod topology;

pub use config::{NatsConfig, Retention, Storage, StreamProvisioning};
pub use connection::connect;
pub use core_nats::{CoreNatsPublisher, CoreNatsSubscriber};
pub use dedup::KvDeduplicationStore;
pub use error::NatsError;
pub use publisher::NatsPublisher;
pub use subscriber::NatsSubscriber;
pub use topology::validate_subject;
