//! PostgreSQL statements.
//!
//! Readers order rows by `(tx_id, position)` and only read rows whose transaction id is below
//! the snapshot's `xmin`: every transaction below it has finished, so no row can appear later
//! behind the reader's cursor, however out of order concurrent transactions commit.

use std::collections::HashSet;

use sqlx::postgres::{PgConnection, PgPool};

use crate::config::Backend;
use crate::row::{decode, Cursor, NewRow, StoredRow};
use crate::schema::Tables;
use crate::statements::{self as stmt, Dialect};

/// PostgreSQL's spelling of the shared statements.
pub(crate) struct Pg;

impl Dialect for Pg {
    const BACKEND: Backend = Backend::Postgres;
    const READ_COLUMNS: &'static str =
        "tx_id, position, message_id, payload, metadata::text, deliver_at";
    const AFTER_CURSOR: &'static str = "(tx_id, position) > (?, ?)";
    // Every transaction below the snapshot's xmin has ended: no row can still appear there.
    const NO_SKIP: &'static str =
        " AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";
    const READ_ORDER: &'static str = "tx_id, position";
    const LOCK_CLAIMED: &'static str = " FOR UPDATE SKIP LOCKED";
    const INSERT_IF_ABSENT: (&'static str, &'static str) = ("INSERT", " ON CONFLICT DO NOTHING");
}

type RawRow = (i64, i64, String, Vec<u8>, String, i64);

fn t(tables: &Tables, name: String) -> String {
    tables.q(Backend::Postgres, &name)
}

fn rows(topic: &str, raw: Vec<RawRow>) -> Vec<StoredRow> {
    raw.into_iter()
        .map(|(tx, pos, id, payload, md, at)| {
            decode(topic, Cursor { tx, pos }, id, payload, &md, at)
        })
        .collect()
}

/// Inserts `batch`; with `notify`, the same statement queues the wake-up, which PostgreSQL
/// delivers at commit (for inserts inside the caller's transaction).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    tables: &Tables,
    topic: &str,
    batch: &[NewRow],
    now: i64,
    notify: bool,
) -> sqlx::Result<()> {
    let m = t(tables, tables.messages_table());
    let insert = format!(
        "INSERT INTO {m} ({}) \
         SELECT $1, u.id, u.payload, u.metadata::jsonb, $5, u.deliver_at \
         FROM UNNEST($2::text[], $3::bytea[], $4::text[], $6::int8[]) WITH ORDINALITY \
         AS u(id, payload, metadata, deliver_at, ord) ORDER BY u.ord",
        stmt::INSERT_COLUMNS
    );
    let sql = if notify {
        format!("WITH ins AS ({insert} RETURNING 1) SELECT pg_notify($7, $1)")
    } else {
        insert
    };
    let ids: Vec<&str> = batch.iter().map(|r| &*r.id).collect();
    let payloads: Vec<&[u8]> = batch.iter().map(|r| r.payload.as_ref()).collect();
    let metadata: Vec<&str> = batch.iter().map(|r| r.metadata.as_str()).collect();
    let deliver_at: Vec<i64> = batch.iter().map(|r| r.deliver_at).collect();
    let mut q = sqlx::query(&sql)
        .bind(topic)
        .bind(&ids)
        .bind(&payloads)
        .bind(&metadata)
        .bind(now)
        .bind(&deliver_at);
    if notify {
        q = q.bind(tables.notify_channel());
    }
    q.execute(conn).await?;
    Ok(())
}

/// Wakes other processes' subscribers of `topic` after a commit. A transaction of its own:
/// a committing insert that had queued a NOTIFY would hold PostgreSQL's notification lock
/// through its WAL flush, serializing concurrent publishers.
pub(crate) async fn notify(
    conn: &mut PgConnection,
    tables: &Tables,
    topic: &str,
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(tables.notify_channel())
        .bind(topic)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn fetch(
    pool: &PgPool,
    tables: &Tables,
    topic: &str,
    after: Cursor,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let sql = stmt::fetch::<Pg>(tables);
    let raw: Vec<RawRow> = sqlx::query_as(&sql)
        .bind(topic)
        .bind(after.tx)
        .bind(after.pos)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows(topic, raw))
}

/// The cursor of "now" and the rows at or past it that are already committed (to skip).
pub(crate) async fn head(
    pool: &PgPool,
    tables: &Tables,
    topic: &str,
) -> sqlx::Result<(Cursor, HashSet<i64>)> {
    let m = t(tables, tables.messages_table());
    // One statement, so the horizon and the rows come from the same snapshot.
    let sql = format!(
        "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) \
         SELECT h.xmin, m.position FROM h LEFT JOIN {m} m ON m.topic = $1 AND m.tx_id >= h.xmin"
    );
    let raw: Vec<(i64, Option<i64>)> = sqlx::query_as(&sql).bind(topic).fetch_all(pool).await?;
    let xmin = raw.first().map_or(0, |r| r.0);
    Ok((
        Cursor {
            tx: xmin - 1,
            pos: i64::MAX,
        },
        raw.into_iter().filter_map(|r| r.1).collect(),
    ))
}

pub(crate) async fn queue_claim(
    pool: &PgPool,
    tables: &Tables,
    topic: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let raw: Vec<RawRow> = sqlx::query_as(&stmt::queue_claim::<Pg>(tables))
        .bind(until)
        .bind(topic)
        .bind(now)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    let mut out = rows(topic, raw);
    out.sort_by_key(|r| r.cursor.pos);
    Ok(out)
}

pub(crate) async fn queue_delete(
    pool: &PgPool,
    tables: &Tables,
    positions: &[i64],
) -> sqlx::Result<()> {
    let sql = format!(
        "{}position = ANY($1)",
        stmt::queue_delete_prefix::<Pg>(tables)
    );
    sqlx::query(&sql).bind(positions).execute(pool).await?;
    Ok(())
}

pub(crate) async fn queue_release(
    pool: &PgPool,
    tables: &Tables,
    positions: &[i64],
    deliver_at: Option<i64>,
) -> sqlx::Result<()> {
    let sql = format!(
        "{}$1{}position = ANY($2)",
        stmt::queue_release_prefix::<Pg>(tables),
        stmt::QUEUE_RELEASE_WHERE
    );
    sqlx::query(&sql)
        .bind(deliver_at)
        .bind(positions)
        .execute(pool)
        .await?;
    Ok(())
}

/// Where a reader starts on the first row, in read order, whose `column` is at least `value`
/// (`position` for an offset, `created_at` for a time); `None` if there is no such row.
pub(crate) async fn before_first(
    pool: &PgPool,
    tables: &Tables,
    topic: &str,
    column: FirstBy,
    value: i64,
) -> sqlx::Result<Option<Cursor>> {
    let m = t(tables, tables.messages_table());
    let column = match column {
        FirstBy::Position => "position",
        FirstBy::CreatedAt => "created_at",
    };
    let row: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT tx_id, position FROM {m} WHERE topic = $1 AND {column} >= $2 \
         ORDER BY tx_id, position LIMIT 1"
    ))
    .bind(topic)
    .bind(value)
    .fetch_optional(pool)
    .await?;
    // Just before it: rows of the same transaction with lower positions are read earlier.
    Ok(row.map(|(tx, pos)| Cursor { tx, pos: pos - 1 }))
}

/// Which column [`before_first`] looks at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FirstBy {
    Position,
    CreatedAt,
}

same_on_every_backend!(PgPool, Pg);
claim_by_upsert!(PgPool, Pg);
