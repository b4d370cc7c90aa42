//! [`AmqpConfig`]: where the broker is and how the publisher and subscriber behave.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tidemill::options::SharedOption;
use tidemill::{Error, Result};

use crate::topology::Topology;

/// The query options `from_url` reads itself.
const URL_OPTIONS: &[&str] = &[
    "group",
    "max_in_flight",
    "confirms",
    "mandatory",
    "pool",
    "durable",
    "topology",
    "exchange",
    "nack_delay",
    "close_timeout",
];

/// The AMQP URI's own query options, passed on to the client.
const CLIENT_URL_OPTIONS: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "channel_max",
    "frame_max",
    "auth_mechanism",
];

type DlqFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Options of an [`AmqpPublisher`](crate::AmqpPublisher) and an
/// [`AmqpSubscriber`](crate::AmqpSubscriber). Every setter documents its default.
///
/// ```
/// use std::time::Duration;
/// use tidemill_amqp::{AmqpConfig, Topology};
///
/// let config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .topology(Topology::topic_exchange("events"))
///     .group("booking")
///     .max_in_flight(32)
///     .mandatory(true)
///     .nack_delay(Duration::from_millis(100))
///     .max_deliveries(5);
/// // The password never shows up in output.
/// assert!(!format!("{config:?}").contains("guest:guest"));
///
/// // The same from a URL; unknown query parameters go to the client (heartbeat, ...).
/// let config = AmqpConfig::from_url(
///     "amqp://guest:guest@127.0.0.1:5672/%2f?group=booking&max_in_flight=32&topology=topic&exchange=events&heartbeat=10",
/// )?;
/// assert_eq!(config.group_name(), Some("booking"));
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone)]
pub struct AmqpConfig {
    pub(crate) uri: String,
    pub(crate) address: String,
    pub(crate) connection_name: Option<String>,
    pub(crate) topology: Topology,
    pub(crate) group: Option<String>,
    pub(crate) prefetch: u16,
    pub(crate) start_error: Option<String>,
    pub(crate) confirms: bool,
    pub(crate) mandatory: bool,
    pub(crate) channel_pool_size: usize,
    pub(crate) publish_timeout: Duration,
    pub(crate) nack_delay: Duration,
    pub(crate) max_held_nack_delay: Duration,
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_queue: DlqFn,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) tls_ca_pem: Option<String>,
    pub(crate) tls_identity: Option<(Vec<u8>, String)>,
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("address", &self.address)
            .field("connection_name", &self.connection_name)
            .field("topology", &self.topology)
            .field("group", &self.group)
            .field("prefetch", &self.prefetch)
            .field("confirms", &self.confirms)
            .field("mandatory", &self.mandatory)
            .field("channel_pool_size", &self.channel_pool_size)
            .field("publish_timeout", &self.publish_timeout)
            .field("nack_delay", &self.nack_delay)
            .field("max_held_nack_delay", &self.max_held_nack_delay)
            .field("max_deliveries", &self.max_deliveries)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("close_timeout", &self.close_timeout)
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("tls_identity", &self.tls_identity.is_some())
            .finish()
    }
}

