//! One subscription's stream: the reader of its queue and the window of unsettled deliveries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::acker::InProcessSettle;
use super::queue::Queue;
use super::topic::Shared;
use crate::pubsub::{Acker, Delivery};

/// How many deliveries of one subscription are unsettled, and the waker of a stream waiting for
/// one to settle.
pub(super) struct Window {
    pub(super) in_flight: AtomicUsize,
    pub(super) max: usize,
    pub(super) waker: AtomicWaker,
}

impl Window {
    pub(super) fn new(max: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max,
            waker: AtomicWaker::new(),
        }
    }

    pub(super) fn poll_acquire(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Only the subscription's stream acquires, so load-then-add does not race with itself.
        if self.in_flight.load(Ordering::Acquire) < self.max {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.in_flight.load(Ordering::Acquire) < self.max {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    pub(super) fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == self.max {
            self.waker.wake();
        }
    }
}

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
