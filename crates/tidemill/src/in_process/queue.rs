//! The buffer of one subscription or one group: queued, redelivered and parked (delayed)
//! messages, and the wake-ups between publishers and readers.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ack_wait::{AckToken, AckWait};
use super::config::{InProcessConfig, WhenFull};
use crate::delay;
use crate::error::{Error, Result};
use crate::message::Message;

pub(super) struct Entry {
    pub(super) message: Message,
    pub(super) _token: Option<AckToken>,
}

impl Entry {
    pub(super) fn new(message: Message, wait: &Option<Arc<AckWait>>) -> Self {
        Self {
            message,
            _token: wait.as_ref().map(AckToken::new),
        }
    }

    pub(super) fn plain(message: Message) -> Self {
        Self {
            message,
            _token: None,
        }
    }
}

/// The buffer of one subscription or one group.
pub(super) struct Queue {
    pub(super) capacity: usize,
    pub(super) members: AtomicUsize,
    pub(super) state: Mutex<QueueState>,
    pub(super) readable: Notify,
    pub(super) writable: Notify,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) items: VecDeque<Entry>,
    /// Nacked messages with the time they are due; they go before `items`, in nack order.
    pub(super) redeliveries: VecDeque<(Instant, Entry)>,
    /// Delayed messages and messages nacked with a delay, earliest due first; they go before
    /// `items` once due and hold nothing back until then.
    pub(super) parked: BinaryHeap<Parked>,
    /// Orders parked messages due at the same time by arrival.
    pub(super) parked_seq: u64,
    pub(super) readers_waiting: bool,
    pub(super) writers_waiting: bool,
    pub(super) closed: bool,
}

/// A message held back until `due`.
pub(super) struct Parked {
    pub(super) due: Instant,
    pub(super) seq: u64,
    pub(super) entry: Entry,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Parked {}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Parked {
    // Reversed: BinaryHeap is a max-heap and the earliest due must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl QueueState {
    pub(super) fn park(&mut self, due: Instant, entry: Entry) {
        let seq = self.parked_seq;
        self.parked_seq += 1;
        self.parked.push(Parked { due, seq, entry });
    }

    /// Adds a published entry: parked if its metadata asks for a delay, queued otherwise.
    pub(super) fn admit(&mut self, mut entry: Entry) {
        if entry.message.metadata().is_empty() {
            self.items.push_back(entry);
            return;
        }
        match delay::delay_of(&entry.message) {
            Some(wait) => {
                delay::clear_delay(&mut entry.message);
                self.park(Instant::now() + wait, entry);
            }
            None => {
                // A delay long past is spent: deliver without it.
                delay::clear_delay(&mut entry.message);
                self.items.push_back(entry);
            }
        }
    }
}

pub(super) enum Next {
    Entry(Entry),
    WaitUntil(Instant),
    Wait,
    Closed,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            members: AtomicUsize::new(0),
            state: Mutex::new(QueueState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// Adds `n` entries, waiting for room or failing as configured. Returns early, without
    /// error, if the queue is closed because its subscription went away.
    pub(super) async fn push(
        &self,
        topic: &str,
        mut entries: Vec<Entry>,
        config: &InProcessConfig,
    ) -> Result<()> {
        let n = entries.len();
        let mut entries = entries.drain(..).peekable();
        loop {
            let writable = self.writable.notified();
            let wake_readers;
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Ok(());
                }
                let held = state.items.len() + state.parked.len();
                if config.when_full == WhenFull::Fail && held + n > self.capacity {
                    return Err(Error::Full {
                        topic: topic.to_owned(),
                        capacity: self.capacity,
                    });
                }
                let room = self.capacity.saturating_sub(held);
                for entry in entries.by_ref().take(room) {
                    state.admit(entry);
                }
                wake_readers = std::mem::take(&mut state.readers_waiting);
                if entries.peek().is_some() {
                    state.writers_waiting = true;
                }
            }
            if wake_readers {
                self.readable.notify_waiters();
            }
            if entries.peek().is_none() {
                return Ok(());
            }
            writable.await;
        }
    }

    pub(super) fn poll_next(&self) -> Next {
        let mut state = self.state.lock();
        if state.closed {
            return Next::Closed;
        }
        if let Some((due, _)) = state.redeliveries.front() {
            let due = *due;
            if due <= Instant::now() {
                let (_, entry) = state.redeliveries.pop_front().expect("checked above");
                return Next::Entry(entry);
            }
            state.readers_waiting = true;
            return Next::WaitUntil(due);
        }
        let parked_due = state.parked.peek().map(|p| p.due);
        let entry = match parked_due {
            Some(due) if due <= Instant::now() => state.parked.pop().map(|p| p.entry),
            _ => state.items.pop_front(),
        };
        match entry {
            Some(entry) => {
                // Hysteresis: wake a waiting publisher once half the buffer is free, not on
                // every message, so producer and consumer do not ping-pong.
                if state.writers_waiting
                    && state.items.len() + state.parked.len() <= self.capacity / 2
                {
                    state.writers_waiting = false;
                    drop(state);
                    self.writable.notify_waiters();
                }
                Next::Entry(entry)
            }
            None => {
                state.readers_waiting = true;
                match parked_due {
                    Some(due) => Next::WaitUntil(due),
                    None => Next::Wait,
                }
            }
        }
    }

    pub(super) async fn pop(&self) -> Option<Entry> {
        loop {
            let readable = self.readable.notified();
            match self.poll_next() {
                Next::Entry(entry) => return Some(entry),
                Next::Closed => return None,
                Next::Wait => readable.await,
                Next::WaitUntil(due) => {
                    tokio::select! {
                        _ = readable => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
            }
        }
    }

    pub(super) fn redeliver(&self, entry: Entry, delay: Duration) {
        let wake = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state
                .redeliveries
                .push_back((Instant::now() + delay, entry));
            std::mem::take(&mut state.readers_waiting)
        };
        if wake {
            self.readable.notify_waiters();
        }
    }

    /// Parks a message nacked with an explicit delay: it holds nothing back while it waits.
    pub(super) fn park_nacked(&self, entry: Entry, delay: Duration) {
        let wake = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.park(Instant::now() + delay, entry);
            std::mem::take(&mut state.readers_waiting)
        };
        if wake {
            self.readable.notify_waiters();
        }
    }

    pub(super) fn close(&self) {
        let dropped = {
            let mut state = self.state.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.items),
                std::mem::take(&mut state.redeliveries),
                std::mem::take(&mut state.parked),
            )
        };
        drop(dropped);
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }
}
