//! Messages to Kafka records and back: metadata as headers, the id in a header of its own.

use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::Message as _;
use tidemill::{Message, Metadata};

/// The header that carries the tidemill message id.
pub const ID_HEADER: &str = "tidemill_message_id";

pub(crate) fn headers(msg: &Message) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(msg.metadata().len() + 1).insert(Header {
        key: ID_HEADER,
        value: Some(msg.id()),
    });
    for (k, v) in msg.metadata().iter() {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    headers
}

/// A record as a tidemill message. A record without an id header (published by another client)
/// gets `topic-partition-offset` as its id, which is stable across redeliveries.
pub(crate) fn decode(record: &BorrowedMessage<'_>) -> Message {
    let mut id = None;
    let mut metadata = Metadata::new();
    if let Some(headers) = record.headers() {
        for h in headers.iter() {
            let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            if h.key == ID_HEADER {
                id = Some(value.to_owned());
            } else {
                metadata.set(h.key, value);
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        format!(
            "{}-{}-{}",
            record.topic(),
            record.partition(),
            record.offset()
        )
    });
    let payload = bytes::Bytes::copy_from_slice(record.payload().unwrap_or_default());
    Message::from_parts(id, payload, metadata)
}
