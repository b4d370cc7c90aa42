//! The window of one subscription: how many of its deliveries are unsettled, at most
//! `max_in_flight`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

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
