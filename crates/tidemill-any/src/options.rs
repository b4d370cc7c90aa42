//! The neutral vocabulary: options every backend understands the same way, whatever its broker
//! calls them, and the parsed form of a URL.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::AnyError;
use crate::redact::redact;

/// Where a new subscription (or a new consumer group) starts reading: the core's type, which
/// every adapter takes.
///
/// ```
/// use tidemill_any::StartPosition;
/// assert_eq!("beginning".parse::<StartPosition>().unwrap(), StartPosition::Beginning);
/// assert_eq!("42".parse::<StartPosition>().unwrap(), StartPosition::Offset(42));
/// assert!("yesterday".parse::<StartPosition>().is_err());
/// ```
pub use tidemill::StartPosition;

/// A start position as text, for messages.
pub(crate) fn describe(position: &StartPosition) -> String {
    match position {
        StartPosition::Time(t) => humantime::format_rfc3339(*t).to_string(),
        StartPosition::Offset(o) => format!("offset {o}"),
        other => other.kind().to_owned(),
    }
}

/// How a subscriber is made: its consumer group and where it starts. Unset fields take the
/// URL's query parameters (`group`, `from`, `max_in_flight`), then the backend's defaults.
///
/// ```
/// use tidemill_any::{StartPosition, SubscriberOptions};
/// let options = SubscriberOptions::group("billing").from(StartPosition::Beginning);
/// assert_eq!(options.group.as_deref(), Some("billing"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberOptions {
    /// The consumer group: members of one group share the messages, each group gets all.
    pub group: Option<String>,
    /// Where a new subscription or group starts.
    pub from: Option<StartPosition>,
    /// How many deliveries may be unsettled at once.
    pub max_in_flight: Option<usize>,
}

impl SubscriberOptions {
    /// A subscriber in consumer group `group`.
    pub fn group(group: impl Into<String>) -> Self {
        Self {
            group: Some(group.into()),
            ..Self::default()
        }
    }

    /// Sets the consumer group (`None`: none, unless the URL names one).
    pub fn with_group(mut self, group: Option<String>) -> Self {
        self.group = group;
        self
    }

    /// Starts at `from`.
    pub fn from(mut self, from: StartPosition) -> Self {
        self.from = Some(from);
        self
    }

    /// Allows `n` unsettled deliveries at once.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// These options, with what is unset taken from `defaults`.
    pub(crate) fn or(&self, defaults: &SubscriberOptions) -> SubscriberOptions {
        SubscriberOptions {
            group: self.group.clone().or_else(|| defaults.group.clone()),
            from: self.from.or(defaults.from),
            max_in_flight: self.max_in_flight.or(defaults.max_in_flight),
        }
    }
}

/// Query parameters every backend knows.
pub(crate) const COMMON_OPTIONS: &[&str] = &["group", "from", "connect_timeout"];

/// A URL taken apart: its scheme, the part the adapter reads, and the query parameters.
#[derive(Clone)]
pub(crate) struct ParsedUrl {
    /// The scheme, lower case (`sqlite` also for `sqlite::memory:`).
    pub scheme: String,
    /// The URL without its query.
    pub base: String,
    /// The URL, redacted, for messages.
    pub redacted: String,
    /// The query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedUrl")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

impl ParsedUrl {
    pub fn parse(url: &str) -> Result<Self, AnyError> {
        let redacted = redact(url);
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .filter(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
            .ok_or_else(|| AnyError::InvalidUrl {
                url: redacted.clone(),
                reason: "no scheme (expected e.g. redis://host:port)".into(),
            })?;
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b.to_owned(), q),
            None => (url.to_owned(), ""),
        };
        let params = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Self {
            scheme,
            base,
            redacted,
            params,
        })
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses parameters outside `COMMON_OPTIONS`, `known` and `passed_through`.
    pub fn check_known(
        &self,
        backend: &'static str,
        known: &[&'static str],
        passed_through: &[&'static str],
    ) -> Result<(), AnyError> {
        for (key, _) in &self.params {
            let k = key.as_str();
            // `name.*` in `known` stands for every option under that prefix.
            let matches = |list: &[&str]| {
                list.iter().any(|o| match o.strip_suffix('*') {
                    Some(prefix) => k.starts_with(prefix),
                    None => *o == k,
                })
            };
            if !COMMON_OPTIONS.contains(&k) && !matches(known) && !matches(passed_through) {
                let mut all: Vec<&'static str> = COMMON_OPTIONS.to_vec();
                all.extend_from_slice(known);
                all.extend_from_slice(passed_through);
                return Err(AnyError::UnknownOption {
                    option: key.clone(),
                    backend,
                    url: self.redacted.clone(),
                    known: all,
                });
            }
        }
        Ok(())
    }

    /// The options under `prefix` (e.g. `rdkafka.`), with the prefix taken off.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.params
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.clone())))
            .collect()
    }

    fn invalid(&self, option: &str, value: &str, expected: &str) -> AnyError {
        AnyError::InvalidOption {
            option: option.to_owned(),
            value: value.to_owned(),
            url: self.redacted.clone(),
            expected: expected.to_owned(),
        }
    }

    /// `key` as a duration (`100ms`, `5s`, `1m`).
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, AnyError> {
        self.get(key)
            .map(|v| {
                humantime::parse_duration(v)
                    .map_err(|_| self.invalid(key, v, "a duration such as 100ms, 5s or 1m"))
            })
            .transpose()
    }

    /// `key` as a number.
    pub fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, AnyError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.invalid(key, v, "a whole number"))
            })
            .transpose()
    }

    /// `key` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`).
    pub fn flag(&self, key: &str) -> Result<Option<bool>, AnyError> {
        self.get(key)
            .map(|v| match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(self.invalid(key, v, "true or false")),
            })
            .transpose()
    }

    /// `key` as one of `choices`.
    pub fn choice(&self, key: &str, choices: &[&str]) -> Result<Option<String>, AnyError> {
        self.get(key)
            .map(|v| {
                if choices.contains(&v) {
                    Ok(v.to_owned())
                } else {
                    Err(self.invalid(key, v, &format!("one of {}", choices.join(", "))))
                }
            })
            .transpose()
    }

    /// The subscriber defaults the URL gives.
    pub fn subscriber_defaults(&self) -> Result<SubscriberOptions, AnyError> {
        let from = self
            .get("from")
            .map(|v| {
                v.parse::<StartPosition>().map_err(|_| {
                    self.invalid("from", v, "beginning, end, an RFC 3339 time or an offset")
                })
            })
            .transpose()?;
        Ok(SubscriberOptions {
            group: self
                .get("group")
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
            from,
            max_in_flight: self.number("max_in_flight")?,
        })
    }

    /// The base URL with the parameters in `keep` put back (they are the client's own).
    pub fn base_with(&self, keep: &[&str]) -> String {
        let kept: Vec<(&str, &str)> = self
            .params
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if kept.is_empty() {
            return self.base.clone();
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish();
        format!("{}?{query}", self.base)
    }
}
