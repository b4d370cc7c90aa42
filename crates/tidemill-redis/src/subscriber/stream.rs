//! The stream of one subscription: the buffer its reader fills, and the deliveries that come
//! from it and settle back into it (an ack goes to the acker, a nack back to the queue).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemill::{Acker, Delivery, Error, Result, Settle, Settlement};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acker::{AckOp, Target};
use crate::codec::Entry;

/// What one subscription shares between its reader task, its stream and its deliveries.
pub(super) struct SubState {
    pub(super) topic: Arc<str>,
    /// The group to settle in; `None` without a consumer group.
    pub(super) target: Option<Arc<Target>>,
    pub(super) queues: Mutex<Queues>,
    pub(super) readable: Notify,
    pub(super) room: Notify,
    pub(super) window: Arc<Semaphore>,
    pub(super) acker: mpsc::UnboundedSender<AckOp>,
    pub(super) cancel: CancellationToken,
    pub(super) nack_delay: Duration,
    pub(super) low_water: usize,
}

#[derive(Default)]
pub(super) struct Queues {
    /// Fetched, not yet delivered.
    pub(super) buffer: VecDeque<Entry>,
    /// Nacked, with the time they are due; they go before `buffer`, in nack order.
    pub(super) redeliveries: VecDeque<(Instant, Entry)>,
    pub(super) errors: VecDeque<Error>,
    pub(super) closed: bool,
}

pub(super) enum Step {
    Deliver(Entry),
    Fail(Error),
    Wait(Option<Instant>),
    End,
}

impl SubState {
    pub(super) async fn next(self: &Arc<Self>) -> Option<Result<Delivery>> {
        // The fast path skips registering with the cancellation token on every message.
        let permit = match self.window.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                permit = self.window.clone().acquire_owned() => permit.ok()?,
                _ = self.cancel.cancelled() => return None,
            },
        };
        if self.cancel.is_cancelled() {
            return None;
        }
        loop {
            let step = {
                let mut q = self.queues.lock();
                if q.closed {
                    Step::End
                } else if let Some((due, _)) = q.redeliveries.front() {
                    if *due <= Instant::now() {
                        Step::Deliver(q.redeliveries.pop_front().expect("checked").1)
                    } else {
                        Step::Wait(Some(*due))
                    }
                } else if let Some(entry) = q.buffer.pop_front() {
                    if q.buffer.len() == self.low_water {
                        self.room.notify_one();
                    }
                    Step::Deliver(entry)
                } else if let Some(e) = q.errors.pop_front() {
                    Step::Fail(e)
                } else {
                    self.room.notify_one();
                    Step::Wait(None)
                }
            };
            match step {
                Step::Deliver(entry) => {
                    let message = entry.message.clone();
                    let settle = RedisSettle {
                        state: self.clone(),
                        entry,
                        _permit: permit,
                    };
                    return Some(Ok(Delivery::new(message, Acker::new(settle))));
                }
                Step::Fail(e) => return Some(Err(e)),
                Step::End => return None,
                Step::Wait(due) => {
                    let due = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        _ = self.readable.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.cancel.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Adds fetched entries; once closed, gives them straight back.
    pub(super) fn push(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut q = self.queues.lock();
        if q.closed {
            drop(q);
            self.release(entries.into_iter().map(|e| e.id).collect());
            return;
        }
        q.buffer.extend(entries);
        drop(q);
        self.readable.notify_one();
    }

    pub(super) fn push_error(&self, error: Error) {
        let mut q = self.queues.lock();
        // A consumer that does not look at errors must not make them pile up.
        if q.errors.len() < 16 {
            q.errors.push_back(error);
        }
        drop(q);
        self.readable.notify_one();
    }

    pub(super) fn buffered(&self) -> usize {
        self.queues.lock().buffer.len()
    }

    pub(super) fn redeliver(&self, entry: Entry, delay: Duration) {
        let mut q = self.queues.lock();
        if q.closed {
            drop(q);
            self.release(vec![entry.id]);
            return;
        }
        q.redeliveries.push_back((Instant::now() + delay, entry));
        drop(q);
        self.readable.notify_one();
    }

    pub(super) fn release(&self, ids: Vec<Arc<str>>) {
        if let (Some(target), false) = (&self.target, ids.is_empty()) {
            let _ = self.acker.send(AckOp::Release {
                target: target.clone(),
                ids,
            });
        }
    }

    /// Ends the subscription: the stream ends, and what was fetched but not delivered goes back.
    pub(super) fn shut(&self) {
        let (buffer, redeliveries) = {
            let mut q = self.queues.lock();
            q.closed = true;
            (
                std::mem::take(&mut q.buffer),
                std::mem::take(&mut q.redeliveries),
            )
        };
        let ids = redeliveries
            .into_iter()
            .map(|(_, e)| e.id)
            .chain(buffer.into_iter().map(|e| e.id))
            .collect();
        self.release(ids);
        self.readable.notify_one();
    }
}

/// Cancels the subscription when its stream is dropped.
pub(super) struct StreamGuard(pub(super) Arc<SubState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.cancel.cancel();
    }
}

struct RedisSettle {
    state: Arc<SubState>,
    entry: Entry,
    _permit: OwnedSemaphorePermit,
}

impl Settle for RedisSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        let RedisSettle {
            state,
            entry,
            _permit,
        } = *self;
        match settlement {
            Settlement::Ack => {
                if let Some(target) = &state.target {
                    let _ = state.acker.send(AckOp::Ack {
                        target: target.clone(),
                        id: entry.id,
                        message_id: entry.message.shared_id(),
                    });
                }
            }
            Settlement::Nack { delay } => {
                state.redeliver(entry, delay.unwrap_or(state.nack_delay));
            }
        }
        // The permit goes last, so a redelivery is queued before the stream may fetch more.
        drop(_permit);
    }
}
