//! Connections to the server: the shared, self-reconnecting one and the dedicated ones that
//! blocking reads need.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};
use tidemill::backoff::Retries;
use tidemill::{Error, Result};

use crate::config::RedisConfig;
use crate::error::RedisAdapterError;

/// The redis client and the redacted address used in errors.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) client: Client,
    pub(crate) address: String,
}

impl Endpoint {
    pub(crate) fn new(config: &RedisConfig) -> Result<Self> {
        let address = config.address();
        let client = Client::open(config.info.clone()).map_err(|e| Error::Connect {
            address: address.clone(),
            source: RedisAdapterError::from(e).into(),
        })?;
        Ok(Self { client, address })
    }

    /// A multiplexed connection that reconnects by itself with backoff; clones share it.
    pub(crate) async fn manager(&self, config: &RedisConfig) -> Result<ConnectionManager> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_min_delay(config.reconnect_min_delay)
            .set_max_delay(config.reconnect_max_delay)
            .set_number_of_retries(3);
        ConnectionManager::new_with_config(self.client.clone(), manager_config)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// A connection of its own, for blocking reads that would stall a shared one. Its response
    /// timeout leaves room for the block time.
    pub(crate) async fn dedicated(
        &self,
        config: &RedisConfig,
    ) -> Result<MultiplexedConnection, RedisError> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout + config.block_time));
        self.client
            .get_multiplexed_async_connection_with_config(&conn_config)
            .await
    }

    pub(crate) fn connect_error(&self, e: RedisError) -> Error {
        Error::Connect {
            address: self.address.clone(),
            source: RedisAdapterError::from(e).into(),
        }
    }
}

/// Whether the error means the connection is gone (as opposed to the server refusing a command).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING") | Some("BUSY") | Some("MASTERDOWN")
        )
}

/// The reconnect backoff: the core's, between the configured first and longest wait.
pub(crate) fn reconnect_backoff(config: &RedisConfig) -> Retries {
    Retries::new(tidemill::Backoff::new(
        config.reconnect_min_delay,
        config.reconnect_max_delay,
    ))
}