/// The local broker with RabbitMQ's default account: `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Default for AmqpConfig {
    /// [`AmqpConfig::new`] with [`DEFAULT_URL`].
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl AmqpConfig {
    /// Options for the broker at `url` (`amqp://user:password@host:port/vhost`, or `amqps://`
    /// for TLS; the vhost `/` is written `%2f`), with every default. The URL is not checked
    /// until connecting; [`AmqpConfig::from_url`] checks it and reads options from it.
    pub fn new(url: impl Into<String>) -> Self {
        let uri: String = url.into();
        Self {
            address: redact(&uri),
            uri,
            connection_name: None,
            topology: Topology::durable_pubsub(),
            group: None,
            prefetch: 1,
            start_error: None,
            confirms: true,
            mandatory: false,
            channel_pool_size: 4,
            publish_timeout: Duration::from_secs(30),
            nack_delay: tidemill::options::DEFAULT_NACK_DELAY,
            max_held_nack_delay: Duration::from_secs(1),
            max_deliveries: None,
            dead_letter_queue: Arc::new(|queue| format!("{queue}.dead")),
            connect_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            close_timeout: tidemill::options::DEFAULT_CLOSE_TIMEOUT,
            tls_ca_pem: None,
            tls_identity: None,
        }
    }

    /// Options from a URL. Besides the client's own query parameters (`heartbeat`,
    /// `connection_timeout`, `channel_max`, `frame_max`, `auth_mechanism`), it reads:
    /// `group`, `max_in_flight`, `confirms` (bool), `mandatory` (bool), `pool` (channel pool size),
    /// `durable` (bool), `topology` (`pubsub`, `work_queue` or `topic`), `exchange` (the
    /// topic exchange's name, default `tidemill`), `nack_delay` and `close_timeout` (in
    /// milliseconds). Any other option is an [`Error::Config`] that lists these.
    ///
    /// ```
    /// let err = tidemill_amqp::AmqpConfig::from_url("amqp://u:secret@h/%2f?max_in_flight=lots").unwrap_err();
    /// assert!(!err.to_string().contains("secret"));
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("invalid AMQP URL {}: {e}", redact(url))))?;
        if !matches!(parsed.scheme(), "amqp" | "amqps") {
            return Err(Error::Config(format!(
                "the URL {} is not amqp:// or amqps://",
                redact(url)
            )));
        }
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut rest = Vec::new();
        let mut topology_kind: Option<String> = None;
        let mut exchange = "tidemill".to_owned();
        let mut durable = true;
        let mut config = Self::new("");
        let bad = |key: &str, value: &str| {
            Error::Config(format!(
                "invalid value {value:?} for `{key}` in {}",
                redact(url)
            ))
        };
        let unknown = |key: &str| {
            Error::Config(format!(
                "unknown option `{key}` in {}; known: {}, {}",
                redact(url),
                URL_OPTIONS.join(", "),
                CLIENT_URL_OPTIONS.join(", ")
            ))
        };
        for (key, value) in pairs {
            if let Some(shared) = SharedOption::parse("AMQP", &key, &value)? {
                config = match shared {
                    SharedOption::Group(group) => config.group(group),
                    SharedOption::MaxInFlight(n) => {
                        config.max_in_flight(u16::try_from(n).map_err(|_| bad(&key, &value))?)
                    }
                    SharedOption::NackDelay(delay) => config.nack_delay(delay),
                    SharedOption::CloseTimeout(timeout) => config.close_timeout(timeout),
                    // A queue delivers what it holds: there is no start to choose.
                    SharedOption::StartPosition(_) => return Err(unknown(&key)),
                };
                continue;
            }
            match key.as_str() {
                "confirms" => {
                    config.confirms = parse_bool(&value).ok_or_else(|| bad(&key, &value))?
                }
                "mandatory" => {
                    config.mandatory = parse_bool(&value).ok_or_else(|| bad(&key, &value))?
                }
                "pool" => {
                    config.channel_pool_size = value.parse().map_err(|_| bad(&key, &value))?
                }
                "durable" => durable = parse_bool(&value).ok_or_else(|| bad(&key, &value))?,
                "topology" => topology_kind = Some(value),
                "exchange" => exchange = value,
                // The AMQP URI's own options go to the client.
                k if CLIENT_URL_OPTIONS.contains(&k) => rest.push((key, value)),
                _ => return Err(unknown(&key)),
            }
        }
        config.topology = match topology_kind.as_deref() {
            None | Some("pubsub") => Topology::durable_pubsub(),
            Some("work_queue") => Topology::work_queue(),
            Some("topic") => Topology::topic_exchange(exchange),
            Some(other) => return Err(bad("topology", other)),
        }
        .durable(durable);
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let uri = parsed.to_string();
        config.address = redact(&uri);
        config.uri = uri;
        Ok(config)
    }

    /// The broker's address without credentials, as it appears in errors and logs.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The name the connection shows in the broker's management UI. Default none.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The exchanges, queues and bindings used. Default [`Topology::durable_pubsub`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The topology in force.
    pub fn topology_ref(&self) -> &Topology {
        &self.topology
    }

    /// The consumer group subscribers join: subscribers of one group share a queue (competing
    /// consumers). Default none: each subscription gets an exclusive, auto-delete queue of its
    /// own and receives every message published after it subscribed.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The consumer group, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// How many unsettled deliveries the broker hands one subscription (`basic.qos` prefetch).
    /// Default 1, which keeps publish order for a single subscriber even across nacks; raise it
    /// for throughput or to match a handler's concurrency. At least 1.
    pub fn max_in_flight(mut self, max: u16) -> Self {
        self.prefetch = max.max(1);
        self
    }

    /// Where a subscription starts. A RabbitMQ queue holds what was routed to it since it was
    /// declared, so only [`StartPosition::End`] (the default) can be honoured; any other is
    /// refused when the subscriber connects. (Declare a group's queue ahead of time with
    /// [`SubscribeInitializer`](tidemill::SubscribeInitializer) to keep what is published
    /// before the first subscriber.)
    pub fn start_position(mut self, start: tidemill::StartPosition) -> Self {
        self.start_error = match start {
            tidemill::StartPosition::End => None,
            other => Some(other.unsupported("RabbitMQ", &["end"]).to_string()),
        };
        self
    }

    /// Refuses settings that cannot take effect, before anything connects.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.start_error {
            Some(reason) => Err(Error::Config(reason.clone())),
            None => Ok(()),
        }
    }

    /// Whether `publish` waits for publisher confirms: with them it returns only when the broker
    /// has taken every message (persisted them, for durable queues). Without them it returns
    /// once the messages are written to the socket. Default `true`.
    pub fn confirms(mut self, confirms: bool) -> Self {
        self.confirms = confirms;
        self
    }

    /// Publish with the mandatory flag: a message no queue is bound to take fails the publish
    /// with [`AmqpError::Unroutable`](crate::AmqpError::Unroutable) instead of vanishing.
    /// Needs confirms. Default `false`.
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// How many channels the publisher spreads concurrent publishes over. Default 4; at least 1.
    pub fn channel_pool_size(mut self, size: usize) -> Self {
        self.channel_pool_size = size.max(1);
        self
    }

    /// How long `publish` keeps trying through a lost connection (reconnecting and sending
    /// again what was not confirmed) before it fails. Default 30 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long a nacked message waits before it comes back, when the nack names no delay.
    /// Default 10 ms, so that a handler failing over and over does not spin a core; zero
    /// requeues at once, at the head of the queue.
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// Nack delays up to this long are waited out by the subscriber, holding the message
    /// unsettled (it keeps its place and order), before rejecting it with requeue. Longer
    /// delays move the message to a delay queue whose TTL dead-letters it back into its queue
    /// (no plugin needed), freeing the prefetch slot. Default 1 s.
    pub fn max_held_nack_delay(mut self, limit: Duration) -> Self {
        self.max_held_nack_delay = limit;
        self
    }

    /// After this many deliveries that ended in a nack, a message goes to the dead-letter queue
    /// instead of coming back. Counting needs the message to be republished on every nack (with
    /// an `x-tidemill-deliveries` header), so with this set nacked messages return at the tail
    /// of their queue. Default none: nacked messages come back forever.
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = Some(max.max(1));
        self
    }

    /// The name of the dead-letter queue of queue `queue`. Default `<queue>.dead`.
    pub fn dead_letter_queue(
        mut self,
        name: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.dead_letter_queue = Arc::new(name);
        self
    }

    /// The dead-letter queue of `queue`.
    pub fn dead_letter_queue_for(&self, queue: &str) -> String {
        (self.dead_letter_queue)(queue)
    }

    /// Reconnect backoff: the first wait and the longest; each failed attempt doubles the wait.
    /// Default 100 ms to 5 s.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max.max(initial);
        self
    }

    /// How long opening a connection may take, the AMQP handshake included, before it counts
    /// as failed (and is tried again after the reconnect backoff). Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `close` waits for in-flight publishes and unsettled deliveries before it closes
    /// the connection anyway (the broker then requeues what was unsettled). Default 30 s
    /// ([`DEFAULT_CLOSE_TIMEOUT`](tidemill::options::DEFAULT_CLOSE_TIMEOUT)).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// For `amqps://`: trust this CA certificate chain (PEM) besides the system's roots.
    pub fn tls_ca_certificate(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// For `amqps://`: authenticate with a client certificate (a PKCS#12 archive and its
    /// password).
    pub fn tls_client_identity(mut self, pkcs12_der: Vec<u8>, password: impl Into<String>) -> Self {
        self.tls_identity = Some((pkcs12_der, password.into()));
        self
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The URL for errors and logs: the core's redaction, which every adapter shares.
pub(crate) fn redact(url: &str) -> String {
    tidemill::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn url_options_are_read_and_stripped() {
        let c = AmqpConfig::from_url(
            "amqp://u:p@h:5672/%2f?group=g&max_in_flight=7&heartbeat=5&durable=false",
        )
        .unwrap();
        assert_eq!(c.group.as_deref(), Some("g"));
        assert_eq!(c.prefetch, 7);
        assert!(!c.topology.is_durable());
        assert_eq!(c.uri, "amqp://u:p@h:5672/%2f?heartbeat=5");
        assert!(AmqpConfig::from_url("http://h").is_err());
        assert!(AmqpConfig::from_url("amqp://h?topology=mesh").is_err());
    }

    #[test]
    fn shared_url_options_and_unknown_ones() {
        let c = AmqpConfig::from_url("amqp://h?nack_delay=250&close_timeout=5000").unwrap();
        assert_eq!(c.nack_delay, Duration::from_millis(250));
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        let err = AmqpConfig::from_url("amqp://u:secret@h?prefetch=5")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`prefetch`") && err.contains("max_in_flight"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}
