//! The stream of deliveries of one subscription: pull requests and the inbox they answer to.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{StatusCode, Subject};
use futures::StreamExt;
use tidemill::{Acker, Delivery, Error, Result};
use tokio::time::Instant;

use super::outstanding::Outstanding;
use super::settle::{Command, DeadLetter, NatsSettle};
use super::Inner;
use crate::error::NatsError;
use crate::topology::decode_message;

/// How long one pull request waits at the server. Short, because a subscription that goes away
/// waits this long at most to return what its last request still brings.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The state behind one subscription's stream of deliveries: an inbox subscription and the pull
/// requests sent to the consumer, counted so that what they still bring can be returned.
pub(super) struct Pump {
    inner: Arc<Inner>,
    topic: Arc<str>,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` once the consumer is known.
    next_subject: Option<String>,
    inbox: Option<(Subject, async_nats::Subscriber)>,
    /// Messages requested and neither received nor expired.
    outstanding: usize,
    last_request: Instant,
    failures: u32,
    last_sequence: u64,
    ephemeral_lost: bool,
}

impl Pump {
    pub(super) fn new(inner: Arc<Inner>, topic: &str) -> Self {
        inner.live.fetch_add(1, Ordering::AcqRel);
        Self {
            inner,
            topic: Arc::from(topic),
            next_subject: None,
            inbox: None,
            outstanding: 0,
            last_request: Instant::now(),
            failures: 0,
            last_sequence: 0,
            ephemeral_lost: false,
        }
    }

    pub(super) async fn open(&mut self) -> Result<(), NatsError> {
        let resume_from = (self.ephemeral_lost && self.last_sequence > 0).then(|| {
            let unsettled = self
                .inner
                .outstanding
                .lock()
                .values()
                .map(|o| o.stream_sequence)
                .min();
            unsettled.unwrap_or(u64::MAX).min(self.last_sequence + 1)
        });
        let (stream, consumer) = self.inner.consumer(&self.topic, resume_from).await?;
        if self.inbox.is_none() {
            let inbox = Subject::from(self.inner.client.new_inbox());
            let subscription = self
                .inner
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(NatsError::client)?;
            self.inbox = Some((inbox, subscription));
        }
        self.next_subject = Some(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{stream}.{}",
            consumer.cached_info().name
        ));
        self.outstanding = 0;
        self.ephemeral_lost = false;
        Ok(())
    }

    /// Asks for another batch once half of what was asked for has arrived.
    async fn request_more(&mut self) {
        let batch = self.inner.config.batch_size;
        if self.outstanding > batch / 2 {
            return;
        }
        let (Some(subject), Some((inbox, _))) = (&self.next_subject, &self.inbox) else {
            return;
        };
        let request = format!(
            "{{\"batch\":{batch},\"expires\":{}}}",
            PULL_EXPIRES.as_nanos()
        );
        match self
            .inner
            .client
            .publish_with_reply(subject.clone(), inbox.clone(), request.into())
            .await
        {
            Ok(()) => {
                self.outstanding += batch;
                self.last_request = Instant::now();
            }
            Err(err) => tracing::debug!(topic = %self.topic, error = %err, "pull request failed"),
        }
    }

    pub(super) async fn next(&mut self) -> Option<Result<Delivery>> {
        let cancel = self.inner.cancel.clone();
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if self.next_subject.is_none() {
                let opened = tokio::select! {
                    _ = cancel.cancelled() => continue,
                    opened = self.open() => opened,
                };
                if let Err(err) = opened {
                    self.failures += 1;
                    let backoff = Duration::from_millis(100 * 2u64.pow(self.failures.min(5)));
                    tokio::select! {
                        _ = cancel.cancelled() => {},
                        _ = tokio::time::sleep(backoff) => {},
                    }
                    // Report the first failure and then every tenth, and keep trying.
                    if self.failures == 1 || self.failures.is_multiple_of(10) {
                        return Some(Err(Error::subscribe(&*self.topic, err)));
                    }
                    continue;
                }
                self.failures = 0;
            }
            self.request_more().await;
            // A request that neither delivered nor expired within its time was lost with the
            // connection (a server restart): ask again.
            let lost_after = self.last_request + PULL_EXPIRES + Duration::from_secs(1);
            let (_, subscription) = self.inbox.as_mut().expect("opened above");
            let message = tokio::select! {
                _ = cancel.cancelled() => continue,
                _ = tokio::time::sleep_until(lost_after) => {
                    self.outstanding = 0;
                    continue;
                }
                message = subscription.next() => message,
            };
            let Some(message) = message else {
                // The connection was closed under the subscription.
                self.inbox = None;
                self.next_subject = None;
                continue;
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    let message = async_nats::jetstream::Message {
                        message,
                        context: self.inner.js.clone(),
                    };
                    if let Some(delivery) = self.deliver(message) {
                        return Some(Ok(delivery));
                    }
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(StatusCode::NO_RESPONDERS) => {
                    // No consumer (or no JetStream) to answer: find or create it again.
                    tracing::debug!(topic = %self.topic, "no consumer answers pull requests, opening it again");
                    self.lost();
                    tokio::select! {
                        _ = cancel.cancelled() => {},
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {},
                    }
                }
                Some(status) => {
                    self.outstanding = self
                        .outstanding
                        .saturating_sub(expired(&message, self.inner.config.batch_size));
                    let description = message.description.as_deref().unwrap_or_default();
                    if description.contains("Consumer Deleted") {
                        self.lost();
                    } else if status != StatusCode::TIMEOUT {
                        tracing::debug!(topic = %self.topic, %status, description, "pull request ended");
                    }
                }
            }
        }
    }

    fn lost(&mut self) {
        self.next_subject = None;
        self.outstanding = 0;
        self.ephemeral_lost = self.inner.config.group.is_none();
    }

    fn deliver(&mut self, message: async_nats::jetstream::Message) -> Option<Delivery> {
        let (sequence, delivered, stream) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered, info.stream.to_owned()),
            Err(_) => return None,
        };
        self.last_sequence = self.last_sequence.max(sequence);
        let async_nats::jetstream::Message { message, .. } = message;
        let reply = message.reply?;
        let config = &self.inner.config;
        let dead_letter_at = match (config.max_deliveries, &config.dead_letter_subject) {
            (Some(max), Some(_)) => Some(i64::from(max)),
            _ => None,
        };
        let decoded = decode_message(message.headers.as_ref(), message.payload.clone(), || {
            format!("{stream}:{sequence}")
        });
        let last = dead_letter_at.filter(|max| delivered >= *max).map(|max| {
            Box::new(DeadLetter {
                reply: reply.clone(),
                topic: self.topic.clone(),
                message_id: decoded.shared_id(),
                sequence,
                headers: message.headers.clone(),
                payload: message.payload.clone(),
                reason: format!("rejected on delivery {delivered} of at most {max}"),
            })
        });
        if let (Some(max), Some(mut dead)) =
            (dead_letter_at, last.as_ref().map(|d| d.clone_parts()))
        {
            if delivered > max {
                // The last allowed delivery ran out its ack wait.
                dead.reason = format!(
                    "not settled within the ack wait ({:?}) after {max} deliveries",
                    config.ack_wait
                );
                self.inner.send(Command::DeadLetter(Box::new(dead)));
                return None;
            }
        }
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        self.inner.outstanding.lock().insert(
            token,
            Outstanding {
                reply: reply.clone(),
                since: Instant::now(),
                stream_sequence: sequence,
            },
        );
        let settle = NatsSettle {
            inner: self.inner.clone(),
            token,
            reply,
            last,
        };
        Some(Delivery::new(decoded, Acker::new(settle)))
    }
}

/// How many requested messages a pull status says will not come.
fn expired(message: &async_nats::Message, batch: usize) -> usize {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get_last("Nats-Pending-Messages"))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(batch)
}

impl Drop for Pump {
    /// Hands what the last pull requests still bring back to the server (a nack each), on a
    /// task that lives until those requests are done, so nothing waits out its ack wait.
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let returning = self
            .inbox
            .take()
            .zip(tokio::runtime::Handle::try_current().ok());
        let Some(((_, mut subscription), runtime)) = returning else {
            inner.live.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let mut outstanding = self.outstanding;
        let until = self.last_request + PULL_EXPIRES + Duration::from_millis(500);
        let batch = inner.config.batch_size;
        inner.pending.fetch_add(1, Ordering::AcqRel);
        inner.live.fetch_sub(1, Ordering::AcqRel);
        runtime.spawn(async move {
            let mut returned = Vec::new();
            // First what has already arrived, then what comes until the requests are done.
            loop {
                let message = match futures::FutureExt::now_or_never(subscription.next()).flatten()
                {
                    Some(message) => Some(message),
                    None if outstanding == 0 => break,
                    None => match tokio::time::timeout_at(until, subscription.next()).await {
                        Ok(Some(message)) => Some(message),
                        _ => None,
                    },
                };
                let Some(message) = message else { break };
                match message.status {
                    None | Some(StatusCode::OK) => {
                        outstanding = outstanding.saturating_sub(1);
                        // Held until the requests are done: returned now, it would come
                        // straight back into the same open request, again and again.
                        returned.extend(message.reply);
                    }
                    Some(StatusCode::IDLE_HEARTBEAT) => {}
                    Some(_) => outstanding = outstanding.saturating_sub(expired(&message, batch)),
                }
            }
            for reply in returned {
                inner.send(Command::Settle {
                    reply,
                    payload: AckKind::Nak(None).into(),
                });
            }
            drop(subscription);
            inner.done();
        });
    }
}
