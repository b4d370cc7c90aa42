//! One module per backend: the only code that knows an adapter's API. Each turns the neutral
//! options into its adapter's configuration and hands out publishers and subscribers.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};

use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

#[cfg(feature = "amqp")]
mod amqp;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql;

/// A connected backend.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// The publisher, shared by every caller.
    fn publisher(&self) -> Arc<dyn Publisher>;
    /// A new subscriber; `options` already hold the URL's defaults.
    async fn subscriber(
        &self,
        options: &SubscriberOptions,
    ) -> Result<Arc<dyn Subscriber>, AnyError>;
    /// Closes the publisher and releases the connection.
    async fn close(&self) -> tidemill::Result<()>;
}

/// What one backend module says about its adapter; [`Connected`] does the rest (checking,
/// connecting, subscribers, closing, errors with the redacted URL) the same way for all.
#[async_trait]
pub(crate) trait Adapter: Sized + Send + Sync + 'static {
    /// The adapter's configuration, from the URL.
    type Config: Send + Sync + 'static;
    /// What a subscriber is made from: the configuration with the subscriber options applied.
    type SubscriberConfig: Send + 'static;

    /// The URL's options as the adapter's configuration, without touching the network.
    fn configure(url: &ParsedUrl) -> Result<Self::Config, AnyError>;

    /// The options applied to the configuration, or the typed error for one the broker cannot
    /// honour (a start position, a window).
    fn subscriber_config(
        config: &Self::Config,
        options: &SubscriberOptions,
    ) -> Result<Self::SubscriberConfig, AnyError>;

    /// Connects: what the backend keeps for its subscribers, and the shared publisher.
    async fn connect(config: &Self::Config) -> tidemill::Result<(Self, Arc<dyn Publisher>)>;

    /// A new subscriber.
    async fn subscriber(
        &self,
        config: Self::SubscriberConfig,
    ) -> tidemill::Result<Arc<dyn Subscriber>>;

    /// Releases what the backend keeps, once the publisher is closed.
    async fn close(&self) {}
}

/// A connected [`Adapter`] with its configuration and URL.
struct Connected<A: Adapter> {
    adapter: A,
    publisher: Arc<dyn Publisher>,
    config: A::Config,
    url: ParsedUrl,
}

#[async_trait]
impl<A: Adapter> Backend for Connected<A> {
    fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }

    async fn subscriber(
        &self,
        options: &SubscriberOptions,
    ) -> Result<Arc<dyn Subscriber>, AnyError> {
        let config = A::subscriber_config(&self.config, options)?;
        self.adapter
            .subscriber(config)
            .await
            .map_err(connect_error(&self.url))
    }

    async fn close(&self) -> tidemill::Result<()> {
        let closed = self.publisher.close().await;
        self.adapter.close().await;
        closed
    }
}

/// Checks the URL's options and its subscriber defaults for adapter `A`.
fn check_with<A: Adapter>(url: &ParsedUrl, defaults: &SubscriberOptions) -> Result<(), AnyError> {
    A::subscriber_config(&A::configure(url)?, defaults).map(drop)
}

/// Connects adapter `A`; a failure names the redacted URL.
async fn connect_with<A: Adapter>(url: &ParsedUrl) -> Result<Box<dyn Backend>, AnyError> {
    let config = A::configure(url)?;
    let (adapter, publisher) = A::connect(&config).await.map_err(connect_error(url))?;
    Ok(Box::new(Connected {
        adapter,
        publisher,
        config,
        url: url.clone(),
    }))
}

