//! Table names, name validation and the DDL each database needs.
//!
//! All topics share one messages table with a `topic` column (a documented choice: the schema is
//! fixed, so migrations are written once, and a topic name is always a bound parameter, never
//! part of the SQL text). Names that do go into SQL text (the table prefix) are validated and
//! quoted.

use tidemill::{Error, Result};

use crate::backend::Backend;

/// The longest table prefix accepted, leaving room for the suffixes within every database's
/// identifier limit (PostgreSQL: 63 bytes).
const MAX_PREFIX: usize = 40;

/// The names of the adapter's tables, derived from a validated prefix.
///
/// ```
/// let tables = tidemill_sql::Tables::new("app_").unwrap();
/// assert_eq!(tables.messages_table(), "app_messages");
/// assert!(tidemill_sql::Tables::new("x\"; DROP TABLE y; --").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    prefix: String,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            prefix: "tidemill_".to_owned(),
        }
    }
}

impl Tables {
    /// Tables named `<prefix>messages`, `<prefix>offsets`, `<prefix>sequences`, `<prefix>dedup`.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(Error::Config(format!(
                "invalid table prefix {prefix:?}: use 1 to {MAX_PREFIX} ASCII letters, digits or '_', not starting with a digit"
            )));
        }
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The messages table's name (unquoted).
    pub fn messages_table(&self) -> String {
        format!("{}messages", self.prefix)
    }

    /// The consumer-group offsets table's name (unquoted).
    pub fn offsets_table(&self) -> String {
        format!("{}offsets", self.prefix)
    }

    /// The per-topic sequence table's name (unquoted; MariaDB/MySQL only).
    pub fn sequences_table(&self) -> String {
        format!("{}sequences", self.prefix)
    }

    /// The deduplication table's name (unquoted).
    pub fn dedup_table(&self) -> String {
        format!("{}dedup", self.prefix)
    }

    /// The PostgreSQL channel publishers `NOTIFY` with the topic as payload.
    pub fn notify_channel(&self) -> String {
        format!("{}messages", self.prefix)
    }

    pub(crate) fn q(&self, backend: Backend, name: &str) -> String {
        // The prefix is validated to [A-Za-z0-9_], so quoting cannot be escaped; quoting keeps
        // reserved words and case intact.
        match backend {
            Backend::MySql => format!("`{name}`"),
            Backend::Postgres | Backend::Sqlite => format!("\"{name}\""),
        }
    }
}

/// Checks a topic name: tidemill's rules ([`tidemill::validate_topic`]) and, because topics end
/// up in table rows, channel payloads and logs, only ASCII letters, digits and `. _ - / :`.
///
/// ```
/// assert!(tidemill_sql::validate_topic("orders.created-v2").is_ok());
/// let err = tidemill_sql::validate_topic("x\"; DROP TABLE y; --").unwrap_err();
/// assert!(err.to_string().contains("invalid topic name"));
/// ```
pub fn validate_topic(topic: &str) -> Result<()> {
    tidemill::validate_topic(topic)?;
    validate_name(topic).map_err(|reason| Error::invalid_topic(topic, reason))
}

/// Checks a consumer group name: the same rules as topics.
pub(crate) fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 {
        return Err(Error::Config(format!(
            "invalid consumer group {group:?}: 1 to 255 bytes"
        )));
    }
    validate_name(group)
        .map_err(|reason| Error::Config(format!("invalid consumer group {group:?}: {reason}")))
}

fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
    {
        Ok(())
    } else {
        Err("only ASCII letters, digits and . _ - / : are allowed")
    }
}

