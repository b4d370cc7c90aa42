//! One URL picks the broker: [`connect`] turns a URL into a publisher and subscribers of any
//! tidemill adapter, as sqlx's `AnyPool::connect` does for databases.
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{Message, PublisherExt};
//! use tidemill_any::SubscriberOptions;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidemill_any::AnyError> {
//! let url = std::env::var("TIDEMILL_URL").unwrap_or_else(|_| "memory://".into());
//! let pubsub = tidemill_any::connect(&url).await?;
//! let subscriber = pubsub.subscriber(SubscriberOptions::group("billing")).await?;
//! let mut orders = subscriber.subscribe("orders").await?;
//! pubsub.publisher().publish_one("orders", Message::new("order #1")).await?;
//! let delivery = orders.next().await.unwrap()?;
//! assert_eq!(delivery.message().payload().as_ref(), b"order #1");
//! delivery.ack();
//! subscriber.close().await?;
//! pubsub.close().await?;
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! | URL | backend | cargo feature |
//! | --- | --- | --- |
//! | `memory://` | the core's in-process pub/sub (one per `connect`) | `memory` |
//! | `sqlite://path`, `sqlite::memory:` | tidemill-sql on SQLite | `sqlite` |
//! | `postgres://user@host/db` | tidemill-sql on PostgreSQL | `postgres` |
//! | `mysql://user@host/db`, `mariadb://...` | tidemill-sql on MariaDB/MySQL | `mysql` |
//! | `redis://host:port[/db]` | tidemill-redis (Redis Streams) | `redis` |
//! | `nats://host:port[,host:port]` | tidemill-nats (JetStream) | `nats` |
//! | `amqp://user:password@host:port/vhost` | tidemill-amqp (RabbitMQ) | `amqp` |
//! | `kafka://host:port,host:port` | tidemill-kafka | `kafka` |
//!
//! All features are on by default. A scheme not in the table, or one whose feature is off, is
//! [`AnyError::UnknownScheme`] or [`AnyError::FeatureDisabled`], listing the URLs that work.
//!
//! # Options (query parameters)
//!
//! The same names on every backend that has the setting; a parameter a backend does not know
//! is [`AnyError::UnknownOption`] (listing the known ones), and one it cannot honour is
//! [`AnyError::UnsupportedOption`] or [`AnyError::UnsupportedStart`] — never ignored.
//!
//! | option | meaning | backends |
//! | --- | --- | --- |
//! | `group` | default consumer group of subscribers | all |
//! | `from` | where a new subscription or group starts: `beginning`, `end`, an RFC 3339 time, an offset | each as far as its broker can (see below) |
//! | `connect_timeout` | how long [`connect`] waits (default 10 s) | all |
//! | `max_in_flight` | unsettled deliveries per subscription | memory, sql, redis, nats (`max_ack_pending`), amqp (`prefetch`) |
//! | `nack_delay` | how long a nacked message waits (`100ms`) | all |
//! | `close_timeout` | how long closing waits for settlements | redis, nats, amqp |
//! | `mode` | `log`/`queue` (sql); `pubsub`/`work_queue`/`topic` (amqp) | sql, amqp |
//! | `persistent`, `buffer` | keep the history / buffer size | memory |
//! | `table_prefix`, `batch_size`, `max_connections` | tables, read batch, pool | sql |
//! | `key_prefix`, `consumer`, `claim_idle`, `batch_size` | stream keys, consumer name, claim | redis |
//! | `stream_prefix`, `storage`, `ack_wait`, `batch_size` | stream names, `file`/`memory` | nats |
//! | `exchange`, `durable` | topic exchange name, durability | amqp |
//! | `partitions`, `delivery_timeout` | created topics' partitions, publish timeout | kafka |
//! | `rdkafka.<property>` | any librdkafka property (`rdkafka.acks=all`, `rdkafka.retries=5`) | kafka |
//!
//! Start positions: memory `end` (`beginning` with `persistent=true`); sql all four in log
//! mode (`beginning` in queue mode); redis `beginning`, `end`; nats
//! `beginning`, `end`, a time; kafka `beginning` for a group, `beginning`, `end`, a time
//! without; amqp none.
//!
//! Passwords never show: every URL in errors, `Debug` and `Display` goes through [`redact`].
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod backend;
pub mod error;
mod options;
mod pubsub;
mod redact;

pub use backend::BackendKind;
pub use error::AnyError;
pub use options::{StartPosition, SubscriberOptions};
pub use pubsub::{connect, parse, AnyConfig, AnyPubSub};
pub use redact::redact;

/// The metadata entry holding a message's partition key (the CLI's `--key`): Kafka partitions
/// by it; other brokers carry it as metadata.
pub const KEY_METADATA: &str = "tidemill_key";
