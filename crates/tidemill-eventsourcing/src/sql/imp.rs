//! The statements of every SQL backend, written once: a macro instantiates them for each
//! database's pool type, and the few dialect differences are branches on [`Names::backend`].

/// Columns of an event row, in the order [`EventRow`] decodes them.
pub(crate) const EVENT_COLUMNS: &str =
    "position, stream, version, event_id, event_type, schema_version, payload, metadata, recorded_at";

/// `(commit, position, stream, version, event_id, event_type, schema_version, payload,
/// metadata, recorded_at)`.
pub(crate) type EventRow = (
    i64,
    i64,
    String,
    i64,
    String,
    String,
    i64,
    Vec<u8>,
    String,
    i64,
);

use crate::error::{Error, Result};
use crate::event::{from_micros, EventMetadata, LogPosition, RecordedEvent};

pub(crate) fn decode_row(r: EventRow) -> Result<RecordedEvent> {
    let (commit, position, stream, version, id, event_type, schema_version, payload, md, at) = r;
    let bad = |source: tidemill::BoxError| Error::Decode {
        stream: stream.clone(),
        version: version as u64,
        event_type: event_type.clone(),
        schema_version: schema_version as u32,
        source,
    };
    let id = uuid::Uuid::parse_str(&id).map_err(|e| bad(e.into()))?;
    let metadata = EventMetadata::from_json(&md).map_err(|e| bad(e.into()))?;
    Ok(RecordedEvent {
        id,
        version: version as u64,
        position: LogPosition { commit, position },
        schema_version: schema_version as u32,
        payload: payload.into(),
        metadata,
        recorded_at: from_micros(at),
        stream,
        event_type,
    })
}

/// Whether a driver error is worth retrying the whole transaction for (deadlock,
/// serialization failure, SQLite busy).
pub(crate) fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                Some("40001" | "40P01" | "1213" | "1205" | "5" | "517" | "6")
            ) || db.message().contains("database is locked")
                || db.message().contains("Deadlock found")
        }
        _ => false,
    }
}

pub(crate) fn unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || matches!(
                    db.code().as_deref(),
                    Some("23505" | "1062" | "2067" | "1555")
                )
        }
        _ => false,
    }
}

/// The rowid of the last row an `INSERT` wrote, where the driver reports it with the
/// statement's result (SQLite: the events' `INTEGER PRIMARY KEY`, their position).
pub(crate) trait InsertedRowid {
    fn inserted_rowid(&self) -> Option<i64>;
}

#[cfg(feature = "sqlite")]
impl InsertedRowid for sqlx::sqlite::SqliteQueryResult {
    fn inserted_rowid(&self) -> Option<i64> {
        Some(self.last_insert_rowid())
    }
}

#[cfg(feature = "postgres")]
impl InsertedRowid for sqlx::postgres::PgQueryResult {
    fn inserted_rowid(&self) -> Option<i64> {
        None
    }
}

#[cfg(feature = "mysql")]
impl InsertedRowid for sqlx::mysql::MySqlQueryResult {
    fn inserted_rowid(&self) -> Option<i64> {
        None
    }
}

