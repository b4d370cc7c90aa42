//! Connecting to the server with the configured credentials, TLS and reconnect backoff.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tidemill::{Error, Result};

use crate::config::{Auth, NatsConfig};
use crate::error::NatsError;

/// Connects to the servers of `config`. The client reconnects by itself for as long as it
/// lives, with exponential backoff from 100 ms up to 5 s, and re-subscribes what it had.
///
/// Publishers and subscribers built with `from_client` can share the returned connection.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let config = tidemill_nats::NatsConfig::new("nats://127.0.0.1:4222");
/// let client = tidemill_nats::connect(&config).await?;
/// # drop(client); Ok(()) }
/// ```
pub async fn connect(config: &NatsConfig) -> Result<Client> {
    let connect_error = |source: NatsError| Error::Connect {
        address: config.address(),
        source: source.into(),
    };
    let mut options = ConnectOptions::new()
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let exp = attempts.min(6) as u32;
            Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(5))
        })
        .event_callback(|event| async move {
            match event {
                Event::Disconnected => tracing::warn!("NATS connection lost, reconnecting"),
                Event::Connected => tracing::info!("NATS connection (re)established"),
                Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .require_tls(config.require_tls);
    if let Some(name) = &config.connection_name {
        options = options.name(name);
    }
    if let Some(root) = config.root_certificates.last() {
        options = options.add_root_certificates(root.clone());
    }
    if let Some((cert, key)) = &config.client_certificate {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options = match &config.auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => options.token(token.clone()),
        Auth::NKeySeed(seed) => options.nkey(seed.clone()),
        Auth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            // The path is not secret, but the file's content is: report only the I/O kind.
            .map_err(|err| {
                connect_error(NatsError::Client(format!(
                    "reading credentials file: {}",
                    err.kind()
                )))
            })?,
    };
    let servers = config
        .servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|_| Error::Config(format!("invalid NATS server address {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    options
        .connect(servers)
        .await
        .map_err(|err| connect_error(NatsError::client(err)))
}

/// A JetStream context on `client` whose acknowledgement waits follow `config`.
pub(crate) fn jetstream(client: Client, config: &NatsConfig) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(config.publish_ack_timeout.max(config.request_timeout))
        .build(client)
}
