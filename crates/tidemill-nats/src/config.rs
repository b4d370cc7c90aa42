//! [`NatsConfig`]: how to reach the server and how topics map onto streams and consumers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tidemill::options::SharedOption;
use tidemill::{Error, Result, StartPosition};

/// Where messages published before a subscriber's consumer existed are taken from, in
/// JetStream's terms (from [`StartPosition`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliverFrom {
    /// Every message the stream still holds (JetStream `DeliverPolicy::All`).
    All,
    /// Only messages published after the consumer was created (`DeliverPolicy::New`).
    New,
    /// Messages published at or after the given time (`DeliverPolicy::ByStartTime`).
    Time(time::OffsetDateTime),
    /// Messages from this stream sequence on (`DeliverPolicy::ByStartSequence`).
    Sequence(u64),
}

/// How long JetStream keeps a stream's messages (the stream's retention policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Until the stream's limits (age, count, size) drop them (`RetentionPolicy::Limits`).
    #[default]
    Limits,
    /// While some consumer has not acknowledged them (`RetentionPolicy::Interest`).
    Interest,
    /// Until one consumer acknowledged them; one consumer per subject (`RetentionPolicy::WorkQueue`).
    WorkQueue,
}

/// Where JetStream stores a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory: lost when the server stops.
    Memory,
}

/// How a topic finds its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamProvisioning {
    /// Use the stream whose subjects cover the topic; if there is none, create one named after
    /// the topic with the configured options.
    #[default]
    CreatePerTopic,
    /// Use the stream whose subjects cover the topic; never create one (publishing and
    /// subscribing fail with a clear error if there is none).
    ExistingBySubject,
}

/// Credentials. Their values never appear in `Debug` output, logs or errors.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
    NKeySeed(String),
    CredentialsFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::NKeySeed(_) => f.write_str("NKeySeed(***)"),
            Auth::CredentialsFile(path) => write!(f, "CredentialsFile({path:?})"),
        }
    }
}

/// Options of the NATS publisher and subscriber, with documented defaults.
///
/// Build it from a URL with [`NatsConfig::from_url`] or start from [`NatsConfig::new`] and chain
/// the setters.
///
/// ```
/// use std::time::Duration;
/// use tidemill::StartPosition;
/// use tidemill_nats::{NatsConfig, Storage};
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .group("billing")
///     .start_position(StartPosition::Beginning)
///     .storage(Storage::File)
///     .max_age(Duration::from_secs(24 * 3600))
///     .ack_wait(Duration::from_secs(30))
///     .max_deliveries(5)
///     .dead_letter_subject("billing.dead");
/// assert_eq!(config.servers(), ["nats://127.0.0.1:4222"]);
///
/// let from_url = NatsConfig::from_url("nats://app:secret@127.0.0.1:4222?group=billing&max_deliveries=5")?;
/// assert!(!format!("{from_url:?}").contains("secret"));
/// # Ok::<(), tidemill::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NatsConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) auth: Auth,
    pub(crate) require_tls: bool,
    pub(crate) root_certificates: Vec<PathBuf>,
    pub(crate) client_certificate: Option<(PathBuf, PathBuf)>,
    pub(crate) connection_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    // streams
    pub(crate) provisioning: StreamProvisioning,
    pub(crate) stream_prefix: String,
    pub(crate) retention: Retention,
    pub(crate) storage: Storage,
    pub(crate) max_age: Duration,
    pub(crate) duplicate_window: Duration,
    pub(crate) replicas: usize,
    // publishing
    pub(crate) publish_timeout: Duration,
    pub(crate) publish_ack_timeout: Duration,
    // consuming
    pub(crate) group: Option<String>,
    pub(crate) deliver_from: Option<DeliverFrom>,
    pub(crate) ack_wait: Duration,
    pub(crate) nack_delay: Duration,
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_subject: Option<String>,
    pub(crate) max_ack_pending: usize,
    pub(crate) batch_size: usize,
    pub(crate) progress_keepalive: bool,
    pub(crate) double_ack: bool,
    pub(crate) inactive_threshold: Duration,
    pub(crate) close_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self::new("nats://127.0.0.1:4222")
    }
}

/// The query options `from_url` takes.
const URL_OPTIONS: &[&str] = &[
    "group",
    "start_position",
    "max_in_flight",
    "ack_wait",
    "nack_delay",
    "close_timeout",
    "max_deliveries",
    "dead_letter",
    "batch_size",
    "double_ack",
    "storage",
    "retention",
    "max_age_secs",
    "duplicate_window_secs",
    "stream_prefix",
    "provisioning",
    "name",
    "token",
    "tls",
];

