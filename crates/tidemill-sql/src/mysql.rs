//! MariaDB / MySQL statements.
//!
//! Each publishing transaction takes its positions from the topic's row in the sequences table,
//! which stays locked until the transaction ends: positions of one topic become visible in
//! order, so a reader that moves past a position never misses a row committed later.

use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::{Connection, QueryBuilder};

use crate::config::Backend;
use crate::row::{decode, Cursor, NewRow, StoredRow};
use crate::schema::Tables;
use crate::statements::{self as stmt, Dialect};

/// MariaDB/MySQL's spelling of the shared statements.
pub(crate) struct My;

impl Dialect for My {
    const BACKEND: Backend = Backend::MySql;
    const READ_COLUMNS: &'static str = "position, message_id, payload, metadata, deliver_at";
    const AFTER_CURSOR: &'static str = "position > ?";
    // Publishers hold their topic's sequence row until they commit: positions become visible
    // in order.
    const NO_SKIP: &'static str = "";
    const READ_ORDER: &'static str = "position";
    const LOCK_CLAIMED: &'static str = " FOR UPDATE SKIP LOCKED";
    const INSERT_IF_ABSENT: (&'static str, &'static str) = ("INSERT IGNORE", "");

    fn signed(expr: &str) -> String {
        format!("CAST({expr} AS SIGNED)")
    }
}

type RawRow = (i64, String, Vec<u8>, String, i64);

/// Rows per INSERT statement, well under the protocol's 65,535 placeholders.
const CHUNK: usize = 1000;

fn t(tables: &Tables, name: String) -> String {
    tables.q(Backend::MySql, &name)
}

fn rows(topic: &str, raw: Vec<RawRow>) -> Vec<StoredRow> {
    raw.into_iter()
        .map(|(pos, id, payload, md, at)| {
            decode(topic, Cursor { tx: 0, pos }, id, payload, &md, at)
        })
        .collect()
}

