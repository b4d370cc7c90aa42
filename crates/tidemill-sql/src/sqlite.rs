//! SQLite statements.
//!
//! SQLite runs one writing transaction at a time and holds the write lock until it ends, so
//! `AUTOINCREMENT` positions become visible in order and a reader never skips a row.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::QueryBuilder;

use crate::config::Backend;
use crate::row::{decode, Cursor, NewRow, StoredRow};
use crate::schema::Tables;

type RawRow = (i64, String, Vec<u8>, String, i64);

/// Rows per INSERT statement, under SQLite's 32,766 bound parameters.
const CHUNK: usize = 1000;

fn t(tables: &Tables, name: String) -> String {
    tables.q(Backend::Sqlite, &name)
}

fn rows(topic: &str, raw: Vec<RawRow>) -> Vec<StoredRow> {
    raw.into_iter()
        .map(|(pos, id, payload, md, at)| {
            decode(topic, Cursor { tx: 0, pos }, id, payload, &md, at)
        })
        .collect()
}

/// Inserts `batch`. More than one chunk must run inside a transaction to be atomic.
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    tables: &Tables,
    topic: &str,
    batch: &[NewRow],
    now: i64,
) -> sqlx::Result<()> {
    let m = t(tables, tables.messages_table());
    for chunk in batch.chunks(CHUNK) {
        let mut qb = QueryBuilder::new(format!(
            "INSERT INTO {m} (topic, message_id, payload, metadata, created_at, deliver_at) "
        ));
        qb.push_values(chunk, |mut b, row| {
            b.push_bind(topic)
                .push_bind(&*row.id)
                .push_bind(row.payload.as_ref())
                .push_bind(row.metadata.as_str())
                .push_bind(now)
                .push_bind(row.deliver_at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) fn needs_tx(batch: &[NewRow]) -> bool {
    batch.len() > CHUNK
}

pub(crate) async fn fetch(
    pool: &SqlitePool,
    tables: &Tables,
    topic: &str,
    after: Cursor,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let m = t(tables, tables.messages_table());
    let raw: Vec<RawRow> = sqlx::query_as(&format!(
        "SELECT position, message_id, payload, metadata, deliver_at FROM {m} \
         WHERE topic = ? AND position > ? ORDER BY position LIMIT ?"
    ))
    .bind(topic)
    .bind(after.pos)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows(topic, raw))
}

pub(crate) async fn head(pool: &SqlitePool, tables: &Tables, topic: &str) -> sqlx::Result<Cursor> {
    let m = t(tables, tables.messages_table());
    let (pos,): (i64,) = sqlx::query_as(&format!(
        "SELECT COALESCE(MAX(position), 0) FROM {m} WHERE topic = ?"
    ))
    .bind(topic)
    .fetch_one(pool)
    .await?;
    Ok(Cursor { tx: 0, pos })
}

pub(crate) async fn claim(
    pool: &SqlitePool,
    tables: &Tables,
    group: &str,
    topic: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> sqlx::Result<Option<Cursor>> {
    let o = t(tables, tables.offsets_table());
    let row: Option<(i64, i64)> = sqlx::query_as(&format!(
        "INSERT INTO {o} (consumer_group, topic, owner, lease_until) VALUES (?1, ?2, ?3, ?5) \
         ON CONFLICT (consumer_group, topic) DO UPDATE \
         SET owner = excluded.owner, lease_until = excluded.lease_until \
         WHERE owner IS NULL OR owner = excluded.owner OR lease_until < ?4 \
         RETURNING tx_id, position"
    ))
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
    pool: &SqlitePool,
    tables: &Tables,
    group: &str,
    topic: &str,
    owner: &str,
    cursor: Cursor,
    until: i64,
    release: bool,
) -> sqlx::Result<bool> {
    let o = t(tables, tables.offsets_table());
    let done = sqlx::query(&format!(
        "UPDATE {o} SET tx_id = ?4, position = ?5, lease_until = ?6, \
         owner = CASE WHEN ?7 THEN NULL ELSE owner END \
         WHERE consumer_group = ?1 AND topic = ?2 AND owner = ?3"
    ))
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
    pool: &SqlitePool,
    tables: &Tables,
    topic: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let m = t(tables, tables.messages_table());
    // One statement under SQLite's single writer: no two members can claim the same row.
    let raw: Vec<RawRow> = sqlx::query_as(&format!(
        "UPDATE {m} SET locked_until = ?3 WHERE position IN (\
         SELECT position FROM {m} WHERE topic = ?1 AND deliver_at <= ?2 \
         AND (locked_until IS NULL OR locked_until < ?2) ORDER BY position LIMIT ?4) \
         RETURNING position, message_id, payload, metadata, deliver_at"
    ))
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

fn in_list(qb: &mut QueryBuilder<'_, sqlx::Sqlite>, positions: &[i64]) {
    qb.push(" position IN (");
    let mut sep = qb.separated(", ");
    for p in positions {
        sep.push_bind(*p);
    }
    qb.push(")");
}

pub(crate) async fn queue_delete(
    pool: &SqlitePool,
    tables: &Tables,
    positions: &[i64],
) -> sqlx::Result<()> {
    let m = t(tables, tables.messages_table());
    let mut qb = QueryBuilder::new(format!("DELETE FROM {m} WHERE"));
    in_list(&mut qb, positions);
    qb.build().execute(pool).await?;
    Ok(())
}

pub(crate) async fn queue_release(
    pool: &SqlitePool,
    tables: &Tables,
    positions: &[i64],
    deliver_at: Option<i64>,
) -> sqlx::Result<()> {
    let m = t(tables, tables.messages_table());
    let mut qb = QueryBuilder::new(format!(
        "UPDATE {m} SET locked_until = NULL, deliver_at = COALESCE("
    ));
    qb.push_bind(deliver_at).push(", deliver_at) WHERE");
    in_list(&mut qb, positions);
    qb.build().execute(pool).await?;
    Ok(())
}
