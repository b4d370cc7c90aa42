//! Redis Streams for tidemill: a [`RedisPublisher`] that appends with `XADD` and a
//! [`RedisSubscriber`] that reads with consumer groups (`XREADGROUP`, `XACK`, `XAUTOCLAIM`) or,
//! without a group, with `XREAD`. Also a [`RedisDeduplicationStore`] for the deduplicator
//! middleware.
//!
//! A topic is the stream at key `<key_prefix><topic>`. A message is one entry: the field
//! `message_id`, the field `payload` and one field per metadata entry (see [`codec`]).
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
//!
//! # #[tokio::main] async fn main() -> tidemill::Result<()> {
//! let topic = format!("doc-orders-{}", tidemill::new_uuid());
//! let config = RedisConfig::from_url("redis://127.0.0.1:6379")?.group("billing");
//!
//! let subscriber = RedisSubscriber::connect(config.clone()).await?;
//! let mut orders = subscriber.subscribe(&topic).await?; // creates the group
//!
//! let publisher = RedisPublisher::connect(config).await?;
//! let order = Message::new(r#"{"id":1}"#).with_metadata("kind", "order.created");
//! publisher.publish_one(&topic, order).await?;
//!
//! let delivery = orders.next().await.expect("a delivery")?;
//! assert_eq!(delivery.message().metadata().get("kind"), Some("order.created"));
//! delivery.ack(); // XACK, batched with other acks
//!
//! subscriber.close().await?; // waits until the ack reached the server
//! publisher.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! | question | answer |
//! | --- | --- |
//! | publish returns | once the server answered every `XADD` of the batch (one pipeline, one round trip) |
//! | delivery | at-least-once; a lost answer to `XADD` or `XACK`, or a claim after [`claim_idle`](RedisConfig::claim_idle), can deliver twice. Not exactly-once |
//! | ordering | publish order per subscription while at most one delivery is unsettled ([`max_in_flight`](RedisConfig::max_in_flight) 1, the default): a nacked message comes back before the next one. Members of a group split the stream, so order holds across a group only with one member; messages claimed from a dead consumer arrive after newer ones |
//! | ack | `XACK` only when the delivery is acked, sent by a background task that batches acks per stream; `close` waits for them |
//! | nack | the message stays pending and is delivered again by the same subscription after [`nack_delay`](RedisConfig::nack_delay) (100 ms) or the delay given, before newer messages. A nack delay longer than `claim_idle` lets another consumer claim it first |
//! | dropped or closed subscription | entries fetched but not delivered, and deliveries settled with a nack afterwards, are handed back to the group at once (`XCLAIM ... IDLE`), so another member's next `XAUTOCLAIM` (every [`claim_interval`](RedisConfig::claim_interval), 1 s) takes them |
//! | consumer died | its pending entries are claimed by live members after `claim_idle` (30 s); the consumer is removed from the group after [`consumer_timeout`](RedisConfig::consumer_timeout) (10 min) once nothing is pending |
//! | without a group | every subscription reads every message from its [start](RedisConfig::start_position); its position is in memory, acks do nothing, and what was not handled when it ends is not delivered again |
//! | persistence | entries live in the server's memory; they survive restarts as far as the server's RDB/AOF settings go (`appendfsync always` for every write). With [`max_len`](RedisConfig::max_len), the oldest entries are deleted even if unread |
//! | delays | no delayed delivery: an entry is readable as soon as it is added |
//! | outage | subscriptions reconnect with backoff and declare their group again if it vanished; `publish` retries for [`publish_retry_timeout`](RedisConfig::publish_retry_timeout) (10 s), then fails — never reporting an entry the server did not confirm |
//! | deployment | a single server (or a primary) over TCP, TLS (`rediss://`, feature `tls-rustls`) or a Unix socket. Redis Cluster and Sentinel are **not supported** |
//!
//! # Options and what they become on the server
//!
//! | option | Redis |
//! | --- | --- |
//! | URL, [`username`](RedisConfig::username), [`password`](RedisConfig::password), [`database`](RedisConfig::database) | `AUTH`, `SELECT` on every connection |
//! | [`key_prefix`](RedisConfig::key_prefix) | stream key `<prefix><topic>` |
//! | [`max_len`](RedisConfig::max_len), [`topic_max_len`](RedisConfig::topic_max_len) | `XADD key MAXLEN ~ n` ([`MaxLen::Approximate`]) or `MAXLEN = n` ([`MaxLen::Exact`]) |
//! | [`consumer_group`](RedisConfig::consumer_group) | `XGROUP CREATE key group <start> MKSTREAM` on first subscribe; `XREADGROUP GROUP group consumer` |
//! | [`consumer_name`](RedisConfig::consumer_name) | the consumer in `XREADGROUP`; a restarted consumer of that name first reads its own pending entries (`XREADGROUP ... 0`) |
//! | [`start_position`](RedisConfig::start_position) | for a new group, `0` (`Beginning`, the default with a group) or `$` (`End`) in `XGROUP CREATE`; without a group, the first id of `XREAD`: `0-0`, or the newest entry's id at subscribe time (`End`, the default without a group) |
//! | [`batch_size`](RedisConfig::batch_size) | `COUNT` of `XREADGROUP`/`XREAD`/`XAUTOCLAIM` (128) |
//! | [`block_time`](RedisConfig::block_time) | `BLOCK` of `XREADGROUP`/`XREAD` (1 s) |
//! | [`claim_idle`](RedisConfig::claim_idle), [`claim_interval`](RedisConfig::claim_interval) | `XAUTOCLAIM key group consumer <claim_idle>`, run every `claim_interval` |
//! | [`consumer_timeout`](RedisConfig::consumer_timeout), [`consumer_check_interval`](RedisConfig::consumer_check_interval) | `XINFO CONSUMERS`, then `XGROUP DELCONSUMER` for idle consumers with nothing pending |
//! | [`max_in_flight`](RedisConfig::max_in_flight), [`nack_delay`](RedisConfig::nack_delay) | client side only |
//!
//! Each subscription holds a connection of its own for its blocking reads (woken with
//! `CLIENT UNBLOCK` when it ends); publishing, group management and acks share one
//! multiplexed connection per publisher or subscriber.
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod acker;
pub mod codec;
pub mod config;
mod connection;
pub mod dedup;
pub mod error;
pub mod publisher;
pub mod subscriber;

pub use config::{MaxLen, RedisConfig};
pub use dedup::RedisDeduplicationStore;
pub use error::RedisAdapterError;
pub use publisher::RedisPublisher;
pub use subscriber::RedisSubscriber;
