//! [`Limits`]: what a pub/sub accepts (payload and metadata size, metadata names and values,
//! topic names), said in code by each adapter and checked by one validator before anything is
//! sent, so a message one adapter would refuse is refused the same way, with the same typed
//! error, on every adapter, and a caller can ask before publishing.

use crate::error::{validate_topic, Error, Result};
use crate::message::Message;

/// Which metadata names and values a pub/sub can carry unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataRule {
    /// Any non-empty UTF-8 name, any UTF-8 value (brokers that store metadata as data).
    Utf8,
    /// Header-safe: names of visible ASCII other than `:` (HTTP and NATS header field names),
    /// values without CR, LF or NUL.
    HeaderToken,
}

/// The limits of one pub/sub. Adapters return theirs from
/// [`Publisher::limits`](crate::Publisher::limits) and run [`check`](Self::check) on every
/// message before sending.
///
/// ```
/// use tidemill::limits::{Limits, MetadataRule};
/// use tidemill::{Error, Message};
///
/// let limits = Limits::new("example")
///     .max_payload(16)
///     .metadata_rule(MetadataRule::HeaderToken)
///     .reserved_prefixes(&["x-"]);
/// assert!(limits.check("orders", &Message::new("small")).is_ok());
/// assert!(matches!(
///     limits.check("orders", &Message::new("far too large a payload")),
///     Err(Error::MessageTooLarge { .. })
/// ));
/// let odd_key = Message::new("x").with_metadata("ключ", "v");
/// assert!(matches!(limits.check("orders", &odd_key), Err(Error::InvalidMetadata { .. })));
/// let reserved = Message::new("x").with_metadata("x-death", "v");
/// assert!(matches!(limits.check("orders", &reserved), Err(Error::InvalidMetadata { .. })));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    adapter: &'static str,
    max_payload: Option<usize>,
    max_metadata: Option<usize>,
    metadata_rule: MetadataRule,
    reserved_prefixes: &'static [&'static str],
    reserved_names: &'static [&'static str],
    max_name: Option<usize>,
    topic_rule: fn(&str) -> Result<()>,
}

impl Default for Limits {
    /// What every pub/sub accepts at least: no size limit, UTF-8 metadata, the core's topic rules.
    fn default() -> Self {
        Self::new("tidemill")
    }
}

impl Limits {
    /// No size limits, UTF-8 metadata, [`validate_topic`]'s rules; refine with the builders.
    pub fn new(adapter: &'static str) -> Self {
        Self {
            adapter,
            max_payload: None,
            max_metadata: None,
            metadata_rule: MetadataRule::Utf8,
            reserved_prefixes: &[],
            reserved_names: &[],
            max_name: None,
            topic_rule: validate_topic,
        }
    }

    /// The largest payload, in bytes.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// The most metadata, in bytes of names and values together.
    pub fn max_metadata(mut self, bytes: usize) -> Self {
        self.max_metadata = Some(bytes);
        self
    }

    /// Which metadata names and values are carried unchanged.
    pub fn metadata_rule(mut self, rule: MetadataRule) -> Self {
        self.metadata_rule = rule;
        self
    }