impl NatsConfig {
    /// Options for the server at `server` (`nats://host:port`, `tls://host:port` or
    /// `host:port`), everything else at its default:
    ///
    /// | option | default |
    /// | --- | --- |
    /// | streams | found by subject, else created per topic ([`StreamProvisioning::CreatePerTopic`]), named after the topic |
    /// | retention / storage / max age | limits / file / unlimited |
    /// | duplicate window | 2 minutes |
    /// | publish timeout | 30 s in all (retries included), 5 s per server acknowledgement |
    /// | group | none: each subscriber gets every message (an ephemeral consumer) |
    /// | deliver from | [`DeliverFrom::All`]: a new group or subscriber starts at the oldest message the stream holds |
    /// | ack wait | 30 s, kept alive with in-progress signals while a delivery is unsettled |
    /// | nack delay | 100 ms |
    /// | max deliveries | unlimited, no dead-letter subject |
    /// | max ack pending | 1024 per consumer |
    /// | pull batch | 64 |
    /// | double ack | off |
    /// | close timeout | 30 s |
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            servers: vec![server.into()],
            auth: Auth::None,
            require_tls: false,
            root_certificates: Vec::new(),
            client_certificate: None,
            connection_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            provisioning: StreamProvisioning::CreatePerTopic,
            stream_prefix: String::new(),
            retention: Retention::Limits,
            storage: Storage::File,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            publish_timeout: Duration::from_secs(30),
            publish_ack_timeout: Duration::from_secs(5),
            group: None,
            deliver_from: None,
            ack_wait: Duration::from_secs(30),
            nack_delay: tidemill::options::DEFAULT_NACK_DELAY,
            max_deliveries: None,
            dead_letter_subject: None,
            max_ack_pending: 1024,
            batch_size: 64,
            progress_keepalive: true,
            double_ack: false,
            inactive_threshold: Duration::from_secs(60),
            close_timeout: tidemill::options::DEFAULT_CLOSE_TIMEOUT,
        }
    }

    /// Options from a connection URL:
    /// `nats://[user:password@]host[:port][,host2:port2...][?option=value&...]` (or `tls://`).
    ///
    /// Query options: `group`, `start_position` (`beginning`, `end`, an RFC 3339 time or a
    /// stream sequence), `max_in_flight`, `ack_wait`, `nack_delay` and `close_timeout` (in
    /// milliseconds, as every adapter spells them; `ack_wait_ms` and `nack_delay_ms` also work),
    /// `max_deliveries`, `dead_letter`, `batch_size`, `double_ack` (`true`),
    /// `storage` (`file`, `memory`), `retention` (`limits`, `interest`, `workqueue`),
    /// `max_age_secs`, `duplicate_window_secs`, `stream_prefix`, `provisioning` (`create`,
    /// `existing`), `name`, `token`, `tls` (`true`). A user without a password is taken as a
    /// token.
    ///
    /// ```
    /// let config = tidemill_nats::NatsConfig::from_url("nats://127.0.0.1:4222?group=g&double_ack=true")?;
    /// assert_eq!(config.group_name(), Some("g"));
    /// assert!(tidemill_nats::NatsConfig::from_url("http://x").is_err());
    /// # Ok::<(), tidemill::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Config(format!("invalid NATS URL: {reason}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected nats://host:port"))?;
        if !matches!(scheme, "nats" | "tls") {
            return Err(bad("the scheme must be nats:// or tls://"));
        }
        // Several servers are written `nats://a:4222,b:4222`, which `url` cannot parse as one
        // URL: parse the first with the credentials and query, take the rest as host:port.
        let (authority_and_path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority_and_path.trim_end_matches('/');
        let mut hosts = authority.split(',');
        let first = hosts.next().unwrap_or_default();
        let parsed = url::Url::parse(&format!("{scheme}://{first}"))
            .map_err(|_| bad("cannot parse the address"))?;
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let port = parsed.port().unwrap_or(4222);
        let mut config = Self::new(format!("{scheme}://{host}:{port}"));
        for other in hosts {
            let other = other.trim();
            if !other.is_empty() {
                config.servers.push(format!("{scheme}://{other}"));
            }
        }
        config.require_tls = scheme == "tls";
        let user = percent_decode(parsed.username());
        match parsed.password() {
            Some(password) => config.auth = Auth::UserPassword(user, percent_decode(password)),
            None if !user.is_empty() => config.auth = Auth::Token(user),
            None => {}
        }
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let num = |v: &str| -> Result<u64> {
                v.parse()
                    .map_err(|_| Error::Config(format!("invalid NATS URL: {key} must be a number")))
            };
            let flag = |v: &str| matches!(v, "true" | "1" | "yes");
            if let Some(shared) = SharedOption::parse("NATS", key, &value)? {
                config = match shared {
                    SharedOption::Group(group) => config.group(group),
                    SharedOption::StartPosition(start) => config.start_position(start),
                    SharedOption::MaxInFlight(n) => config.max_in_flight(n),
                    SharedOption::NackDelay(delay) => config.nack_delay(delay),
                    SharedOption::CloseTimeout(timeout) => config.close_timeout(timeout),
                };
                continue;
            }
            match key {
                // Older spellings of shared options.
                "deliver" => config = config.start_position(value.parse::<StartPosition>()?),
                "nack_delay_ms" => config.nack_delay = Duration::from_millis(num(&value)?),
                "ack_wait" | "ack_wait_ms" => config.ack_wait = Duration::from_millis(num(&value)?),
                "max_deliveries" => config.max_deliveries = Some(num(&value)? as u32),
                "dead_letter" => config.dead_letter_subject = Some(value),
                "batch" | "batch_size" => config.batch_size = (num(&value)? as usize).max(1),
                "double_ack" => config.double_ack = flag(&value),
                "storage" => {
                    config.storage = match value.as_str() {
                        "file" => Storage::File,
                        "memory" => Storage::Memory,
                        _ => return Err(bad("storage must be file or memory")),
                    }
                }
                "retention" => {
                    config.retention = match value.as_str() {
                        "limits" => Retention::Limits,
                        "interest" => Retention::Interest,
                        "workqueue" => Retention::WorkQueue,
                        _ => return Err(bad("retention must be limits, interest or workqueue")),
                    }
                }
                "max_age_secs" => config.max_age = Duration::from_secs(num(&value)?),
                "duplicate_window_secs" => {
                    config.duplicate_window = Duration::from_secs(num(&value)?)
                }
                "stream_prefix" => config.stream_prefix = value,
                "provisioning" => {
                    config.provisioning = match value.as_str() {
                        "create" => StreamProvisioning::CreatePerTopic,
                        "existing" => StreamProvisioning::ExistingBySubject,
                        _ => return Err(bad("provisioning must be create or existing")),
                    }
                }
                "name" => config.connection_name = Some(value),
                "token" => config.auth = Auth::Token(value),
                "tls" => config.require_tls = flag(&value),
                _ => {
                    return Err(Error::Config(format!(
                        "invalid NATS URL: unknown option {key:?}; known: {}",
                        URL_OPTIONS.join(", ")
                    )))
                }
            }
        }
        Ok(config)
    }

    /// The servers to connect to, without credentials.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Adds a server of the cluster to try.
    pub fn add_server(mut self, server: impl Into<String>) -> Self {
        self.servers.push(server.into());
        self
    }

    /// Authenticates with a user and password. Default: no authentication.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Auth::UserPassword(user.into(), password.into());
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Authenticates with an NKey seed.
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.auth = Auth::NKeySeed(seed.into());
        self
    }

    /// Authenticates with a `.creds` file (JWT and NKey seed).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = Auth::CredentialsFile(path.into());
        self
    }

    /// Requires TLS. Default off (on for `tls://` URLs).
    pub fn require_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }

    /// Trusts the CA certificates in this PEM file.
    pub fn root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// The connection name the server shows in its monitoring. Default none.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// How long connecting may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a JetStream API request (stream or consumer lookup and creation) may take.
    /// Default 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How a topic finds its stream. Default [`StreamProvisioning::CreatePerTopic`].
    pub fn provisioning(mut self, provisioning: StreamProvisioning) -> Self {
        self.provisioning = provisioning;
        self
    }

    /// A prefix for the names of the streams created per topic. Default empty.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// Retention of created streams. Default [`Retention::Limits`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Storage of created streams. Default [`Storage::File`].
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Maximum age of messages in created streams; zero keeps them forever. Default zero.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How long created streams remember message ids to drop republished duplicates.
    /// Default 2 minutes.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Replicas of created streams (in a cluster). Default 1.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long one `publish` call may keep retrying while the server is away, before it fails.
    /// Default 30 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long to wait for the server's acknowledgement of one publish attempt. Default 5 s.
    pub fn publish_ack_timeout(mut self, timeout: Duration) -> Self {
        self.publish_ack_timeout = timeout;
        self
    }

    /// Joins consumer group `group`: a durable consumer of that name on the topic's stream,
    /// whose members share the messages. Default none.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Clears the consumer group: every subscriber gets every message.
    pub fn no_group(mut self) -> Self {
        self.group = None;
        self
    }

    /// The consumer group, if any.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Where a newly created consumer starts: a new group's durable consumer, or a subscriber
    /// without a group. Default: a new group at the beginning (everything the stream holds,
    /// `DeliverPolicy::All`), a subscriber without a group at the end (`DeliverPolicy::New`).
    /// [`StartPosition::Time`] is `ByStartTime`, [`StartPosition::Offset`] a stream sequence
    /// (`ByStartSequence`).
    ///
    /// ```
    /// use tidemill::StartPosition;
    /// let replay = tidemill_nats::NatsConfig::default().start_position(StartPosition::Beginning);
    /// # drop(replay);
    /// ```
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.deliver_from = Some(match start {
            StartPosition::Beginning => DeliverFrom::All,
            StartPosition::End => DeliverFrom::New,
            StartPosition::Time(t) => DeliverFrom::Time(time::OffsetDateTime::from(t)),
            StartPosition::Offset(seq) => DeliverFrom::Sequence(seq.max(1)),
            // The variants to come are refused where they are used.
            _ => DeliverFrom::New,
        });
        self
    }

    /// How long the server waits for a settlement before it delivers again. Default 30 s.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// How long a nacked message waits before it comes back, unless the nack says. Default
    /// 100 ms.
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }

    /// After this many deliveries a message is not delivered again: it goes to the dead-letter
    /// subject if one is set, else the server stops delivering it. Default unlimited.
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = Some(max.max(1));
        self
    }

    /// Where messages go after `max_deliveries`, with the reason in a header. Default none.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// How many unsettled deliveries a consumer (all members of a group together) may hold
    /// (the consumer's `max_ack_pending`). Default 1024.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_ack_pending = max.max(1);
        self
    }

    /// How many messages one pull request asks for. Default 64.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// Sends in-progress signals for unsettled deliveries so that long handlers do not hit the
    /// ack wait. Default on.
    pub fn progress_keepalive(mut self, on: bool) -> Self {
        self.progress_keepalive = on;
        self
    }

    /// Waits for the server to confirm every ack (JetStream double ack), retrying until it
    /// does. Default off.
    pub fn double_ack(mut self, on: bool) -> Self {
        self.double_ack = on;
        self
    }

    /// How long the server keeps the consumer of a subscriber without group after it went away.
    /// Default 60 s.
    pub fn inactive_threshold(mut self, threshold: Duration) -> Self {
        self.inactive_threshold = threshold;
        self
    }

    /// How long `close` waits for deliveries being handled to be settled before it returns them
    /// to the server (nack). Default 10 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The address for errors and logs: the servers, never credentials.
    pub(crate) fn address(&self) -> String {
        self.servers.join(",")
    }

    pub(crate) fn effective_deliver_from(&self) -> DeliverFrom {
        match (self.deliver_from, &self.group) {
            (Some(from), _) => from,
            (None, Some(_)) => DeliverFrom::All,
            (None, None) => DeliverFrom::New,
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_options() {
        let c = NatsConfig::from_url(
            "nats://u:p%40ss@localhost:4333,other:4444?group=g&ack_wait_ms=500&max_deliveries=3&dead_letter=dl&storage=memory&double_ack=true",
        )
        .unwrap();
        assert_eq!(c.servers, ["nats://localhost:4333", "nats://other:4444"]);
        assert!(matches!(&c.auth, Auth::UserPassword(u, p) if u == "u" && p == "p@ss"));
        assert_eq!(c.group.as_deref(), Some("g"));
        assert_eq!(c.ack_wait, Duration::from_millis(500));
        assert_eq!(c.max_deliveries, Some(3));
        assert_eq!(c.dead_letter_subject.as_deref(), Some("dl"));
        assert_eq!(c.storage, Storage::Memory);
        assert!(c.double_ack);
        assert!(!format!("{c:?}").contains("p@ss"));
        assert_eq!(c.address(), "nats://localhost:4333,nats://other:4444");
    }

    #[test]
    fn bad_urls() {
        assert!(NatsConfig::from_url("redis://x").is_err());
        assert!(NatsConfig::from_url("nats://x?nope=1").is_err());
        assert!(NatsConfig::from_url("nats://x?ack_wait_ms=abc").is_err());
    }

    #[test]
    fn deliver_default() {
        let c = NatsConfig::default();
        assert_eq!(c.effective_deliver_from(), DeliverFrom::New);
        assert_eq!(c.group("g").effective_deliver_from(), DeliverFrom::All);
    }

    #[test]
    fn from_url_takes_the_shared_option_names() {
        let c = NatsConfig::from_url(
            "nats://localhost?nack_delay=250&ack_wait=2000&close_timeout=5000&batch_size=8",
        )
        .unwrap();
        assert_eq!(c.nack_delay, Duration::from_millis(250));
        assert_eq!(c.ack_wait, Duration::from_secs(2));
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        assert_eq!(c.batch_size, 8);
        let err = NatsConfig::from_url("nats://localhost?nack=1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nack\"") && err.contains("nack_delay"),
            "{err}"
        );
    }
}
