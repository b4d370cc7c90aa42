//! The stream handed to the user, over the subscription's buffer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{FutureExt, Stream};
use tidemill::{Delivery, Result};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(super) type Buffer = Arc<parking_lot::Mutex<mpsc::Receiver<Result<Delivery>>>>;

/// Gives back (nacks) the deliveries buffered and not yet handed out, and ends the stream.
pub(super) fn drain(buffer: &Buffer) {
    let mut rx = buffer.lock();
    rx.close();
    while rx.try_recv().is_ok() {}
}

/// The stream handed to the user: ends as soon as the subscription or the subscriber is
/// closed. The buffer is shared with the subscription's task, which drains it when it stops,
/// whether or not the stream is still polled.
pub(super) struct SubscriptionStream {
    pub(super) buffer: Buffer,
    pub(super) cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    pub(super) cancel: CancellationToken,
    pub(super) done: bool,
}

impl Stream for SubscriptionStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.poll_unpin(cx).is_ready() {
            self.done = true;
            drain(&self.buffer);
            return Poll::Ready(None);
        }
        let polled = self.buffer.lock().poll_recv(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
