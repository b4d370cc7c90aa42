//! The reader task of one subscription: connection, read loop and blocking reads.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tidemill::{Error, Result};
use tokio::time::Instant;

use crate::connection::{is_connection_error, reconnect_backoff};
use crate::error::RedisAdapterError;

use super::start::ensure_group;
use super::stream::SubState;
use super::Inner;

/// The task that reads one subscription's stream into its buffer.
pub(super) struct Reader {
    pub(super) state: Arc<SubState>,
    pub(super) subscriber: Arc<Inner>,
    pub(super) key: Arc<str>,
    pub(super) conn: Option<(MultiplexedConnection, i64)>,
    /// Without a group: the id of the last entry read.
    pub(super) position: String,
}

pub(super) enum Read {
    /// Own pending entries first (a restarted consumer with a stable name), from this id.
    OwnPending(String),
    New,
}

impl Reader {
    pub(super) async fn run(mut self) {
        let subscriber = self.subscriber.clone();
        let config = &subscriber.config;
        let state = self.state.clone();
        let mut backoff = reconnect_backoff(config);
        let mut read = Read::OwnPending("0-0".to_owned());
        let mut next_claim = Instant::now();
        let mut claim_cursor = "0-0".to_owned();
        let mut next_check = Instant::now() + config.consumer_check_interval;
        let mut failing = false;
        loop {
            // Back-pressure: fetch more only once the consumer has used up half of the buffer.
            while state.buffered() > state.low_water {
                tokio::select! {
                    _ = state.room.notified() => {}
                    _ = state.cancel.cancelled() => break,
                }
            }
            if state.cancel.is_cancelled() {
                break;
            }
            let result = match &state.target {
                Some(target) => {
                    let target = target.clone();
                    self.group_round(
                        &target,
                        &mut read,
                        &mut next_claim,
                        &mut claim_cursor,
                        &mut next_check,
                    )
                    .await
                }
                None => self.fanout_round().await,
            };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!(topic = %state.topic, "subscription reading again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or the group is gone (deleted, or a server restart without
                    // persistence): declare it again.
                    if let Some(target) = &state.target {
                        tracing::warn!(topic = %state.topic, group = %target.group, "consumer group missing, creating it again");
                        let mut conn = self.subscriber.conn.clone();
                        if let Err(e) =
                            ensure_group(&mut conn, &self.key, &target.group, config.group_start)
                                .await
                        {
                            tracing::warn!(topic = %state.topic, error = %e, "creating the consumer group failed");
                            self.pause(&mut backoff).await;
                        }
                    }
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        self.conn = None;
                        if !failing {
                            tracing::warn!(topic = %state.topic, address = %self.subscriber.endpoint.address, error = %e, "subscription lost the connection, reconnecting");
                        }
                    } else {
                        tracing::warn!(topic = %state.topic, error = %e, "reading the stream failed");
                        state.push_error(Error::subscribe(
                            &*state.topic,
                            RedisAdapterError::from(e),
                        ));
                    }
                    failing = true;
                    self.pause(&mut backoff).await;
                }
            }
        }
        state.shut();
    }

    pub(super) async fn pause(&self, backoff: &mut tidemill::backoff::Retries) {
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = self.state.cancel.cancelled() => {}
        }
    }

    pub(super) async fn connection(&mut self) -> Result<(MultiplexedConnection, i64), RedisError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .subscriber
            .endpoint
            .dedicated(&self.subscriber.config)
            .await?;
        let id = client_id(&conn).await?;
        self.conn = Some((conn.clone(), id));
        Ok((conn, id))
    }

    /// Runs a blocking read. If the subscription is cancelled meanwhile, the read is woken with
    /// `CLIENT UNBLOCK` and awaited, so entries the server handed out reach the buffer (and go
    /// back to the group) instead of vanishing with a dropped reply.
    pub(super) async fn blocking(
        &self,
        cmd: &redis::Cmd,
        conn: &mut MultiplexedConnection,
        client_id: i64,
    ) -> Result<Value, RedisError> {
        let read = cmd.query_async::<Value>(conn);
        tokio::pin!(read);
        tokio::select! {
            reply = &mut read => reply,
            _ = self.state.cancel.cancelled() => {
                let unblock: Result<Value, RedisError> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(client_id)
                    .query_async(&mut self.subscriber.conn.clone())
                    .await;
                if let Err(e) = unblock {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK failed");
                }
                read.await
            }
        }
    }
}

pub(super) async fn client_id(conn: &MultiplexedConnection) -> Result<i64, RedisError> {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn.clone())
        .await
}

pub(super) fn parse_error(e: RedisAdapterError) -> RedisError {
    RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
}
