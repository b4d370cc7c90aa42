//! A subscription in queue mode: claims rows (`SKIP LOCKED` or the single writer), an ack
//! deletes the row and a nack releases it.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tidemill::Settlement;
use tokio::time::Instant;

use super::task::{Common, Sent};
use crate::row::{now_ms, StoredRow};

/// One subscription in queue mode.
pub(super) struct QueueTask {
    pub(super) c: Common,
    pub(super) buffer: VecDeque<StoredRow>,
    pub(super) delivered: HashSet<i64>,
}

impl QueueTask {
    pub(super) async fn run(mut self) {
        let cfg = self.c.config.clone();
        let tables = cfg.tables.clone();
        let mut backoff = cfg.min_poll_interval;
        let mut idle_until: Option<Instant> = None;
        let mut acks: Vec<i64> = Vec::new();
        let mut nacks: Vec<(i64, i64)> = Vec::new();
        let claim_size = cfg.batch_size.min(cfg.max_in_flight * 16).max(1);
        loop {
            if self.c.stop.is_cancelled() || self.c.out.is_closed() {
                break;
            }
            while let Ok(s) = self.c.settle_rx.try_recv() {
                self.settled(s, &mut acks, &mut nacks);
            }
            self.write(&mut acks, &mut nacks).await;
            let mut deadline: Option<Instant> = None;
            if !acks.is_empty() || !nacks.is_empty() {
                deadline = Some(Instant::now() + cfg.ack_flush_interval);
            }
            let mut idle = false;
            if self.c.in_flight < cfg.max_in_flight {
                if let Some(row) = self.buffer.pop_front() {
                    let pos = row.cursor.pos;
                    self.delivered.insert(pos);
                    if let Sent::Stopped = self.c.send(&row, pos as u64).await {
                        self.delivered.remove(&pos);
                        self.buffer.push_front(row);
                        break;
                    }
                    continue;
                }
                if idle_until.is_none_or(|t| t <= Instant::now()) {
                    idle_until = None;
                    let now = now_ms();
                    let until = now + cfg.lease.as_millis() as i64;
                    match self
                        .c
                        .pool
                        .queue_claim(&tables, &self.c.topic, now, until, claim_size)
                        .await
                    {
                        Ok(rows) if !rows.is_empty() => {
                            self.buffer.extend(rows);
                            backoff = cfg.min_poll_interval;
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(topic = %self.c.topic, "claiming failed, retrying: {e}")
                        }
                    }
                    idle_until = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(cfg.max_poll_interval);
                }
                if let Some(t) = idle_until {
                    idle = true;
                    deadline = Some(deadline.map_or(t, |d| d.min(t)));
                }
            }
            let sleep = tokio::time::sleep_until(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                _ = self.c.stop.cancelled() => break,
                _ = self.c.out.closed() => break,
                s = self.c.settle_rx.recv() => if let Some(s) = s { self.settled(s, &mut acks, &mut nacks) },
                _ = self.c.wake.notified(), if idle => {
                    idle_until = None;
                    backoff = cfg.min_poll_interval;
                }
                _ = sleep => {}
            }
        }
        // Write settlements already made; hand back what was claimed but not settled.
        while let Ok(s) = self.c.settle_rx.try_recv() {
            self.settled(s, &mut acks, &mut nacks);
        }
        let back: Vec<i64> = self
            .buffer
            .iter()
            .map(|r| r.cursor.pos)
            .chain(self.delivered.iter().copied())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.write(&mut acks, &mut nacks).await;
            if (acks.is_empty() && nacks.is_empty()) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !back.is_empty() {
            if let Err(e) = self
                .c
                .pool
                .queue_release(&tables, &self.c.topic, &back, None)
                .await
            {
                tracing::debug!(topic = %self.c.topic, "releasing claimed rows failed; they come back after the lease: {e}");
            }
        }
    }

    pub(super) fn settled(
        &mut self,
        (pos, s): (u64, Settlement),
        acks: &mut Vec<i64>,
        nacks: &mut Vec<(i64, i64)>,
    ) {
        let pos = pos as i64;
        if !self.delivered.remove(&pos) {
            return;
        }
        self.c.in_flight -= 1;
        match s {
            Settlement::Ack => acks.push(pos),
            Settlement::Nack { .. } => {
                let delay = self.c.nack_delay(s);
                nacks.push((pos, now_ms() + delay.as_millis() as i64));
            }
        }
    }

    pub(super) async fn write(&mut self, acks: &mut Vec<i64>, nacks: &mut Vec<(i64, i64)>) {
        let tables = &self.c.config.tables;
        if !acks.is_empty() {
            match self.c.pool.queue_delete(tables, &self.c.topic, acks).await {
                Ok(()) => acks.clear(),
                Err(e) => {
                    tracing::warn!(topic = %self.c.topic, "deleting acked rows failed, retrying: {e}")
                }
            }
        }
        while let Some(&(pos, at)) = nacks.last() {
            match self
                .c
                .pool
                .queue_release(tables, &self.c.topic, &[pos], Some(at))
                .await
            {
                Ok(()) => {
                    nacks.pop();
                }
                Err(e) => {
                    tracing::warn!(topic = %self.c.topic, "returning a nacked row failed, retrying: {e}");
                    break;
                }
            }
        }
    }
}
