//! [`SqlSubscriber`]: reads topics as logs (offsets per consumer group) or as queues.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tidemill::{
    Acker, Delivery, Error, Result, Settle, Settlement, SubscribeInitializer, Subscriber,
    Subscription,
};
use tokio::sync::{mpsc, Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ConsumeMode, SqlConfig};
use crate::notify::{ListenerGuard, SharedListener};
use crate::pool::SqlPool;
use crate::row::{now_ms, Cursor, StoredRow};
use crate::schema::{validate_group, validate_topic};

/// Receives messages from the database.
///
/// In [`Log`](ConsumeMode::Log) mode (the default) each consumer group has an offset per topic
/// in `<prefix>offsets`; a group member holds a lease on that row while it reads, so members
/// take turns and no message goes to two of them; a new group starts at the topic's first
/// message. Without a group, a subscription starts at the end of the topic and keeps its offset
/// in memory. In [`Queue`](ConsumeMode::Queue) mode members claim rows in parallel and an ack
/// deletes the row.
///
/// Acks are written in batches by the subscription's task; `close` writes those still pending
/// and ends every subscription. Dropping the subscriber leaves running subscriptions alone;
/// dropping a subscription ends it (writing its acks).
#[derive(Clone, Debug)]
pub struct SqlSubscriber {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlPool,
    config: Arc<SqlConfig>,
    schema: Arc<OnceCell<()>>,
    group: Option<String>,
    owner: String,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listener: Arc<SharedListener>,
    closed: AtomicBool,
}

impl SqlSubscriber {
    pub(crate) fn new(
        pool: SqlPool,
        config: Arc<SqlConfig>,
        schema: Arc<OnceCell<()>>,
        listener: Arc<SharedListener>,
        group: Option<&str>,
    ) -> Result<Self> {
        if let Some(g) = group {
            validate_group(g)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                schema,
                group: group.map(str::to_owned),
                owner: uuid::Uuid::new_v4().simple().to_string(),
                stop: CancellationToken::new(),
                tasks: Mutex::new(Vec::new()),
                listener,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The consumer group, if any.
    pub fn group(&self) -> Option<&str> {
        self.inner.group.as_deref()
    }
}

#[async_trait]
impl Subscriber for SqlSubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        Some(self.inner.config.max_in_flight)
    }

    fn group(&self) -> Option<&str> {
        self.inner.group.as_deref()
    }

    /// Dead letters are rows of the dead-letter topic in the same tables.
    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        let inner = &self.inner;
        Some(Arc::new(crate::SqlPublisher::new(
            inner.pool.clone(),
            inner.config.clone(),
            inner.schema.clone(),
        )))
    }

    async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("subscriber"));
        }
        validate_topic(topic)?;
        let inner = &self.inner;
        inner
            .pool
            .ensure_schema(&inner.config, &inner.schema)
            .await
            .map_err(|e| Error::subscribe(topic, e))?;
        let listening = inner.listener.guard(&inner.pool, &inner.config.tables);
        let tables = &inner.config.tables;
        let wake = crate::notify::register(tables.prefix(), topic);
        let (out, mut rx) = mpsc::channel::<Delivery>(1);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let common = Common {
            pool: inner.pool.clone(),
            config: inner.config.clone(),
            topic: Arc::from(topic),
            out,
            settle_tx,
            settle_rx,
            wake,
            stop: inner.stop.child_token(),
            in_flight: 0,
            _listening: listening,
        };
        let task = match inner.config.mode {
            ConsumeMode::Log => {
                let (start, skip) = match &inner.group {
                    Some(_) => (Cursor::default(), HashSet::new()),
                    // Without a group: start at the end, decided before subscribe returns.
                    None => inner
                        .pool
                        .head(tables, topic)
                        .await
                        .map_err(|e| Error::subscribe(topic, e))?,
                };
                let task = LogTask {
                    c: common,
                    group: inner.group.clone(),
                    owner: inner.owner.clone(),
                    leased: inner.group.is_none(),
                    read: start,
                    acked: start,
                    flushed: start,
                    skip,
                    buffer: VecDeque::new(),
                    pending: VecDeque::new(),
                    next_seq: 0,
                    last_flush: Instant::now(),
                };
                tokio::spawn(task.run())
            }
            ConsumeMode::Queue => tokio::spawn(
                QueueTask {
                    c: common,
                    buffer: VecDeque::new(),
                    delivered: HashSet::new(),
                }
                .run(),
            ),
        };
        {
            let mut tasks = inner.tasks.lock();
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|d| d.map(Ok)));
        Ok(Subscription::new(topic, stream))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    fn as_initializer(&self) -> Option<&dyn SubscribeInitializer> {
        Some(self)
    }
}

