//! [`Backend`]: which database a URL or pool points at. Shared by the configuration and the
//! schema, and by every module that words a statement per database.

use tidemill::{Error, Result};

/// Which database a URL or pool points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres,
    /// MariaDB or MySQL (`mysql://` or `mariadb://`).
    MySql,
    /// SQLite (`sqlite://path`, `sqlite::memory:`).
    Sqlite,
}

impl Backend {
    /// The backend a connection URL names, from its scheme.
    ///
    /// ```
    /// use tidemill_sql::Backend;
    /// assert_eq!(Backend::from_url("postgres://localhost/db").unwrap(), Backend::Postgres);
    /// assert_eq!(Backend::from_url("mysql://root@localhost/db").unwrap(), Backend::MySql);
    /// assert_eq!(Backend::from_url("sqlite://events.db").unwrap(), Backend::Sqlite);
    /// assert!(Backend::from_url("redis://localhost").is_err());
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            "sqlite" => Ok(Self::Sqlite),
            _ => Err(Error::Config(format!(
                "unsupported database URL scheme {scheme:?}: expected postgres://, mysql:// or sqlite://"
            ))),
        }
    }
}
