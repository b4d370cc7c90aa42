//! Event sourcing on tidemill: an event store on PostgreSQL, MariaDB/MySQL, SQLite or memory,
//! aggregates with snapshots and upcasting, projections with transactional checkpoints, and
//! publishing of appended events to the bus through the SQL outbox.
//!
//! - [`EventStore`]: `append(stream, expected, events)` with optimistic concurrency
//!   ([`ExpectedVersion`], [`Error::Conflict`]) and idempotency by event id; reads of a stream
//!   (forward, backward, as of a time or version) and of the global log (all streams or a
//!   category) that never skip a late-committing event; soft delete, truncate, tombstone.
//!   Backends: [`MemoryEventStore`], [`SqlEventStore`] (features `postgres`, `mysql`,
//!   `sqlite`).
//! - [`Aggregate`] and [`Repository`]: load (snapshot plus tail), handle a command, append
//!   with the loaded version, retry on conflict; [`SnapshotPolicy`]; [`Upcasters`].
//! - [`Projection`], [`run_projection`], [`ProjectionGroup`]: catch-up then live tail over the
//!   global log; on SQL the read model's writes and the checkpoint share one transaction.
//!   [`RoutedProjections`] runs them under a [`tidemill::Router`]: started with it, stopped
//!   (and waited for) by `router.close()`.
//! - [`SqlEventStore::publish_to`]: appended events also go to a [`tidemill_sql::Outbox`] in
//!   the append's transaction, named for the CQRS event processors (`name` = event type).
//! - `conformance` (feature `conformance`): the suite every backend passes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tidemill_eventsourcing::{
//!     EventStore, ExpectedVersion, LogPosition, NewEvent, ReadStream, SqlEventStore, StoreConfig,
//!     StreamFilter,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
//! let store = SqlEventStore::connect("sqlite::memory:", StoreConfig::new()).await?;
//! let placed = NewEvent::new("Placed", r#"{"seats":2}"#);
//! let id = placed.id;
//! store.append("booking-1", ExpectedVersion::NoStream, vec![placed.clone()]).await?;
//!
//! // A retry after a lost answer: same ids, same expectation, nothing written twice.
//! let again = store.append("booking-1", ExpectedVersion::NoStream, vec![placed]).await?;
//! assert!(!again.written);
//!
//! // A stale writer gets a typed conflict.
//! let err = store.append("booking-1", ExpectedVersion::NoStream, vec![NewEvent::new("Placed", "{}")]).await;
//! assert!(err.unwrap_err().is_conflict());
//!
//! store.append("booking-1", ExpectedVersion::Exact(1), vec![NewEvent::new("Paid", "{}")]).await?;
//! let last = store.read_stream("booking-1", ReadStream::backward().max_count(1)).await?;
//! assert_eq!(last[0].event_type, "Paid");
//!
//! let log = store.read_all(LogPosition::START, &StreamFilter::parse("booking-*")?, 100).await?;
//! assert_eq!(log.len(), 2);
//! assert_eq!(log[0].id, id);
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! | | PostgreSQL | MariaDB / MySQL | SQLite | memory |
//! | --- | --- | --- | --- | --- |
//! | append | one transaction: all events or none; with `NoStream`/`Exact` and no outbox, one autocommit statement (guarded stream-row upsert and the insert in a CTE) | one transaction | one transaction; with `NoStream`/`Exact` and no outbox, one autocommit statement (the insert, guarded by the stream row's version; a trigger moves the row) | one lock |
//! | concurrency | the stream's row is locked (upsert) until commit; a wrong expectation is `Conflict`, nothing written | same | one writer at a time | same |
//! | idempotency | the same ids at the same place in the stream: success, `written: false`; ids used elsewhere: `DuplicateEventId` | same | same | same |
//! | global order | `(tx_id, position)`: the appending transaction's id, then the position | position (a sequence row locked until commit) | position (one writer) | position |
//! | no skipped events | readers stop below the snapshot's `xmin`, so no transaction can commit behind them | positions are allocated under a lock held until commit | one writer, positions in commit order | one lock |
//! | cost of that | a long transaction anywhere in the cluster delays the global log (not stream reads) | appends serialize from their position allocation to their commit | one writer | — |
//! | projection checkpoint | in the read model's transaction: each event applied once | same | same | after each batch: at least once |
//! | outbox publishing | in the append's transaction | same | same | — |
//! | soft delete | stream reads empty; events stay in the global log; the next append continues the versions | same | same | same |
//! | truncate / tombstone | rows deleted (stream and global log); a tombstoned name is refused for ever | same | same | same |
//!
//! Limits checked before writing: stream names ([`validate_stream`]), event size
//! ([`StoreConfig::max_event_bytes`], default 1 MiB), the table prefix (validated and quoted).
//! Stored events of an unknown type or with an undecodable payload are typed errors
//! ([`Error::UnknownEventType`], [`Error::Decode`]) naming stream, version and type; a
//! projection stops on them, dead-letters them, or fails its group ([`OnError`]).
//!
//! # Tables
//!
//! `<prefix>events`, `<prefix>streams`, `<prefix>snapshots`, `<prefix>checkpoints`,
//! `<prefix>dead_letters` (and `<prefix>sequence` on MariaDB/MySQL; on SQLite the trigger
//! `<prefix>events_stream_version`, which keeps each stream's row at its last event's
//! version); the statements are [`schema_sql`]'s output.
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod aggregate;
mod error;
mod event;
mod memory;
mod names;
mod projection;
mod repository;
mod routed;
mod snapshot;
#[cfg(feature = "sql")]
mod sql;
mod store;
mod upcast;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use aggregate::{decode_event, encode_event, Aggregate};
pub use error::{Error, Result};
pub use event::{
    AppendResult, Direction, EventMetadata, ExpectedVersion, LogPosition, NewEvent, ReadStream,
    RecordedEvent, StreamInfo,
};
pub use memory::MemoryEventStore;
pub use names::{validate_stream, StreamFilter, MAX_STREAM_LEN};
pub use projection::{
    run_projection, BatchOutcome, Ended, OnError, Projection, ProjectionGroup, ProjectionOptions,
    ProjectionTx,
};
pub use repository::{ExecuteError, Loaded, Repository};
pub use routed::RoutedProjections;
pub use snapshot::{SnapshotPolicy, SnapshotRecord};
#[cfg(feature = "sql")]
pub use sql::{keys, schema::schema_sql, SqlEventStore};
pub use store::{Clock, EventStore, StoreConfig, DEFAULT_MAX_EVENT_BYTES};
pub use upcast::Upcasters;
