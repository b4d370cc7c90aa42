//! The statement text the three databases share. Each backend module describes only what
//! differs ([`Dialect`]: placeholders, the columns and order of a read, the no-skip condition,
//! locking clauses, the insert-if-absent syntax) and binds the parameters, in the order they
//! appear in the text.

use std::fmt::Write;

use crate::backend::Backend;
use crate::schema::Tables;

/// What a database spells its own way in the shared statements.
pub(crate) trait Dialect {
    /// The database.
    const BACKEND: Backend;
    /// The columns a read returns, in the order of the backend's row tuple.
    const READ_COLUMNS: &'static str;
    /// The condition "past the reader's cursor" (binds the cursor's parts).
    const AFTER_CURSOR: &'static str;
    /// What a read adds so that no row can appear later behind the cursor ("" where the
    /// writers' locking already guarantees it).
    const NO_SKIP: &'static str;
    /// The order rows are read in.
    const READ_ORDER: &'static str;
    /// Appended to the queue claim's `SELECT` so that concurrent members skip each other's rows.
    const LOCK_CLAIMED: &'static str;
    /// An `INSERT` that does nothing when the key exists: the text before `INTO` and after the
    /// `VALUES`.
    const INSERT_IF_ABSENT: (&'static str, &'static str);

    /// `expr` as a signed 64-bit integer, where the database would type it otherwise.
    #[cfg_attr(not(any(feature = "mysql", feature = "sqlite")), allow(dead_code))]
    fn signed(expr: &str) -> String {
        expr.to_owned()
    }
}

/// `sql` with its `?` placeholders as the database writes them: `$1, $2, ...` on PostgreSQL
/// (the names this adapter puts in SQL text never contain `?`).
fn placeholders<D: Dialect>(sql: String) -> String {
    if D::BACKEND != Backend::Postgres {
        return sql;
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            let _ = write!(out, "${n}");
        } else {
            out.push(c);
        }
    }
    out
}

fn messages<D: Dialect>(tables: &Tables) -> String {
    tables.q(D::BACKEND, &tables.messages_table())
}

fn offsets<D: Dialect>(tables: &Tables) -> String {
    tables.q(D::BACKEND, &tables.offsets_table())
}

/// The columns every insert of messages fills (MariaDB/MySQL adds `position`).
pub(crate) const INSERT_COLUMNS: &str =
    "topic, message_id, payload, metadata, created_at, deliver_at";

/// Rows of a topic past a cursor, in read order. Binds: topic, the cursor, limit.
pub(crate) fn fetch<D: Dialect>(tables: &Tables) -> String {
    let m = messages::<D>(tables);
    placeholders::<D>(format!(
        "SELECT {} FROM {m} WHERE topic = ? AND {}{} ORDER BY {} LIMIT ?",
        D::READ_COLUMNS,
        D::AFTER_CURSOR,
        D::NO_SKIP,
        D::READ_ORDER
    ))
}

/// The highest position of a topic, 0 if it has none. Binds: topic.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) fn last_position<D: Dialect>(tables: &Tables) -> String {
    let m = messages::<D>(tables);
    placeholders::<D>(format!(
        "SELECT {} FROM {m} WHERE topic = ?",
        D::signed("COALESCE(MAX(position), 0)")
    ))
}

/// Where a reader starting at a time begins where positions are in read order: before the
/// first row published at or after the time, else after the last row. Binds: the time (ms),
/// topic.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) fn position_before_time<D: Dialect>(tables: &Tables) -> String {
    let m = messages::<D>(tables);
    placeholders::<D>(format!(
        "SELECT {} FROM {m} WHERE topic = ?",
        D::signed(
            "COALESCE(MIN(CASE WHEN created_at >= ? THEN position END) - 1, MAX(position), 0)"
        )
    ))
}

/// Writes a group's offset and renews (or, with the flag, gives up) its lease, if the member
/// still holds it. Binds: tx_id, position, lease_until, release, group, topic, owner.
pub(crate) fn commit<D: Dialect>(tables: &Tables) -> String {
    let o = offsets::<D>(tables);
    placeholders::<D>(format!(
        "UPDATE {o} SET tx_id = ?, position = ?, lease_until = ?, \
         owner = CASE WHEN ? THEN NULL ELSE owner END \
         WHERE consumer_group = ? AND topic = ? AND owner = ?"
    ))
}

/// Takes a group's lease, creating the group's row at the beginning if it has none, in one
/// upsert (PostgreSQL, SQLite). Binds: group, topic, owner, lease_until, now.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn claim_upsert<D: Dialect>(tables: &Tables) -> String {
    let o = offsets::<D>(tables);
    placeholders::<D>(format!(
        "INSERT INTO {o} AS o (consumer_group, topic, owner, lease_until) VALUES (?, ?, ?, ?) \
         ON CONFLICT (consumer_group, topic) DO UPDATE \
         SET owner = excluded.owner, lease_until = excluded.lease_until \
         WHERE o.owner IS NULL OR o.owner = excluded.owner OR o.lease_until < ? \
         RETURNING tx_id, position"
    ))
}

/// Creates a group's row at a cursor unless the group already has one. Binds: group, topic,
/// tx_id, position.
pub(crate) fn offset_if_absent<D: Dialect>(tables: &Tables) -> String {
    let o = offsets::<D>(tables);
    let (before, after) = D::INSERT_IF_ABSENT;
    placeholders::<D>(format!(
        "{before} INTO {o} (consumer_group, topic, tx_id, position) VALUES (?, ?, ?, ?){after}"
    ))
}

