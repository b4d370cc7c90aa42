//! The store's tables, their (validated, quoted) names, and every difference between the SQL
//! dialects, each stated once: the DDL's column types, quoting, placeholders, upserts, the
//! commit-order key, and how positions and stream versions are kept.

use tidemill_sql::Backend;

use crate::error::Result;
use crate::names::validate_prefix;

/// Quoted table names derived from a validated prefix, and the dialect of their database.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) backend: Backend,
    pub(crate) prefix: String,
    pub(crate) events: String,
    pub(crate) streams: String,
    pub(crate) snapshots: String,
    pub(crate) checkpoints: String,
    pub(crate) dead: String,
    pub(crate) seq: String,
}

impl Names {
    pub(crate) fn new(backend: Backend, prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        let q = |name: &str| quote(backend, &format!("{prefix}{name}"));
        Ok(Self {
            backend,
            prefix: prefix.to_owned(),
            events: q("events"),
            streams: q("streams"),
            snapshots: q("snapshots"),
            checkpoints: q("checkpoints"),
            dead: q("dead_letters"),
            seq: q("sequence"),
        })
    }

    /// Rewrites `?` placeholders to `$1, $2, ...` for PostgreSQL.
    pub(crate) fn sql(&self, text: &str) -> String {
        if self.backend != Backend::Postgres {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The commit-order key of an event row: PostgreSQL's transaction id, 0 elsewhere (where
    /// positions are allocated in commit order).
    pub(crate) fn commit_col(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "tx_id",
            Backend::MySql => "CAST(0 AS SIGNED)",
            Backend::Sqlite => "0",
        }
    }

    /// The global log's condition on `(commit, position)` placeholders, and its order.
    /// PostgreSQL reads in `(tx_id, position)` order and only below the oldest running
    /// transaction, so no event can commit behind a reader; elsewhere positions are
    /// allocated in commit order.
    pub(crate) fn log_order(&self) -> (&'static str, &'static str) {
        match self.backend {
            Backend::Postgres => (
                "(tx_id, position) > (?, ?) \
                 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                "tx_id, position",
            ),
            _ => ("? >= 0 AND position > ?", "position"),
        }
    }

    /// A text column as the driver decodes it: binary collations (MySQL, chosen for
    /// case-sensitive names) are reported as bytes, so cast them back to text.
    pub(crate) fn text(&self, col: &str) -> String {
        if self.backend == Backend::MySql {
            format!("CAST({col} AS CHAR)")
        } else {
            col.to_owned()
        }
    }

    /// The clause that turns an `INSERT` into an upsert on `key`, setting `cols` to the
    /// inserted values.
    pub(crate) fn upsert(&self, key: &str, cols: &[&str]) -> String {
        let (head, new) = match self.backend {
            Backend::MySql => (" ON DUPLICATE KEY UPDATE ".to_owned(), "VALUES({c})"),
            _ => (
                format!(" ON CONFLICT ({key}) DO UPDATE SET "),
                "excluded.{c}",
            ),
        };
        let sets: Vec<String> = cols
            .iter()
            .map(|c| format!("{c} = {}", new.replace("{c}", c)))
            .collect();
        head + &sets.join(", ")
    }

    /// Whether `INSERT ... RETURNING` exists (not on MariaDB/MySQL, which reads the row back
    /// with `SELECT ... FOR UPDATE`).
    pub(crate) fn insert_returning(&self) -> bool {
        self.backend != Backend::MySql
    }

    /// MariaDB/MySQL: positions come from the sequence row, locked until commit, so they
    /// become visible in order (elsewhere the events table allocates them).
    pub(crate) fn positions_from_sequence(&self) -> bool {
        self.backend == Backend::MySql
    }

    /// SQLite: a trigger moves the stream row to each inserted event's version, so an
    /// append is one statement (the insert, guarded by the stream row's version). Elsewhere
    /// the append updates the row itself.
    pub(crate) fn stream_row_by_trigger(&self) -> bool {
        self.backend == Backend::Sqlite
    }
}

/// `name` quoted for `backend`. Names are built from a prefix of [A-Za-z0-9_] only, so
/// quoting cannot be escaped; it keeps reserved words and case intact.
fn quote(backend: Backend, name: &str) -> String {
    match backend {
        Backend::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

/// The column types and table options of one database.
struct Types {
    int: &'static str,
    /// Names that are keys or indexed (MySQL indexes need a bounded length).
    key: &'static str,
    /// Event ids (UUID text).
    id: &'static str,
    /// Unbounded text.
    text: &'static str,
    blob: &'static str,
    /// A generated primary key.
    serial: &'static str,
    /// After each `CREATE TABLE (...)`.
    options: &'static str,
}

const MYSQL_OPTIONS: &str = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

fn types(backend: Backend) -> Types {
    match backend {
        Backend::Postgres => Types {
            int: "BIGINT",
            key: "TEXT",
            id: "TEXT",
            text: "TEXT",
            blob: "BYTEA",
            serial: "BIGSERIAL PRIMARY KEY",
            options: "",
        },
        Backend::MySql => Types {
            int: "BIGINT",
            key: "VARCHAR(255)",
            id: "CHAR(36)",
            text: "LONGTEXT",
            blob: "LONGBLOB",
            serial: "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            options: MYSQL_OPTIONS,
        },
        Backend::Sqlite => Types {
            int: "INTEGER",
            key: "TEXT",
            id: "TEXT",
            text: "TEXT",
            blob: "BLOB",
            serial: "INTEGER PRIMARY KEY AUTOINCREMENT",
            options: "",
        },
    }
}

/// The statements that create the store's tables on `backend` with table prefix `prefix`,
/// for users who run migrations themselves (then set
/// [`StoreConfig::initialize_schema`](crate::StoreConfig::initialize_schema)`(false)`).
/// Each is idempotent.
///
/// ```
/// use tidemill_eventsourcing::schema_sql;
/// use tidemill_sql::Backend;
/// let ddl = schema_sql(Backend::Postgres, "es_").unwrap();
/// assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS \"es_events\""));
/// assert!(schema_sql(Backend::Sqlite, "x\"; DROP").is_err());
/// ```
pub fn schema_sql(backend: Backend, prefix: &str) -> Result<Vec<String>> {
    let n = Names::new(backend, prefix)?;
    let Types {
        int,
        key,
        id,
        text,
        blob,
        serial,
        options,
    } = types(backend);
    let index = |name: &str| quote(backend, &format!("{prefix}{name}"));
    let (by_version, by_id) = (index("events_stream"), index("events_id"));
    let table = |name: &str, cols: &[String]| {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} (\n  {}\n){options}",
            cols.join(",\n  ")
        )
    };
    let event_cols = |first: &[String]| {
        let mut cols = first.to_vec();
        cols.extend([
            format!("stream {key} NOT NULL"),
            format!("version {int} NOT NULL"),
            format!("event_id {id} NOT NULL"),
            format!("event_type {key} NOT NULL"),
            format!("schema_version {int} NOT NULL"),
            format!("payload {blob} NOT NULL"),
            format!("metadata {text} NOT NULL"),
            format!("recorded_at {int} NOT NULL"),
        ]);
        cols
    };
    let (e, s, sq) = (&n.events, &n.streams, &n.seq);

    let mut ddl = Vec::new();
    match backend {
        // tx_id is the appending transaction's id: the global log is read in
        // (tx_id, position) order and only below the oldest running transaction, so an event
        // committed late is never behind a reader's checkpoint.
        Backend::Postgres => ddl.push(table(
            e,
            &event_cols(&[
                format!("position {serial}"),
                format!("tx_id {int} NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)"),
            ]),
        )),
        // Positions come from the one sequence row, locked by each appending transaction
        // until it commits: positions become visible in order and never skip. MySQL has no
        // CREATE INDEX IF NOT EXISTS, so the indexes are part of the table.
        Backend::MySql => {
            let mut cols = event_cols(&[format!("position {int} NOT NULL PRIMARY KEY")]);
            cols.push(format!("UNIQUE KEY {by_version} (stream, version)"));
            cols.push(format!("UNIQUE KEY {by_id} (event_id)"));
            ddl.push(table(e, &cols));
        }
        // One writer at a time, holding the lock until commit: AUTOINCREMENT positions
        // become visible in order.
        Backend::Sqlite => ddl.push(table(e, &event_cols(&[format!("position {serial}")]))),
    }
    if backend != Backend::MySql {
        ddl.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {by_version} ON {e} (stream, version)"
        ));
        ddl.push(format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {by_id} ON {e} (event_id)"
        ));
    }
    if backend == Backend::Postgres {
        ddl.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {e} (tx_id, position)",
            index("events_log")
        ));
    }
    ddl.push(table(
        s,
        &[
            format!("stream {key} PRIMARY KEY"),
            format!("version {int} NOT NULL DEFAULT 0"),
            format!("visible_from {int} NOT NULL DEFAULT 1"),
            format!("state {int} NOT NULL DEFAULT 0"),
        ],
    ));
    if n.stream_row_by_trigger() {
        // Every inserted event moves its stream's row to its version (and back to live
        // after a soft delete), within the inserting statement.
        ddl.push(format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER INSERT ON {e} FOR EACH ROW BEGIN \
             INSERT INTO {s} (stream, version, state) VALUES (NEW.stream, NEW.version, {live}){}; END",
            index("events_stream_version"),
            n.upsert("stream", &["version", "state"]),
            live = crate::event::STATE_LIVE,
        ));
    }
    if n.positions_from_sequence() {
        ddl.push(table(
            sq,
            &[
                "id INT NOT NULL PRIMARY KEY".to_owned(),
                format!("next_position {int} NOT NULL"),
            ],
        ));
        ddl.push(format!(
            "INSERT IGNORE INTO {sq} (id, next_position) VALUES (1, 0)"
        ));
    }
    ddl.push(table(
        &n.snapshots,
        &[
            format!("stream {key} PRIMARY KEY"),
            format!("version {int} NOT NULL"),
            format!("schema_version {int} NOT NULL"),
            format!("payload {blob} NOT NULL"),
            format!("recorded_at {int} NOT NULL"),
        ],
    ));
    ddl.push(table(
        &n.checkpoints,
        &[
            format!("projection {key} PRIMARY KEY"),
            format!("commit_key {int} NOT NULL"),
            format!("position {int} NOT NULL"),
        ],
    ));
    let mut dead = vec![
        format!("id {serial}"),
        format!("projection {key} NOT NULL"),
        format!("commit_key {int} NOT NULL"),
        format!("position {int} NOT NULL"),
    ];
    dead.extend(event_cols(&[]));
    dead.push(format!("error {text} NOT NULL"));
    ddl.push(table(&n.dead, &dead));
    Ok(ddl)
}
