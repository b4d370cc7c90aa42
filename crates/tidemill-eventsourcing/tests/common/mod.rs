//! What the tests on the shared servers have in common: the URLs, and a guard that drops the
//! tables a test created (every table whose name starts with one of its unique prefixes),
//! when the test ends or fails.

#![allow(dead_code)]

use parking_lot::Mutex;
use tidemill_sql::{SqlConfig, SqlPool};

/// The local PostgreSQL (`TIDEMILL_SQL_PG_URL`).
pub fn pg_url() -> String {
    std::env::var("TIDEMILL_SQL_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The local MariaDB (`TIDEMILL_SQL_MYSQL_URL`).
pub fn mysql_url() -> String {
    std::env::var("TIDEMILL_SQL_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A prefix no other test uses: `<tag><10 hex digits>_`.
pub fn unique_prefix(tag: &str) -> String {
    format!("{tag}{}_", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Drops every table of the database at `url` whose name starts with one of the prefixes it
/// was given, when dropped (also while a failing test unwinds). SQLite needs none: its file
/// lives in a temporary directory.
pub struct DropTables {
    url: String,
    prefixes: Mutex<Vec<String>>,
}

impl DropTables {
    /// A guard for tables on `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefixes: Mutex::new(Vec::new()),
        }
    }

    /// Also drops the tables starting with `prefix`; returns it.
    pub fn prefix(&self, prefix: impl Into<String>) -> String {
        let prefix = prefix.into();
        self.prefixes.lock().push(prefix.clone());
        prefix
    }

    /// The prefixes given so far.
    pub fn prefixes(&self) -> Vec<String> {
        self.prefixes.lock().clone()
    }
}

impl Drop for DropTables {
    fn drop(&mut self) {
        let prefixes = std::mem::take(&mut *self.prefixes.lock());
        if prefixes.is_empty() || self.url.starts_with("sqlite") {
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its
        // own with its own runtime does the dropping.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(drop_prefixed(&url, &prefixes))
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("dropping the test's tables failed: {e}"),
            Err(_) => eprintln!("dropping the test's tables panicked"),
        }
    }
}

/// The tables of the database at `url` whose names start with one of `prefixes`.
pub async fn tables_with(url: &str, prefixes: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let pool = connect(url).await?;
    let mut out = Vec::new();
    for p in prefixes {
        let names: Vec<String> = match &pool {
            SqlPool::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables \
                     WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
                )
                .bind(p)
                .fetch_all(pool)
                .await?
            }
            SqlPool::MySql(pool) => {
                sqlx::query_scalar(
                    "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?",
                )
                .bind(p)
                .bind(p)
                .fetch_all(pool)
                .await?
            }
            _ => Vec::new(),
        };
        out.extend(names);
    }
    pool.close().await;
    Ok(out)
}

async fn connect(url: &str) -> Result<SqlPool, sqlx::Error> {
    let config = SqlConfig::from_url(url)
        .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?
        .max_connections(1);
    SqlPool::connect(&config)
        .await
        .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))
}

async fn drop_prefixed(url: &str, prefixes: &[String]) -> Result<(), sqlx::Error> {
    let tables = tables_with(url, prefixes).await?;
    if tables.is_empty() {
        return Ok(());
    }
    let pool = connect(url).await?;
    for t in tables {
        // The names come from the catalog and start with the test's own prefix, which is
        // [A-Za-z0-9_]: quoting them is enough.
        match &pool {
            SqlPool::Postgres(pool) => {
                sqlx::query(&format!("DROP TABLE IF EXISTS \"{t}\" CASCADE"))
                    .execute(pool)
                    .await?;
            }
            SqlPool::MySql(pool) => {
                sqlx::query(&format!("DROP TABLE IF EXISTS `{t}`"))
                    .execute(pool)
                    .await?;
            }
            _ => {}
        }
    }
    pool.close().await;
    Ok(())
}