/// The statements that create the adapter's tables on `backend`, for users who manage
/// migrations themselves (turn [`SqlConfig::initialize_schema`](crate::SqlConfig::initialize_schema)
/// off then). Each statement is idempotent (`IF NOT EXISTS`).
///
/// ```
/// use tidemill_sql::{schema_sql, Backend, Tables};
/// for statement in schema_sql(Backend::Postgres, &Tables::default()) {
///     println!("{statement};");
/// }
/// ```
pub fn schema_sql(backend: Backend, tables: &Tables) -> Vec<String> {
    let m = tables.q(backend, &tables.messages_table());
    let o = tables.q(backend, &tables.offsets_table());
    let s = tables.q(backend, &tables.sequences_table());
    let d = tables.q(backend, &tables.dedup_table());
    let p = tables.prefix();
    match backend {
        Backend::Postgres => vec![
            // tx_id is the inserting transaction's id: readers only pass rows whose transaction
            // is older than every running one, so a row committed late is never skipped.
            format!(
                "CREATE TABLE IF NOT EXISTS {m} (\n  \
                 position BIGSERIAL PRIMARY KEY,\n  \
                 topic TEXT NOT NULL,\n  \
                 tx_id BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),\n  \
                 message_id TEXT NOT NULL,\n  \
                 payload BYTEA NOT NULL,\n  \
                 metadata JSONB NOT NULL,\n  \
                 created_at BIGINT NOT NULL,\n  \
                 deliver_at BIGINT NOT NULL,\n  \
                 locked_until BIGINT\n)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS \"{p}messages_log\" ON {m} (topic, tx_id, position)"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{p}messages_queue\" ON {m} (topic, position)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {o} (\n  \
                 consumer_group TEXT NOT NULL,\n  \
                 topic TEXT NOT NULL,\n  \
                 tx_id BIGINT NOT NULL DEFAULT 0,\n  \
                 position BIGINT NOT NULL DEFAULT 0,\n  \
                 owner TEXT,\n  \
                 lease_until BIGINT NOT NULL DEFAULT 0,\n  \
                 PRIMARY KEY (consumer_group, topic)\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  \
                 dedup_key TEXT PRIMARY KEY,\n  \
                 created_at BIGINT NOT NULL\n)"
            ),
        ],
        Backend::MySql => vec![
            // Positions come from a per-topic sequence row that each publishing transaction
            // locks until it commits, so positions become visible in order and never skip.
            format!(
                "CREATE TABLE IF NOT EXISTS {m} (\n  \
                 topic VARCHAR(255) NOT NULL,\n  \
                 position BIGINT NOT NULL,\n  \
                 message_id VARCHAR(255) NOT NULL,\n  \
                 payload LONGBLOB NOT NULL,\n  \
                 metadata LONGTEXT NOT NULL,\n  \
                 created_at BIGINT NOT NULL,\n  \
                 deliver_at BIGINT NOT NULL,\n  \
                 locked_until BIGINT NULL,\n  \
                 PRIMARY KEY (topic, position)\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\n  \
                 topic VARCHAR(255) NOT NULL PRIMARY KEY,\n  \
                 next_position BIGINT NOT NULL\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {o} (\n  \
                 consumer_group VARCHAR(255) NOT NULL,\n  \
                 topic VARCHAR(255) NOT NULL,\n  \
                 tx_id BIGINT NOT NULL DEFAULT 0,\n  \
                 position BIGINT NOT NULL DEFAULT 0,\n  \
                 owner VARCHAR(64) NULL,\n  \
                 lease_until BIGINT NOT NULL DEFAULT 0,\n  \
                 PRIMARY KEY (consumer_group, topic)\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  \
                 dedup_key VARCHAR(255) NOT NULL PRIMARY KEY,\n  \
                 created_at BIGINT NOT NULL\n\
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
        ],
        Backend::Sqlite => vec![
            // SQLite has one writer at a time, holding the write lock until commit, so
            // AUTOINCREMENT positions become visible in order.
            format!(
                "CREATE TABLE IF NOT EXISTS {m} (\n  \
                 position INTEGER PRIMARY KEY AUTOINCREMENT,\n  \
                 topic TEXT NOT NULL,\n  \
                 message_id TEXT NOT NULL,\n  \
                 payload BLOB NOT NULL,\n  \
                 metadata TEXT NOT NULL,\n  \
                 created_at INTEGER NOT NULL,\n  \
                 deliver_at INTEGER NOT NULL,\n  \
                 locked_until INTEGER\n)"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{p}messages_topic\" ON {m} (topic, position)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {o} (\n  \
                 consumer_group TEXT NOT NULL,\n  \
                 topic TEXT NOT NULL,\n  \
                 tx_id INTEGER NOT NULL DEFAULT 0,\n  \
                 position INTEGER NOT NULL DEFAULT 0,\n  \
                 owner TEXT,\n  \
                 lease_until INTEGER NOT NULL DEFAULT 0,\n  \
                 PRIMARY KEY (consumer_group, topic)\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\n  \
                 dedup_key TEXT PRIMARY KEY,\n  \
                 created_at INTEGER NOT NULL\n)"
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_injection() {
        for bad in ["x\"; DROP TABLE y; --", "a b", "a'b", "a`b", "ü", "a;b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
        assert!(Tables::new("9x").is_err());
        assert!(Tables::new("a-b").is_err());
    }
}
