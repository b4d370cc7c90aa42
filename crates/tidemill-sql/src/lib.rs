//! PostgreSQL, MariaDB/MySQL and SQLite as a tidemill pub/sub, the transactional outbox, and a
//! deduplication store for the inbox pattern.
//!
//! - [`SqlPubSub`] hands out a [`SqlPublisher`] (inserts rows) and [`SqlSubscriber`]s (read them
//!   per consumer group, or claim them as a queue).
//! - [`Outbox::publish_in_tx`] publishes inside the caller's `sqlx` transaction: the messages
//!   exist if and only if the transaction commits. A subscriber of the same tables, wired to
//!   another broker's publisher by the core's forwarder, moves them on.
//! - [`SqlDedupStore::check_and_set_in_tx`] marks a message seen inside the handler's
//!   transaction.
//!
//! SQLite is the embedded default: a file path, no server (WAL mode, busy timeout, several
//! tasks of one process).
//!
//! # Example
//!
//! ```
//! use futures::StreamExt;
//! use tidemill::{Message, Publisher, PublisherExt, Subscriber};
//! use tidemill_sql::{SqlConfig, SqlPubSub};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}", dir.path().join("events.db").display());
//! let pubsub = SqlPubSub::connect(SqlConfig::from_url(url)?.group("billing")).await?;
//!
//! let publisher = pubsub.publisher();
//! publisher
//!     .publish_one("orders", Message::new("order #1").with_metadata("kind", "placed"))
//!     .await?;
//!
//! // A new group starts at the beginning of the topic.
//! let billing = pubsub.subscriber()?;
//! let mut orders = billing.subscribe("orders").await?;
//! let delivery = orders.next().await.unwrap()?;
//! assert_eq!(delivery.message().metadata().get("kind"), Some("placed"));
//! delivery.ack();
//! billing.close().await?; // writes the group's offset
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! | | PostgreSQL | MariaDB / MySQL | SQLite |
//! | --- | --- | --- | --- |
//! | `publish` returns | after the insert committed | after the transaction committed | after the insert committed |
//! | persistence | the database's | the database's | the file's (WAL, `synchronous = NORMAL`) |
//! | order (log mode) | per topic, in commit order of transactions (`(tx_id, position)`) | per topic, in position order = commit order | per topic, in position order = commit order |
//! | no skipped rows | readers stop below the snapshot's `xmin` | publishers lock the topic's sequence row until commit | one writer at a time |
//! | consumer groups | offsets per group and topic; one member reads at a time (lease) | same | same |
//! | start without a group ([`SqlConfig::start_position`]) | `End` by default; `Beginning` (the rows still in the table), `Offset(n)` (from row position `n`, in commit order), `Time(t)` (from the first row whose `created_at` is at or after `t`) | same; `Offset(n)` is the position itself | same as MariaDB/MySQL |
//! | start of a new group | `Beginning` by default, or the start position; an existing group resumes from its offset whatever the start position says | same | same |
//! | queue mode | parallel members, `FOR UPDATE SKIP LOCKED`, ack deletes; no groups (a group, or a start position other than `Beginning`, is refused) | same | single writer claims, ack deletes; same refusals |
//! | delivery | at least once; exactly once per group while members settle before they stop (acks are written before `close` returns) | same | same |
//! | exactly once with side effects | the handler's writes and [`SqlDedupStore`] in one transaction | same | same |
//! | delays | the core's delay metadata ([`delay`]): not before; in log mode a delayed message holds back later ones | same | same |
//! | wake-up | `LISTEN`/`NOTIFY`, polling with backoff as fallback | same process at once, else polling with backoff | same process at once, else polling |
//! | nack | comes back after the nack delay (default 100 ms, or the delay given) | same | same |
//!
//! Costs to know: on PostgreSQL a long-running transaction anywhere in the cluster holds back
//! `xmin`, so delivery waits for it to end (that is what makes skipping impossible). On
//! MariaDB/MySQL transactions publishing to the same topic serialize from their publish to
//! their commit.
//!
//! # Tables
//!
//! One messages table holds every topic (a `topic` column): its schema never changes with the
//! topics, and a topic name is always a bound parameter, never SQL text. Topic names are still
//! validated ([`validate_topic`]): `x"; DROP TABLE y; --` is rejected before anything is sent.
//! The table prefix (default `tidemill_`) is validated and quoted.
//!
//! | table | holds |
//! | --- | --- |
//! | `<prefix>messages` | `position`, `topic`, `tx_id` (PostgreSQL), `message_id`, `payload`, `metadata` (JSON object of strings), `created_at`, `deliver_at` (Unix ms), `locked_until` (queue claims) |
//! | `<prefix>offsets` | per `(consumer_group, topic)`: the acked cursor `(tx_id, position)`, the lease `owner` and `lease_until` |
//! | `<prefix>sequences` | MariaDB/MySQL: the last position per topic |
//! | `<prefix>dedup` | `dedup_key`, `created_at` |
//!
//! The exact statements per database are [`schema_sql`]'s output; with
//! [`SqlConfig::initialize_schema`]`(false)` the adapter runs none of them. For PostgreSQL:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "tidemill_messages" (
//!   position BIGSERIAL PRIMARY KEY,
//!   topic TEXT NOT NULL,
//!   tx_id BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
//!   message_id TEXT NOT NULL,
//!   payload BYTEA NOT NULL,
//!   metadata JSONB NOT NULL,
//!   created_at BIGINT NOT NULL,
//!   deliver_at BIGINT NOT NULL,
//!   locked_until BIGINT
//! );
//! CREATE INDEX IF NOT EXISTS "tidemill_messages_log" ON "tidemill_messages" (topic, tx_id, position);
//! CREATE INDEX IF NOT EXISTS "tidemill_messages_queue" ON "tidemill_messages" (topic, position);
//! CREATE TABLE IF NOT EXISTS "tidemill_offsets" (
//!   consumer_group TEXT NOT NULL,
//!   topic TEXT NOT NULL,
//!   tx_id BIGINT NOT NULL DEFAULT 0,
//!   position BIGINT NOT NULL DEFAULT 0,
//!   owner TEXT,
//!   lease_until BIGINT NOT NULL DEFAULT 0,
//!   PRIMARY KEY (consumer_group, topic)
//! );
//! CREATE TABLE IF NOT EXISTS "tidemill_dedup" (
//!   dedup_key TEXT PRIMARY KEY,
//!   created_at BIGINT NOT NULL
//! );
//! ```
//!
//! # Options
//!
//! See [`SqlConfig`]: [`SqlConfig::new`]`(url)` or [`SqlConfig::from_url`] (`postgres://`,
//! `mysql://`/`mariadb://`, `sqlite://path` or `sqlite::memory:`; TLS through the URL's
//! `sslmode`/`ssl-mode` with the `tls-rustls` feature; the query options `group`,
//! `start_position`, `max_in_flight`, `nack_delay`, `close_timeout`), table prefix,
//! [`ConsumeMode`], group, start position, batch size, in-flight window, nack delay, polling,
//! lease, pool size. Cargo features `postgres`, `mysql`, `sqlite` (all on by default) pick the
//! databases compiled in.
//!
//! Subscribers: [`SqlPubSub::subscriber`] takes the group and start position from the
//! configuration; [`SqlPubSub::subscriber_with`] replaces them (and the in-flight window or the
//! nack delay) with [`SubscriberOverrides`], for subscribers of several groups on one pool. A
//! setting that cannot take effect is refused with [`tidemill::Error::Config`] when the
//! subscriber is made.
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

#[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
compile_error!("enable at least one of the cargo features `postgres`, `mysql`, `sqlite`");

mod backend;
pub mod config;
pub mod dedup;
pub mod delay;
pub mod error;
pub mod outbox;
pub mod pool;
pub mod publisher;
mod row;
pub mod schema;
#[macro_use]
mod statements;
pub mod subscriber;

#[cfg(feature = "mysql")]
mod mysql;
mod notify;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use config::{redact_url, Backend, ConsumeMode, SqlConfig};
pub use dedup::SqlDedupStore;
pub use error::SqlError;
pub use outbox::Outbox;
pub use pool::{SqlConn, SqlPool};
pub use publisher::{SqlPubSub, SqlPublisher};
pub use row::DECODE_ERROR_KEY;
pub use schema::{schema_sql, validate_topic, Tables};
pub use subscriber::{SqlSubscriber, SubscriberOverrides};
