//! How topics, groups and metadata map onto NATS: subject rules, stream and consumer names,
//! headers, and the streams and consumers created on demand.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream::{self, consumer, stream};
use parking_lot::Mutex;
use tidemill::{Error, Message, Metadata, Result};

use crate::config::{DeliverFrom, NatsConfig, Retention, Storage, StreamProvisioning};
use crate::error::NatsError;

/// Checks that `topic` can be a NATS subject to publish to: tidemill's rules, then no empty
/// `.`-separated token, no whitespace, no wildcard (`*`, `>`), and not a reserved subject
/// (starting with `$` or `_INBOX.`).
///
/// ```
/// use tidemill_nats::validate_subject;
/// assert!(validate_subject("orders.created").is_ok());
/// assert!(validate_subject("orders.*").is_err());
/// assert!(validate_subject("orders..x").is_err());
/// assert!(validate_subject("with space").is_err());
/// ```
pub fn validate_subject(topic: &str) -> Result<()> {
    tidemill::validate_topic(topic)?;
    let reason = if topic.split('.').any(str::is_empty) {
        Some("a NATS subject must not have empty tokens (leading, trailing or double '.')")
    } else if topic.chars().any(char::is_whitespace) {
        Some("a NATS subject must not contain whitespace")
    } else if topic.split('.').any(|t| t == "*" || t == ">") || topic.contains(['*', '>']) {
        Some("a NATS subject to publish to must not contain wildcards ('*', '>')")
    } else if topic.starts_with('$') || topic.starts_with("_INBOX.") {
        Some("subjects starting with '$' or '_INBOX.' are reserved by NATS")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::invalid_topic(topic, reason)),
        None => Ok(()),
    }
}

/// Turns any string into a valid stream, consumer or key name: ASCII letters, digits and `-`
/// stay, every other byte becomes `_` and two hex digits (so different inputs never collide).
/// A group's durable consumer is named `encode_name(group)`; a topic's stream, unless an
/// existing one covers it, the stream prefix followed by `encode_name(topic)`.
///
/// ```
/// assert_eq!(tidemill_nats::topology::encode_name("orders.eu"), "orders_2Eeu");
/// ```
pub fn encode_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The header carrying the message id, which the server also uses to drop duplicates.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// Headers of a dead-lettered message.
pub(crate) const DEAD_LETTER_REASON: &str = "Tidemill-Dead-Letter-Reason";
pub(crate) const DEAD_LETTER_TOPIC: &str = "Tidemill-Dead-Letter-Topic";
pub(crate) const DEAD_LETTER_SEQUENCE: &str = "Tidemill-Dead-Letter-Sequence";

