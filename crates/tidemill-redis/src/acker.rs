//! The task that takes settlements to the server: acks become `XACK`, and messages a closed
//! subscription gives back are made claimable at once. Settlements that pile up while a round
//! trip is in flight go out together, one command per stream.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Pipeline, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::RedisConfig;
use crate::connection::{is_connection_error, reconnect_backoff};

/// How long settlements are retried while the server is unreachable. Past this, the messages
/// stay pending and come back through `XAUTOCLAIM`: at-least-once still holds.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// The group of one stream a consumer settles in.
pub(crate) struct Target {
    pub(crate) topic: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) consumer: Arc<str>,
}

pub(crate) enum AckOp {
    /// `XACK`.
    Ack {
        target: Arc<Target>,
        id: Arc<str>,
        message_id: Arc<str>,
    },
    /// Makes the entries claimable by any consumer of the group right away.
    Release {
        target: Arc<Target>,
        ids: Vec<Arc<str>>,
    },
    /// Answers once everything sent before it reached the server.
    Flush(oneshot::Sender<()>),
}

/// The entry ids to ack in one group, and the message id of the first, for logs.
type AckBatch = (Arc<Target>, Vec<Arc<str>>, Arc<str>);

pub(crate) fn spawn(conn: ConnectionManager, config: &RedisConfig) -> mpsc::UnboundedSender<AckOp> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, conn, config.clone()));
    tx
}

async fn run(mut rx: mpsc::UnboundedReceiver<AckOp>, conn: ConnectionManager, config: RedisConfig) {
    let mut ops = Vec::with_capacity(256);
    // A margin over the claim idle time, so the next XAUTOCLAIM surely takes released entries.
    let claim_idle_ms = config.claim_idle.as_millis() as u64 + 1000;
    while rx.recv_many(&mut ops, 8192).await > 0 {
        let mut acks: Vec<AckBatch> = Vec::new();
        let mut releases: Vec<(Arc<Target>, Vec<Arc<str>>)> = Vec::new();
        let mut flushes = Vec::new();
        for op in ops.drain(..) {
            match op {
                AckOp::Ack {
                    target,
                    id,
                    message_id,
                } => match acks.iter_mut().find(|(t, _, _)| Arc::ptr_eq(t, &target)) {
                    Some((_, ids, _)) => ids.push(id),
                    None => acks.push((target, vec![id], message_id)),
                },
                AckOp::Release { target, ids } => {
                    match releases.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &target)) {
                        Some((_, all)) => all.extend(ids),
                        None => releases.push((target, ids)),
                    }
                }
                AckOp::Flush(done) => flushes.push(done),
            }
        }
        let mut pipe = Pipeline::with_capacity(acks.len() + releases.len());
        let mut what: Vec<(&Target, &str, usize)> = Vec::new();
        for (target, ids, first) in &acks {
            pipe.cmd("XACK")
                .arg(&*target.key)
                .arg(&*target.group)
                .arg(ids.iter().map(|id| &**id).collect::<Vec<_>>());
            what.push((target, first, ids.len()));
        }
        for (target, ids) in &releases {
            if ids.is_empty() {
                continue;
            }
            // XCLAIM to ourselves with a large idle time: XAUTOCLAIM of any consumer takes them.
            pipe.cmd("XCLAIM")
                .arg(&*target.key)
                .arg(&*target.group)
                .arg(&*target.consumer)
                .arg(0)
                .arg(ids.iter().map(|id| &**id).collect::<Vec<_>>())
                .arg("IDLE")
                .arg(claim_idle_ms)
                .arg("JUSTID");
            what.push((target, &ids[0], ids.len()));
        }
        if !pipe.is_empty() {
            send(&conn, &config, pipe.ignore_errors(), &what).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn send(
    conn: &ConnectionManager,
    config: &RedisConfig,
    pipe: &Pipeline,
    what: &[(&Target, &str, usize)],
) {
    let started = Instant::now();
    let mut backoff = reconnect_backoff(config);
    loop {
        let mut conn = conn.clone();
        let result: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut conn).await;
        match result {
            Ok(results) => {
                for (result, (target, first, count)) in results.into_iter().zip(what) {
                    if let Err(e) = result {
                        tracing::warn!(
                            topic = %target.topic,
                            group = %target.group,
                            id = first,
                            count,
                            error = %e,
                            "settling messages failed; they will be delivered again"
                        );
                    }
                }
                return;
            }
            Err(e) if is_connection_error(&e) && started.elapsed() < GIVE_UP_AFTER => {
                tracing::debug!(error = %e, "settling failed, retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                for (target, first, count) in what {
                    tracing::warn!(
                        topic = %target.topic,
                        group = %target.group,
                        id = first,
                        count,
                        error = %e,
                        "settling messages failed; they will be delivered again"
                    );
                }
                return;
            }
        }
    }
}
