//! Stream names, categories and table prefixes: validated before anything reaches SQL.

use crate::error::{Error, Result};

/// The longest stream name accepted (bytes).
///
/// ```
/// use tidemill_eventsourcing::{validate_stream, MAX_STREAM_LEN};
/// assert!(validate_stream(&"a".repeat(MAX_STREAM_LEN)).is_ok());
/// assert!(validate_stream(&"a".repeat(MAX_STREAM_LEN + 1)).is_err());
/// ```
pub const MAX_STREAM_LEN: usize = 200;

/// Checks a stream name: 1 to [`MAX_STREAM_LEN`] bytes of ASCII letters, digits and
/// `- _ . : / @`. The category of `booking-42` is `booking` (the part before the first `-`).
///
/// ```
/// use tidemill_eventsourcing::validate_stream;
/// assert!(validate_stream("booking-42").is_ok());
/// assert!(validate_stream("x'; DROP TABLE y; --").is_err());
/// assert!(validate_stream("").is_err());
/// ```
pub fn validate_stream(stream: &str) -> Result<()> {
    let reason = if stream.is_empty() {
        Some("a stream name must not be empty")
    } else if stream.len() > MAX_STREAM_LEN {
        Some("a stream name must be at most 200 bytes")
    } else if !stream
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
    {
        Some("only ASCII letters, digits and - _ . : / @ are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidStream {
            stream: stream.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Which streams a read of the global log covers.
///
/// ```
/// use tidemill_eventsourcing::StreamFilter;
/// let f = StreamFilter::parse("booking-*").unwrap();
/// assert!(f.matches("booking-42"));
/// assert!(!f.matches("bookings-1"));
/// assert!(StreamFilter::parse("*").unwrap().matches("anything"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StreamFilter {
    /// Every stream.
    #[default]
    All,
    /// Streams of one category: names starting with `<category>-`.
    Category(String),
}

impl StreamFilter {
    /// `*` (or empty) for all streams, `booking-*` or `booking` for a category.
    ///
    /// ```
    /// use tidemill_eventsourcing::StreamFilter;
    /// assert_eq!(StreamFilter::parse("*").unwrap(), StreamFilter::All);
    /// assert_eq!(StreamFilter::parse("booking-*").unwrap(), StreamFilter::Category("booking".into()));
    /// assert!(StreamFilter::parse("a b").is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Self> {
        if pattern.is_empty() || pattern == "*" {
            return Ok(Self::All);
        }
        let category = pattern.strip_suffix("-*").unwrap_or(pattern);
        Self::category(category)
    }

    /// The streams of `category` (letters, digits, `_ . : / @`; no `-`).
    ///
    /// ```
    /// use tidemill_eventsourcing::StreamFilter;
    /// assert!(StreamFilter::category("booking").unwrap().matches("booking-1"));
    /// assert!(StreamFilter::category("book-ing").is_err());
    /// ```
    pub fn category(category: &str) -> Result<Self> {
        validate_stream(category)?;
        if category.contains('-') {
            return Err(Error::InvalidStream {
                stream: category.to_owned(),
                reason: "a category must not contain '-'",
            });
        }
        Ok(Self::Category(category.to_owned()))
    }

    /// Whether `stream` is covered.
    ///
    /// ```
    /// use tidemill_eventsourcing::StreamFilter;
    /// let f = StreamFilter::category("user").unwrap();
    /// assert!(f.matches("user-1"));
    /// assert!(!f.matches("users-1") && !f.matches("user"));
    /// ```
    pub fn matches(&self, stream: &str) -> bool {
        match self {
            Self::All => true,
            Self::Category(c) => stream
                .strip_prefix(c.as_str())
                .is_some_and(|rest| rest.starts_with('-')),
        }
    }

    /// The `LIKE ... ESCAPE '!'` pattern of the category (`_` escaped; `%` and `!` cannot occur).
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn like(&self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Category(c) => Some(format!("{}-%", c.replace('_', "!_"))),
        }
    }
}

/// The longest table prefix accepted (identifier limits: PostgreSQL 63 bytes, MySQL 64).
const MAX_PREFIX: usize = 40;

/// Checks a table prefix: 1 to 40 ASCII letters, digits or `_`, not starting with a digit.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid table prefix {prefix:?}: use 1 to {MAX_PREFIX} ASCII letters, digits or '_', not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        for bad in ["a b", "a'b", "a\"b", "a`b", "ü", "a;b", "a*"] {
            assert!(validate_stream(bad).is_err(), "{bad}");
        }
        assert!(validate_stream(&"a".repeat(201)).is_err());
        assert!(validate_prefix("9x").is_err());
        assert!(validate_prefix("a-b").is_err());
        assert!(validate_prefix("es_").is_ok());
        assert!(StreamFilter::parse("a-b-*").is_err());
    }

    #[test]
    fn category_like_escapes_underscore() {
        let f = StreamFilter::category("my_cat").unwrap();
        assert_eq!(f.like().unwrap(), "my!_cat-%");
        assert!(f.matches("my_cat-1"));
        assert!(!f.matches("myxcat-1"));
    }
}