/// Which broker a URL names.
///
/// ```
/// use tidemill_any::BackendKind;
/// assert_eq!(BackendKind::from_scheme("mariadb"), Some(BackendKind::MySql));
/// assert_eq!(BackendKind::Kafka.feature(), "kafka");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The core's in-process pub/sub: `memory://`.
    Memory,
    /// SQLite: `sqlite://path`, `sqlite::memory:`.
    Sqlite,
    /// PostgreSQL: `postgres://`, `postgresql://`.
    Postgres,
    /// MariaDB or MySQL: `mysql://`, `mariadb://`.
    MySql,
    /// Redis Streams: `redis://`, `rediss://`.
    Redis,
    /// NATS JetStream: `nats://`, `tls://`.
    Nats,
    /// RabbitMQ: `amqp://`, `amqps://`.
    Amqp,
    /// Kafka: `kafka://host:port,host:port`.
    Kafka,
}

const ALL: [BackendKind; 8] = [
    BackendKind::Memory,
    BackendKind::Sqlite,
    BackendKind::Postgres,
    BackendKind::MySql,
    BackendKind::Redis,
    BackendKind::Nats,
    BackendKind::Amqp,
    BackendKind::Kafka,
];

impl BackendKind {
    /// The backend a URL scheme names.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "memory" => Self::Memory,
            "sqlite" => Self::Sqlite,
            "postgres" | "postgresql" => Self::Postgres,
            "mysql" | "mariadb" => Self::MySql,
            "redis" | "rediss" | "redis+unix" => Self::Redis,
            "nats" | "tls" => Self::Nats,
            "amqp" | "amqps" => Self::Amqp,
            "kafka" => Self::Kafka,
            _ => return None,
        })
    }

    /// A short name: `memory`, `sqlite`, `postgres`, `mysql`, `redis`, `nats`, `amqp`, `kafka`.
    pub fn name(self) -> &'static str {
        self.feature()
    }

    /// The cargo feature of tidemill-any that compiles it in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Redis => "redis",
            Self::Nats => "nats",
            Self::Amqp => "amqp",
            Self::Kafka => "kafka",
        }
    }

    /// The URL form, for messages.
    pub fn example_url(self) -> &'static str {
        match self {
            Self::Memory => "memory://",
            Self::Sqlite => "sqlite://path (or sqlite::memory:)",
            Self::Postgres => "postgres://user@host/db",
            Self::MySql => "mysql://user@host/db (or mariadb://)",
            Self::Redis => "redis://host:port",
            Self::Nats => "nats://host:port",
            Self::Amqp => "amqp://user:password@host:port/vhost",
            Self::Kafka => "kafka://host:port,host:port",
        }
    }

    /// Whether this build has it.
    pub fn is_enabled(self) -> bool {
        match self {
            Self::Memory => cfg!(feature = "memory"),
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::MySql => cfg!(feature = "mysql"),
            Self::Redis => cfg!(feature = "redis"),
            Self::Nats => cfg!(feature = "nats"),
            Self::Amqp => cfg!(feature = "amqp"),
            Self::Kafka => cfg!(feature = "kafka"),
        }
    }

    /// Every backend this build has.
    pub fn enabled() -> Vec<BackendKind> {
        ALL.into_iter().filter(|k| k.is_enabled()).collect()
    }

    /// Every backend there is.
    pub fn all() -> &'static [BackendKind] {
        &ALL
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend the URL names, if it is compiled in.
pub(crate) fn kind_of(url: &ParsedUrl) -> Result<BackendKind, AnyError> {
    let kind = BackendKind::from_scheme(&url.scheme).ok_or_else(|| AnyError::UnknownScheme {
        scheme: url.scheme.clone(),
        url: url.redacted.clone(),
        supported: BackendKind::enabled()
            .into_iter()
            .map(BackendKind::example_url)
            .collect(),
    })?;
    if !kind.is_enabled() {
        return Err(AnyError::FeatureDisabled {
            backend: kind.name(),
            feature: kind.feature(),
            url: url.redacted.clone(),
            enabled: BackendKind::enabled()
                .into_iter()
                .map(BackendKind::example_url)
                .collect(),
        });
    }
    Ok(kind)
}

