//! SQLite statements.
//!
//! SQLite runs one writing transaction at a time and holds the write lock until it ends, so
//! `AUTOINCREMENT` positions become visible in order and a reader never skips a row.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::QueryBuilder;

use crate::config::Backend;
use crate::row::{decode, Cursor, NewRow, StoredRow};
use crate::schema::Tables;
use crate::statements::{self as stmt, Dialect};

/// SQLite's spelling of the shared statements.
pub(crate) struct Lite;

impl Dialect for Lite {
    const BACKEND: Backend = Backend::Sqlite;
    const READ_COLUMNS: &'static str = "position, message_id, payload, metadata, deliver_at";
    const AFTER_CURSOR: &'static str = "position > ?";
    // One writer at a time: positions become visible in order.
    const NO_SKIP: &'static str = "";
    const READ_ORDER: &'static str = "position";
    // The claim is one statement under the single writer: nothing to lock.
    const LOCK_CLAIMED: &'static str = "";
    const INSERT_IF_ABSENT: (&'static str, &'static str) = ("INSERT", " ON CONFLICT DO NOTHING");
}

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
        let mut qb = QueryBuilder::new(format!("INSERT INTO {m} ({}) ", stmt::INSERT_COLUMNS));
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
    let raw: Vec<RawRow> = sqlx::query_as(&stmt::fetch::<Lite>(tables))
        .bind(topic)
        .bind(after.pos)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows(topic, raw))
}

pub(crate) async fn head(pool: &SqlitePool, tables: &Tables, topic: &str) -> sqlx::Result<Cursor> {
    let (pos,): (i64,) = sqlx::query_as(&stmt::last_position::<Lite>(tables))
        .bind(topic)
        .fetch_one(pool)
        .await?;
    Ok(Cursor { tx: 0, pos })
}

pub(crate) async fn queue_claim(
    pool: &SqlitePool,
    tables: &Tables,
    topic: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    // One statement under SQLite's single writer: no two members can claim the same row.
    let raw: Vec<RawRow> = sqlx::query_as(&stmt::queue_claim::<Lite>(tables))
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

fn in_list(qb: &mut QueryBuilder<'_, sqlx::Sqlite>, positions: &[i64]) {
    qb.push("position IN (");
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
    let mut qb = QueryBuilder::new(stmt::queue_delete_prefix::<Lite>(tables));
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
    let mut qb = QueryBuilder::new(stmt::queue_release_prefix::<Lite>(tables));
    qb.push_bind(deliver_at).push(stmt::QUEUE_RELEASE_WHERE);
    in_list(&mut qb, positions);
    qb.build().execute(pool).await?;
    Ok(())
}

same_on_every_backend!(SqlitePool, Lite);
claim_by_upsert!(SqlitePool, Lite);
before_time_by_position!(SqlitePool, Lite);
