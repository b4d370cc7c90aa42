//! How a tidemill [`Message`] maps onto an AMQP message and back.
//!
//! | tidemill | AMQP |
//! | --- | --- |
//! | id | `message_id` property |
//! | metadata `correlation_id` | `correlation_id` property |
//! | metadata `content_type` | `content_type` property |
//! | every other metadata entry | a header with a long-string value |
//! | payload | body, untouched |
//!
//! Headers the broker or this adapter add (`x-death`, `x-first-death-*`, `x-last-death-*`,
//! `x-delivery-count`, `x-tidemill-*`) are not turned into metadata. A message from another
//! producer without `message_id` gets a fresh UUID; header values that are not strings are
//! turned into their text form.

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use tidemill::{Message, Metadata};

use crate::error::AmqpError;

/// The metadata key carried in the `correlation_id` property.
pub const CORRELATION_ID: &str = "correlation_id";
/// The metadata key carried in the `content_type` property.
pub const CONTENT_TYPE: &str = "content_type";
/// The header counting how many deliveries of a message ended in a nack.
pub const DELIVERIES_HEADER: &str = "x-tidemill-deliveries";

/// Encodes a message's id and metadata into AMQP properties.
pub(crate) fn encode(message: &Message, persistent: bool) -> Result<BasicProperties, AmqpError> {
    let id = short(message.id(), "message id")?;
    let mut props = BasicProperties::default()
        .with_message_id(id)
        .with_delivery_mode(if persistent { 2 } else { 1 });
    let metadata = message.metadata();
    let mut headers = FieldTable::default();
    for (key, value) in metadata.iter() {
        match key {
            CORRELATION_ID => props = props.with_correlation_id(short(value, "correlation id")?),
            CONTENT_TYPE => props = props.with_content_type(short(value, "content type")?),
            _ => {
                headers.insert(
                    short(key, "metadata key")?,
                    AMQPValue::LongString(LongString::from(value)),
                );
            }
        }
    }
    if !headers.inner().is_empty() {
        props = props.with_headers(headers);
    }
    Ok(props)
}

fn short(value: &str, what: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(value).map_err(|_| {
        AmqpError::Encode(format!(
            "the {what} is {} bytes; AMQP allows 255",
            value.len()
        ))
    })
}

fn reserved(key: &str) -> bool {
    key == "x-death"
        || key == "x-delivery-count"
        || key.starts_with("x-first-death-")
        || key.starts_with("x-last-death-")
        || key.starts_with("x-tidemill-")
}

fn text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Float(v) => v.to_string(),
        AMQPValue::Double(v) => v.to_string(),
        AMQPValue::Timestamp(v) => v.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        _ => return None,
    })
}

/// Decodes a received message.
pub(crate) fn decode(props: &BasicProperties, payload: Bytes) -> Message {
    let mut metadata = Metadata::new();
    if let Some(headers) = props.headers() {
        for (key, value) in headers.inner() {
            if reserved(key.as_str()) {
                continue;
            }
            if let Some(value) = text(value) {
                metadata.set(key.as_str(), value);
            }
        }
    }
    if let Some(c) = props.correlation_id() {
        metadata.set(CORRELATION_ID, c.as_str());
    }
    if let Some(c) = props.content_type() {
        metadata.set(CONTENT_TYPE, c.as_str());
    }
    match props.message_id() {
        Some(id) => Message::from_parts(id.as_str(), payload, metadata),
        None => Message::from_parts(tidemill::new_uuid(), payload, metadata),
    }
}

/// How many deliveries of this message already ended in a nack.
pub(crate) fn deliveries(props: &BasicProperties) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DELIVERIES_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// The properties to republish a nacked message with, its nack count raised to `count`.
pub(crate) fn with_deliveries(props: &BasicProperties, count: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = props.headers() {
        for (key, value) in old.inner() {
            // The broker's dead-letter history would grow with every trip through a delay
            // queue; the count header replaces it.
            if key.as_str() == "x-death" {
                continue;
            }
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.insert(DELIVERIES_HEADER.into(), AMQPValue::LongUInt(count));
    let mut out = props.clone().with_headers(headers);
    // A TTL the producer set must not expire the copy early in a delay queue.
    if out.expiration().is_some() {
        out = strip_expiration(out);
    }
    out
}

fn strip_expiration(props: BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = props.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = props.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = props.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = props.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = props.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = props.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = props.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msg = Message::with_id("id-1", "p")
            .with_metadata("a", "1")
            .with_metadata(CORRELATION_ID, "c")
            .with_metadata(CONTENT_TYPE, "application/json");
        let props = encode(&msg, true).unwrap();
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "id-1");
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "c");
        assert_eq!(props.headers().as_ref().unwrap().inner().len(), 1);
        let back = decode(&props, Bytes::from_static(b"p"));
        assert!(back.same_content(&msg));
        let again = with_deliveries(&props, 3);
        assert_eq!(deliveries(&again), 3);
        assert!(decode(&again, Bytes::from_static(b"p")).same_content(&msg));
    }

    #[test]
    fn long_keys_are_refused() {
        let msg = Message::new("").with_metadata("k".repeat(300), "v");
        assert!(encode(&msg, true).is_err());
    }
}
