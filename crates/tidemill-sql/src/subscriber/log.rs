//! A subscription in log mode: reads rows in order past the group's offset, holds the group's
//! lease while it reads, and commits the acknowledged prefix.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tidemill::Settlement;
use tokio::time::Instant;

use super::task::{Common, Sent};
use crate::row::{now_ms, Cursor, StoredRow};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    InFlight,
    Acked,
    Nacked(Instant),
}

pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) row: StoredRow,
    pub(super) state: State,
}

/// One subscription in log mode.
pub(super) struct LogTask {
    pub(super) c: Common,
    pub(super) group: Option<String>,
    pub(super) owner: String,
    /// Whether this member holds the group's lease (always true without a group).
    pub(super) leased: bool,
    /// The last row taken from the database.
    pub(super) read: Cursor,
    /// The end of the acknowledged prefix.
    pub(super) acked: Cursor,
    /// What the offsets table holds.
    pub(super) flushed: Cursor,
    /// Rows already committed when a group-less subscription started (PostgreSQL).
    pub(super) skip: HashSet<i64>,
    pub(super) buffer: VecDeque<StoredRow>,
    pub(super) pending: VecDeque<Entry>,
    pub(super) next_seq: u64,
    pub(super) last_flush: Instant,
}

impl LogTask {
    pub(super) fn apply(&mut self, (seq, s): (u64, Settlement)) {
        let delay = self.c.nack_delay(s);
        if let Some(e) = self.pending.iter_mut().find(|e| e.seq == seq) {
            if e.state == State::InFlight {
                self.c.in_flight -= 1;
                e.state = match s {
                    Settlement::Ack => State::Acked,
                    Settlement::Nack { .. } => State::Nacked(Instant::now() + delay),
                };
            }
        }
        while self
            .pending
            .front()
            .is_some_and(|e| e.state == State::Acked)
        {
            let e = self.pending.pop_front().expect("front exists");
            self.acked = e.row.cursor;
        }
    }

    pub(super) fn drain(&mut self) {
        while let Ok(s) = self.c.settle_rx.try_recv() {
            self.apply(s);
        }
    }

    /// Writes the acked offset (and renews the lease); `release` also gives the lease up.
    pub(super) async fn flush(&mut self, release: bool) -> bool {
        self.last_flush = Instant::now();
        let Some(group) = &self.group else {
            self.flushed = self.acked;
            return true;
        };
        if !self.leased {
            return true;
        }
        let until = now_ms() + self.c.config.lease.as_millis() as i64;
        let tables = &self.c.config.tables;
        match self
            .c
            .pool
            .commit(
                tables,
                group,
                &self.c.topic,
                &self.owner,
                self.acked,
                until,
                release,
            )
            .await
        {
            Ok(true) => {
                self.flushed = self.acked;
                if release {
                    self.leased = false;
                }
                true
            }
            Ok(false) => {
                tracing::warn!(topic = %self.c.topic, group, "lost the group's lease; another member took over");
                self.lose_lease();
                true
            }
            Err(e) => {
                tracing::warn!(topic = %self.c.topic, group, "writing the offset failed, retrying: {e}");
                false
            }
        }
    }

    pub(super) fn lose_lease(&mut self) {
        self.leased = false;
        self.buffer.clear();
        self.pending.clear();
        self.c.in_flight = 0;
    }

    pub(super) async fn claim(&mut self) -> std::result::Result<bool, sqlx::Error> {
        let group = self.group.as_deref().expect("claim needs a group");
        let now = now_ms();
        let until = now + self.c.config.lease.as_millis() as i64;
        let got = self
            .c
            .pool
            .claim(
                &self.c.config.tables,
                group,
                &self.c.topic,
                &self.owner,
                now,
                until,
            )
            .await?;
        if let Some(cursor) = got {
            self.leased = true;
            self.read = cursor;
            self.acked = cursor;
            self.flushed = cursor;
            self.buffer.clear();
            self.pending.clear();
            self.last_flush = Instant::now();
        }
        Ok(got.is_some())
    }

