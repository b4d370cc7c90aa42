//! The store's tables, their (validated, quoted) names and the DDL of each database.

use tidemill_sql::Backend;

use crate::error::Result;
use crate::names::validate_prefix;

/// Quoted table names derived from a validated prefix.
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
        // The prefix is [A-Za-z0-9_] only, so quoting cannot be escaped; it keeps reserved
        // words and case intact.
        let q = |name: &str| match backend {
            Backend::MySql => format!("`{prefix}{name}`"),
            _ => format!("\"{prefix}{name}\""),
        };
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
    let (e, s, sn, c, d, sq) = (
        &n.events,
        &n.streams,
        &n.snapshots,
        &n.checkpoints,
        &n.dead,
        &n.seq,
    );
    let p = prefix;
    Ok(match backend {
        Backend::Postgres => vec![
            // tx_id is the appending transaction's id: the global log is read in
            // (tx_id, position) order and only below the oldest running transaction, so an
            // event committed late is never behind a reader's checkpoint.
            format!(
                "CREATE TABLE IF NOT EXISTS {e} (\n  position BIGSERIAL PRIMARY KEY,\n  \
                 tx_id BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),\n  \
                 stream TEXT NOT NULL,\n  version BIGINT NOT NULL,\n  event_id TEXT NOT NULL,\n  \
                 event_type TEXT NOT NULL,\n  schema_version BIGINT NOT NULL,\n  payload BYTEA NOT NULL,\n  \
                 metadata TEXT NOT NULL,\n  recorded_at BIGINT NOT NULL\n)"
            ),
            format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{p}events_stream\" ON {e} (stream, version)"),
            format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{p}events_id\" ON {e} (event_id)"),
            format!("CREATE INDEX IF NOT EXISTS \"{p}events_log\" ON {e} (tx_id, position)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\n  stream TEXT PRIMARY KEY,\n  \
                 version BIGINT NOT NULL DEFAULT 0,\n  visible_from BIGINT NOT NULL DEFAULT 1,\n  \
                 state BIGINT NOT NULL DEFAULT 0\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {sn} (\n  stream TEXT PRIMARY KEY,\n  version BIGINT NOT NULL,\n  \
                 schema_version BIGINT NOT NULL,\n  payload BYTEA NOT NULL,\n  recorded_at BIGINT NOT NULL\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {c} (\n  projection TEXT PRIMARY KEY,\n  \
                 commit_key BIGINT NOT NULL,\n  position BIGINT NOT NULL\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  id BIGSERIAL PRIMARY KEY,\n  projection TEXT NOT NULL,\n  \
                 commit_key BIGINT NOT NULL,\n  position BIGINT NOT NULL,\n  stream TEXT NOT NULL,\n  \
                 version BIGINT NOT NULL,\n  event_id TEXT NOT NULL,\n  event_type TEXT NOT NULL,\n  \
                 schema_version BIGINT NOT NULL,\n  payload BYTEA NOT NULL,\n  metadata TEXT NOT NULL,\n  \
                 recorded_at BIGINT NOT NULL,\n  error TEXT NOT NULL\n)"
            ),
        ],
        Backend::MySql => vec![
            // Positions come from the one sequence row, locked by each appending transaction
            // until it commits: positions become visible in order and never skip.
            format!(
                "CREATE TABLE IF NOT EXISTS {e} (\n  position BIGINT NOT NULL PRIMARY KEY,\n  \
                 stream VARCHAR(255) NOT NULL,\n  version BIGINT NOT NULL,\n  event_id CHAR(36) NOT NULL,\n  \
                 event_type VARCHAR(255) NOT NULL,\n  schema_version BIGINT NOT NULL,\n  payload LONGBLOB NOT NULL,\n  \
                 metadata LONGTEXT NOT NULL,\n  recorded_at BIGINT NOT NULL,\n  \
                 UNIQUE KEY `{p}events_stream` (stream, version),\n  UNIQUE KEY `{p}events_id` (event_id)\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\n  stream VARCHAR(255) NOT NULL PRIMARY KEY,\n  \
                 version BIGINT NOT NULL DEFAULT 0,\n  visible_from BIGINT NOT NULL DEFAULT 1,\n  \
                 state BIGINT NOT NULL DEFAULT 0\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {sq} (\n  id INT NOT NULL PRIMARY KEY,\n  \
                 next_position BIGINT NOT NULL\n) ENGINE=InnoDB"
            ),
            format!("INSERT IGNORE INTO {sq} (id, next_position) VALUES (1, 0)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {sn} (\n  stream VARCHAR(255) NOT NULL PRIMARY KEY,\n  version BIGINT NOT NULL,\n  \
                 schema_version BIGINT NOT NULL,\n  payload LONGBLOB NOT NULL,\n  recorded_at BIGINT NOT NULL\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {c} (\n  projection VARCHAR(255) NOT NULL PRIMARY KEY,\n  \
                 commit_key BIGINT NOT NULL,\n  position BIGINT NOT NULL\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,\n  \
                 projection VARCHAR(255) NOT NULL,\n  commit_key BIGINT NOT NULL,\n  position BIGINT NOT NULL,\n  \
                 stream VARCHAR(255) NOT NULL,\n  version BIGINT NOT NULL,\n  event_id CHAR(36) NOT NULL,\n  \
                 event_type VARCHAR(255) NOT NULL,\n  schema_version BIGINT NOT NULL,\n  payload LONGBLOB NOT NULL,\n  \
                 metadata LONGTEXT NOT NULL,\n  recorded_at BIGINT NOT NULL,\n  error LONGTEXT NOT NULL\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
        ],
        Backend::Sqlite => vec![
            // One writer at a time, holding the lock until commit: AUTOINCREMENT positions
            // become visible in order.
            format!(
                "CREATE TABLE IF NOT EXISTS {e} (\n  position INTEGER PRIMARY KEY AUTOINCREMENT,\n  \
                 stream TEXT NOT NULL,\n  version INTEGER NOT NULL,\n  event_id TEXT NOT NULL,\n  \
                 event_type TEXT NOT NULL,\n  schema_version INTEGER NOT NULL,\n  payload BLOB NOT NULL,\n  \
                 metadata TEXT NOT NULL,\n  recorded_at INTEGER NOT NULL\n)"
            ),
            format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{p}events_stream\" ON {e} (stream, version)"),
            format!("CREATE UNIQUE INDEX IF NOT EXISTS \"{p}events_id\" ON {e} (event_id)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\n  stream TEXT PRIMARY KEY,\n  \
                 version INTEGER NOT NULL DEFAULT 0,\n  visible_from INTEGER NOT NULL DEFAULT 1,\n  \
                 state INTEGER NOT NULL DEFAULT 0\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {sn} (\n  stream TEXT PRIMARY KEY,\n  version INTEGER NOT NULL,\n  \
                 schema_version INTEGER NOT NULL,\n  payload BLOB NOT NULL,\n  recorded_at INTEGER NOT NULL\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {c} (\n  projection TEXT PRIMARY KEY,\n  \
                 commit_key INTEGER NOT NULL,\n  position INTEGER NOT NULL\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n  projection TEXT NOT NULL,\n  \
                 commit_key INTEGER NOT NULL,\n  position INTEGER NOT NULL,\n  stream TEXT NOT NULL,\n  \
                 version INTEGER NOT NULL,\n  event_id TEXT NOT NULL,\n  event_type TEXT NOT NULL,\n  \
                 schema_version INTEGER NOT NULL,\n  payload BLOB NOT NULL,\n  metadata TEXT NOT NULL,\n  \
                 recorded_at INTEGER NOT NULL,\n  error TEXT NOT NULL\n)"
            ),
        ],
    })
}
