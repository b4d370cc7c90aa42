//! Rows as the adapter stores them, and their conversion from and to [`Message`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tidemill::{Error, Message, Metadata, Result};

/// A reader's place in a topic: the inserting transaction (PostgreSQL; 0 elsewhere) and the
/// row's position. Rows are read in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    pub tx: i64,
    pub pos: i64,
}

/// Where a reader starts, in the units of the tables (from [`tidemill::StartPosition`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// The oldest row in the table.
    Beginning,
    /// After the rows committed when the reader started.
    End,
    /// The row at this position and after.
    Position(i64),
    /// The first row published at or after this time (Unix ms) and after.
    Time(i64),
}

impl Start {
    /// `start` for this adapter, or the [`Error::Config`] saying why it cannot be honoured.
    pub(crate) fn from_position(start: tidemill::StartPosition) -> Result<Self> {
        use tidemill::StartPosition as P;
        Ok(match start {
            P::Beginning => Self::Beginning,
            P::End => Self::End,
            P::Offset(n) => Self::Position(i64::try_from(n).map_err(|_| {
                Error::Config(format!(
                    "SQL start position {n} is past the largest row position ({})",
                    i64::MAX
                ))
            })?),
            P::Time(t) => Self::Time(
                t.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
            other => return Err(other.unsupported("SQL", &["beginning", "end", "offset", "time"])),
        })
    }
}

/// A row read back from the messages table.
#[derive(Clone, Debug)]
pub(crate) struct StoredRow {
    pub cursor: Cursor,
    pub message: Message,
    pub deliver_at: i64,
}

/// A message ready to be inserted.
pub(crate) struct NewRow {
    pub id: Arc<str>,
    pub payload: Bytes,
    pub metadata: String,
    pub deliver_at: i64,
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn encode(topic: &str, messages: Vec<Message>, now: i64) -> Result<Vec<NewRow>> {
    messages
        .into_iter()
        .map(|msg| {
            let (id, payload, mut metadata) = msg.into_parts();
            let (deliver_at, delayed) = crate::delay::deliver_at(&metadata, now);
            if delayed {
                // The delay lives in the row; the delivered message comes without it.
                metadata.remove(tidemill::delay::DELAY_FOR_KEY);
                metadata.remove(tidemill::delay::DELAY_UNTIL_KEY);
            }
            let map: BTreeMap<&str, &str> = metadata.iter().collect();
            let metadata = serde_json::to_string(&map)
                .map_err(|e| Error::publish(topic, &*id, crate::SqlError::from(e)))?;
            Ok(NewRow {
                id,
                payload,
                metadata,
                deliver_at,
            })
        })
        .collect()
}

/// Metadata key set on a message whose stored metadata could not be read (edited by hand), so
/// that the row is still delivered instead of blocking its topic.
pub const DECODE_ERROR_KEY: &str = "tidemill-sql-decode-error";

pub(crate) fn decode(
    topic: &str,
    cursor: Cursor,
    id: String,
    payload: Vec<u8>,
    metadata: &str,
    deliver_at: i64,
) -> StoredRow {
    let metadata = match serde_json::from_str::<BTreeMap<String, String>>(metadata) {
        Ok(map) => Metadata::from_iter(map),
        Err(e) => {
            tracing::error!(topic, message_id = %id, position = cursor.pos, "stored metadata is not a JSON object of strings: {e}");
            Metadata::from_iter([(DECODE_ERROR_KEY, e.to_string())])
        }
    };
    StoredRow {
        cursor,
        message: Message::from_parts(id, Bytes::from(payload), metadata),
        deliver_at,
    }
}
