//! The count of unsettled copies of one publish, which `publish` waits on with
//! `block_publish_until_acked`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Waits, for `block_publish_until_acked`, until every copy of a publish was settled or dropped.
#[derive(Default)]
pub(super) struct AckWait {
    pub(super) remaining: AtomicUsize,
    pub(super) done: Notify,
}

impl AckWait {
    pub(super) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One outstanding copy for an [`AckWait`]; dropping it (on ack, or with its queue) counts it off.
pub(super) struct AckToken(Arc<AckWait>);

impl AckToken {
    pub(super) fn new(wait: &Arc<AckWait>) -> Self {
        wait.remaining.fetch_add(1, Ordering::AcqRel);
        Self(wait.clone())
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}
