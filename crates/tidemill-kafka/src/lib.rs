//! Kafka for tidemill, on [rdkafka](https://docs.rs/rdkafka) (librdkafka).
//!
//! ```no_run
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber, Partitioning};
//!
//! # #[tokio::main] async fn main() -> tidemill::Result<()> {
//! let config = KafkaConfig::new("127.0.0.1:9092")
//!     .partitioning(Partitioning::MetadataKey("query".into()));
//! let publisher = KafkaPublisher::new(config.clone())?;
//! publisher
//!     .publish_one("searches", Message::new("[...]").with_metadata("query", "rust"))
//!     .await?;
//!
//! let subscriber = KafkaSubscriber::new(config.group("search-stats"))?;
//! let mut searches = subscriber.subscribe("searches").await?;
//! let delivery = searches.next().await.unwrap()?;
//! assert_eq!(delivery.message().metadata().get("query"), Some("rust"));
//! delivery.ack();
//! subscriber.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! | | |
//! | --- | --- |
//! | delivery | at least once: offsets are committed only for acked messages, and never past an unacked one |
//! | publish | returns after the broker acknowledged every message (`acks=all`, idempotent producer) |
//! | ordering | per partition; messages with the same key go to the same partition ([`Partitioning`]); a nacked message comes back later, after messages that followed it |
//! | persistence | what the broker keeps; a new group starts at the beginning of the log |
//! | consumer groups | Kafka's own (`group.id`); without a group a subscription reads all partitions from the start, the end or a time |
//! | nack | delivered again by the subscription after the nack delay (default 100 ms) |
//! | delays | not supported by Kafka |
//! | exactly once | not claimed |
//!
//! | option | Kafka / librdkafka |
//! | --- | --- |
//! | brokers | `bootstrap.servers` |
//! | [`KafkaConfig::consumer_group`] | `group.id` |
//! | [`KafkaConfig::delivery_timeout`] | `message.timeout.ms` |
//! | [`KafkaConfig::partitions`], [`KafkaConfig::replication`] | topics created through the admin API |
//! | [`KafkaConfig::set`] | any librdkafka property (TLS: `security.protocol`, `ssl.*`; SASL: `sasl.*`) |
//!
//! Topics are created through the admin API ([`KafkaConfig::create_topics`]) and waited for
//! until they show in the metadata, for brokers that do not create them on first use.
#![deny(missing_docs)]

mod admin;
mod codec;
mod config;
pub mod error;
mod offsets;
mod publisher;
mod subscriber;

pub use codec::ID_HEADER;
pub use config::{validate_topic, KafkaConfig, KeyFn, Partitioning};
pub use error::KafkaAdapterError;
pub use publisher::KafkaPublisher;
pub use subscriber::KafkaSubscriber;
