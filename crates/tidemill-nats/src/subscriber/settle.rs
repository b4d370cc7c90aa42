//! The settling task: acks, nacks and dead letters sent to the server in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use tidemill::{Settle, Settlement};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Inner;
use crate::error::NatsError;
use crate::topology::{DEAD_LETTER_REASON, DEAD_LETTER_SEQUENCE, DEAD_LETTER_TOPIC};

/// Work for the settling task.
pub(super) enum Command {
    /// Send `payload` to the delivery's reply subject.
    Settle { reply: Subject, payload: Bytes },
    /// Move a message to the dead-letter subject, then terminate it.
    DeadLetter(Box<DeadLetter>),
}

pub(super) struct DeadLetter {
    pub(super) reply: Subject,
    pub(super) topic: Arc<str>,
    pub(super) message_id: Arc<str>,
    pub(super) sequence: u64,
    pub(super) headers: Option<HeaderMap>,
    pub(super) payload: Bytes,
    pub(super) reason: String,
}

impl Inner {
    pub(super) fn send(&self, command: Command) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.settle_tx.send(command).is_err() {
            self.done();
        }
    }

    pub(super) fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    pub(super) fn nak_payload(&self, delay: Option<Duration>) -> Bytes {
        match delay.unwrap_or(self.config.nack_delay) {
            d if d.is_zero() => AckKind::Nak(None).into(),
            d => AckKind::Nak(Some(d)).into(),
        }
    }
}

/// Sends settlements; with double acks, resends each until the server confirms it.
pub(super) async fn settle_task(
    inner: std::sync::Weak<Inner>,
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let Some(double_ack) = inner.upgrade().map(|i| i.config.double_ack) else {
        return;
    };
    let inbox = client.new_inbox();
    let mut confirmations = if double_ack {
        match client.subscribe(format!("{inbox}.*")).await {
            Ok(sub) => Some(sub),
            Err(err) => {
                tracing::error!(error = %err, "cannot subscribe for ack confirmations; acks are not confirmed");
                None
            }
        }
    } else {
        None
    };
    // Unconfirmed acks by number: reply subject, payload, last sent, attempts.
    let mut waiting: HashMap<u64, (Subject, Bytes, Instant, u32)> = HashMap::new();
    let mut next = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let resend_after = Duration::from_secs(2);
    let mut open = true;
    loop {
        tokio::select! {
            command = rx.recv(), if open => {
                let Some(command) = command else { open = false; continue };
                let Some(inner) = inner.upgrade() else { return };
                match command {
                    Command::Settle { reply, payload } => {
                        if confirmations.is_some() {
                            next += 1;
                            let respond = format!("{inbox}.{next}");
                            if let Err(err) = client.publish_with_reply(reply.clone(), respond, payload.clone()).await {
                                tracing::debug!(error = %err, "sending a settlement failed, will retry");
                            }
                            waiting.insert(next, (reply, payload, Instant::now(), 1));
                        } else {
                            if let Err(err) = client.publish(reply, payload).await {
                                tracing::warn!(error = %err, "sending a settlement failed; the server will deliver the message again");
                            }
                            inner.done();
                        }
                    }
                    Command::DeadLetter(dead) => {
                        tokio::spawn(dead_letter(inner.clone(), *dead));
                    }
                }
            }
            Some(reply) = async { match confirmations.as_mut() { Some(s) => s.next().await, None => None } } => {
                let number = reply.subject.rsplit('.').next().and_then(|n| n.parse::<u64>().ok());
                if let Some(number) = number {
                    if waiting.remove(&number).is_some() {
                        if let Some(inner) = inner.upgrade() { inner.done() }
                    }
                }
            }
            _ = tick.tick() => {
                if !open && waiting.is_empty() {
                    return;
                }
                let now = Instant::now();
                let mut given_up = Vec::new();
                for (number, (reply, payload, sent, attempts)) in waiting.iter_mut() {
                    if now.duration_since(*sent) < resend_after {
                        continue;
                    }
                    if *attempts >= 60 {
                        given_up.push(*number);
                        continue;
                    }
                    *attempts += 1;
                    *sent = now;
                    let respond = format!("{inbox}.{number}");
                    if let Err(err) = client.publish_with_reply(reply.clone(), respond, payload.clone()).await {
                        tracing::debug!(error = %err, "resending a settlement failed, will retry");
                    }
                }
                for number in given_up {
                    waiting.remove(&number);
                    tracing::error!("the server never confirmed a settlement; the message may come again");
                    if let Some(inner) = inner.upgrade() { inner.done() }
                }
            }
        }
    }
}

/// Publishes the message to the dead-letter subject with the reason, then terminates it at its
/// stream; if that fails, the message is nacked and comes back.
async fn dead_letter(inner: Arc<Inner>, dead: DeadLetter) {
    let Some(subject) = inner.config.dead_letter_subject.clone() else {
        inner.done();
        return;
    };
    let mut headers = dead.headers.unwrap_or_default();
    headers.insert(
        DEAD_LETTER_REASON,
        dead.reason.replace(['\r', '\n'], " ").as_str(),
    );
    headers.insert(DEAD_LETTER_TOPIC, &*dead.topic);
    headers.insert(DEAD_LETTER_SEQUENCE, dead.sequence.to_string().as_str());
    let result = async {
        inner.streams.stream_for(&subject).await?;
        let ack = inner
            .js
            .publish_with_headers(subject.clone(), headers, dead.payload)
            .await
            .map_err(NatsError::client)?;
        ack.await.map_err(NatsError::client)
    }
    .await;
    let payload: Bytes = match result {
        Ok(_) => {
            tracing::warn!(topic = %dead.topic, message_id = %dead.message_id, dead_letter = %subject, reason = %dead.reason, "message dead-lettered");
            AckKind::Term.into()
        }
        Err(err) => {
            tracing::error!(topic = %dead.topic, message_id = %dead.message_id, error = %err, "dead-lettering failed; the message comes back");
            inner.nak_payload(None)
        }
    };
    // Through the settling task, so that double acks confirm this too.
    inner.send(Command::Settle {
        reply: dead.reply,
        payload,
    });
    inner.done();
}

/// Settles one delivery through the subscriber's settling task.
pub(super) struct NatsSettle {
    pub(super) inner: Arc<Inner>,
    pub(super) token: u64,
    pub(super) reply: Subject,
    /// The message itself, kept only on its last allowed delivery when it may be dead-lettered.
    pub(super) last: Option<Box<DeadLetter>>,
}

impl Settle for NatsSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let this = *self;
        if this.inner.outstanding.lock().remove(&this.token).is_none() {
            // Already returned by `close`.
            return;
        }
        let command = match settlement {
            Settlement::Ack => Command::Settle {
                reply: this.reply,
                payload: AckKind::Ack.into(),
            },
            Settlement::Nack { delay } => match this.last {
                Some(dead) => Command::DeadLetter(dead),
                None => Command::Settle {
                    reply: this.reply,
                    payload: this.inner.nak_payload(delay),
                },
            },
        };
        this.inner.send(command);
    }
}

impl DeadLetter {
    pub(super) fn clone_parts(&self) -> DeadLetter {
        DeadLetter {
            reply: self.reply.clone(),
            topic: self.topic.clone(),
            message_id: self.message_id.clone(),
            sequence: self.sequence,
            headers: self.headers.clone(),
            payload: self.payload.clone(),
            reason: self.reason.clone(),
        }
    }
}
