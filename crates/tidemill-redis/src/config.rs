//! [`RedisConfig`]: where the server is and how publishers and subscribers use it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use tidemill::{Error, Result, StartPosition};

/// Where a new consumer group, or a subscriber without a group, starts reading a stream, in
/// Redis's terms (from [`StartPosition`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// From the first entry still in the stream (`0`).
    Beginning,
    /// From entries added after the group was created or the subscription started (`$`).
    Latest,
}

/// How far a stream is trimmed on every publish (`XADD ... MAXLEN`).
///
/// Trimming deletes the oldest entries whether or not every group has read them: size it so
/// that consumers keep up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxLen {
    /// `MAXLEN ~ n`: about `n` entries; Redis trims whole nodes, which is much cheaper.
    Approximate(usize),
    /// `MAXLEN = n`: exactly `n` entries.
    Exact(usize),
}

/// Options of a [`RedisPublisher`](crate::RedisPublisher) and a
/// [`RedisSubscriber`](crate::RedisSubscriber), built from a URL and refined with the builder
/// methods. Every option is documented with its default.
///
/// ```
/// use std::time::Duration;
/// use tidemill::StartPosition;
/// use tidemill_redis::{MaxLen, RedisConfig};
///
/// let config = RedisConfig::from_url("redis://127.0.0.1:6379/0")?
///     .group("billing")
///     .consumer_name("billing-1")
///     .start_position(StartPosition::End)
///     .max_len(MaxLen::Approximate(100_000))
///     .topic_max_len("audit", MaxLen::Exact(1_000))
///     .nack_delay(Duration::from_millis(500));
/// assert_eq!(config.address(), "redis://127.0.0.1:6379/0");
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) info: ConnectionInfo,
    pub(crate) key_prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) reconnect_min_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) publish_retry_timeout: Duration,
    pub(crate) max_len: Option<MaxLen>,
    pub(crate) topic_max_len: HashMap<String, MaxLen>,
    pub(crate) consumer_group: Option<Arc<str>>,
    pub(crate) consumer_name: Option<Arc<str>>,
    pub(crate) group_start: StartFrom,
    pub(crate) fanout_start: StartFrom,
    pub(crate) start_error: Option<String>,
    pub(crate) block_time: Duration,
    pub(crate) batch_size: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) nack_delay: Duration,
    pub(crate) claim_idle: Duration,
    pub(crate) claim_interval: Duration,
    pub(crate) consumer_timeout: Option<Duration>,
    pub(crate) consumer_check_interval: Duration,
    pub(crate) close_timeout: Duration,
}

impl Default for RedisConfig {
    /// `redis://127.0.0.1:6379` with every other option at its default.
    fn default() -> Self {
        Self::from_info(("127.0.0.1", 6379).into_connection_info().expect("valid"))
    }
}

