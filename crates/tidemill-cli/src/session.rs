//! A connection for one command: bounded waits, masked URL in every message, orderly close.

use std::future::Future;
use std::time::Duration;

use tidemill_any::{AnyConfig, AnyPubSub};

use crate::error::CliError;

pub(crate) struct Session {
    pub pubsub: AnyPubSub,
    pub timeout: Duration,
}

impl Session {
    /// Connects within `timeout`.
    pub async fn connect(config: AnyConfig, timeout: Duration) -> Result<Self, CliError> {
        let url = config.redacted_url().to_owned();
        let pubsub = tokio::time::timeout(timeout, config.connect())
            .await
            .map_err(|_| CliError::Timeout {
                what: "connecting".into(),
                url,
                timeout,
            })??;
        Ok(Self { pubsub, timeout })
    }

    /// `f`, or a timeout error naming `what`.
    pub async fn timed<T>(&self, what: &str, f: impl Future<Output = T>) -> Result<T, CliError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| CliError::Timeout {
                what: what.into(),
                url: self.pubsub.redacted_url().to_owned(),
                timeout: self.timeout,
            })
    }

    /// Closes the connection; a failure to close is reported, not fatal.
    pub async fn close(&self) {
        match tokio::time::timeout(self.timeout, self.pubsub.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: closing: {e}"),
            Err(_) => eprintln!("warning: closing {} timed out", self.pubsub.redacted_url()),
        }
    }
}
