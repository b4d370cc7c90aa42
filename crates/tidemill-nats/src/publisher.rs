//! [`NatsPublisher`]: publishes to JetStream and returns once the server stored the messages.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::Client;
use async_trait::async_trait;
use bytes::Bytes;
use tidemill::{Error, Message, Publisher, Result};
use tokio::time::Instant;

use crate::config::NatsConfig;
use crate::connection::{connect, jetstream};
use crate::error::NatsError;
use crate::topology::{encode_headers, validate_subject, Streams};

/// Publishes messages to JetStream.
///
/// Each message goes to the subject named like the topic, with its metadata as headers and its
/// id as `Nats-Msg-Id`, so the stream drops a republished message within its duplicate window.
/// The messages of one `publish` call are sent back to back and their acknowledgements awaited
/// together: `publish` returns `Ok` only once the server confirmed it stored every one.
///
/// While the server is away, `publish` keeps retrying (same ids, so nothing is stored twice) for
/// up to the publish timeout, then fails with [`Error::Publish`] naming the first message not
/// confirmed. A stream is found (or created) for a topic the first time it is published to.
///
/// ```no_run
/// use tidemill::{Message, Publisher, PublisherExt};
/// use tidemill_nats::{NatsConfig, NatsPublisher};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let publisher = NatsPublisher::connect(NatsConfig::new("nats://127.0.0.1:4222")).await?;
/// publisher.publish_one("orders", Message::new("order #1")).await?;
/// publisher.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    js: async_nats::jetstream::Context,
    config: Arc<NatsConfig>,
    streams: Streams,
    closed: AtomicBool,
    owns_client: bool,
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("address", &self.inner.config.address())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl NatsPublisher {
    /// Connects with its own connection, which `close` releases.
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        let client = connect(&config).await?;
        Ok(Self::build(client, config, true))
    }

    /// A publisher on an existing connection, which `close` flushes but leaves open.
    pub fn from_client(client: Client, config: NatsConfig) -> Self {
        Self::build(client, config, false)
    }

    fn build(client: Client, config: NatsConfig, owns_client: bool) -> Self {
        let config = Arc::new(config);
        let js = jetstream(client.clone(), &config);
        Self {
            inner: Arc::new(Inner {
                streams: Streams::new(js.clone(), config.clone()),
                client,
                js,
                config,
                closed: AtomicBool::new(false),
                owns_client,
            }),
        }
    }

    /// The connection, e.g. to build a subscriber on it.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Makes sure the stream behind `topic` exists (created if so configured), without
    /// publishing.
    pub async fn ensure_topic(&self, topic: &str) -> Result<()> {
        validate_subject(topic)?;
        self.inner
            .streams
            .stream_for(topic)
            .await
            .map(drop)
            .map_err(|err| Error::subscribe(topic, err))
    }
}

/// What one attempt left: how far it got and why it stopped.
enum Failure {
    /// Worth retrying (server away, timed out, stream not there yet).
    Transient(NatsError, bool),
    /// Retrying cannot help.
    Permanent(Error),
}

