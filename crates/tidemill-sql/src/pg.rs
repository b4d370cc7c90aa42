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
        "INSERT INTO {m} (topic, message_id, payload, metadata, created_at, deliver_at) \
         SELECT $1, u.id, u.payload, u.metadata::jsonb, $5, u.deliver_at \
         FROM UNNEST($2::text[], $3::bytea[], $4::text[], $6::int8[]) WITH ORDINALITY \
         AS u(id, payload, metadata, deliver_at, ord) ORDER BY u.ord"
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
    let m = t(tables, tables.messages_table());
    let sql = format!(
        "SELECT tx_id, position, message_id, payload, metadata::text, deliver_at FROM {m} \
         WHERE topic = $1 AND (tx_id, position) > ($2, $3) \
         AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY tx_id, position LIMIT $4"
    );
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

pub(crate) async fn claim(
    pool: &PgPool,
    tables: &Tables,
    group: &str,
    topic: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> sqlx::Result<Option<Cursor>> {
    let o = t(tables, tables.offsets_table());
    let sql = format!(
        "INSERT INTO {o} AS o (consumer_group, topic, owner, lease_until) VALUES ($1, $2, $3, $5) \
         ON CONFLICT (consumer_group, topic) DO UPDATE \
         SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until \
         WHERE o.owner IS NULL OR o.owner = EXCLUDED.owner OR o.lease_until < $4 \
         RETURNING o.tx_id, o.position"
    );
    let row: Option<(i64, i64)> = sqlx::query_as(&sql)
        .bind(group)
        .bind(topic)
        .bind(owner)
        .bind(now)
        .bind(until)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(tx, pos)| Cursor { tx, pos }))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit(
    pool: &PgPool,
    tables: &Tables,
    group: &str,
    topic: &str,
    owner: &str,
    cursor: Cursor,
    until: i64,
    release: bool,
) -> sqlx::Result<bool> {
    let o = t(tables, tables.offsets_table());
    let sql = format!(
        "UPDATE {o} SET tx_id = $4, position = $5, lease_until = $6, \
         owner = CASE WHEN $7 THEN NULL ELSE owner END \
         WHERE consumer_group = $1 AND topic = $2 AND owner = $3"
    );
    let done = sqlx::query(&sql)
        .bind(group)
        .bind(topic)
        .bind(owner)
        .bind(cursor.tx)
        .bind(cursor.pos)
        .bind(until)
        .bind(release)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn queue_claim(
    pool: &PgPool,
    tables: &Tables,
    topic: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let m = t(tables, tables.messages_table());
    let sql = format!(
        "UPDATE {m} SET locked_until = $3 WHERE position IN (\
         SELECT position FROM {m} WHERE topic = $1 AND deliver_at <= $2 \
         AND (locked_until IS NULL OR locked_until < $2) \
         ORDER BY position LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING tx_id, position, message_id, payload, metadata::text, deliver_at"
    );
    let raw: Vec<RawRow> = sqlx::query_as(&sql)
        .bind(topic)
        .bind(now)
        .bind(until)
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
    let m = t(tables, tables.messages_table());
    sqlx::query(&format!("DELETE FROM {m} WHERE position = ANY($1)"))
        .bind(positions)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) async fn queue_release(
    pool: &PgPool,
    tables: &Tables,
    positions: &[i64],
    deliver_at: Option<i64>,
) -> sqlx::Result<()> {
    let m = t(tables, tables.messages_table());
    sqlx::query(&format!(
        "UPDATE {m} SET locked_until = NULL, deliver_at = COALESCE($2, deliver_at) \
         WHERE position = ANY($1)"
    ))
    .bind(positions)
    .bind(deliver_at)
    .execute(pool)
    .await?;
    Ok(())
}
