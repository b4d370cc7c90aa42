//! The options every adapter shares, under one name each: where a subscriber starts
//! ([`StartPosition`]) and the defaults of the in-flight limit, the nack delay and the close
//! timeout. Each adapter's `Config` has builder methods of these names (`group`,
//! `start_position`, `max_in_flight`, `nack_delay`, `close_timeout`).

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// The nack delay every pub/sub uses unless told otherwise: how long a nacked message waits
/// before it comes back, so a failing message does not spin.
///
/// ```
/// assert_eq!(tidemill::options::DEFAULT_NACK_DELAY, std::time::Duration::from_millis(100));
/// ```
pub const DEFAULT_NACK_DELAY: Duration = Duration::from_millis(100);

/// How long closing a subscriber waits for in-flight settlements, unless told otherwise.
///
/// ```
/// assert_eq!(tidemill::options::DEFAULT_CLOSE_TIMEOUT, std::time::Duration::from_secs(30));
/// ```
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a subscription starts reading when its consumer group has no position yet (or when it
/// has no group). Every adapter takes this type; one that cannot honour a variant refuses it
/// with [`Error::Config`] when it is configured, never silently.
///
/// The default is [`End`](Self::End) on every adapter: a new subscriber sees what is published
/// from now on. A subscriber that should replay history says so.
///
/// ```
/// use tidemill::options::StartPosition;
///
/// assert_eq!(StartPosition::default(), StartPosition::End);
/// assert_eq!("beginning".parse::<StartPosition>()?, StartPosition::Beginning);
/// assert_eq!("42".parse::<StartPosition>()?, StartPosition::Offset(42));
/// assert!(matches!("2026-01-01T10:00:00Z".parse::<StartPosition>()?, StartPosition::Time(_)));
/// assert!("sideways".parse::<StartPosition>().is_err());
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartPosition {
    /// The oldest message the broker still holds: a replay.
    Beginning,
    /// Only messages published from now on. The default.
    #[default]
    End,
    /// The first message at or after this time (brokers that index by time).
    Time(SystemTime),
    /// This broker-specific position: a Kafka offset, a JetStream sequence, a row id.
    Offset(u64),
}

impl StartPosition {
    /// The variant's name, for errors that say what an adapter does not support.
    ///
    /// ```
    /// assert_eq!(tidemill::options::StartPosition::Offset(3).kind(), "offset");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Beginning => "beginning",
            Self::End => "end",
            Self::Time(_) => "time",
            Self::Offset(_) => "offset",
        }
    }

    /// The [`Error::Config`] an adapter returns for a variant it cannot honour.
    ///
    /// ```
    /// use tidemill::options::StartPosition;
    /// let err = StartPosition::Offset(3).unsupported("Redis", &["beginning", "end"]);
    /// assert!(err.to_string().contains("Redis"));
    /// ```
    pub fn unsupported(&self, adapter: &str, supported: &[&str]) -> Error {
        Error::Config(format!(
            "{adapter} cannot start a subscription at a position of kind {:?}; it supports {}",
            self.kind(),
            supported.join(", ")
        ))
    }
}

impl std::str::FromStr for StartPosition {
    type Err = Error;

    /// `beginning` (or `earliest`, `all`), `end` (or `latest`, `new`), a number (an offset), or
    /// an RFC 3339 time such as `2026-01-01T10:00:00Z`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "beginning" | "earliest" | "all" | "start" => return Ok(Self::Beginning),
            "end" | "latest" | "new" => return Ok(Self::End),
            _ => {}
        }
        if let Ok(offset) = s.trim().parse::<u64>() {
            return Ok(Self::Offset(offset));
        }
        parse_rfc3339(s.trim()).map(Self::Time).ok_or_else(|| {
            Error::Config(format!(
                "start position {s:?} is none of: beginning, end, an offset (a number), \
                 an RFC 3339 time (2026-01-01T10:00:00Z)"
            ))
        })
    }
}

/// A connection-URL option every adapter spells the same way: parsed (and its value checked)
/// here once, so that `?nack_delay=250` means the same, and is refused the same way, on every
/// broker. Durations are in milliseconds.
///
/// ```
/// use std::time::Duration;
/// use tidemill::options::SharedOption;
///
/// assert!(matches!(
///     SharedOption::parse("Kafka", "nack_delay", "250")?,
///     Some(SharedOption::NackDelay(d)) if d == Duration::from_millis(250)
/// ));
/// assert!(SharedOption::parse("Kafka", "partitions", "4")?.is_none());
/// assert!(SharedOption::parse("Kafka", "max_in_flight", "lots").is_err());
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedOption {
    /// `group`: the consumer group.
    Group(String),
    /// `start_position`: see [`StartPosition`]'s `FromStr`.
    StartPosition(StartPosition),
    /// `max_in_flight`: unsettled deliveries per subscription.
    MaxInFlight(usize),
    /// `nack_delay`, in milliseconds.
    NackDelay(Duration),
    /// `close_timeout`, in milliseconds.
    CloseTimeout(Duration),
}

impl SharedOption {
    /// The shared option names, for errors that list what an adapter's URL takes.
    pub const NAMES: &'static [&'static str] = &[
        "group",
        "start_position",
        "max_in_flight",
        "nack_delay",
        "close_timeout",
    ];

    /// `key=value` as a shared option, or `None` when `key` is not one (the adapter's own, or
    /// unknown). A bad value is an [`Error::Config`] naming the `adapter`, the key and the value.
    pub fn parse(adapter: &str, key: &str, value: &str) -> Result<Option<Self>> {
        let bad =
            |what: &str| Error::Config(format!("{adapter} URL option {key}={value:?}: {what}"));
        let millis = || {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| bad("expected milliseconds"))
        };
        Ok(Some(match key {
            "group" => Self::Group(value.to_owned()),
            "start_position" => Self::StartPosition(value.parse()?),
            "max_in_flight" => {
                Self::MaxInFlight(value.parse().map_err(|_| bad("expected a number"))?)
            }
            "nack_delay" => Self::NackDelay(millis()?),
            "close_timeout" => Self::CloseTimeout(millis()?),
            _ => return Ok(None),
        }))
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let text = &frac[..digits.min(9)];
        nanos = format!("{text:0<9}").parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if &rest[..1] == "-" { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Some(base + Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_the_right_instant() {
        let t = |s: &str| match s.parse::<StartPosition>().unwrap() {
            StartPosition::Time(t) => t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Duration::ZERO);
        assert_eq!(t("2026-01-01T10:00:00Z").as_secs(), 1_767_261_600);
        assert_eq!(t("2026-01-01T12:00:00+02:00").as_secs(), 1_767_261_600);
        assert_eq!(t("2026-01-01T10:00:00.250Z").as_millis(), 1_767_261_600_250);
    }

    #[test]
    fn nonsense_is_a_config_error() {
        for bad in ["", "2026-13-01T00:00:00Z", "2026-01-01", "soon"] {
            assert!(
                matches!(bad.parse::<StartPosition>(), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }
}