/// The rows a queue member may claim, oldest first, locked against other members. Binds:
/// topic, now, now, limit.
fn queue_candidates<D: Dialect>(m: &str, columns: &str) -> String {
    format!(
        "SELECT {columns} FROM {m} WHERE topic = ? AND deliver_at <= ? \
         AND (locked_until IS NULL OR locked_until < ?) ORDER BY position LIMIT ?{}",
        D::LOCK_CLAIMED
    )
}

/// The queue candidates' columns, to read and lock them (MariaDB/MySQL, which then marks them
/// claimed). Binds: topic, now, now, limit.
#[cfg(feature = "mysql")]
pub(crate) fn queue_select<D: Dialect>(tables: &Tables) -> String {
    placeholders::<D>(queue_candidates::<D>(
        &messages::<D>(tables),
        D::READ_COLUMNS,
    ))
}

/// Claims the queue candidates and returns them, in one statement (PostgreSQL, SQLite). Binds:
/// lease_until, topic, now, now, limit.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn queue_claim<D: Dialect>(tables: &Tables) -> String {
    let m = messages::<D>(tables);
    placeholders::<D>(format!(
        "UPDATE {m} SET locked_until = ? WHERE position IN ({}) RETURNING {}",
        queue_candidates::<D>(&m, "position"),
        D::READ_COLUMNS
    ))
}

/// Deleting acked queue rows: the backend appends which ones.
pub(crate) fn queue_delete_prefix<D: Dialect>(tables: &Tables) -> String {
    format!("DELETE FROM {} WHERE ", messages::<D>(tables))
}

/// Handing nacked queue rows back, from a new delivery time if one is bound (else the row's):
/// the backend binds it and appends which rows.
pub(crate) fn queue_release_prefix<D: Dialect>(tables: &Tables) -> String {
    format!(
        "UPDATE {} SET locked_until = NULL, deliver_at = COALESCE(",
        messages::<D>(tables)
    )
}

/// What follows the bound delivery time in [`queue_release_prefix`].
pub(crate) const QUEUE_RELEASE_WHERE: &str = ", deliver_at) WHERE ";

/// The calls every backend makes the same way, but for its pool type: written once here and
/// stamped into each backend's module (sqlx's executors are per database, and its generic
/// bounds would say more than these bodies). `$dialect` spells the statements.
macro_rules! same_on_every_backend {
    ($pool:ty, $dialect:ty) => {
        /// Moves `group`'s offset to `cursor` and renews (or, with `release`, ends) `owner`'s
        /// lease; false if the lease is no longer `owner`'s.
        #[allow(clippy::too_many_arguments)]
        pub(crate) async fn commit(
            pool: &$pool,
            tables: &Tables,
            group: &str,
            topic: &str,
            owner: &str,
            cursor: Cursor,
            until: i64,
            release: bool,
        ) -> sqlx::Result<bool> {
            let done = sqlx::query(&stmt::commit::<$dialect>(tables))
                .bind(cursor.tx)
                .bind(cursor.pos)
                .bind(until)
                .bind(release)
                .bind(group)
                .bind(topic)
                .bind(owner)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Creates `group`'s offset row at `cursor` unless it exists; whether it was created.
        pub(crate) async fn offset_if_absent(
            pool: &$pool,
            tables: &Tables,
            group: &str,
            topic: &str,
            cursor: Cursor,
        ) -> sqlx::Result<bool> {
            let done = sqlx::query(&stmt::offset_if_absent::<$dialect>(tables))
                .bind(group)
                .bind(topic)
                .bind(cursor.tx)
                .bind(cursor.pos)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}

/// The lease claim as one upsert (the backends that have `RETURNING`).
#[allow(unused_macros)] // built with only the MariaDB backend, nothing uses it
macro_rules! claim_by_upsert {
    ($pool:ty, $dialect:ty) => {
        /// Takes (or renews) `owner`'s lease on `group`'s offset, creating it at the beginning
        /// for a new group; the offset, or `None` while another member holds the lease.
        pub(crate) async fn claim(
            pool: &$pool,
            tables: &Tables,
            group: &str,
            topic: &str,
            owner: &str,
            now: i64,
            until: i64,
        ) -> sqlx::Result<Option<Cursor>> {
            let row: Option<(i64, i64)> = sqlx::query_as(&stmt::claim_upsert::<$dialect>(tables))
                .bind(group)
                .bind(topic)
                .bind(owner)
                .bind(until)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(tx, pos)| Cursor { tx, pos }))
        }
    };
}

/// The start at a time, where rows are read in position order.
#[allow(unused_macros)] // built with only the PostgreSQL backend, nothing uses it
macro_rules! before_time_by_position {
    ($pool:ty, $dialect:ty) => {
        /// Just before the first row published at or after `ms`, else after the last row.
        pub(crate) async fn before_time(
            pool: &$pool,
            tables: &Tables,
            topic: &str,
            ms: i64,
        ) -> sqlx::Result<Cursor> {
            let (pos,): (i64,) = sqlx::query_as(&stmt::position_before_time::<$dialect>(tables))
                .bind(ms)
                .bind(topic)
                .fetch_one(pool)
                .await?;
            Ok(Cursor { tx: 0, pos })
        }
    };
}
