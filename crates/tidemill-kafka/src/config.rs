//! [`KafkaConfig`]: where the brokers are and how to talk to them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use tidemill::options::SharedOption;
use tidemill::{Error, Message, StartPosition};

/// A function giving a message's partition key.
pub type KeyFn = Arc<dyn Fn(&Message) -> Option<Vec<u8>> + Send + Sync>;

/// How a published message's partition key is chosen.
#[derive(Clone, Default)]
pub enum Partitioning {
    /// No key: librdkafka spreads messages over partitions. The default.
    #[default]
    None,
    /// The value of this metadata entry is the key: messages with the same value go to the same
    /// partition and keep their order.
    MetadataKey(String),
    /// The message id is the key.
    MessageId,
    /// A function of the message gives the key (or none).
    Custom(KeyFn),
}

impl Partitioning {
    pub(crate) fn key(&self, msg: &Message) -> Option<Vec<u8>> {
        match self {
            Partitioning::None => None,
            Partitioning::MetadataKey(k) => msg.metadata().get(k).map(|v| v.as_bytes().to_vec()),
            Partitioning::MessageId => Some(msg.id().as_bytes().to_vec()),
            Partitioning::Custom(f) => f(msg),
        }
    }
}

impl fmt::Debug for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::None => f.write_str("None"),
            Partitioning::MetadataKey(k) => f.debug_tuple("MetadataKey").field(k).finish(),
            Partitioning::MessageId => f.write_str("MessageId"),
            Partitioning::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Where a subscription starts, in Kafka's terms (from [`StartPosition`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// The start of the log.
    Beginning,
    /// The end of the log.
    End,
    /// The first message at or after this time, in milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// Options shared by [`KafkaPublisher`](crate::KafkaPublisher) and