/// Checks every option of the URL without touching the network.
pub(crate) fn check(kind: BackendKind, url: &ParsedUrl) -> Result<(), AnyError> {
    let defaults = url.subscriber_defaults()?;
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => check_with::<memory::Memory>(url, &defaults),
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
        BackendKind::Sqlite | BackendKind::Postgres | BackendKind::MySql => {
            check_with::<sql::Sql>(url, &defaults)
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => check_with::<redis::Redis>(url, &defaults),
        #[cfg(feature = "nats")]
        BackendKind::Nats => check_with::<nats::Nats>(url, &defaults),
        #[cfg(feature = "amqp")]
        BackendKind::Amqp => check_with::<amqp::Amqp>(url, &defaults),
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => check_with::<kafka::Kafka>(url, &defaults),
        #[allow(unreachable_patterns)]
        _ => unreachable!("kind_of refuses backends not compiled in"),
    }
}

/// Refuses a topic name the broker would refuse, before anything is sent.
pub(crate) fn validate_topic(kind: BackendKind, topic: &str) -> tidemill::Result<()> {
    match kind {
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
        BackendKind::Sqlite | BackendKind::Postgres | BackendKind::MySql => {
            tidemill_sql::validate_topic(topic)
        }
        #[cfg(feature = "nats")]
        BackendKind::Nats => tidemill_nats::validate_subject(topic),
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => tidemill_kafka::validate_topic(topic),
        _ => tidemill::validate_topic(topic),
    }
}

/// Connects to the backend.
pub(crate) async fn connect(
    kind: BackendKind,
    url: &ParsedUrl,
) -> Result<Box<dyn Backend>, AnyError> {
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => connect_with::<memory::Memory>(url).await,
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
        BackendKind::Sqlite | BackendKind::Postgres | BackendKind::MySql => {
            connect_with::<sql::Sql>(url).await
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => connect_with::<redis::Redis>(url).await,
        #[cfg(feature = "nats")]
        BackendKind::Nats => connect_with::<nats::Nats>(url).await,
        #[cfg(feature = "amqp")]
        BackendKind::Amqp => connect_with::<amqp::Amqp>(url).await,
        #[cfg(feature = "kafka")]
        BackendKind::Kafka => connect_with::<kafka::Kafka>(url).await,
        #[allow(unreachable_patterns)]
        _ => unreachable!("kind_of refuses backends not compiled in"),
    }
}

/// Whether acks commit an offset: only the acked prefix of what a group read counts as
/// consumed (SQL in log mode, Kafka per partition). Elsewhere each message is settled alone.
pub(crate) fn commits_acked_prefix(kind: BackendKind, url: &ParsedUrl) -> bool {
    match kind {
        BackendKind::Kafka => true,
        BackendKind::Sqlite | BackendKind::Postgres | BackendKind::MySql => {
            url.get("mode") != Some("queue")
        }
        _ => false,
    }
}

/// Whether the broker drops a published message whose id it stored recently: JetStream does
/// within a stream's duplicate window (`Nats-Msg-Id`, two minutes by default).
pub(crate) fn drops_repeated_ids(kind: BackendKind) -> bool {
    kind == BackendKind::Nats
}

/// The error for a start position a backend cannot honour.
#[allow(dead_code)]
pub(crate) fn unsupported_start(
    backend: &'static str,
    group: bool,
    position: StartPosition,
    supported: &'static str,
) -> AnyError {
    AnyError::UnsupportedStart {
        backend,
        situation: if group {
            "a new consumer group"
        } else {
            "a subscription without a group"
        },
        position: crate::options::describe(&position),
        supported,
    }
}

/// Wraps an adapter's connection error with the redacted URL.
#[allow(dead_code)]
pub(crate) fn connect_error(url: &ParsedUrl) -> impl FnOnce(tidemill::Error) -> AnyError + '_ {
    move |source| AnyError::Connect {
        url: url.redacted.clone(),
        source,
    }
}
