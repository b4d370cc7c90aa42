//! Connecting to the broker, with backoff between attempts.

use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
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
    Connection::connect_with_config(&config.uri, props, tls, runtime).await
}

/// Exponential backoff with jitter between reconnect attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &AmqpConfig) -> Self {
        Self {
            initial: config.reconnect_initial,
            max: config.reconnect_max,
            next: config.reconnect_initial,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to a quarter of jitter, so that many clients do not reconnect in lockstep.
        let jitter = base.mul_f64(rand_fraction() * 0.25);
        base + jitter
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

fn rand_fraction() -> f64 {
    // A UUID's random bits are enough for jitter; no need for a generator of our own.
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as f64 / 65536.0
}