/// [`KafkaSubscriber`](crate::KafkaSubscriber).
///
/// ```
/// use std::time::Duration;
/// use tidemill_kafka::{KafkaConfig, Partitioning};
///
/// let config = KafkaConfig::new("127.0.0.1:9092")
///     .group("billing")
///     .partitioning(Partitioning::MetadataKey("customer_id".into()))
///     .partitions(4)
///     .nack_delay(Duration::from_millis(200))
///     // Any librdkafka property, e.g. TLS or SASL:
///     .set("security.protocol", "plaintext");
/// assert_eq!(config.brokers(), "127.0.0.1:9092");
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) brokers: String,
    pub(crate) group: Option<String>,
    /// Where a subscriber without a group starts, and a new group's `auto.offset.reset`.
    pub(crate) start_from: Option<StartFrom>,
    pub(crate) start_error: Option<String>,
    pub(crate) partitioning: Partitioning,
    pub(crate) partitions: i32,
    pub(crate) replication: i32,
    pub(crate) create_topics: bool,
    pub(crate) nack_delay: Duration,
    pub(crate) buffer: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) delivery_timeout: Duration,
    pub(crate) properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Properties may hold passwords: only their names are shown.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("start_from", &self.start_from)
            .field("partitioning", &self.partitioning)
            .field("partitions", &self.partitions)
            .field("nack_delay", &self.nack_delay)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// Brokers given as librdkafka's `bootstrap.servers` (`host:port,host:port`) or as a URL
    /// `kafka://host:port,host:port`.
    ///
    /// Defaults: no consumer group; a subscriber without a group starts at the end of the log
    /// and a new group at the beginning; no partition key; topics created with 1 partition and
    /// replication 1; nack delay 100 ms; 256 deliveries in flight per subscription; offsets
    /// committed every 100 ms; a publish fails after 30 s without a delivery report; close
    /// waits 10 s for the last commits.
    pub fn new(brokers: impl AsRef<str>) -> Self {
        let brokers = brokers.as_ref();
        let brokers = brokers.strip_prefix("kafka://").unwrap_or(brokers);
        Self {
            brokers: brokers.trim_end_matches('/').to_owned(),
            group: None,
            start_from: None,
            start_error: None,
            partitioning: Partitioning::None,
            partitions: 1,
            replication: 1,
            create_topics: true,
            nack_delay: tidemill::options::DEFAULT_NACK_DELAY,
            buffer: 256,
            close_timeout: tidemill::options::DEFAULT_CLOSE_TIMEOUT,
            commit_interval: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }

    /// Options from a URL: `kafka://host:port[,host:port...][?option=value&...]`, with the
    /// options `group`, `start_position` (`beginning`, `end` or an RFC 3339 time),
    /// `max_in_flight`, `nack_delay` and `close_timeout` (in milliseconds), and `partitions`.
    /// Any other option is refused, listing these.
    ///
    /// ```
    /// use tidemill_kafka::KafkaConfig;
    /// let config = KafkaConfig::from_url("kafka://127.0.0.1:9092,127.0.0.1:9093?group=billing&max_in_flight=64")?;
    /// assert_eq!(config.brokers(), "127.0.0.1:9092,127.0.0.1:9093");
    /// assert!(KafkaConfig::from_url("kafka://h:9092?colour=red").is_err());
    /// assert!(KafkaConfig::from_url("redis://h:9092").is_err());
    /// # Ok::<(), tidemill::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let Some(rest) = url.strip_prefix("kafka://") else {
            return Err(Error::Config(format!(
                "{} is not a Kafka URL: it must start with kafka://",
                tidemill::redact_url(url)
            )));
        };
        let (brokers, query) = rest.split_once('?').unwrap_or((rest, ""));
        if brokers.is_empty() {
            return Err(Error::Config(
                "a Kafka URL needs at least one host:port".into(),
            ));
        }
        let mut config = Self::new(brokers);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            config = match SharedOption::parse("Kafka", key, value)? {
                Some(SharedOption::Group(group)) => config.group(group),
                Some(SharedOption::StartPosition(start)) => config.start_position(start),
                Some(SharedOption::MaxInFlight(n)) => config.max_in_flight(n),
                Some(SharedOption::NackDelay(delay)) => config.nack_delay(delay),
                Some(SharedOption::CloseTimeout(timeout)) => config.close_timeout(timeout),
                None if key == "partitions" => config.partitions(value.parse().map_err(|_| {
                    Error::Config(format!(
                        "Kafka URL option {key}={value:?}: expected a number"
                    ))
                })?),
                None => {
                    return Err(Error::Config(format!(
                        "unknown Kafka URL option {key:?}; known: {}, partitions",
                        SharedOption::NAMES.join(", ")
                    )))
                }
            };
        }
        Ok(config)
    }

    /// The brokers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Subscribers join this consumer group (Kafka's `group.id`): members share the partitions,
    /// and offsets are committed for the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Where a subscriber without a group starts, and where a new group starts
    /// (`auto.offset.reset`; a group with committed offsets resumes from them). Default: the end
    /// without a group, the beginning for a new group. [`StartPosition::Time`] needs a broker that
    /// answers offset-for-time requests and is for subscribers without a group;
    /// [`StartPosition::Offset`] is refused (offsets are per partition) when the subscriber is
    /// made.
    ///
    /// ```
    /// use tidemill::StartPosition;
    /// let config = tidemill_kafka::KafkaConfig::new("127.0.0.1:9092").start_position(StartPosition::Beginning);
    /// # drop(config);
    /// ```
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start_error = None;
        self.start_from = match start {
            StartPosition::Beginning => Some(StartFrom::Beginning),
            StartPosition::End => Some(StartFrom::End),
            StartPosition::Time(t) => {
                let ms = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                Some(StartFrom::Timestamp(ms))
            }
            other => {
                self.start_error = Some(
                    other
                        .unsupported("Kafka", &["beginning", "end", "time"])
                        .to_string(),
                );
                None
            }
        };
        self
    }

    /// Where a subscriber without a group starts.
    pub(crate) fn start_without_group(&self) -> StartFrom {
        self.start_from.unwrap_or(StartFrom::End)
    }

    /// Refuses settings that cannot take effect, before anything connects.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.start_error {
            Some(reason) => Err(Error::Config(reason.clone())),
            None => Ok(()),
        }
    }

    /// How a published message's key is chosen. Default [`Partitioning::None`].
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }

    /// Partitions of the topics this adapter creates. Default 1.
    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// Replication factor of the topics this adapter creates. Default 1.
    pub fn replication(mut self, n: i32) -> Self {
        self.replication = n.max(1);
        self
    }

    /// Whether to create missing topics through the admin API before publishing or subscribing.
    /// Default true.
    pub fn create_topics(mut self, create: bool) -> Self {
        self.create_topics = create;
        self
    }

    /// How long a nacked message waits before it is delivered again. Default 100 ms.
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// How many fetched messages a subscription holds ahead of its consumer. Kafka settles by
    /// committing offsets in order per partition, so deliveries already handed over do not count
    /// against it: any handler concurrency is fed. Default 256; at least 1.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.buffer = n.max(1);
        self
    }

    /// How long `close` waits for the last acknowledged offsets to be committed. Default 30 s ([`DEFAULT_CLOSE_TIMEOUT`](tidemill::options::DEFAULT_CLOSE_TIMEOUT)).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How often acknowledged offsets are committed. Default 100 ms.
    pub fn commit_interval(mut self, d: Duration) -> Self {
        self.commit_interval = d;
        self
    }

    /// How long a publish waits for the broker's delivery report before failing (librdkafka's
    /// `message.timeout.ms`). Default 30 s.
    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.delivery_timeout = d;
        self
    }

    /// Sets any librdkafka property (TLS, SASL, tuning). Values are never logged.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub(crate) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    pub(crate) fn connect_error(&self, source: impl Into<tidemill::BoxError>) -> Error {
        Error::Connect {
            address: self.brokers.clone(),
            source: source.into(),
        }
    }
}

/// Checks Kafka's rules for a topic name: 1 to 249 characters of `a-z A-Z 0-9 . _ -`, and not
/// `.` or `..`.
///
/// ```
/// assert!(tidemill_kafka::validate_topic("orders.v1").is_ok());
/// assert!(tidemill_kafka::validate_topic("orders/v1").is_err());
/// ```
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    tidemill::validate_topic(topic)?;
    if topic.len() > 249 {
        return Err(Error::invalid_topic(
            topic,
            "a Kafka topic name has at most 249 characters",
        ));
    }
    if topic == "." || topic == ".." {
        return Err(Error::invalid_topic(
            topic,
            "`.` and `..` are not Kafka topic names",
        ));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::invalid_topic(
            topic,
            "a Kafka topic name may hold only ASCII letters, digits, `.`, `_` and `-`",
        ));
    }
    Ok(())
}