/// Metadata and id as NATS headers. Keys and values must be valid header text; keys starting
/// with `Nats-` are the server's.
pub(crate) fn encode_headers(message: &Message) -> Result<HeaderMap, NatsError> {
    let mut headers = HeaderMap::new();
    let id = HeaderValue::from_str(message.id()).map_err(|_| NatsError::InvalidHeader {
        key: MSG_ID.into(),
        reason: "the message id must not contain line breaks",
    })?;
    headers.insert(MSG_ID, id);
    for (key, value) in message.metadata().iter() {
        if key.len() >= 5 && key[..5].eq_ignore_ascii_case("nats-") {
            return Err(NatsError::InvalidHeader {
                key: key.into(),
                reason: "keys starting with Nats- are reserved by the server",
            });
        }
        let name = HeaderName::from_str(key).map_err(|_| NatsError::InvalidHeader {
            key: key.into(),
            reason: "a header name must be printable ASCII without ':' or spaces",
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| NatsError::InvalidHeader {
            key: key.into(),
            reason: "a header value must not contain line breaks",
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// A received NATS message as a tidemill message: the id from `Nats-Msg-Id` (or `fallback_id`
/// when the publisher set none), every other header as metadata (the last value of repeated ones).
pub(crate) fn decode_message(
    headers: Option<&HeaderMap>,
    payload: bytes::Bytes,
    fallback_id: impl FnOnce() -> String,
) -> Message {
    let mut id = None;
    let mut metadata = Metadata::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let key: &str = name.as_ref();
            let Some(value) = values.last() else { continue };
            if key == MSG_ID {
                id = Some(value.as_str().to_owned());
            } else {
                metadata.set(key, value.as_str());
            }
        }
    }
    let id = id.unwrap_or_else(fallback_id);
    Message::from_parts(id, payload, metadata)
}

/// Finds (and creates, if so configured) the stream behind each topic, remembering the answer.
pub(crate) struct Streams {
    js: jetstream::Context,
    config: Arc<NatsConfig>,
    known: Mutex<HashMap<String, String>>,
}

impl Streams {
    pub(crate) fn new(js: jetstream::Context, config: Arc<NatsConfig>) -> Self {
        Self {
            js,
            config,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The name of the stream that holds `topic`.
    pub(crate) async fn stream_for(&self, topic: &str) -> Result<String, NatsError> {
        if let Some(name) = self.known.lock().get(topic) {
            return Ok(name.clone());
        }
        let name = self.find_or_create(topic).await?;
        self.known.lock().insert(topic.to_owned(), name.clone());
        Ok(name)
    }

    /// Forgets what was found for `topic`, e.g. after the server said the stream is gone.
    pub(crate) fn forget(&self, topic: &str) {
        self.known.lock().remove(topic);
    }

    async fn find_or_create(&self, topic: &str) -> Result<String, NatsError> {
        use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamByNameErrorKind};
        match self.js.stream_by_subject(topic).await {
            Ok(name) => return Ok(name),
            Err(err) if err.kind() == GetStreamByNameErrorKind::NotFound => {}
            Err(err) => return Err(NatsError::client(err)),
        }
        if self.config.provisioning == StreamProvisioning::ExistingBySubject {
            return Err(NatsError::NoStream {
                subject: topic.into(),
            });
        }
        let name = format!("{}{}", self.config.stream_prefix, encode_name(topic));
        let c = &self.config;
        let stream_config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_owned()],
            retention: match c.retention {
                Retention::Limits => stream::RetentionPolicy::Limits,
                Retention::Interest => stream::RetentionPolicy::Interest,
                Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
            },
            storage: match c.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            max_age: c.max_age,
            duplicate_window: c.duplicate_window,
            num_replicas: c.replicas,
            ..Default::default()
        };
        match self.js.create_stream(stream_config).await {
            Ok(_) => {
                tracing::debug!(stream = %name, subject = topic, "created JetStream stream");
                Ok(name)
            }
            // Another process created it at the same moment: use whichever covers the topic.
            Err(err) if matches!(err.kind(), CreateStreamErrorKind::JetStream(_)) => self
                .js
                .stream_by_subject(topic)
                .await
                .map_err(|_| NatsError::client(err)),
            Err(err) => Err(NatsError::client(err)),
        }
    }
}

/// The pull consumer configuration of a subscriber.
pub(crate) fn consumer_config(
    config: &NatsConfig,
    topic: &str,
    durable: Option<&str>,
    deliver: DeliverFrom,
) -> consumer::pull::Config {
    let deliver_policy = match deliver {
        DeliverFrom::All => consumer::DeliverPolicy::All,
        DeliverFrom::New => consumer::DeliverPolicy::New,
        DeliverFrom::Time(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
        DeliverFrom::Sequence(start_sequence) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence }
        }
    };
    // With a dead-letter subject the adapter counts deliveries itself, so that the last one can
    // be moved before the server gives up on it; without one the server enforces the limit.
    let max_deliver = match (config.max_deliveries, &config.dead_letter_subject) {
        (Some(max), None) => i64::from(max),
        _ => -1,
    };
    consumer::pull::Config {
        durable_name: durable.map(str::to_owned),
        name: durable.map(str::to_owned),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver,
        // One filter subject, never `filter_subjects`: server 2.9 drops the plural form.
        filter_subject: topic.to_owned(),
        max_ack_pending: config.max_ack_pending as i64,
        inactive_threshold: if durable.is_some() {
            std::time::Duration::ZERO
        } else {
            config.inactive_threshold
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_injective_and_valid() {
        assert_eq!(encode_name("orders-1"), "orders-1");
        assert_eq!(encode_name("a.b"), "a_2Eb");
        assert_ne!(encode_name("a.b"), encode_name("a_b"));
        assert!(encode_name("x y*>/\\")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn headers_round_trip() {
        let msg = Message::with_id("id-1", "p").with_metadata("k", "v");
        let headers = encode_headers(&msg).unwrap();
        let back = decode_message(Some(&headers), msg.payload().clone(), || "x".into());
        assert!(back.same_content(&msg));
        assert!(encode_headers(&Message::new("").with_metadata("a:b", "v")).is_err());
        assert!(encode_headers(&Message::new("").with_metadata("k", "a\nb")).is_err());
        assert!(encode_headers(&Message::new("").with_metadata("nats-x", "v")).is_err());
    }
}