    /// Metadata name prefixes the broker or adapter uses itself (compared case-insensitively).
    pub fn reserved_prefixes(mut self, prefixes: &'static [&'static str]) -> Self {
        self.reserved_prefixes = prefixes;
        self
    }

    /// Metadata names the broker or adapter uses itself (compared case-insensitively), such as
    /// the field that carries the message id.
    pub fn reserved_names(mut self, names: &'static [&'static str]) -> Self {
        self.reserved_names = names;
        self
    }

    /// The longest metadata name, in bytes.
    pub fn max_name(mut self, bytes: usize) -> Self {
        self.max_name = Some(bytes);
        self
    }

    /// The topic rule, which must include [`validate_topic`]'s.
    pub fn topic_rule(mut self, rule: fn(&str) -> Result<()>) -> Self {
        self.topic_rule = rule;
        self
    }

    /// The adapter these limits belong to.
    pub fn adapter(&self) -> &'static str {
        self.adapter
    }

    /// The largest payload, if limited.
    pub fn payload_limit(&self) -> Option<usize> {
        self.max_payload
    }

    /// The most metadata, if limited.
    pub fn metadata_limit(&self) -> Option<usize> {
        self.max_metadata
    }

    /// Checks a topic name.
    pub fn check_topic(&self, topic: &str) -> Result<()> {
        (self.topic_rule)(topic)
    }

    /// Checks one message for `topic`: topic name, payload size, metadata names, values and size.
    pub fn check(&self, topic: &str, message: &Message) -> Result<()> {
        self.check_topic(topic)?;
        self.check_message(topic, message)
    }

    /// Checks every message of a batch for `topic`; the first refusal is returned and nothing
    /// should be sent.
    pub fn check_all(&self, topic: &str, messages: &[Message]) -> Result<()> {
        self.check_topic(topic)?;
        messages
            .iter()
            .try_for_each(|m| self.check_message(topic, m))
    }

    fn check_message(&self, topic: &str, message: &Message) -> Result<()> {
        let size = message.payload().len();
        if let Some(limit) = self.max_payload {
            if size > limit {
                return Err(Error::MessageTooLarge {
                    topic: topic.to_owned(),
                    message_id: message.id().to_owned(),
                    size,
                    limit,
                });
            }
        }
        let mut metadata_size = 0;
        for (key, value) in message.metadata().iter() {
            metadata_size += key.len() + value.len();
            if let Some(reason) = self.refuses(key, value) {
                return Err(Error::InvalidMetadata {
                    message_id: message.id().to_owned(),
                    key: key.to_owned(),
                    reason: format!("{} {reason}", self.adapter),
                });
            }
        }
        if let Some(limit) = self.max_metadata {
            if metadata_size > limit {
                return Err(Error::InvalidMetadata {
                    message_id: message.id().to_owned(),
                    key: String::new(),
                    reason: format!(
                        "{} carries at most {limit} bytes of metadata; this message has {metadata_size}",
                        self.adapter
                    ),
                });
            }
        }
        Ok(())
    }

    fn refuses(&self, key: &str, value: &str) -> Option<String> {
        if key.is_empty() {
            return Some("does not accept an empty metadata name".into());
        }
        if self
            .reserved_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(key))
        {
            return Some(format!("uses the metadata name {key:?} itself"));
        }
        if let Some(max) = self.max_name.filter(|max| key.len() > *max) {
            return Some(format!(
                "accepts metadata names of at most {max} bytes; this one has {}",
                key.len()
            ));
        }
        let lower = key.to_ascii_lowercase();
        if let Some(prefix) = self
            .reserved_prefixes
            .iter()
            .find(|p| lower.starts_with(&p.to_ascii_lowercase()))
        {
            return Some(format!(
                "reserves metadata names starting with {prefix:?} for itself"
            ));
        }
        match self.metadata_rule {
            MetadataRule::Utf8 => None,
            MetadataRule::HeaderToken => {
                if !key.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    Some(
                        "accepts only metadata names of visible ASCII characters without ':'"
                            .into(),
                    )
                } else if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                    Some("does not accept CR, LF or NUL in metadata values".into())
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rule_refuses_what_a_header_cannot_carry() {
        let limits = Limits::new("NATS").metadata_rule(MetadataRule::HeaderToken);
        for (k, v) in [
            ("ключ-🔑", "v"),
            ("a b", "v"),
            ("a:b", "v"),
            ("k", "a\r\nb"),
        ] {
            let msg = Message::new("x").with_metadata(k, v);
            let err = limits.check("t", &msg).unwrap_err();
            assert!(matches!(err, Error::InvalidMetadata { .. }), "{k:?}");
            assert!(err.to_string().starts_with("metadata"), "{err}");
        }
        assert!(limits
            .check("t", &Message::new("x").with_metadata("trace-id", "é ok"))
            .is_ok());
    }

    #[test]
    fn metadata_size_counts_names_and_values() {
        let limits = Limits::new("small").max_metadata(8);
        assert!(limits
            .check("t", &Message::new("").with_metadata("abcd", "efgh"))
            .is_ok());
        assert!(limits
            .check("t", &Message::new("").with_metadata("abcd", "efghi"))
            .is_err());
    }

    #[test]
    fn topic_rule_runs_first() {
        assert!(matches!(
            Limits::default().check("", &Message::new("")),
            Err(Error::InvalidTopic { .. })
        ));
    }
}