macro_rules! sql_backend {
    ($modname:ident, $db:ty, $txvariant:path) => {
        pub(crate) mod $modname {
            use sqlx::QueryBuilder;

            use crate::error::{Error, Result};
            use crate::event::{
                to_micros, AppendResult, Direction, ExpectedVersion, LogPosition, NewEvent,
                ReadStream, RecordedEvent, StreamInfo, STATE_DELETED, STATE_LIVE,
                STATE_TOMBSTONED,
            };
            use crate::names::StreamFilter;
            use crate::projection::{BatchOutcome, Projection};
            use crate::snapshot::SnapshotRecord;
            use crate::sql::imp::{decode_row, EventRow, InsertedRowid, EVENT_COLUMNS};
            use crate::sql::schema::Names;
            use crate::sql::OutboxTarget;
            use crate::store::{idempotent_outcome, Existing, StoreConfig};

            type Pool = sqlx::Pool<$db>;
            type Tx = sqlx::Transaction<'static, $db>;

            fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
                move |e| Error::db(op, e)
            }

            fn event_cols(n: &Names) -> String {
                EVENT_COLUMNS
                    .split(", ")
                    .map(|c| match c {
                        "stream" | "event_id" | "event_type" | "metadata" => n.text(c),
                        other => other.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }

            fn cols(n: &Names) -> String {
                format!("{}, {}", n.commit_col(), event_cols(n))
            }

            pub(crate) async fn create_schema(pool: &Pool, n: &Names) -> Result<()> {
                for statement in crate::sql::schema::schema_sql(n.backend, &n.prefix)? {
                    match sqlx::query(&statement).execute(pool).await {
                        Ok(_) => {}
                        // Two processes creating the same table at once on PostgreSQL: one
                        // wins, the other sees a unique violation on the catalog.
                        Err(sqlx::Error::Database(d))
                            if matches!(d.code().as_deref(), Some("23505" | "42P07")) => {}
                        Err(e) => return Err(Error::db("creating the event store's tables", e)),
                    }
                }
                Ok(())
            }

            /// Creates the stream's row if missing and locks it until the transaction ends:
            /// `(version, visible_from, state)`. The first statement writes, so SQLite takes
            /// its write lock at once (no deadlocking upgrade from a read).
            async fn lock_stream(tx: &mut Tx, n: &Names, stream: &str) -> sqlx::Result<(i64, i64, i64)> {
                let s = &n.streams;
                let upsert = format!("INSERT INTO {s} (stream) VALUES (?){}", n.upsert("stream", &["stream"]));
                let cols = "version, visible_from, state";
                if n.insert_returning() {
                    sqlx::query_as(&n.sql(&format!("{upsert} RETURNING {cols}")))
                        .bind(stream)
                        .fetch_one(&mut **tx)
                        .await
                } else {
                    sqlx::query(&n.sql(&upsert)).bind(stream).execute(&mut **tx).await?;
                    sqlx::query_as(&n.sql(&format!("SELECT {cols} FROM {s} WHERE stream = ? FOR UPDATE")))
                        .bind(stream)
                        .fetch_one(&mut **tx)
                        .await
                }
            }

            async fn find_ids(tx: &mut Tx, n: &Names, events: &[NewEvent]) -> sqlx::Result<Vec<Existing>> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {}, {}, version, {}, position FROM {} WHERE event_id IN (",
                    n.text("event_id"),
                    n.text("stream"),
                    n.commit_col(),
                    n.events
                ));
                let mut sep = qb.separated(", ");
                for e in events {
                    sep.push_bind(e.id.to_string());
                }
                qb.push(")");
                let rows: Vec<(String, String, i64, i64, i64)> =
                    qb.build_query_as().fetch_all(&mut **tx).await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, stream, version, commit, position)| {
                        Some((
                            uuid::Uuid::parse_str(&id).ok()?,
                            stream,
                            version as u64,
                            LogPosition { commit, position },
                        ))
                    })
                    .collect())
            }

            /// The written columns of an event row (`position` first when the store allocates
            /// it).
            fn insert_cols(with_position: bool) -> &'static str {
                if with_position { EVENT_COLUMNS } else { &EVENT_COLUMNS["position, ".len()..] }
            }

            /// `VALUES (...), ...` of `events` appended after version `base`, numbered from
            /// `first_position` when the store allocates positions.
            fn push_rows<'a>(
                qb: &mut QueryBuilder<'a, $db>,
                stream: &'a str,
                base: i64,
                events: &'a [NewEvent],
                now: i64,
                first_position: Option<i64>,
            ) {
                qb.push_values(events.iter().enumerate(), |mut b, (i, ev)| {
                    if let Some(p) = first_position {
                        b.push_bind(p + i as i64);
                    }
                    b.push_bind(stream)
                        .push_bind(base + 1 + i as i64)
                        .push_bind(ev.id.to_string())
                        .push_bind(ev.event_type.as_str())
                        .push_bind(ev.schema_version as i64)
                        .push_bind(ev.payload.as_ref())
                        .push_bind(ev.metadata.to_json())
                        .push_bind(now);
                });
            }

            /// The rows' `(commit, position)` to the global log's last one.
            fn last_position(rows: Vec<(i64, i64)>) -> LogPosition {
                let (commit, position) = rows.into_iter().max_by_key(|r| r.1).unwrap_or_default();
                LogPosition { commit, position }
            }

            enum Attempt {
                Done(AppendResult),
                Refused(Error),
            }

            #[allow(clippy::too_many_arguments)]
            async fn append_once(
                pool: &Pool,
                n: &Names,
                config: &StoreConfig,
                outbox: Option<&OutboxTarget>,
                stream: &str,
                expected: ExpectedVersion,
                events: &[NewEvent],
            ) -> sqlx::Result<Attempt> {
                let mut tx: Tx = pool.begin().await?;
                let (version, _visible, state) = lock_stream(&mut tx, n, stream).await?;
                if state == STATE_TOMBSTONED {
                    return Ok(Attempt::Refused(Error::StreamTombstoned { stream: stream.to_owned() }));
                }
                let actual = (version > 0).then_some(version as u64);
                let passes = expected.accepts(actual);
                // A retry of an append that was stored can only pass the expectation when it
                // is `Any` or `Exists`; otherwise the lookup is needed only after a mismatch.
                let look = !events.is_empty()
                    && (!passes || matches!(expected, ExpectedVersion::Any | ExpectedVersion::Exists));
                if look {
                    let existing = find_ids(&mut tx, n, events).await?;
                    match idempotent_outcome(stream, expected, events, existing) {
                        Ok(Some(done)) => return Ok(Attempt::Done(done)),
                        Ok(None) => {}
                        Err(e) => return Ok(Attempt::Refused(e)),
                    }
                }
                if !passes {
                    return Ok(Attempt::Refused(Error::Conflict {
                        stream: stream.to_owned(),
                        expected,
                        actual,
                    }));
                }
                if events.is_empty() {
                    return Ok(Attempt::Done(AppendResult {
                        version: version as u64,
                        position: LogPosition::START,
                        written: false,
                    }));
                }
                let now = to_micros((config.clock)());
                let count = events.len() as i64;
                let first_position = if n.positions_from_sequence() {
                    let sq = &n.seq;
                    let (next,): (i64,) = sqlx::query_as(&format!(
                        "SELECT next_position FROM {sq} WHERE id = 1 FOR UPDATE"
                    ))
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(&n.sql(&format!("UPDATE {sq} SET next_position = ? WHERE id = 1")))
                        .bind(next + count)
                        .execute(&mut *tx)
                        .await?;
                    Some(next + 1)
                } else {
                    None
                };
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO {} ({}) ",
                    n.events,
                    insert_cols(first_position.is_some())
                ));
                push_rows(&mut qb, stream, version, events, now, first_position);
                let last = match first_position {
                    Some(first) => {
                        qb.build().execute(&mut *tx).await?;
                        LogPosition { commit: 0, position: first + count - 1 }
                    }
                    None => {
                        qb.push(format!(" RETURNING {}, position", n.commit_col()));
                        last_position(qb.build_query_as().fetch_all(&mut *tx).await?)
                    }
                };
                let new_version = version + count;
                if !n.stream_row_by_trigger() {
                    sqlx::query(&n.sql(&format!(
                        "UPDATE {} SET version = ?, state = ? WHERE stream = ?",
                        n.streams
                    )))
                    .bind(new_version)
                    .bind(STATE_LIVE)
                    .bind(stream)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(target) = outbox {
                    let messages = target.messages(stream, version as u64, events);
                    let topic = (target.topic)(stream);
                    if let Err(source) = target.outbox.publish_in_tx(&mut tx, &topic, messages).await {
                        return Ok(Attempt::Refused(Error::Outbox { stream: stream.to_owned(), source }));
                    }
                }
                tx.commit().await?;
                Ok(Attempt::Done(AppendResult {
                    version: new_version as u64,
                    position: last,
                    written: true,
                }))
            }

            /// The statement that checks the expectation and moves the stream row to its new
            /// version, returning a row only if the expectation held. A new stream may be
            /// created only under `NoStream` (base 0); otherwise the row must exist at the
            /// expected version. Either way the row stays locked until the append commits.
            fn push_guard<'a>(qb: &mut QueryBuilder<'a, $db>, n: &Names, stream: &'a str, base: i64, count: i64) {
                let s = &n.streams;
                if base == 0 {
                    qb.push(format!("INSERT INTO {s} (stream, version, state) VALUES ("));
                    qb.push_bind(stream).push(", ").push_bind(count).push(", ").push_bind(STATE_LIVE);
                    qb.push(format!(
                        "){} WHERE {s}.version = 0 AND {s}.state <> ",
                        n.upsert("stream", &["version", "state"])
                    ));
                    qb.push_bind(STATE_TOMBSTONED);
                } else {
                    qb.push(format!("UPDATE {s} SET version = "));
                    qb.push_bind(base + count).push(", state = ").push_bind(STATE_LIVE);
                    qb.push(" WHERE stream = ").push_bind(stream);
                    qb.push(" AND version = ").push_bind(base);
                    qb.push(" AND state <> ").push_bind(STATE_TOMBSTONED);
                }
                qb.push(" RETURNING version");
            }

            /// The common append as one autocommit statement: the expectation is an exact
            /// version (or no stream) and nothing else must commit with it (no outbox, no
            /// sequence row). Where the stream row follows the events by trigger (SQLite),
            /// the insert itself is guarded by the row's version, read under the statement's
            /// write lock; elsewhere (PostgreSQL) a guarded upsert of the row, which also
            /// locks it, feeds the insert in a CTE. `None`: the guard did not pass (conflict,
            /// tombstone, a retry of a stored append) or an id is taken, and the full path
            /// decides what to report.
            async fn append_fast(
                pool: &Pool,
                n: &Names,
                config: &StoreConfig,
                stream: &str,
                base: i64,
                events: &[NewEvent],
            ) -> sqlx::Result<Option<AppendResult>> {
                let count = events.len() as i64;
                let now = to_micros((config.clock)());
                let cols = insert_cols(false);
                let position = if n.stream_row_by_trigger() {
                    let mut qb = QueryBuilder::<$db>::new(format!(
                        "INSERT INTO {} ({cols}) SELECT * FROM (",
                        n.events
                    ));
                    push_rows(&mut qb, stream, base, events, now, None);
                    // A tombstoned stream reads as version -1: no expectation matches it.
                    qb.push(") WHERE COALESCE((SELECT CASE WHEN state = ");
                    qb.push_bind(STATE_TOMBSTONED);
                    qb.push(format!(" THEN -1 ELSE version END FROM {} WHERE stream = ", n.streams));
                    qb.push_bind(stream).push("), 0) = ").push_bind(base);
                    // No rows sent back: the count says whether the guard passed, and the
                    // last rowid is the last event's position (the trigger's own inserts do
                    // not change it once it returns).
                    let done = match qb.build().execute(pool).await {
                        Err(e) if crate::sql::imp::unique_violation(&e) => return Ok(None),
                        r => r?,
                    };
                    match (done.rows_affected() == count as u64, done.inserted_rowid()) {
                        (true, Some(position)) => LogPosition { commit: 0, position },
                        _ => return Ok(None),
                    }
                } else {
                    let mut qb = QueryBuilder::<$db>::new("WITH s AS (");
                    push_guard(&mut qb, n, stream, base, count);
                    qb.push(format!(") INSERT INTO {} ({cols}) SELECT v.* FROM (", n.events));
                    push_rows(&mut qb, stream, base, events, now, None);
                    // Every row comes back: wrapping the insert in a second CTE to return
                    // only the last one measured slower.
                    qb.push(format!(
                        ") AS v ({cols}) WHERE EXISTS (SELECT 1 FROM s) RETURNING {}, position",
                        n.commit_col()
                    ));
                    let rows: Vec<(i64, i64)> = match qb.build_query_as().fetch_all(pool).await {
                        Err(e) if crate::sql::imp::unique_violation(&e) => return Ok(None),
                        r => r?,
                    };
                    if rows.is_empty() {
                        return Ok(None);
                    }
                    last_position(rows)
                };
                Ok(Some(AppendResult {
                    version: (base + count) as u64,
                    position,
                    written: true,
                }))
            }

            pub(crate) async fn append(
                pool: &Pool,
                n: &Names,
                config: &StoreConfig,
                outbox: Option<&OutboxTarget>,
                stream: &str,
                expected: ExpectedVersion,
                events: &[NewEvent],
            ) -> Result<AppendResult> {
                let base = match expected {
                    ExpectedVersion::NoStream => Some(0),
                    ExpectedVersion::Exact(v) => i64::try_from(v).ok().filter(|v| *v > 0),
                    _ => None,
                };
                if let (Some(base), None, false, false) =
                    (base, outbox, events.is_empty(), n.positions_from_sequence())
                {
                    match append_fast(pool, n, config, stream, base, events).await {
                        Ok(Some(done)) => return Ok(done),
                        Ok(None) => {}
                        // Busy or deadlocked: the full path retries.
                        Err(e) if crate::sql::imp::transient(&e) => {}
                        Err(e) => return Err(Error::db("appending", e)),
                    }
                }
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    match append_once(pool, n, config, outbox, stream, expected, events).await {
                        Ok(Attempt::Done(r)) => return Ok(r),
                        Ok(Attempt::Refused(e)) => return Err(e),
                        Err(e) if crate::sql::imp::transient(&e) && attempt < 20 => {
                            let ms = 2u64.pow(attempt.min(6)) + rand_jitter();
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        Err(e) if crate::sql::imp::unique_violation(&e) => {
                            // Another stream holds one of the ids (the stream's own lock rules
                            // out a race on the same stream).
                            return Err(Error::DuplicateEventId {
                                stream: stream.to_owned(),
                                event_id: events.first().map(|e| e.id).unwrap_or_default(),
                            });
                        }
                        Err(e) => return Err(Error::db("appending", e)),
                    }
                }
            }

            fn rand_jitter() -> u64 {
                (uuid::Uuid::new_v4().as_u128() % 5) as u64
            }

            async fn info_of<'c, E>(exec: E, n: &Names, stream: &str) -> sqlx::Result<StreamInfo>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let row: Option<(i64, i64, i64)> = sqlx::query_as(&n.sql(&format!(
                    "SELECT version, visible_from, state FROM {} WHERE stream = ?",
                    n.streams
                )))
                .bind(stream)
                .fetch_optional(exec)
                .await?;
                Ok(row.map_or(StreamInfo::default(), |(v, f, s)| StreamInfo::from_row(v, f, s)))
            }

            pub(crate) async fn stream_info(pool: &Pool, n: &Names, stream: &str) -> Result<StreamInfo> {
                info_of(pool, n, stream).await.map_err(db("reading a stream's state"))
            }

            pub(crate) async fn read_stream(
                pool: &Pool,
                n: &Names,
                stream: &str,
                read: ReadStream,
            ) -> Result<Vec<RecordedEvent>> {
                let mut conn = pool.acquire().await.map_err(db("reading a stream"))?;
                let info = info_of(&mut *conn, n, stream).await.map_err(db("reading a stream"))?;
                if info.tombstoned {
                    return Err(Error::StreamTombstoned { stream: stream.to_owned() });
                }
                if info.deleted || info.version.is_none() {
                    return Ok(Vec::new());
                }
                let (lo, hi) = read.bounds(info.visible_from);
                if lo > hi || read.max_count == 0 {
                    return Ok(Vec::new());
                }
                let order = match read.direction {
                    Direction::Forward => "ASC",
                    Direction::Backward => "DESC",
                };
                let sql = n.sql(&format!(
                    "SELECT {} FROM {} WHERE stream = ? AND version >= ? AND version <= ? \
                     AND recorded_at <= ? ORDER BY version {order} LIMIT ?",
                    cols(n),
                    n.events
                ));
                let rows: Vec<EventRow> = sqlx::query_as(&sql)
                    .bind(stream)
                    .bind(lo as i64)
                    .bind(hi as i64)
                    .bind(read.time_bound_micros())
                    .bind(read.limit())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db("reading a stream"))?;
                rows.into_iter().map(decode_row).collect()
            }

            pub(crate) async fn read_all(
                pool: &Pool,
                n: &Names,
                after: LogPosition,
                filter: &StreamFilter,
                limit: usize,
            ) -> Result<Vec<RecordedEvent>> {
                let like = filter.like();
                let cat = if like.is_some() { " AND stream LIKE ? ESCAPE '!'" } else { "" };
                let (after_clause, order) = n.log_order();
                let sql = format!(
                    "SELECT {} FROM {} WHERE {after_clause}{cat} ORDER BY {order} LIMIT ?",
                    cols(n),
                    n.events
                );
                let sql = n.sql(&sql);
                let mut q = sqlx::query_as::<_, EventRow>(&sql).bind(after.commit).bind(after.position);
                if let Some(like) = like {
                    q = q.bind(like);
                }
                let rows = q
                    .bind(limit.min(i64::MAX as usize) as i64)
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading the global log"))?;
                rows.into_iter().map(decode_row).collect()
            }

            async fn lifecycle(
                pool: &Pool,
                n: &Names,
                stream: &str,
                expected: Option<ExpectedVersion>,
                op: Lifecycle,
            ) -> Result<()> {
                let what = "changing a stream's lifecycle";
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let res: sqlx::Result<Result<()>> = async {
                        let mut tx: Tx = pool.begin().await?;
                        let (version, visible, state) = lock_stream(&mut tx, n, stream).await?;
                        if state == STATE_TOMBSTONED {
                            return Ok(Err(Error::StreamTombstoned { stream: stream.to_owned() }));
                        }
                        let actual = (version > 0).then_some(version as u64);
                        if let Some(expected) = expected {
                            if !expected.accepts(actual) {
                                return Ok(Err(Error::Conflict { stream: stream.to_owned(), expected, actual }));
                            }
                        }
                        let (e, s) = (&n.events, &n.streams);
                        match op {
                            Lifecycle::Delete => {
                                sqlx::query(&n.sql(&format!(
                                    "UPDATE {s} SET state = ?, visible_from = ? WHERE stream = ?"
                                )))
                                .bind(STATE_DELETED)
                                .bind(version + 1)
                                .bind(stream)
                                .execute(&mut *tx)
                                .await?;
                            }
                            Lifecycle::Truncate(before) => {
                                sqlx::query(&n.sql(&format!("DELETE FROM {e} WHERE stream = ? AND version < ?")))
                                    .bind(stream)
                                    .bind(before as i64)
                                    .execute(&mut *tx)
                                    .await?;
                                sqlx::query(&n.sql(&format!("UPDATE {s} SET visible_from = ? WHERE stream = ?")))
                                    .bind(visible.max(before as i64))
                                    .bind(stream)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            Lifecycle::Tombstone => {
                                sqlx::query(&n.sql(&format!("DELETE FROM {e} WHERE stream = ?")))
                                    .bind(stream)
                                    .execute(&mut *tx)
                                    .await?;
                                sqlx::query(&n.sql(&format!("DELETE FROM {} WHERE stream = ?", n.snapshots)))
                                    .bind(stream)
                                    .execute(&mut *tx)
                                    .await?;
                                sqlx::query(&n.sql(&format!("UPDATE {s} SET state = ? WHERE stream = ?")))
                                    .bind(STATE_TOMBSTONED)
                                    .bind(stream)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                        }
                        tx.commit().await?;
                        Ok(Ok(()))
                    }
                    .await;
                    match res {
                        Ok(r) => return r,
                        Err(e) if crate::sql::imp::transient(&e) && attempt < 20 => {
                            tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                        }
                        Err(e) => return Err(Error::db(what, e)),
                    }
                }
            }

            pub(crate) use crate::sql::Lifecycle;

            pub(crate) async fn change(
                pool: &Pool,
                n: &Names,
                stream: &str,
                expected: Option<ExpectedVersion>,
                op: Lifecycle,
            ) -> Result<()> {
                lifecycle(pool, n, stream, expected, op).await
            }

            pub(crate) async fn save_snapshot(pool: &Pool, n: &Names, r: &SnapshotRecord) -> Result<()> {
                let f = db("saving a snapshot");
                let mut tx: Tx = pool.begin().await.map_err(db("saving a snapshot"))?;
                let res: sqlx::Result<()> = async {
                    sqlx::query(&n.sql(&format!("DELETE FROM {} WHERE stream = ?", n.snapshots)))
                        .bind(&r.stream)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(&n.sql(&format!(
                        "INSERT INTO {} (stream, version, schema_version, payload, recorded_at) VALUES (?, ?, ?, ?, ?)",
                        n.snapshots
                    )))
                    .bind(&r.stream)
                    .bind(r.version as i64)
                    .bind(r.schema_version as i64)
                    .bind(r.payload.as_ref())
                    .bind(to_micros(r.recorded_at))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                }
                .await;
                res.map_err(f)
            }

            pub(crate) async fn load_snapshot(pool: &Pool, n: &Names, stream: &str) -> Result<Option<SnapshotRecord>> {
                let row: Option<(i64, i64, Vec<u8>, i64)> = sqlx::query_as(&n.sql(&format!(
                    "SELECT version, schema_version, payload, recorded_at FROM {} WHERE stream = ?",
                    n.snapshots
                )))
                .bind(stream)
                .fetch_optional(pool)
                .await
                .map_err(db("loading a snapshot"))?;
                Ok(row.map(|(version, schema_version, payload, at)| SnapshotRecord {
                    stream: stream.to_owned(),
                    version: version as u64,
                    schema_version: schema_version as u32,
                    payload: payload.into(),
                    recorded_at: crate::event::from_micros(at),
                }))
            }

            pub(crate) async fn load_checkpoint(pool: &Pool, n: &Names, name: &str) -> Result<Option<LogPosition>> {
                let row: Option<(i64, i64)> = sqlx::query_as(&n.sql(&format!(
                    "SELECT commit_key, position FROM {} WHERE projection = ?",
                    n.checkpoints
                )))
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db("loading a checkpoint"))?;
                Ok(row.map(|(commit, position)| LogPosition { commit, position }))
            }

            async fn save_checkpoint(tx: &mut Tx, n: &Names, name: &str, at: LogPosition) -> sqlx::Result<()> {
                let sql = n.sql(&format!(
                    "INSERT INTO {} (projection, commit_key, position) VALUES (?, ?, ?){}",
                    n.checkpoints,
                    n.upsert("projection", &["commit_key", "position"])
                ));
                sqlx::query(&sql).bind(name).bind(at.commit).bind(at.position).execute(&mut **tx).await?;
                Ok(())
            }

            pub(crate) async fn apply_projection(
                pool: &Pool,
                n: &Names,
                projection: &dyn Projection,
                events: &[RecordedEvent],
            ) -> Result<BatchOutcome> {
                let f = || db("applying a projection");
                let mut upto = events.len();
                let mut failed = None;
                // A failed statement aborts a PostgreSQL transaction, so a batch with a failing
                // event is rolled back and the events before it are applied again on their own.
                while upto > 0 {
                    let mut tx: Tx = pool.begin().await.map_err(f())?;
                    let mut bad = None;
                    for (i, e) in events[..upto].iter().enumerate() {
                        let mut ptx = $txvariant(&mut *tx);
                        if let Err(err) = projection.apply(&mut ptx, e).await {
                            bad = Some((i, err));
                            break;
                        }
                    }
                    match bad {
                        None => {
                            save_checkpoint(&mut tx, n, projection.name(), events[upto - 1].position)
                                .await
                                .map_err(f())?;
                            tx.commit().await.map_err(f())?;
                            return Ok(BatchOutcome { applied: upto, failed });
                        }
                        Some((i, err)) => {
                            tx.rollback().await.map_err(f())?;
                            failed = Some(err);
                            upto = i;
                        }
                    }
                }
                Ok(BatchOutcome { applied: 0, failed })
            }

            pub(crate) async fn dead_letter(
                pool: &Pool,
                n: &Names,
                projection: &str,
                e: &RecordedEvent,
                error: &str,
            ) -> Result<()> {
                let res: sqlx::Result<()> = async {
                    let mut tx: Tx = pool.begin().await?;
                    sqlx::query(&n.sql(&format!(
                        "INSERT INTO {} (projection, commit_key, position, stream, version, event_id, event_type, \
                         schema_version, payload, metadata, recorded_at, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        n.dead
                    )))
                    .bind(projection)
                    .bind(e.position.commit)
                    .bind(e.position.position)
                    .bind(&e.stream)
                    .bind(e.version as i64)
                    .bind(e.id.to_string())
                    .bind(&e.event_type)
                    .bind(e.schema_version as i64)
                    .bind(e.payload.as_ref())
                    .bind(e.metadata.to_json())
                    .bind(to_micros(e.recorded_at))
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                    save_checkpoint(&mut tx, n, projection, e.position).await?;
                    tx.commit().await
                }
                .await;
                res.map_err(db("dead-lettering an event"))
            }

            pub(crate) async fn dead_letters(
                pool: &Pool,
                n: &Names,
                projection: &str,
            ) -> Result<Vec<(RecordedEvent, String)>> {
                let rows: Vec<(i64, i64, String, i64, String, String, i64, Vec<u8>, String, i64, String)> =
                    sqlx::query_as(&n.sql(&format!(
                        "SELECT commit_key, {}, {} FROM {} WHERE projection = ? ORDER BY id",
                        event_cols(n),
                        n.text("error"),
                        n.dead
                    )))
                    .bind(projection)
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading dead letters"))?;
                rows.into_iter()
                    .map(|(c, p, s, v, id, t, sv, pl, md, at, err)| {
                        Ok((decode_row((c, p, s, v, id, t, sv, pl, md, at))?, err))
                    })
                    .collect()
            }

            pub(crate) async fn reset_projection(pool: &Pool, n: &Names, projection: &dyn Projection) -> Result<()> {
                let f = || db("resetting a projection");
                let mut tx: Tx = pool.begin().await.map_err(f())?;
                let mut ptx = $txvariant(&mut *tx);
                projection.reset(&mut ptx).await.map_err(|e| Error::Config(format!(
                    "resetting projection {:?}: {e}",
                    projection.name()
                )))?;
                sqlx::query(&n.sql(&format!("DELETE FROM {} WHERE projection = ?", n.checkpoints)))
                    .bind(projection.name())
                    .execute(&mut *tx)
                    .await
                    .map_err(f())?;
                tx.commit().await.map_err(f())
            }

        }
    };
}

#[cfg(feature = "postgres")]
sql_backend!(
    pg,
    sqlx::Postgres,
    crate::projection::ProjectionTx::Postgres
);
#[cfg(feature = "mysql")]
sql_backend!(my, sqlx::MySql, crate::projection::ProjectionTx::MySql);
#[cfg(feature = "sqlite")]
sql_backend!(lite, sqlx::Sqlite, crate::projection::ProjectionTx::Sqlite);
