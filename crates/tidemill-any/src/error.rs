//! [`AnyError`]: what can go wrong turning a URL into a pub/sub. Every URL in it is redacted.

use std::time::Duration;

/// Why a URL could not be turned into a pub/sub, or a subscriber could not be made.
///
/// Every URL it holds has its password masked ([`redact`](crate::redact)).
///
/// ```
/// let err = tidemill_any::parse("ftp://u:s3cret@host").unwrap_err();
/// assert!(matches!(err, tidemill_any::AnyError::UnknownScheme { .. }));
/// assert!(err.to_string().contains("redis://"));
/// assert!(!err.to_string().contains("s3cret"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnyError {
    /// The URL names no backend this crate knows.
    #[error("unsupported URL scheme {scheme:?} in {url}: expected one of {}", .supported.join(", "))]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
        /// The URL, redacted.
        url: String,
        /// The URL forms that would work.
        supported: Vec<&'static str>,
    },
    /// The backend the URL names is not compiled in.
    #[error("{url} needs the {backend} backend, which this build leaves out (cargo feature `{feature}` of tidemill-any); compiled in: {}", .enabled.join(", "))]
    FeatureDisabled {
        /// The backend asked for.
        backend: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
        /// The URL, redacted.
        url: String,
        /// The URL forms this build accepts.
        enabled: Vec<&'static str>,
    },
    /// A query parameter the backend does not know.
    #[error("unknown option `{option}` for {backend} in {url}: known options are {}", .known.join(", "))]
    UnknownOption {
        /// The parameter given.
        option: String,
        /// The backend.
        backend: &'static str,
        /// The URL, redacted.
        url: String,
        /// The parameters the backend knows.
        known: Vec<&'static str>,
    },
    /// A query parameter with a value that does not parse.
    #[error("invalid value {value:?} for option `{option}` in {url}: expected {expected}")]
    InvalidOption {
        /// The parameter.
        option: String,
        /// The value given (never a secret: secrets are not options).
        value: String,
        /// The URL, redacted.
        url: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A start position the backend cannot honour in this situation.
    #[error("{backend} cannot start {situation} from {position}: {supported}")]
    UnsupportedStart {
        /// The backend.
        backend: &'static str,
        /// With or without a consumer group.
        situation: &'static str,
        /// The position asked for.
        position: String,
        /// What it can do instead.
        supported: &'static str,
    },
    /// An option the backend has no way to honour.
    #[error("{backend} has no `{option}` setting: {reason}")]
    UnsupportedOption {
        /// The backend.
        backend: &'static str,
        /// The option.
        option: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// The URL is malformed.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// The adapter's error.
        #[source]
        source: tidemill::Error,
    },
    /// The broker did not answer in time.
    #[error("cannot connect to {url}: no answer within {}", humantime::format_duration(*.timeout))]
    ConnectTimeout {
        /// The URL, redacted.
        url: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// An error of the pub/sub itself.
    #[error(transparent)]
    PubSub(#[from] tidemill::Error),
}
