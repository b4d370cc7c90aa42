//! One subscription's stream: reads its queue, within its window of unsettled deliveries.

use std::sync::Arc;

use super::acker::InProcessSettle;
use super::queue::Queue;
use super::topic::Shared;
use super::window::Window;
use crate::pubsub::{Acker, Delivery};

/// The state behind one subscription's stream.
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: Arc<str>,
    pub(super) group: Option<Arc<str>>,
    pub(super) queue: Arc<Queue>,
    pub(super) window: Arc<Window>,
}

impl Reader {
    pub(super) async fn next_delivery(&self) -> Option<Delivery> {
        futures::future::poll_fn(|cx| self.window.poll_acquire(cx)).await;
        let Some(entry) = self.queue.pop().await else {
            self.window.release();
            return None;
        };
        let message = entry.message.clone();
        let settle = InProcessSettle {
            queue: self.queue.clone(),
            window: self.window.clone(),
            entry,
            nack_delay: self.shared.config.nack_delay,
        };
        Some(Delivery::new(message, Acker::new(settle)))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared
            .unsubscribe(&self.topic, &self.queue, self.group.is_some());
    }
}
