//! Connecting to the broker, with backoff between attempts.

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use tidemill::backoff::Retries;
use tidemill::Error;

use crate::config::AmqpConfig;

/// The error for a failed connection attempt, naming the address without credentials.
pub(crate) fn connect_error(config: &AmqpConfig, source: lapin::Error) -> Error {
    Error::Connect {
        address: config.address.clone(),
        source: Box::new(source),
    }
}

/// Opens one connection as configured.
pub(crate) async fn connect(config: &AmqpConfig, role: &str) -> lapin::Result<Connection> {
    let name = match &config.connection_name {
        Some(name) => format!("{name} ({role})"),
        None => format!("tidemill {role}"),
    };
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        identity: config
            .tls_identity
            .as_ref()
            .map(|(der, password)| OwnedIdentity::PKCS12 {
                der: der.clone(),
                password: password.clone(),
            }),
        cert_chain: config.tls_ca_pem.clone(),
    };
    let runtime = lapin::runtime::default_runtime()?;
    // Bounded: a broker that accepts the socket but never finishes the handshake (one still
    // starting) would otherwise hold the connection's lock, and `close` behind it, forever.
    let connecting = Connection::connect_with_config(&config.uri, props, tls, runtime);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP connection within {:?}", config.connect_timeout),
        )
        .into()),
    }
}

/// The reconnect backoff: the core's, between the configured first and longest wait.
pub(crate) fn reconnect_backoff(config: &AmqpConfig) -> Retries {
    Retries::new(tidemill::Backoff::new(
        config.reconnect_initial,
        config.reconnect_max,
    ))
}
