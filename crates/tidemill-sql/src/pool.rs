//! [`SqlPool`]: a connection pool to one of the supported databases, and [`SqlConn`]: the
//! connections and transactions the outbox and the deduplication store write through.

use std::collections::HashSet;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use std::str::FromStr;

#[cfg(feature = "sqlite")]
use sqlx::Connection;
use tidemill::{Error, Result};
use tokio::sync::OnceCell;

use crate::config::{redact_url, Backend, SqlConfig};
use crate::row::{Cursor, NewRow, Start, StoredRow};
use crate::schema::{schema_sql, Tables};

/// A pool of connections to PostgreSQL, MariaDB/MySQL or SQLite.
///
/// Build one from a [`SqlConfig`] with [`SqlPool::connect`], or wrap a pool the application
/// already has (`SqlPool::from(pg_pool)`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let config = tidemill_sql::SqlConfig::from_url("sqlite::memory:")?;
/// let pool = tidemill_sql::SqlPool::connect(&config).await?;
/// assert_eq!(pool.backend(), tidemill_sql::Backend::Sqlite);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SqlPool {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// MariaDB or MySQL.
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for SqlPool {
    fn from(pool: sqlx::PgPool) -> Self {
        Self::Postgres(pool)
    }
}

#[cfg(feature = "mysql")]
impl From<sqlx::MySqlPool> for SqlPool {
    fn from(pool: sqlx::MySqlPool) -> Self {
        Self::MySql(pool)
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for SqlPool {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Self::Sqlite(pool)
    }
}

fn connect_error(url: &str, e: sqlx::Error) -> Error {
    Error::Connect {
        address: redact_url(url),
        source: Box::new(crate::SqlError::from(e)),
    }
}

impl SqlPool {
    /// Opens a pool to the database of `config`'s URL. SQLite files are created if missing and
    /// run in WAL mode with the configured busy timeout and `synchronous = NORMAL`.
    pub async fn connect(config: &SqlConfig) -> Result<Self> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| Error::Config("no database URL configured".into()))?;
        let backend = Backend::from_url(url)?;
        crate::config::check_driver_url(backend, url)?;
        match backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let opts = sqlx::postgres::PgConnectOptions::from_str(url)
                    .map_err(|e| connect_error(url, e))?
                    .application_name("tidemill");
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| connect_error(url, e))?;
                Ok(Self::Postgres(pool))
            }
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                let url2 = url.replacen("mariadb://", "mysql://", 1);
                let opts = sqlx::mysql::MySqlConnectOptions::from_str(&url2)
                    .map_err(|e| connect_error(url, e))?;
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(|e| connect_error(url, e))?;
                Ok(Self::MySql(pool))
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| connect_error(url, e))?
                    .create_if_missing(true)
                    .busy_timeout(config.busy_timeout)
                    .synchronous(SqliteSynchronous::Normal);
                let opts = if in_memory {
                    opts
                } else {
                    opts.journal_mode(SqliteJournalMode::Wal)
                };
                let mut pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(if in_memory { 1 } else { config.max_connections })
                    .acquire_timeout(config.acquire_timeout);
                if in_memory {
                    // A private in-memory database lives exactly as long as its one connection.
                    pool = pool
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool = pool
                    .connect_with(opts)
                    .await
                    .map_err(|e| connect_error(url, e))?;
                Ok(Self::Sqlite(pool))
            }
            #[allow(unreachable_patterns)]
            other => Err(Error::Config(format!(
                "support for {other:?} is not compiled in (cargo feature)"
            ))),
        }
    }

    /// Which database this pool talks to.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Self::MySql(_) => Backend::MySql,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Creates the tables once per `once` if `config` allows it (publishers and subscribers of
    /// one [`SqlPubSub`](crate::SqlPubSub) share one `once`).
    pub(crate) async fn ensure_schema(
        &self,
        config: &SqlConfig,
        once: &OnceCell<()>,
    ) -> Result<()> {
        if !config.initialize_schema {
            return Ok(());
        }
        once.get_or_try_init(|| self.create_schema(&config.tables))
            .await
            .map(drop)
    }

    /// Creates the adapter's tables if they are missing (the statements of
    /// [`schema_sql`](crate::schema_sql)).
    pub async fn create_schema(&self, tables: &Tables) -> Result<()> {
        for statement in schema_sql(self.backend(), tables) {
            let res = match self {
                #[cfg(feature = "postgres")]
                Self::Postgres(p) => sqlx::query(&statement).execute(p).await.map(drop),
                #[cfg(feature = "mysql")]
                Self::MySql(p) => sqlx::query(&statement).execute(p).await.map(drop),
                #[cfg(feature = "sqlite")]
                Self::Sqlite(p) => sqlx::query(&statement).execute(p).await.map(drop),
            };
            match res {
                Ok(()) => {}
                // Two processes creating the same table at once on PostgreSQL: one wins, the
                // other sees a unique violation on the catalog; the table exists either way.
                Err(sqlx::Error::Database(db))
                    if db.code().as_deref() == Some("23505")
                        || db.code().as_deref() == Some("42P07") => {}
                Err(e) => return Err(Error::Other(Box::new(crate::SqlError::from(e)))),
            }
        }
        Ok(())
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.close().await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => p.close().await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => p.close().await,
        }
    }

    pub(crate) async fn insert(
        &self,
        tables: &Tables,
        topic: &str,
        batch: &[NewRow],
        now: i64,
    ) -> sqlx::Result<()> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => {
                let mut conn = p.acquire().await?;
                crate::pg::insert(&mut conn, tables, topic, batch, now, false).await?;
                if let Err(e) = crate::pg::notify(&mut conn, tables, topic).await {
                    // The rows are committed; subscribers elsewhere find them by polling.
                    tracing::debug!(topic, "NOTIFY after publishing failed: {e}");
                }
                Ok(())
            }
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::insert_autocommit(p, tables, topic, batch, now).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                if crate::sqlite::needs_tx(batch) {
                    let mut tx = conn.begin().await?;
                    crate::sqlite::insert(&mut tx, tables, topic, batch, now).await?;
                    tx.commit().await
                } else {
                    crate::sqlite::insert(&mut conn, tables, topic, batch, now).await
                }
            }
        }
    }

    pub(crate) async fn fetch(
        &self,
        tables: &Tables,
        topic: &str,
        after: Cursor,
        limit: usize,
    ) -> sqlx::Result<Vec<StoredRow>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::fetch(p, tables, topic, after, limit).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::fetch(p, tables, topic, after, limit).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => crate::sqlite::fetch(p, tables, topic, after, limit).await,
        }
    }

    pub(crate) async fn head(
        &self,
        tables: &Tables,
        topic: &str,
    ) -> sqlx::Result<(Cursor, HashSet<i64>)> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::head(p, tables, topic).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => Ok((crate::mysql::head(p, tables, topic).await?, HashSet::new())),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => Ok((crate::sqlite::head(p, tables, topic).await?, HashSet::new())),
        }
    }

    /// Where a reader starting at `start` begins, and the rows at or past that cursor it must
    /// skip (already committed when it started: PostgreSQL's `End`). An offset or time with
    /// no row that far falls back to the end (PostgreSQL; elsewhere positions are in read
    /// order and an offset is a cursor of its own).
    pub(crate) async fn start_cursor(
        &self,
        tables: &Tables,
        topic: &str,
        start: Start,
    ) -> sqlx::Result<(Cursor, HashSet<i64>)> {
        let found = match (self, start) {
            (_, Start::Beginning) => return Ok((Cursor::default(), HashSet::new())),
            (_, Start::End) => return self.head(tables, topic).await,
            #[cfg(feature = "postgres")]
            (Self::Postgres(p), Start::Position(n)) => {
                crate::pg::before_first(p, tables, topic, crate::pg::FirstBy::Position, n).await?
            }
            #[cfg(feature = "postgres")]
            (Self::Postgres(p), Start::Time(ms)) => {
                crate::pg::before_first(p, tables, topic, crate::pg::FirstBy::CreatedAt, ms).await?
            }
            #[cfg(feature = "mysql")]
            (Self::MySql(p), Start::Time(ms)) => {
                Some(crate::mysql::before_time(p, tables, topic, ms).await?)
            }
            #[cfg(feature = "sqlite")]
            (Self::Sqlite(p), Start::Time(ms)) => {
                Some(crate::sqlite::before_time(p, tables, topic, ms).await?)
            }
            #[allow(unreachable_patterns)]
            (_, Start::Position(n)) => Some(Cursor { tx: 0, pos: n - 1 }),
        };
        match found {
            Some(cursor) => Ok((cursor, HashSet::new())),
            None => self.head(tables, topic).await,
        }
    }

    /// Creates `group`'s offset row for `topic` at `cursor` unless the group has one; whether
    /// it was created.
    pub(crate) async fn offset_if_absent(
        &self,
        tables: &Tables,
        group: &str,
        topic: &str,
        cursor: Cursor,
    ) -> sqlx::Result<bool> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::offset_if_absent(p, tables, group, topic, cursor).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::offset_if_absent(p, tables, group, topic, cursor).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => {
                crate::sqlite::offset_if_absent(p, tables, group, topic, cursor).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn claim(
        &self,
        tables: &Tables,
        group: &str,
        topic: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> sqlx::Result<Option<Cursor>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::claim(p, tables, group, topic, owner, now, until).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::claim(p, tables, group, topic, owner, now, until).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => {
                crate::sqlite::claim(p, tables, group, topic, owner, now, until).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit(
        &self,
        tables: &Tables,
        group: &str,
        topic: &str,
        owner: &str,
        cursor: Cursor,
        until: i64,
        release: bool,
    ) -> sqlx::Result<bool> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => {
                crate::pg::commit(p, tables, group, topic, owner, cursor, until, release).await
            }
            #[cfg(feature = "mysql")]
            Self::MySql(p) => {
                crate::mysql::commit(p, tables, group, topic, owner, cursor, until, release).await
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => {
                crate::sqlite::commit(p, tables, group, topic, owner, cursor, until, release).await
            }
        }
    }

    pub(crate) async fn queue_claim(
        &self,
        tables: &Tables,
        topic: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> sqlx::Result<Vec<StoredRow>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::queue_claim(p, tables, topic, now, until, limit).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::queue_claim(p, tables, topic, now, until, limit).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => {
                crate::sqlite::queue_claim(p, tables, topic, now, until, limit).await
            }
        }
    }

    pub(crate) async fn queue_delete(
        &self,
        tables: &Tables,
        topic: &str,
        positions: &[i64],
    ) -> sqlx::Result<()> {
        let _ = topic;
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::queue_delete(p, tables, positions).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => crate::mysql::queue_delete(p, tables, topic, positions).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => crate::sqlite::queue_delete(p, tables, positions).await,
        }
    }

    pub(crate) async fn queue_release(
        &self,
        tables: &Tables,
        topic: &str,
        positions: &[i64],
        deliver_at: Option<i64>,
    ) -> sqlx::Result<()> {
        let _ = topic;
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => crate::pg::queue_release(p, tables, positions, deliver_at).await,
            #[cfg(feature = "mysql")]
            Self::MySql(p) => {
                crate::mysql::queue_release(p, tables, topic, positions, deliver_at).await
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => crate::sqlite::queue_release(p, tables, positions, deliver_at).await,
        }
    }
}