    pub(super) async fn run(mut self) {
        let cfg = self.c.config.clone();
        let mut backoff = cfg.min_poll_interval;
        let mut idle_until: Option<Instant> = None;
        'main: loop {
            if self.c.stop.is_cancelled() || self.c.out.is_closed() {
                break;
            }
            self.drain();
            let dirty = self.acked != self.flushed;
            let renew_due =
                self.group.is_some() && self.leased && self.last_flush.elapsed() >= cfg.lease / 3;
            if (dirty && self.last_flush.elapsed() >= cfg.ack_flush_interval) || renew_due {
                self.flush(false).await;
            }

            let mut deadline: Option<Instant> = None;
            let mut min_deadline = |d: Instant| {
                deadline = Some(deadline.map_or(d, |x: Instant| x.min(d)));
            };
            if self.acked != self.flushed {
                min_deadline(self.last_flush + cfg.ack_flush_interval);
            }
            if self.group.is_some() && self.leased {
                min_deadline(self.last_flush + cfg.lease / 3);
            }

            let mut idle = false;
            if self.c.in_flight < cfg.max_in_flight {
                // Nacked messages come back first, in order.
                let nacked = self
                    .pending
                    .iter()
                    .position(|e| matches!(e.state, State::Nacked(_)));
                if let Some(i) = nacked {
                    let State::Nacked(due) = self.pending[i].state else {
                        unreachable!()
                    };
                    if due <= Instant::now() {
                        let row = self.pending[i].row.clone();
                        let seq = self.pending[i].seq;
                        self.pending[i].state = State::InFlight;
                        if let Sent::Stopped = self.c.send(&row, seq).await {
                            self.pending[i].state = State::Nacked(due);
                            break 'main;
                        }
                        continue;
                    }
                    min_deadline(due);
                }
                // With one delivery in flight, order is kept: nothing new passes a nacked one.
                let hold = nacked.is_some() && cfg.max_in_flight == 1;
                if !hold {
                    if let Some(row) = self.buffer.front() {
                        if row.deliver_at <= now_ms() {
                            let row = self.buffer.pop_front().expect("front exists");
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            self.pending.push_back(Entry {
                                seq,
                                row: row.clone(),
                                state: State::InFlight,
                            });
                            if let Sent::Stopped = self.c.send(&row, seq).await {
                                self.pending.pop_back();
                                break 'main;
                            }
                            continue;
                        }
                        min_deadline(Common::deadline_ms(row.deliver_at));
                    } else if idle_until.is_none_or(|t| t <= Instant::now()) {
                        idle_until = None;
                        match self.read_more().await {
                            Ok(true) => {
                                backoff = cfg.min_poll_interval;
                                continue;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(topic = %self.c.topic, "reading failed, retrying: {e}")
                            }
                        }
                        // Nothing to read (or no lease): wait for a wake-up or the next poll.
                        idle_until = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(cfg.max_poll_interval);
                    }
                    if let Some(t) = idle_until {
                        idle = true;
                        min_deadline(t);
                    }
                }
            }

            let sleep = tokio::time::sleep_until(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                _ = self.c.stop.cancelled() => break,
                _ = self.c.out.closed() => break,
                s = self.c.settle_rx.recv() => if let Some(s) = s { self.apply(s) },
                _ = self.c.wake.notified(), if idle => {
                    idle_until = None;
                    backoff = cfg.min_poll_interval;
                }
                _ = sleep => {}
            }
        }
        self.shutdown().await;
    }

    /// Reads the next batch; `Ok(false)` when there was nothing (or the lease is elsewhere).
    pub(super) async fn read_more(&mut self) -> std::result::Result<bool, sqlx::Error> {
        if !self.leased && !self.claim().await? {
            return Ok(false);
        }
        let rows = self
            .c
            .pool
            .fetch(
                &self.c.config.tables,
                &self.c.topic,
                self.read,
                self.c.config.batch_size,
            )
            .await?;
        if rows.is_empty() {
            // Idle with everything settled: hand the lease back so another member may read.
            if self.group.is_some() && self.pending.is_empty() {
                self.flush(true).await;
            }
            return Ok(false);
        }
        self.read = rows.last().expect("not empty").cursor;
        for row in rows {
            if self.skip.is_empty() || !self.skip.remove(&row.cursor.pos) {
                self.buffer.push_back(row);
            }
        }
        if self.buffer.is_empty() {
            // Only rows that were already there when the subscription started: as if read
            // and acked.
            if self.pending.is_empty() {
                self.acked = self.read;
            }
            return Ok(true);
        }
        Ok(true)
    }

    pub(super) async fn shutdown(mut self) {
        self.drain();
        // Write what was acked; the database may be restarting, so try for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.flush(true).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
