//! Settlement: what an ack or a nack does to a delivery's queue and its subscription's window.

use std::sync::Arc;
use std::time::Duration;

use super::queue::{Entry, Queue};
use super::window::Window;
use crate::pubsub::{Settle, Settlement};

pub(super) struct InProcessSettle {
    pub(super) queue: Arc<Queue>,
    pub(super) window: Arc<Window>,
    pub(super) entry: Entry,
    pub(super) nack_delay: Duration,
}

impl Settle for InProcessSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let this = *self;
        match settlement {
            Settlement::Ack => drop(this.entry),
            Settlement::Nack { delay: None } => this.queue.redeliver(this.entry, this.nack_delay),
            Settlement::Nack { delay: Some(delay) } => this.queue.park_nacked(this.entry, delay),
        }
        this.window.release();
    }
}
