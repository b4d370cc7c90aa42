//! What both kinds of subscription task share: the database, the stream they fill, and the
//! channel settlements come back on.

use std::sync::Arc;
use std::time::Duration;

use tidemill::{Acker, Delivery, Settlement};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::settle::SqlAck;
use crate::config::SqlConfig;
use crate::notify::ListenerGuard;
use crate::pool::SqlPool;
use crate::row::{now_ms, StoredRow};

/// What both kinds of subscription task share.
pub(super) struct Common {
    pub(super) pool: SqlPool,
    pub(super) config: Arc<SqlConfig>,
    pub(super) topic: Arc<str>,
    pub(super) out: mpsc::Sender<Delivery>,
    pub(super) settle_tx: mpsc::UnboundedSender<(u64, Settlement)>,
    pub(super) settle_rx: mpsc::UnboundedReceiver<(u64, Settlement)>,
    pub(super) wake: Arc<Notify>,
    pub(super) stop: CancellationToken,
    pub(super) in_flight: usize,
    /// Keeps PostgreSQL's LISTEN connection up while the subscription runs.
    pub(super) _listening: ListenerGuard,
}

pub(super) enum Sent {
    Ok,
    Stopped,
}

impl Common {
    /// Hands a delivery to the stream; waits for room, or stops.
    pub(super) async fn send(&mut self, row: &StoredRow, key: u64) -> Sent {
        let delivery = Delivery::new(
            row.message.clone(),
            Acker::new(SqlAck {
                key,
                tx: self.settle_tx.clone(),
            }),
        );
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Sent::Stopped,
            sent = self.out.send(delivery) => match sent {
                Ok(()) => {
                    self.in_flight += 1;
                    Sent::Ok
                }
                Err(_) => Sent::Stopped,
            },
        }
    }

    pub(super) fn nack_delay(&self, s: Settlement) -> Duration {
        match s {
            Settlement::Nack { delay: Some(d) } => d,
            _ => self.config.nack_delay,
        }
    }

    pub(super) fn deadline_ms(at_ms: i64) -> Instant {
        let wait = (at_ms - now_ms()).max(0) as u64;
        Instant::now() + Duration::from_millis(wait)
    }
}
