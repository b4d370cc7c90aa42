//! Removing consumers of a group that went away.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tidemill::Result;

use crate::acker::Target;
use crate::codec::{self};

use super::reader::Reader;

impl Reader {
    /// `XGROUP DELCONSUMER` for consumers idle longer than `timeout` with nothing pending. A dead
    /// consumer's pending messages are claimed by `XAUTOCLAIM` first, which empties its list.
    pub(super) async fn remove_dead_consumers(
        &self,
        conn: &mut MultiplexedConnection,
        target: &Target,
        timeout: Duration,
    ) -> Result<(), RedisError> {
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&*self.key)
            .arg(&*target.group)
            .query_async(conn)
            .await?;
        let Value::Array(consumers) = reply else {
            return Ok(());
        };
        for consumer in consumers {
            let fields = match consumer {
                Value::Array(flat) => {
                    let mut it = flat.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    pairs
                }
                Value::Map(pairs) => pairs,
                _ => continue,
            };
            let (mut name, mut pending, mut idle) = (None, None, None);
            for (k, v) in fields {
                match codec::string(k).as_deref() {
                    Some("name") => name = codec::string(v),
                    Some("pending") => pending = as_int(&v),
                    Some("idle") => idle = as_int(&v),
                    _ => {}
                }
            }
            let (Some(name), Some(0), Some(idle)) = (name, pending, idle) else {
                continue;
            };
            if name == *target.consumer || idle < timeout.as_millis() as i64 {
                continue;
            }
            let removed: Result<Value, RedisError> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&*self.key)
                .arg(&*target.group)
                .arg(&name)
                .query_async(conn)
                .await;
            match removed {
                Ok(_) => {
                    tracing::info!(topic = %target.topic, group = %target.group, consumer = %name, idle_ms = idle, "removed idle consumer")
                }
                Err(e) => {
                    tracing::debug!(consumer = %name, error = %e, "removing idle consumer failed")
                }
            }
        }
        Ok(())
    }
}

pub(super) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}
