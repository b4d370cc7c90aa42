//! [`AnyPubSub`]: a connected backend, whichever the URL named.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tidemill::{Publisher, Subscriber};

use crate::backend::{self, Backend, BackendKind};
use crate::error::AnyError;
use crate::options::{ParsedUrl, SubscriberOptions};

/// How long [`connect`] waits for the broker unless the URL says `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A URL checked without touching the network: its backend is compiled in and every option
/// is known and well-formed.
///
/// ```
/// let config = tidemill_any::parse("redis://127.0.0.1:6379?group=billing&from=beginning")?;
/// assert_eq!(config.kind(), tidemill_any::BackendKind::Redis);
/// assert!(tidemill_any::parse("redis://h?colour=blue").is_err());
/// assert!(tidemill_any::parse("amqp://h?from=beginning").is_err());
/// # Ok::<(), tidemill_any::AnyError>(())
/// ```
#[derive(Clone)]
pub struct AnyConfig {
    url: ParsedUrl,
    kind: BackendKind,
    defaults: SubscriberOptions,
    connect_timeout: Duration,
}

impl fmt::Debug for AnyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyConfig")
            .field("url", &self.url.redacted)
            .field("kind", &self.kind)
            .field("defaults", &self.defaults)
            .finish()
    }
}

/// Checks `url` (see [`AnyConfig`]).
pub fn parse(url: &str) -> Result<AnyConfig, AnyError> {
    let url = ParsedUrl::parse(url)?;
    let kind = backend::kind_of(&url)?;
    backend::check(kind, &url)?;
    Ok(AnyConfig {
        defaults: url.subscriber_defaults()?,
        connect_timeout: url
            .duration("connect_timeout")?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        url,
        kind,
    })
}

/// Checks `url` and connects to its broker, within the URL's `connect_timeout` (10 s).
pub async fn connect(url: &str) -> Result<AnyPubSub, AnyError> {
    parse(url)?.connect().await
}

impl AnyConfig {
    /// The backend the URL names.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The URL with its password masked.
    pub fn redacted_url(&self) -> &str {
        &self.url.redacted
    }

    /// The subscriber options the URL gives.
    pub fn subscriber_defaults(&self) -> &SubscriberOptions {
        &self.defaults
    }

    /// Refuses a topic name the broker would refuse, without connecting.
    ///
    /// ```
    /// let config = tidemill_any::parse("nats://127.0.0.1:4222")?;
    /// assert!(config.validate_topic("orders.created").is_ok());
    /// assert!(config.validate_topic("orders..created").is_err());
    /// # Ok::<(), tidemill_any::AnyError>(())
    /// ```
    pub fn validate_topic(&self, topic: &str) -> Result<(), AnyError> {
        Ok(backend::validate_topic(self.kind, topic)?)
    }

    /// Whether a consumer group's acks commit an offset (SQL in log mode, Kafka): an ack then
    /// counts only once every message read before it (in its partition) is acked too, and a
    /// message left unacked holds back the ones after it. Elsewhere each message is settled
    /// on its own.
    ///
    /// ```
    /// assert!(tidemill_any::parse("kafka://127.0.0.1:9092")?.commits_acked_prefix());
    /// assert!(tidemill_any::parse("sqlite::memory:")?.commits_acked_prefix());
    /// assert!(!tidemill_any::parse("sqlite::memory:?mode=queue")?.commits_acked_prefix());
    /// assert!(!tidemill_any::parse("nats://127.0.0.1:4222")?.commits_acked_prefix());
    /// # Ok::<(), tidemill_any::AnyError>(())
    /// ```
    pub fn commits_acked_prefix(&self) -> bool {
        backend::commits_acked_prefix(self.kind, &self.url)
    }

    /// Whether the broker drops a published message whose id it stored recently, as NATS
    /// JetStream does within a stream's duplicate window: republishing a message there needs a
    /// new id.
    ///
    /// ```
    /// assert!(tidemill_any::parse("nats://127.0.0.1:4222")?.drops_repeated_ids());
    /// assert!(!tidemill_any::parse("redis://127.0.0.1:6379")?.drops_repeated_ids());
    /// # Ok::<(), tidemill_any::AnyError>(())
    /// ```
    pub fn drops_repeated_ids(&self) -> bool {
        backend::drops_repeated_ids(self.kind)
    }