impl RedisConfig {
    /// Options for the server at `url`: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://...` for TLS (with the `tls-rustls` feature; `#insecure` skips certificate
    /// checks) or `redis+unix:///path/to/socket`.
    ///
    /// ```
    /// let config = tidemill_redis::RedisConfig::from_url("redis://app:s3cret@127.0.0.1:6379/2")?;
    /// // The password never shows.
    /// assert_eq!(config.address(), "redis://app@127.0.0.1:6379/2");
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// assert!(tidemill_redis::RedisConfig::from_url("http://x").is_err());
    /// # Ok::<(), tidemill::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let info = url.into_connection_info().map_err(|e| {
            // The redis crate's message does not echo the URL, so no password can leak here.
            Error::Config(format!("not a Redis URL: {}", e.category()))
        })?;
        Ok(Self::from_info(info))
    }

    /// Options for a connection described with the `redis` crate's own type.
    pub fn from_connection_info(info: ConnectionInfo) -> Self {
        Self::from_info(info)
    }

    fn from_info(info: ConnectionInfo) -> Self {
        Self {
            info,
            key_prefix: String::new(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(2),
            publish_retry_timeout: Duration::from_secs(10),
            max_len: None,
            topic_max_len: HashMap::new(),
            consumer_group: None,
            consumer_name: None,
            group_start: StartFrom::Beginning,
            fanout_start: StartFrom::Latest,
            start_error: None,
            block_time: Duration::from_secs(1),
            batch_size: 128,
            max_in_flight: 1,
            nack_delay: tidemill::options::DEFAULT_NACK_DELAY,
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(1),
            consumer_timeout: Some(Duration::from_secs(600)),
            consumer_check_interval: Duration::from_secs(60),
            close_timeout: tidemill::options::DEFAULT_CLOSE_TIMEOUT,
        }
    }

    /// Options for the server at `host:port`, database 0, without credentials.
    ///
    /// ```
    /// let config = tidemill_redis::RedisConfig::new("127.0.0.1", 6379);
    /// assert_eq!(config.address(), "redis://127.0.0.1:6379/0");
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        let host: String = host.into();
        Self::from_info(
            (host.as_str(), port)
                .into_connection_info()
                .expect("a host and port are a valid connection"),
        )
    }

    /// The user name for `AUTH`, replacing the URL's. Default: the URL's, if any.
    pub fn username(mut self, username: impl AsRef<str>) -> Self {
        let redis = self.info.redis_settings().clone().set_username(username);
        self.info = self.info.set_redis_settings(redis);
        self
    }

    /// The password for `AUTH`, replacing the URL's. It never appears in errors, logs or `Debug`.
    /// Default: the URL's, if any.
    pub fn password(mut self, password: impl AsRef<str>) -> Self {
        let redis = self.info.redis_settings().clone().set_password(password);
        self.info = self.info.set_redis_settings(redis);
        self
    }

    /// The database number (`SELECT`). Default: the URL's, else 0.
    pub fn database(mut self, db: i64) -> Self {
        let redis = self.info.redis_settings().clone().set_db(db);
        self.info = self.info.set_redis_settings(redis);
        self
    }

    /// A prefix put before every topic to make the stream key (`<prefix><topic>`), to keep
    /// applications apart on one server. Default empty: the stream key is the topic.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long one connection attempt may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may take to answer a command (a blocking read gets
    /// [`block_time`](Self::block_time) on top). Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The first and the longest wait between reconnection attempts; the wait doubles (with
    /// jitter) from the first to the longest. Default 50 ms and 2 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max.max(min);
        self
    }

    /// How long `publish` keeps retrying while the server is unreachable before it returns an
    /// error. Zero fails at the first connection error. Default 10 s.
    pub fn publish_retry_timeout(mut self, timeout: Duration) -> Self {
        self.publish_retry_timeout = timeout;
        self
    }

    /// Trims every stream on publish (`XADD ... MAXLEN`). Default: no trimming.
    pub fn max_len(mut self, max_len: MaxLen) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Trims the stream of `topic` on publish, overriding [`max_len`](Self::max_len).
    pub fn topic_max_len(mut self, topic: impl Into<String>, max_len: MaxLen) -> Self {
        self.topic_max_len.insert(topic.into(), max_len);
        self
    }

    /// The consumer group subscribers join (a Redis consumer group on each topic's stream,
    /// created on first subscribe). Subscribers of one group split the messages; different groups
    /// each get every message. Default: no group, every subscriber reads every message (`XREAD`).
    pub fn group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.consumer_group = Some(group.into());
        self
    }

    /// Leaves the consumer group: every subscriber reads every message.
    pub fn no_group(mut self) -> Self {
        self.consumer_group = None;
        self
    }

    /// This subscriber's consumer name in its group. A stable name (a pod or host name) lets a
    /// restarted process take back the messages it had not acknowledged at once, instead of
    /// after [`claim_idle`](Self::claim_idle). Two subscriptions of one topic by one subscriber
    /// get `<name>-2`, `<name>-3`, ... Default: `tidemill-<random uuid>` per subscriber.
    pub fn consumer_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    /// Where a consumer group starts when a subscriber creates it, and where a subscriber
    /// without a group starts. Default: a new group at the beginning (`0`: what is already in
    /// the stream is processed), a subscriber without a group at the end (`$`: what is added
    /// after `subscribe` returned). [`StartPosition::Time`] and [`StartPosition::Offset`] are
    /// refused when the subscriber connects.
    ///
    /// ```
    /// use tidemill::StartPosition;
    /// let replay = tidemill_redis::RedisConfig::default().start_position(StartPosition::Beginning);
    /// # drop(replay);
    /// ```
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start_error = None;
        let start = match start {
            StartPosition::Beginning => StartFrom::Beginning,
            StartPosition::End => StartFrom::Latest,
            other => {
                self.start_error = Some(
                    other
                        .unsupported("Redis", &["beginning", "end"])
                        .to_string(),
                );
                return self;
            }
        };
        self.group_start = start;
        self.fanout_start = start;
        self
    }

    /// Refuses settings that cannot take effect, before anything connects.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.start_error {
            Some(reason) => Err(Error::Config(reason.clone())),
            None => Ok(()),
        }
    }

    /// How long one `XREADGROUP`/`XREAD` waits on the server for new entries (`BLOCK`). Shorter
    /// runs the claim and cleanup checks more on time on idle streams. Default 1 s.
    pub fn block_time(mut self, block: Duration) -> Self {
        self.block_time = block.max(Duration::from_millis(1));
        self
    }

    /// How many entries one read fetches (`COUNT`), and so how many a subscription holds ahead of
    /// the consumer. Default 128; at least 1.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// How many unsettled deliveries one subscription may hold. Default 1, which keeps publish
    /// order (a nacked message comes back before the next one); raise it to match a handler's
    /// concurrency. At least 1.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// How long a nacked message waits before it is delivered again. Default 100 ms.
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// How long a message may stay unacknowledged with a consumer before another consumer of the
    /// group claims it (`XAUTOCLAIM` min-idle-time). Messages of a consumer that died come back
    /// after this; a handler that takes longer than this may see its message twice. Default 30 s.
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// How often a subscription looks for messages to claim (`XAUTOCLAIM`). Default 1 s.
    pub fn claim_interval(mut self, interval: Duration) -> Self {
        self.claim_interval = interval;
        self
    }

    /// Consumers of the group idle for longer than this, with nothing pending, are removed
    /// (`XGROUP DELCONSUMER`); their pending messages are claimed first. `None` keeps them.
    /// Default 10 minutes.
    pub fn consumer_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// How often a subscription looks for dead consumers. Default 60 s.
    pub fn consumer_check_interval(mut self, interval: Duration) -> Self {
        self.consumer_check_interval = interval;
        self
    }

    /// How long `close` waits for acknowledgements to reach the server. Default 30 s ([`DEFAULT_CLOSE_TIMEOUT`](tidemill::options::DEFAULT_CLOSE_TIMEOUT)).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The server's address as `redis://[user@]host:port/db`, without the password: the form
    /// used in errors and logs.
    pub fn address(&self) -> String {
        let redis = self.info.redis_settings();
        let user = redis
            .username()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match self.info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                format!("redis://{user}{host}:{port}/{}", redis.db())
            }
            ConnectionAddr::TcpTls { host, port, .. } => {
                format!("rediss://{user}{host}:{port}/{}", redis.db())
            }
            ConnectionAddr::Unix(path) => {
                format!("redis+unix://{user}{}?db={}", path.display(), redis.db())
            }
            _ => "redis://<unknown address>".to_owned(),
        }
    }

    /// The stream key of `topic`.
    pub(crate) fn stream_key(&self, topic: &str) -> String {
        let mut key = String::with_capacity(self.key_prefix.len() + topic.len());
        key.push_str(&self.key_prefix);
        key.push_str(topic);
        key
    }

    pub(crate) fn max_len_of(&self, topic: &str) -> Option<MaxLen> {
        if self.topic_max_len.is_empty() {
            return self.max_len;
        }
        self.topic_max_len.get(topic).copied().or(self.max_len)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address())
            .field(
                "password",
                &self.info.redis_settings().password().map(|_| "<redacted>"),
            )
            .field("key_prefix", &self.key_prefix)
            .field("consumer_group", &self.consumer_group)
            .field("consumer_name", &self.consumer_name)
            .field("group_start", &self.group_start)
            .field("fanout_start", &self.fanout_start)
            .field("max_len", &self.max_len)
            .field("topic_max_len", &self.topic_max_len)
            .field("block_time", &self.block_time)
            .field("batch_size", &self.batch_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("nack_delay", &self.nack_delay)
            .field("claim_idle", &self.claim_idle)
            .field("claim_interval", &self.claim_interval)
            .field("consumer_timeout", &self.consumer_timeout)
            .finish_non_exhaustive()
    }
}
