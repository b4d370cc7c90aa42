//! `sqlite://path`, `sqlite::memory:`, `postgres://`, `mysql://`, `mariadb://`: the
//! tidemill-sql pub/sub. Publisher and subscribers share one pool.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::{Publisher, Subscriber};
use tidemill_sql::{ConsumeMode, SqlConfig, SqlPubSub, SubscriberOverrides};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "sql";
pub(crate) const KNOWN: &[&str] = &[
    "max_in_flight",
    "nack_delay",
    "mode",
    "table_prefix",
    "batch_size",
    "max_connections",
];
/// The database clients' own parameters, left in the URL for sqlx.
const PASSED: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-ca",
    "application_name",
];

fn configure(url: &ParsedUrl) -> Result<SqlConfig, AnyError> {
    url.check_known(NAME, KNOWN, PASSED)?;
    let invalid = |reason: tidemill::Error| AnyError::InvalidUrl {
        url: url.redacted.clone(),
        reason: reason.to_string(),
    };
    let mut config = SqlConfig::from_url(url.base_with(PASSED)).map_err(invalid)?;
    if let Some(mode) = url.choice("mode", &["log", "queue"])? {
        config = config.consume_mode(if mode == "queue" {
            ConsumeMode::Queue
        } else {
            ConsumeMode::Log
        });
    }
    if let Some(prefix) = url.get("table_prefix") {
        config = config.table_prefix(prefix).map_err(invalid)?;
    }
    if let Some(n) = url.number("max_in_flight")? {
        config = config.max_in_flight(n);
    }
    if let Some(d) = url.duration("nack_delay")? {
        config = config.nack_delay(d);
    }
    if let Some(n) = url.number("batch_size")? {
        config = config.batch_size(n);
    }
    if let Some(n) = url.number("max_connections")? {
        config = config.max_connections(n);
    }
    Ok(config)
}

/// Whether rows are consumed as a queue (deleted once acked) rather than read as a log.
pub(crate) fn is_queue(url: &ParsedUrl) -> bool {
    url.get("mode") == Some("queue")
}

/// A new group starts at the beginning; a subscription without a group gets what is published
/// after it; a queue holds every row until it is acked.
fn check_start(queue: bool, options: &SubscriberOptions) -> Result<(), AnyError> {
    match options.from {
        // Log mode takes every start position; queue mode delivers every row, oldest first.
        Some(position) if queue && position != StartPosition::Beginning => Err(unsupported_start(
            NAME,
            options.group.is_some(),
            position,
            "queue mode delivers every row from the oldest (from=beginning)",
        )),
        _ => Ok(()),
    }
}

/// The pool the publisher and every subscriber share.
pub(crate) struct Sql {
    pubsub: SqlPubSub,
}

/// The URL's configuration, and whether it is queue mode.
pub(crate) struct Options {
    config: SqlConfig,
    queue: bool,
}

#[async_trait]
impl Adapter for Sql {
    type Config = Options;
    type SubscriberConfig = SubscriberOptions;

    fn configure(url: &ParsedUrl) -> Result<Options, AnyError> {
        Ok(Options {
            config: configure(url)?,
            queue: is_queue(url),
        })
    }

    fn subscriber_config(
        options: &Options,
        subscriber: &SubscriberOptions,
    ) -> Result<SubscriberOptions, AnyError> {
        check_start(options.queue, subscriber)?;
        Ok(subscriber.clone())
    }

    async fn connect(options: &Options) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        let pubsub = SqlPubSub::connect(options.config.clone()).await?;
        pubsub.initialize().await?;
        Ok((
            Sql {
                pubsub: pubsub.clone(),
            },
            Arc::new(pubsub.publisher()),
        ))
    }

    async fn subscriber(
        &self,
        options: SubscriberOptions,
    ) -> tidemill::Result<Arc<dyn Subscriber>> {
        let pubsub = match options.max_in_flight {
            // The window is the pub/sub's option: a second one on the same pool carries it.
            Some(n) => SqlPubSub::from_pool(
                self.pubsub.pool().clone(),
                self.pubsub.config().clone().max_in_flight(n),
            ),
            None => self.pubsub.clone(),
        };
        let mut overrides = SubscriberOverrides::new();
        if let Some(group) = &options.group {
            overrides = overrides.group(group);
        }
        if let Some(from) = options.from {
            overrides = overrides.start_position(from);
        }
        Ok(Arc::new(pubsub.subscriber_with(overrides)?))
    }

    async fn close(&self) {
        self.pubsub.pool().close().await;
    }
}