pub(crate) mod private {
    /// A borrowed connection of one of the supported databases.
    pub enum ConnRef<'a> {
        #[cfg(feature = "postgres")]
        Postgres(&'a mut sqlx::PgConnection),
        #[cfg(feature = "mysql")]
        MySql(&'a mut sqlx::MySqlConnection),
        #[cfg(feature = "sqlite")]
        Sqlite(&'a mut sqlx::SqliteConnection),
        #[allow(dead_code)]
        Never(std::marker::PhantomData<&'a ()>),
    }

    pub trait Sealed {
        fn conn_ref(&mut self) -> ConnRef<'_>;
    }
}

/// A connection or transaction of one of the supported databases: `sqlx::Transaction`,
/// `PoolConnection` or a bare connection of PostgreSQL, MariaDB/MySQL or SQLite. The outbox and
/// the deduplication store write through it, so their rows commit or roll back with the
/// caller's own.
pub trait SqlConn: private::Sealed + Send {}

macro_rules! conn_impls {
    ($feature:literal, $db:ty, $conn:ty, $variant:ident) => {
        #[cfg(feature = $feature)]
        impl private::Sealed for $conn {
            fn conn_ref(&mut self) -> private::ConnRef<'_> {
                private::ConnRef::$variant(self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlConn for $conn {}

        #[cfg(feature = $feature)]
        impl private::Sealed for sqlx::Transaction<'_, $db> {
            fn conn_ref(&mut self) -> private::ConnRef<'_> {
                private::ConnRef::$variant(&mut **self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlConn for sqlx::Transaction<'_, $db> {}

        #[cfg(feature = $feature)]
        impl private::Sealed for sqlx::pool::PoolConnection<$db> {
            fn conn_ref(&mut self) -> private::ConnRef<'_> {
                private::ConnRef::$variant(&mut **self)
            }
        }
        #[cfg(feature = $feature)]
        impl SqlConn for sqlx::pool::PoolConnection<$db> {}
    };
}

conn_impls!("postgres", sqlx::Postgres, sqlx::PgConnection, Postgres);
conn_impls!("mysql", sqlx::MySql, sqlx::MySqlConnection, MySql);
conn_impls!("sqlite", sqlx::Sqlite, sqlx::SqliteConnection, Sqlite);