impl Inner {
    async fn publish_all(
        &self,
        topic: &str,
        messages: &[(Arc<str>, async_nats::HeaderMap, Bytes)],
    ) -> Result<()> {
        let deadline = Instant::now() + self.config.publish_timeout;
        let mut done = 0;
        let mut backoff = Duration::from_millis(50);
        let mut other_failures = 0;
        loop {
            let failure = match self.streams.stream_for(topic).await {
                Ok(_) => match self.attempt(topic, messages, &mut done).await {
                    Ok(()) => return Ok(()),
                    Err(failure) => failure,
                },
                Err(err @ NatsError::NoStream { .. }) => {
                    return Err(Error::publish(topic, &*messages[done].0, err))
                }
                Err(err) => Failure::Transient(err, false),
            };
            let err = match failure {
                Failure::Permanent(err) => return Err(err),
                Failure::Transient(err, other) => {
                    if other {
                        other_failures += 1;
                    }
                    err
                }
            };
            // Errors the server gave on purpose are retried a few times only; an absent
            // server is waited for until the deadline.
            if Instant::now() + backoff > deadline || other_failures >= 3 {
                return Err(Error::publish(topic, &*messages[done].0, err));
            }
            tracing::debug!(topic, error = %err, "publish attempt failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends messages `done..` back to back, then awaits their acknowledgements in order,
    /// advancing `done` past every confirmed one.
    async fn attempt(
        &self,
        topic: &str,
        messages: &[(Arc<str>, async_nats::HeaderMap, Bytes)],
        done: &mut usize,
    ) -> Result<(), Failure> {
        // At most this many acknowledgements are awaited at once: the client's pending-ack
        // permits are released only as acknowledgements are read.
        const WINDOW: usize = 512;
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
        for (_, headers, payload) in &messages[*done..] {
            if acks.len() >= WINDOW {
                let ack = acks.pop_front().expect("window is full");
                self.confirm(topic, messages, done, ack).await?;
            }
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone());
            match self.js.send_publish(topic.to_owned(), publish).await {
                Ok(ack) => acks.push_back(ack),
                Err(err) => {
                    // Confirm what was sent before, so `done` stays exact.
                    for ack in acks {
                        self.confirm(topic, messages, done, ack).await?;
                    }
                    return Err(self.classify(topic, &messages[*done].0, err));
                }
            }
        }
        for ack in acks {
            self.confirm(topic, messages, done, ack).await?;
        }
        Ok(())
    }

    async fn confirm(
        &self,
        topic: &str,
        messages: &[(Arc<str>, async_nats::HeaderMap, Bytes)],
        done: &mut usize,
        ack: PublishAckFuture,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.config.publish_ack_timeout, ack.into_future()).await {
            Ok(Ok(_)) => {
                *done += 1;
                Ok(())
            }
            Ok(Err(err)) => Err(self.classify(topic, &messages[*done].0, err)),
            Err(_) => Err(Failure::Transient(
                NatsError::Timeout(self.config.publish_ack_timeout),
                false,
            )),
        }
    }

    fn classify(
        &self,
        topic: &str,
        id: &str,
        err: async_nats::jetstream::context::PublishError,
    ) -> Failure {
        match err.kind() {
            PublishErrorKind::StreamNotFound => {
                // Either the stream was deleted or JetStream is not up yet after a restart.
                self.streams.forget(topic);
                Failure::Transient(NatsError::client(err), false)
            }
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => Failure::Transient(NatsError::client(err), false),
            PublishErrorKind::MaxPayloadExceeded => {
                Failure::Permanent(Error::publish(topic, id, NatsError::client(err)))
            }
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                Failure::Permanent(Error::publish(topic, id, NatsError::client(err)))
            }
            _ => Failure::Transient(NatsError::client(err), true),
        }
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("publisher"));
        }
        // The shared validator refuses what a NATS header cannot carry before anything is sent.
        self.limits().check_all(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let limit = self.inner.client.max_payload();
        // Everything is checked before the first message is sent.
        let mut encoded = Vec::with_capacity(messages.len());
        for message in &messages {
            let headers =
                encode_headers(message).map_err(|err| Error::publish(topic, message.id(), err))?;
            let size = message.payload().len()
                + headers
                    .iter()
                    .map(|(k, v)| {
                        AsRef::<str>::as_ref(k).len()
                            + v.iter().map(|v| v.as_str().len() + 4).sum::<usize>()
                    })
                    .sum::<usize>();
            if size > limit {
                return Err(Error::MessageTooLarge {
                    topic: topic.into(),
                    message_id: message.id().into(),
                    size,
                    limit,
                });
            }
            encoded.push((message.shared_id(), headers, message.payload().clone()));
        }
        self.inner.publish_all(topic, &encoded).await
    }

    fn limits(&self) -> tidemill::Limits {
        limits(self.inner.client.max_payload())
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Publishes await their acknowledgements, so nothing is pending here: flush what the
        // connection still buffers and, if the connection is ours, let it go.
        if self.inner.owns_client {
            if let Err(err) = self.inner.client.drain().await {
                tracing::debug!(error = %err, "draining the NATS connection failed");
            }
        } else if let Err(err) = self.inner.client.flush().await {
            tracing::debug!(error = %err, "flushing the NATS connection failed");
        }
        Ok(())
    }
}

/// What NATS carries: header-safe metadata names and values (not `Nats-*`, which the server
/// uses), subjects as [`validate_subject`] says, and payloads up to the server's `max_payload`.
pub(crate) fn limits(max_payload: usize) -> tidemill::Limits {
    tidemill::Limits::new("NATS")
        .metadata_rule(tidemill::limits::MetadataRule::HeaderToken)
        .reserved_prefixes(&["nats-"])
        .max_payload(max_payload)
        .topic_rule(validate_subject)
}
