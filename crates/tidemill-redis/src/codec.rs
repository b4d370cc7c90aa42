//! How a [`Message`] is laid out as a stream entry, and how replies are read back.
//!
//! An entry holds the field [`ID_FIELD`] (the message id), the field [`PAYLOAD_FIELD`] (the
//! payload bytes) and one field per metadata entry, under the metadata key itself.

use std::sync::Arc;

use bytes::Bytes;
use redis::{Cmd, Value};
use tidemill::{Message, Metadata};

use crate::config::MaxLen;
use crate::error::RedisAdapterError;

/// The stream field that carries the message id.
pub const ID_FIELD: &str = "message_id";
/// The stream field that carries the payload.
pub const PAYLOAD_FIELD: &str = "payload";

/// Builds `XADD key [MAXLEN ~|= n] * message_id <id> payload <bytes> <k> <v>...`.
pub(crate) fn xadd(
    key: &str,
    max_len: Option<MaxLen>,
    message: &Message,
) -> Result<Cmd, RedisAdapterError> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key);
    match max_len {
        Some(MaxLen::Approximate(n)) => {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        Some(MaxLen::Exact(n)) => {
            cmd.arg("MAXLEN").arg("=").arg(n);
        }
        None => {}
    }
    cmd.arg("*")
        .arg(ID_FIELD)
        .arg(message.id())
        .arg(PAYLOAD_FIELD)
        .arg(message.payload().as_ref());
    for (k, v) in message.metadata().iter() {
        if k == ID_FIELD || k == PAYLOAD_FIELD {
            return Err(RedisAdapterError::ReservedMetadataKey { key: k.to_owned() });
        }
        cmd.arg(k).arg(v);
    }
    Ok(cmd)
}

/// One entry read from a stream.
pub(crate) struct Entry {
    /// The stream entry id (`<ms>-<seq>`), what `XACK` takes.
    pub(crate) id: Arc<str>,
    pub(crate) message: Message,
}

/// Reads the reply of `XREADGROUP`/`XREAD` on one stream: nil on timeout, else the entries.
/// Entries without fields (deleted from the stream while pending) are returned in `deleted`.
pub(crate) fn read_reply(
    value: Value,
    entries: &mut Vec<Entry>,
    deleted: &mut Vec<String>,
) -> Result<(), RedisAdapterError> {
    let streams = match value {
        Value::Nil => return Ok(()),
        Value::Array(streams) => streams,
        Value::Map(map) => map.into_iter().map(|(_, v)| v).collect(),
        other => return Err(unexpected("XREADGROUP", &other)),
    };
    for stream in streams {
        let list = match stream {
            // RESP2: [key, entries]; RESP3 maps already dropped the key.
            Value::Array(mut pair)
                if pair.len() == 2 && !matches!(pair[1], Value::BulkString(_)) =>
            {
                pair.pop().expect("two elements")
            }
            other => other,
        };
        entry_list(list, entries, deleted)?;
    }
    Ok(())
}

/// Reads the reply of `XAUTOCLAIM`: the next cursor, with the claimed entries added to
/// `entries` and the ids of entries deleted from the stream to `deleted`.
pub(crate) fn autoclaim_reply(
    value: Value,
    entries: &mut Vec<Entry>,
    deleted: &mut Vec<String>,
) -> Result<String, RedisAdapterError> {
    let Value::Array(parts) = value else {
        return Err(unexpected("XAUTOCLAIM", &value));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(string)
        .ok_or_else(|| RedisAdapterError::UnexpectedReply("XAUTOCLAIM without cursor".into()))?;
    if let Some(list) = parts.next() {
        entry_list(list, entries, deleted)?;
    }
    if let Some(Value::Array(ids)) = parts.next() {
        deleted.extend(ids.into_iter().filter_map(string));
    }
    Ok(cursor)
}

fn entry_list(
    list: Value,
    entries: &mut Vec<Entry>,
    deleted: &mut Vec<String>,
) -> Result<(), RedisAdapterError> {
    let list = match list {
        Value::Array(list) => list,
        Value::Nil => return Ok(()),
        other => return Err(unexpected("stream entries", &other)),
    };
    entries.reserve(list.len());
    for entry in list {
        let Value::Array(pair) = entry else {
            // XAUTOCLAIM before 7.0 answers nil for an entry deleted from the stream.
            continue;
        };
        let mut pair = pair.into_iter();
        let id = pair
            .next()
            .and_then(string)
            .ok_or_else(|| RedisAdapterError::UnexpectedReply("stream entry without id".into()))?;
        match pair.next() {
            Some(Value::Array(fields)) => {
                let message = decode_fields(&id, fields);
                entries.push(Entry {
                    id: id.into(),
                    message,
                });
            }
            Some(Value::Map(fields)) => {
                let flat = fields.into_iter().flat_map(|(k, v)| [k, v]).collect();
                let message = decode_fields(&id, flat);
                entries.push(Entry {
                    id: id.into(),
                    message,
                });
            }
            _ => deleted.push(id),
        }
    }
    Ok(())
}

/// Builds the message of one entry. Entries written by other programs are read too: without an
/// id field the entry id stands in, without a payload field the payload is empty, and metadata
/// that is not UTF-8 is converted lossily rather than blocking the stream.
fn decode_fields(entry_id: &str, fields: Vec<Value>) -> Message {
    let mut id: Option<String> = None;
    let mut payload = Bytes::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let Some(k) = bytes_of(k) else { continue };
        let Some(v) = bytes_of(v) else { continue };
        if k == ID_FIELD.as_bytes() {
            id = Some(utf8(v));
        } else if k == PAYLOAD_FIELD.as_bytes() {
            payload = Bytes::from(v);
        } else {
            pairs.push((utf8(k), utf8(v)));
        }
    }
    let metadata = if pairs.is_empty() {
        Metadata::new()
    } else {
        Metadata::from_iter(pairs)
    };
    let id: Arc<str> = match id {
        Some(id) => id.into(),
        None => entry_id.into(),
    };
    Message::from_parts(id, payload, metadata)
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn utf8(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub(crate) fn string(v: Value) -> Option<String> {
    bytes_of(v).map(utf8)
}

fn unexpected(what: &str, v: &Value) -> RedisAdapterError {
    let kind = match v {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "status",
        Value::Okay => "OK",
        Value::Map(_) => "map",
        _ => "other value",
    };
    RedisAdapterError::UnexpectedReply(format!("{what} answered with {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reserved_metadata_is_rejected() {
        let msg = Message::new("x").with_metadata("payload", "oops");
        assert!(matches!(
            xadd("k", None, &msg),
            Err(RedisAdapterError::ReservedMetadataKey { .. })
        ));
    }

    #[test]
    fn reads_resp2_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("message_id"),
                        bulk("m1"),
                        bulk("payload"),
                        bulk("p"),
                        bulk("k"),
                        bulk("v"),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("x"), bulk("y")])]),
            ]),
        ])]);
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());
        read_reply(reply, &mut entries, &mut deleted).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].message.id(), "m1");
        assert_eq!(entries[0].message.payload().as_ref(), b"p");
        assert_eq!(entries[0].message.metadata().get("k"), Some("v"));
        // A foreign entry: the entry id stands in for the message id.
        assert_eq!(entries[1].message.id(), "3-0");
        assert_eq!(entries[1].message.metadata().get("x"), Some("y"));
        assert_eq!(deleted, ["2-0"]);
    }
}