#[async_trait]
impl SubscribeInitializer for SqlSubscriber {
    async fn initialize_topic(&self, topic: &str) -> Result<()> {
        // Rows are kept whether or not anyone subscribed: the tables are all a topic needs.
        validate_topic(topic)?;
        self.inner
            .pool
            .ensure_schema(&self.inner.config, &self.inner.schema)
            .await
            .map_err(|e| Error::subscribe(topic, e))?;
        #[cfg(feature = "mysql")]
        if let crate::SqlPool::MySql(pool) = &self.inner.pool {
            crate::mysql::ensure_sequence(pool, self.inner.config.tables(), topic)
                .await
                .map_err(|e| Error::subscribe(topic, e))?;
        }
        Ok(())
    }
}

/// Settles by telling the subscription's task, which writes to the database.
struct SqlAck {
    key: u64,
    tx: mpsc::UnboundedSender<(u64, Settlement)>,
}

impl Settle for SqlAck {
    fn settle(self: Box<Self>, settlement: Settlement) {
        // The task is gone only after close or a dropped subscription: the row stays unacked
        // and comes back.
        let _ = self.tx.send((self.key, settlement));
    }
}

/// What both kinds of subscription task share.
struct Common {
    pool: SqlPool,
    config: Arc<SqlConfig>,
    topic: Arc<str>,
    out: mpsc::Sender<Delivery>,
    settle_tx: mpsc::UnboundedSender<(u64, Settlement)>,
    settle_rx: mpsc::UnboundedReceiver<(u64, Settlement)>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    in_flight: usize,
    /// Keeps PostgreSQL's LISTEN connection up while the subscription runs.
    _listening: ListenerGuard,
}

enum Sent {
    Ok,
    Stopped,
}

impl Common {
    /// Hands a delivery to the stream; waits for room, or stops.
    async fn send(&mut self, row: &StoredRow, key: u64) -> Sent {
        let delivery = Delivery::new(
            row.message.clone(),
            Acker::new(SqlAck {
                key,
                tx: self.settle_tx.clone(),
            }),
        );
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Sent::Stopped,
            sent = self.out.send(delivery) => match sent {
                Ok(()) => {
                    self.in_flight += 1;
                    Sent::Ok
                }
                Err(_) => Sent::Stopped,
            },
        }
    }

    fn nack_delay(&self, s: Settlement) -> Duration {
        match s {
            Settlement::Nack { delay: Some(d) } => d,
            _ => self.config.nack_delay,
        }
    }

    fn deadline_ms(at_ms: i64) -> Instant {
        let wait = (at_ms - now_ms()).max(0) as u64;
        Instant::now() + Duration::from_millis(wait)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acked,
    Nacked(Instant),
}

struct Entry {
    seq: u64,
    row: StoredRow,
    state: State,
}

/// One subscription in log mode.
struct LogTask {
    c: Common,
    group: Option<String>,
    owner: String,
    /// Whether this member holds the group's lease (always true without a group).
    leased: bool,
    /// The last row taken from the database.
    read: Cursor,
    /// The end of the acknowledged prefix.
    acked: Cursor,
    /// What the offsets table holds.
    flushed: Cursor,
    /// Rows already committed when a group-less subscription started (PostgreSQL).
    skip: HashSet<i64>,
    buffer: VecDeque<StoredRow>,
    pending: VecDeque<Entry>,
    next_seq: u64,
    last_flush: Instant,
}

impl LogTask {
    fn apply(&mut self, (seq, s): (u64, Settlement)) {
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

    fn drain(&mut self) {
        while let Ok(s) = self.c.settle_rx.try_recv() {
            self.apply(s);
        }
    }

    /// Writes the acked offset (and renews the lease); `release` also gives the lease up.
    async fn flush(&mut self, release: bool) -> bool {
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

    fn lose_lease(&mut self) {
        self.leased = false;
        self.buffer.clear();
        self.pending.clear();
        self.c.in_flight = 0;
    }

    async fn claim(&mut self) -> std::result::Result<bool, sqlx::Error> {
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

    async fn run(mut self) {
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
    async fn read_more(&mut self) -> std::result::Result<bool, sqlx::Error> {
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

    async fn shutdown(mut self) {
        self.drain();
        // Write what was acked; the database may be restarting, so try for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.flush(true).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One subscription in queue mode.
struct QueueTask {
    c: Common,
    buffer: VecDeque<StoredRow>,
    delivered: HashSet<i64>,
}

impl QueueTask {
    async fn run(mut self) {
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

    fn settled(
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

    async fn write(&mut self, acks: &mut Vec<i64>, nacks: &mut Vec<(i64, i64)>) {
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