    /// Checks subscriber options against the backend without connecting.
    pub fn check_subscriber(&self, options: &SubscriberOptions) -> Result<(), AnyError> {
        let mut url = self.url.clone();
        // Check the merged options the way `parse` checks the URL's own.
        let merged = options.or(&self.defaults);
        url.params
            .retain(|(k, _)| k != "group" && k != "from" && k != "max_in_flight");
        if let Some(g) = merged.group {
            url.params.push(("group".into(), g));
        }
        if let Some(f) = merged.from {
            url.params.push(("from".into(), from_param(f)));
        }
        if let Some(n) = merged.max_in_flight {
            url.params.push(("max_in_flight".into(), n.to_string()));
        }
        backend::check(self.kind, &url)
    }

    /// Connects, within the URL's `connect_timeout`.
    pub async fn connect(self) -> Result<AnyPubSub, AnyError> {
        let backend =
            tokio::time::timeout(self.connect_timeout, backend::connect(self.kind, &self.url))
                .await
                .map_err(|_| AnyError::ConnectTimeout {
                    url: self.url.redacted.clone(),
                    timeout: self.connect_timeout,
                })??;
        Ok(AnyPubSub {
            inner: Arc::new(Inner {
                backend,
                config: self,
            }),
        })
    }
}

fn from_param(from: crate::StartPosition) -> String {
    match from {
        crate::StartPosition::Offset(o) => o.to_string(),
        other => crate::options::describe(&other),
    }
}

/// A connected pub/sub: one publisher, and subscribers per consumer group. Cloning gives
/// another handle on the same connection.
#[derive(Clone)]
pub struct AnyPubSub {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    config: AnyConfig,
}

impl fmt::Debug for AnyPubSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyPubSub")
            .field("url", &self.inner.config.url.redacted)
            .field("kind", &self.inner.config.kind)
            .finish()
    }
}

impl AnyPubSub {
    /// The backend.
    pub fn kind(&self) -> BackendKind {
        self.inner.config.kind
    }

    /// The URL with its password masked.
    pub fn redacted_url(&self) -> &str {
        &self.inner.config.url.redacted
    }

    /// Whether a consumer group's acks commit an offset (see [`AnyConfig::commits_acked_prefix`]).
    pub fn commits_acked_prefix(&self) -> bool {
        self.inner.config.commits_acked_prefix()
    }

    /// Whether the broker drops a message whose id it stored recently (see
    /// [`AnyConfig::drops_repeated_ids`]).
    pub fn drops_repeated_ids(&self) -> bool {
        self.inner.config.drops_repeated_ids()
    }

    /// The publisher (shared: cloning the `Arc` is cheap).
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.inner.backend.publisher()
    }

    /// A new subscriber; unset options take the URL's (`group`, `from`, `max_in_flight`).
    /// The caller closes it.
    pub async fn subscriber(
        &self,
        options: SubscriberOptions,
    ) -> Result<Arc<dyn Subscriber>, AnyError> {
        let options = options.or(&self.inner.config.defaults);
        let timeout = self.inner.config.connect_timeout;
        tokio::time::timeout(timeout, self.inner.backend.subscriber(&options))
            .await
            .map_err(|_| AnyError::ConnectTimeout {
                url: self.inner.config.url.redacted.clone(),
                timeout,
            })?
    }

    /// Refuses a topic name the broker would refuse, before anything is sent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidemill_any::AnyError> {
    /// let pubsub = tidemill_any::connect("memory://").await?;
    /// assert!(pubsub.validate_topic("orders").is_ok());
    /// assert!(pubsub.validate_topic("").is_err());
    /// # Ok(()) }
    /// ```
    pub fn validate_topic(&self, topic: &str) -> Result<(), AnyError> {
        self.inner.config.validate_topic(topic)
    }

    /// Closes the publisher and the connection. Close subscribers first.
    pub async fn close(&self) -> Result<(), AnyError> {
        Ok(self.inner.backend.close().await?)
    }
}