/// Inserts `batch`; must run inside a transaction (the caller's or one of ours).
pub(crate) async fn insert(
    conn: &mut MySqlConnection,
    tables: &Tables,
    topic: &str,
    batch: &[NewRow],
    now: i64,
) -> sqlx::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let s = t(tables, tables.sequences_table());
    let m = t(tables, tables.messages_table());
    let n = batch.len() as i64;
    // LAST_INSERT_ID(expr) hands the new end of the range back in the OK packet, saving a
    // SELECT; the row lock this takes is held until the transaction ends.
    let done = sqlx::query(&format!(
        "INSERT INTO {s} (topic, next_position) VALUES (?, LAST_INSERT_ID(?)) \
         ON DUPLICATE KEY UPDATE next_position = LAST_INSERT_ID(next_position + VALUES(next_position))"
    ))
    .bind(topic)
    .bind(n)
    .execute(&mut *conn)
    .await?;
    let end = done.last_insert_id() as i64;
    let mut position = end - n;
    for chunk in batch.chunks(CHUNK) {
        let mut qb = QueryBuilder::new(format!(
            "INSERT INTO {m} (position, {}) ",
            stmt::INSERT_COLUMNS
        ));
        qb.push_values(chunk, |mut b, row| {
            position += 1;
            b.push_bind(position)
                .push_bind(topic)
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

/// Creates `topic`'s sequence row if it is missing, in autocommit. Transactions that create it
/// concurrently can deadlock on its gap lock; once it exists they only wait for its row lock.
pub(crate) async fn ensure_sequence(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
) -> sqlx::Result<()> {
    let s = t(tables, tables.sequences_table());
    sqlx::query(&format!(
        "{} INTO {s} (topic, next_position) VALUES (?, 0)",
        My::INSERT_IF_ABSENT.0
    ))
    .bind(topic)
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts `batch` in a transaction of its own, retrying on deadlock (possible only while two
/// transactions create a topic's sequence row at once).
pub(crate) async fn insert_autocommit(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
    batch: &[NewRow],
    now: i64,
) -> sqlx::Result<()> {
    let mut attempt = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let res = match insert(&mut tx, tables, topic, batch, now).await {
            Ok(()) => tx.commit().await,
            Err(e) => Err(e),
        };
        match res {
            Err(sqlx::Error::Database(db))
                if attempt < 5 && db.code().as_deref() == Some("40001") =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub(crate) async fn fetch(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
    after: Cursor,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let raw: Vec<RawRow> = sqlx::query_as(&stmt::fetch::<My>(tables))
        .bind(topic)
        .bind(after.pos)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows(topic, raw))
}

pub(crate) async fn head(pool: &MySqlPool, tables: &Tables, topic: &str) -> sqlx::Result<Cursor> {
    let (pos,): (i64,) = sqlx::query_as(&stmt::last_position::<My>(tables))
        .bind(topic)
        .fetch_one(pool)
        .await?;
    Ok(Cursor { tx: 0, pos })
}

pub(crate) async fn claim(
    pool: &MySqlPool,
    tables: &Tables,
    group: &str,
    topic: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> sqlx::Result<Option<Cursor>> {
    let o = t(tables, tables.offsets_table());
    for _ in 0..2 {
        // The connection reports matched rows (CLIENT_FOUND_ROWS), so 1 means "ours now".
        let done = sqlx::query(&format!(
            "UPDATE {o} SET owner = ?, lease_until = ? WHERE consumer_group = ? AND topic = ? \
             AND (owner IS NULL OR owner = ? OR lease_until < ?)"
        ))
        .bind(owner)
        .bind(until)
        .bind(group)
        .bind(topic)
        .bind(owner)
        .bind(now)
        .execute(pool)
        .await?;
        if done.rows_affected() == 1 {
            let (tx, pos): (i64, i64) = sqlx::query_as(&format!(
                "SELECT tx_id, position FROM {o} WHERE consumer_group = ? AND topic = ?"
            ))
            .bind(group)
            .bind(topic)
            .fetch_one(pool)
            .await?;
            return Ok(Some(Cursor { tx, pos }));
        }
        // A new group starts at the beginning.
        if !offset_if_absent(pool, tables, group, topic, Cursor::default()).await? {
            return Ok(None);
        }
    }
    Ok(None)
}

pub(crate) async fn queue_claim(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
    now: i64,
    until: i64,
    limit: usize,
) -> sqlx::Result<Vec<StoredRow>> {
    let m = t(tables, tables.messages_table());
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let raw: Vec<RawRow> = sqlx::query_as(&stmt::queue_select::<My>(tables))
        .bind(topic)
        .bind(now)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
    if !raw.is_empty() {
        let mut qb = QueryBuilder::new(format!("UPDATE {m} SET locked_until = "));
        qb.push_bind(until)
            .push(" WHERE topic = ")
            .push_bind(topic)
            .push(" AND position IN (");
        let mut sep = qb.separated(", ");
        for r in &raw {
            sep.push_bind(r.0);
        }
        qb.push(")");
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(rows(topic, raw))
}

pub(crate) async fn queue_delete(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
    positions: &[i64],
) -> sqlx::Result<()> {
    let mut qb = QueryBuilder::new(stmt::queue_delete_prefix::<My>(tables));
    qb.push("topic = ")
        .push_bind(topic)
        .push(" AND position IN (");
    let mut sep = qb.separated(", ");
    for p in positions {
        sep.push_bind(*p);
    }
    qb.push(")");
    qb.build().execute(pool).await?;
    Ok(())
}

pub(crate) async fn queue_release(
    pool: &MySqlPool,
    tables: &Tables,
    topic: &str,
    positions: &[i64],
    deliver_at: Option<i64>,
) -> sqlx::Result<()> {
    let mut qb = QueryBuilder::new(stmt::queue_release_prefix::<My>(tables));
    qb.push_bind(deliver_at)
        .push(stmt::QUEUE_RELEASE_WHERE)
        .push("topic = ")
        .push_bind(topic)
        .push(" AND position IN (");
    let mut sep = qb.separated(", ");
    for p in positions {
        sep.push_bind(*p);
    }
    qb.push(")");
    qb.build().execute(pool).await?;
    Ok(())
}

same_on_every_backend!(MySqlPool, My);
before_time_by_position!(MySqlPool, My);
