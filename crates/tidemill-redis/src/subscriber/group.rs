//! Reading with a consumer group: own pending entries, claiming idle ones, then new ones.

use redis::{RedisError, Value};
use tidemill::Result;
use tokio::time::Instant;

use crate::acker::{AckOp, Target};
use crate::codec::{self};

use super::reader::{parse_error, Read, Reader};

impl Reader {
    pub(super) async fn group_round(
        &mut self,
        target: &Target,
        read: &mut Read,
        next_claim: &mut Instant,
        claim_cursor: &mut String,
        next_check: &mut Instant,
    ) -> Result<(), RedisError> {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let (mut conn, client_id) = self.connection().await?;
        let count = config.batch_size;
        let (mut entries, mut deleted) = (Vec::new(), Vec::new());

        if let Read::OwnPending(from) = read {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&*target.group)
                .arg(&*target.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&*self.key)
                .arg(&*from)
                .query_async(&mut conn)
                .await?;
            codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
            let last = entries
                .last()
                .map(|e| e.id.to_string())
                .or(deleted.last().cloned());
            match last {
                Some(last) => *from = last,
                None => *read = Read::New,
            }
            self.ack_deleted(target, deleted);
            self.state.push(entries);
            return Ok(());
        }

        let now = Instant::now();
        if now >= *next_claim {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&*self.key)
                .arg(&*target.group)
                .arg(&*target.consumer)
                .arg(config.claim_idle.as_millis() as u64)
                .arg(&**claim_cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            let cursor =
                codec::autoclaim_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
            if !entries.is_empty() {
                tracing::debug!(topic = %target.topic, count = entries.len(), "claimed idle messages");
            }
            self.state.push(std::mem::take(&mut entries));
            if cursor == "0-0" {
                *next_claim = now + config.claim_interval;
            }
            *claim_cursor = cursor;
            if self.state.buffered() > self.state.low_water {
                return Ok(());
            }
        }
        if let Some(timeout) = config.consumer_timeout {
            if now >= *next_check {
                *next_check = now + config.consumer_check_interval;
                self.remove_dead_consumers(&mut conn, target, timeout)
                    .await?;
            }
        }

        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*target.group)
            .arg(&*target.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(config.block_time.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*self.key)
            .arg(">");
        let reply = self.blocking(&cmd, &mut conn, client_id).await?;
        codec::read_reply(reply, &mut entries, &mut deleted).map_err(parse_error)?;
        self.state.push(entries);
        Ok(())
    }

    /// Pending entries whose data was deleted from the stream can never be processed: ack them.
    pub(super) fn ack_deleted(&self, target: &Target, deleted: Vec<String>) {
        let Some(target_arc) = &self.state.target else {
            return;
        };
        for id in deleted {
            tracing::warn!(topic = %target.topic, entry_id = %id, "pending entry was deleted from the stream; acknowledging it");
            let _ = self.state.acker.send(AckOp::Ack {
                target: target_arc.clone(),
                message_id: id.clone().into(),
                id: id.into(),
            });
        }
    }
}
