//! [`CliError`]: why a command failed. Every URL in it is redacted.

use std::time::Duration;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The URL, an option or the connection.
    #[error(transparent)]
    Any(#[from] tidemill_any::AnyError),
    /// The pub/sub refused or failed an operation.
    #[error(transparent)]
    PubSub(#[from] tidemill::Error),
    /// Reading input or writing output.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Input lines that are not valid messages.
    #[error("{} malformed line(s){}: {}", .lines.len(), if *.sent_rest { ", the others were published" } else { ", nothing was published" }, .lines.iter().map(|(n, e)| format!("line {n}: {e}")).collect::<Vec<_>>().join("; "))]
    Malformed {
        /// Line number and reason.
        lines: Vec<(usize, String)>,
        /// Whether the valid lines were published.
        sent_rest: bool,
    },
    /// The broker did not answer in time.
    #[error("{what} at {url}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The operation.
        what: String,
        /// The URL, redacted.
        url: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// Nothing matched, or the user said no.
    #[error("{0}")]
    NotFound(String),
    /// The bench or the demo failed.
    #[error("{0}")]
    Bench(String),
}

impl CliError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}
