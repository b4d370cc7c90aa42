//! Settlement: an ack or nack goes, as a message, to the subscription's task, which writes it.

use tidemill::{Settle, Settlement};
use tokio::sync::mpsc;

/// Settles by telling the subscription's task, which writes to the database.
pub(super) struct SqlAck {
    pub(super) key: u64,
    pub(super) tx: mpsc::UnboundedSender<(u64, Settlement)>,
}

impl Settle for SqlAck {
    fn settle(self: Box<Self>, settlement: Settlement) {
        // The task is gone only after close or a dropped subscription: the row stays unacked
        // and comes back.
        let _ = self.tx.send((self.key, settlement));
    }
}
