//! `memory://`: the core's [`InProcessPubSub`]. Everything of one `connect` shares one pub/sub;
//! nothing leaves the process.

use std::sync::Arc;

use async_trait::async_trait;
use tidemill::in_process::InProcessConfig;
use tidemill::{InProcessPubSub, Publisher, Subscriber};

use super::{unsupported_start, Adapter};
use crate::error::AnyError;
use crate::options::{ParsedUrl, StartPosition, SubscriberOptions};

const NAME: &str = "memory";
pub(crate) const KNOWN: &[&str] = &["max_in_flight", "nack_delay", "buffer", "persistent"];

/// The URL's options.
pub(crate) struct Config {
    config: InProcessConfig,
    persistent: bool,
    max_in_flight: Option<usize>,
}

fn check_subscriber(config: &Config, options: &SubscriberOptions) -> Result<(), AnyError> {
    if options.max_in_flight.is_some() && options.max_in_flight != config.max_in_flight {
        return Err(AnyError::UnsupportedOption {
            backend: NAME,
            option: "max_in_flight",
            reason: "the in-process pub/sub has one in-flight window for all its subscribers: set it in the URL (memory://?max_in_flight=N)",
        });
    }
    match (options.from, config.persistent) {
        (None, _) | (Some(StartPosition::End), false) | (Some(StartPosition::Beginning), true) => {
            Ok(())
        }
        (Some(position), persistent) => Err(unsupported_start(
            NAME,
            options.group.is_some(),
            position,
            if persistent {
                "memory://?persistent=true replays the whole history (from=beginning)"
            } else {
                "memory:// delivers what is published after subscribing (from=end); memory://?persistent=true replays the history (from=beginning)"
            },
        )),
    }
}

/// Everything of one `connect`: one in-process pub/sub.
pub(crate) struct Memory {
    pubsub: InProcessPubSub,
}

#[async_trait]
impl Adapter for Memory {
    type Config = Config;
    /// The group, if any.
    type SubscriberConfig = Option<String>;

    fn configure(url: &ParsedUrl) -> Result<Config, AnyError> {
        url.check_known(NAME, KNOWN, &[])?;
        let rest = url
            .base
            .trim_start_matches("memory:")
            .trim_start_matches('/');
        if !rest.is_empty() {
            return Err(AnyError::InvalidUrl {
                url: url.redacted.clone(),
                reason: "memory:// takes no host or path".into(),
            });
        }
        let mut config = InProcessConfig::default();
        let persistent = url.flag("persistent")?.unwrap_or(false);
        config = config.persistent(persistent);
        let max_in_flight = url.number("max_in_flight")?;
        if let Some(n) = max_in_flight {
            config = config.max_in_flight(n);
        }
        if let Some(d) = url.duration("nack_delay")? {
            config = config.nack_delay(d);
        }
        if let Some(n) = url.number("buffer")? {
            config = config.buffer_size(n);
        }
        Ok(Config {
            config,
            persistent,
            max_in_flight,
        })
    }

    fn subscriber_config(
        config: &Config,
        options: &SubscriberOptions,
    ) -> Result<Option<String>, AnyError> {
        check_subscriber(config, options)?;
        Ok(options.group.clone())
    }

    async fn connect(config: &Config) -> tidemill::Result<(Self, Arc<dyn Publisher>)> {
        let pubsub = InProcessPubSub::with_config(config.config.clone());
        Ok((
            Memory {
                pubsub: pubsub.clone(),
            },
            Arc::new(pubsub),
        ))
    }

    async fn subscriber(&self, group: Option<String>) -> tidemill::Result<Arc<dyn Subscriber>> {
        Ok(match group {
            Some(group) => Arc::new(self.pubsub.with_group(group.as_str())),
            None => Arc::new(self.pubsub.clone()),
        })
    }
}
