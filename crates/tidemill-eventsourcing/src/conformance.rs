//! The conformance suite for event stores: every backend runs it against its real database.
//!
//! A backend's test file implements [`Harness`] (how to open a store with a given
//! [`StoreConfig`]; the suite picks a unique table prefix per check, so checks run in
//! parallel) and expands [`event_store_conformance!`](crate::event_store_conformance) into one
//! `#[tokio::test]` per check.
//!
//! ```
//! use std::sync::Arc;
//! use tidemill_eventsourcing::conformance::Harness;
//! use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
//!
//! struct Memory;
//!
//! #[async_trait::async_trait]
//! impl Harness for Memory {
//!     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
//!         Arc::new(MemoryEventStore::with_config(config))
//!     }
//!     fn exactly_once_projections(&self) -> bool { false }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! tidemill_eventsourcing::conformance::append_and_read(&Memory).await;
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tidemill::BoxError;
use tokio_util::sync::CancellationToken;

use crate::{
    run_projection, Ended, Error, EventMetadata, EventStore, ExpectedVersion, LogPosition,
    NewEvent, OnError, Projection, ProjectionOptions, ProjectionTx, ReadStream, RecordedEvent,
    StoreConfig, StreamFilter,
};

/// How the suite gets stores of one backend.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// let store = Memory.store(StoreConfig::new()).await;
/// assert_eq!(store.stream_info("s-1").await.unwrap().version, None);
/// # }
/// ```
#[async_trait]
pub trait Harness: Send + Sync {
    /// A store with `config` (its prefix is unique to the check; its schema must exist when
    /// this returns).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tidemill_eventsourcing::conformance::Harness;
    /// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
    /// # struct Memory;
    /// # #[async_trait::async_trait]
    /// # impl Harness for Memory {
    /// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
    /// #         Arc::new(MemoryEventStore::with_config(config))
    /// #     }
    /// #     fn exactly_once_projections(&self) -> bool { false }
    /// # }
    /// # #[tokio::main] async fn main() {
    /// let store = Memory.store(StoreConfig::new().table_prefix("c1_").unwrap()).await;
    /// # drop(store);
    /// # }
    /// ```
    async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore>;

    /// Whether projections' checkpoints commit with their read model (SQL: yes; memory: no,
    /// so the suite then checks at-least-once).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tidemill_eventsourcing::conformance::Harness;
    /// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
    /// # struct Memory;
    /// # #[async_trait::async_trait]
    /// # impl Harness for Memory {
    /// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
    /// #         Arc::new(MemoryEventStore::with_config(config))
    /// #     }
    /// #     fn exactly_once_projections(&self) -> bool { false }
    /// # }
    /// # #[tokio::main] async fn main() {
    /// assert!(!Memory.exactly_once_projections()); // memory checkpoints after each batch
    /// # }
    /// ```
    fn exactly_once_projections(&self) -> bool;
}

fn unique_prefix(check: &str) -> String {
    let n = uuid::Uuid::new_v4().simple().to_string();
    let short: String = check
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("c{}_{}_", &n[..8], short.to_ascii_lowercase())
}

async fn open(h: &dyn Harness, check: &str) -> Arc<dyn EventStore> {
    let config = StoreConfig::new()
        .table_prefix(unique_prefix(check))
        .expect("valid prefix")
        .max_event_bytes(64 * 1024);
    h.store(config).await
}

/// Reads the global log from the start once it holds `n` events. On PostgreSQL the log stops
/// below the oldest running transaction anywhere in the cluster, so freshly committed events
/// can take a moment to appear (that is what keeps readers from skipping).
async fn log_with(
    store: &Arc<dyn EventStore>,
    filter: &StreamFilter,
    n: usize,
) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = store
            .read_all(LogPosition::START, filter, 10_000)
            .await
            .unwrap();
        if all.len() >= n || tokio::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ev(t: &str, body: &str) -> NewEvent {
    NewEvent::new(t, body.to_owned())
}

/// Appends and reads one stream: fields, order both ways, `from`, `max_count`, metadata.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::append_and_read(&Memory).await;
/// # }
/// ```
pub async fn append_and_read(h: &dyn Harness) {
    let store = open(h, "append_and_read").await;
    let md = EventMetadata::default()
        .correlation_id("corr-1")
        .causation_id("cause-1")
        .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .with("tenant", "acme");
    let first = ev("Created", r#"{"n":1}"#)
        .metadata(md.clone())
        .schema_version(3);
    let r = store
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            vec![
                first.clone(),
                ev("Paid", r#"{"n":2}"#),
                ev("Shipped", r#"{"n":3}"#),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.version, 3);
    assert!(r.written);
    let all = store
        .read_stream("order-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0].id, first.id);
    assert_eq!(all[0].stream, "order-1");
    assert_eq!(all[0].event_type, "Created");
    assert_eq!(all[0].schema_version, 3);
    assert_eq!(&all[0].payload[..], br#"{"n":1}"#);
    assert_eq!(all[0].metadata, md);
    assert_eq!(all[2].position, r.position);
    assert!(all[0].position < all[1].position && all[1].position < all[2].position);
    let back = store
        .read_stream("order-1", ReadStream::backward())
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    let mid = store
        .read_stream("order-1", ReadStream::forward().from(2).max_count(1))
        .await
        .unwrap();
    assert_eq!(mid[0].event_type, "Paid");
    let back_from = store
        .read_stream("order-1", ReadStream::backward().from(2))
        .await
        .unwrap();
    assert_eq!(
        back_from.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(store
        .read_stream("order-none", ReadStream::forward())
        .await
        .unwrap()
        .is_empty());
    let info = store.stream_info("order-1").await.unwrap();
    assert_eq!(info.version, Some(3));
}

/// Every expectation, and a conflict that writes nothing.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::expected_versions(&Memory).await;
/// # }
/// ```
pub async fn expected_versions(h: &dyn Harness) {
    let store = open(h, "expected_versions").await;
    let s = "acct-1";
    let conflict = |r: crate::Result<crate::AppendResult>, want_actual: Option<u64>| match r {
        Err(Error::Conflict { stream, actual, .. }) => {
            assert_eq!(stream, s);
            assert_eq!(actual, want_actual);
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    conflict(
        store
            .append(s, ExpectedVersion::Exists, vec![ev("A", "1")])
            .await,
        None,
    );
    conflict(
        store
            .append(s, ExpectedVersion::Exact(1), vec![ev("A", "1")])
            .await,
        None,
    );
    store
        .append(s, ExpectedVersion::NoStream, vec![ev("A", "1")])
        .await
        .unwrap();
    conflict(
        store
            .append(
                s,
                ExpectedVersion::NoStream,
                vec![ev("A", "1"), ev("B", "2")],
            )
            .await,
        Some(1),
    );
    conflict(
        store
            .append(s, ExpectedVersion::Exact(5), vec![ev("A", "1")])
            .await,
        Some(1),
    );
    store
        .append(s, ExpectedVersion::Exists, vec![ev("B", "2")])
        .await
        .unwrap();
    store
        .append(s, ExpectedVersion::Exact(2), vec![ev("C", "3")])
        .await
        .unwrap();
    let r = store
        .append(s, ExpectedVersion::Any, vec![ev("D", "4"), ev("E", "5")])
        .await
        .unwrap();
    assert_eq!(r.version, 5);
    let all = store.read_stream(s, ReadStream::forward()).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["A", "B", "C", "D", "E"]
    );
    // An empty append checks the expectation only.
    store
        .append(s, ExpectedVersion::Exact(5), vec![])
        .await
        .unwrap();
    conflict(
        store.append(s, ExpectedVersion::Exact(4), vec![]).await,
        Some(5),
    );
}

/// Concurrent appenders on one stream: exactly one wins each version.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::concurrent_appenders_one_stream(&Memory).await;
/// # }
/// ```
pub async fn concurrent_appenders_one_stream(h: &dyn Harness) {
    let store = open(h, "concurrent_one").await;
    let writers = 8;
    let target = 40u64;
    let wins = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let wins = wins.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let info = store.stream_info("race-1").await.unwrap();
                let current = info.version.unwrap_or(0);
                if current >= target {
                    return;
                }
                let expected = if current == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(current)
                };
                let e = ev("Step", &format!("{{\"w\":{w}}}"));
                let id = e.id;
                match store.append("race-1", expected, vec![e]).await {
                    Ok(r) => {
                        assert!(r.written);
                        wins.lock().push((r.version, id));
                    }
                    Err(Error::Conflict { .. }) => {}
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut wins = wins.lock().clone();
    wins.sort();
    let versions: Vec<u64> = wins.iter().map(|w| w.0).collect();
    assert_eq!(
        versions,
        (1..=target).collect::<Vec<_>>(),
        "each version won exactly once"
    );
    let stored = store
        .read_stream("race-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, target);
    for (s, w) in stored.iter().zip(&wins) {
        assert_eq!((s.version, s.id), *w);
    }
}

/// Many writers on many streams while a reader tails the global log: every event exactly
/// once, each stream's events in version order, nothing skipped.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::many_streams_global_log(&Memory).await;
/// # }
/// ```
pub async fn many_streams_global_log(h: &dyn Harness) {
    let store = open(h, "many_streams").await;
    let writers = 8;
    let appends = 25;
    let total: usize = writers * (0..appends).map(|i| 1 + i % 3).sum::<usize>();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut at = LogPosition::START;
            let mut seen: Vec<RecordedEvent> = Vec::new();
            // Runs until it has as many events as were written (or times out below): an event
            // it skipped would never come back, so the counts would not match.
            while seen.len() < total {
                let batch = store.read_all(at, &StreamFilter::All, 37).await.unwrap();
                if let Some(last) = batch.last() {
                    assert!(last.position > at);
                    at = last.position;
                }
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen.extend(batch);
            }
            // Nothing more shows up after it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen.extend(store.read_all(at, &StreamFilter::All, 37).await.unwrap());
            seen
        })
    };
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..appends {
                let stream = format!("acct-{}", (w * 7 + i) % 12);
                let n = 1 + (i % 3);
                let events: Vec<NewEvent> = (0..n)
                    .map(|k| ev("Moved", &format!("{{\"w\":{w},\"i\":{i},\"k\":{k}}}")))
                    .collect();
                ids.extend(events.iter().map(|e| e.id));
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("reader finishes")
        .unwrap();
    let mut ids = HashSet::new();
    for e in &seen {
        assert!(ids.insert(e.id), "event {} seen twice", e.id);
    }
    assert_eq!(ids, written, "the tailing reader saw every event");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in &seen {
        let prev = last.insert(&e.stream, e.version).unwrap_or(0);
        assert_eq!(
            e.version,
            prev + 1,
            "stream {} out of order in the global log",
            e.stream
        );
    }
    // A fresh read from the start gives the same sequence.
    let mut again = Vec::new();
    let mut at = LogPosition::START;
    loop {
        let batch = store.read_all(at, &StreamFilter::All, 100).await.unwrap();
        let Some(l) = batch.last() else { break };
        at = l.position;
        again.extend(batch.into_iter().map(|e| e.id));
    }
    assert_eq!(again, seen.iter().map(|e| e.id).collect::<Vec<_>>());
}

/// Retried appends with the same ids do not write twice; ids used elsewhere are refused.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::idempotent_retries(&Memory).await;
/// # }
/// ```
pub async fn idempotent_retries(h: &dyn Harness) {
    let store = open(h, "idempotent").await;
    let batch = vec![ev("A", "1"), ev("B", "2")];
    let first = store
        .append("cart-1", ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
    ] {
        let again = store
            .append("cart-1", expected, batch.clone())
            .await
            .unwrap();
        assert!(!again.written, "{expected:?}");
        assert_eq!(again.version, 2);
        assert_eq!(again.position, first.position);
    }
    let next = vec![ev("C", "3")];
    store
        .append("cart-1", ExpectedVersion::Exact(2), next.clone())
        .await
        .unwrap();
    let again = store
        .append("cart-1", ExpectedVersion::Exact(2), next.clone())
        .await
        .unwrap();
    assert!(!again.written);
    assert_eq!(again.version, 3);
    // The same ids with an expectation they were not written under: a conflict.
    assert!(store
        .append("cart-1", ExpectedVersion::Exact(1), next.clone())
        .await
        .unwrap_err()
        .is_conflict());
    // Part of a batch, or another stream: not a retry.
    let partial = vec![batch[0].clone(), ev("Z", "9")];
    assert!(matches!(
        store.append("cart-1", ExpectedVersion::Any, partial).await,
        Err(Error::DuplicateEventId { .. })
    ));
    assert!(matches!(
        store
            .append("cart-2", ExpectedVersion::Any, vec![batch[1].clone()])
            .await,
        Err(Error::DuplicateEventId { .. })
    ));
    // Duplicates within one batch.
    let e = ev("Q", "1");
    assert!(matches!(
        store
            .append("cart-3", ExpectedVersion::Any, vec![e.clone(), e])
            .await,
        Err(Error::DuplicateEventId { .. })
    ));
    // Concurrent identical retries: one copy.
    let retry = vec![ev("R", "1")];
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, retry) = (store.clone(), retry.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append("cart-4", ExpectedVersion::Any, retry)
                .await
                .unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap().written as usize;
    }
    assert_eq!(written, 1);
    assert_eq!(
        store
            .read_stream("cart-1", ReadStream::forward())
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .read_stream("cart-4", ReadStream::forward())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .read_stream("cart-2", ReadStream::forward())
        .await
        .unwrap()
        .is_empty());
}

/// A clock tests move by hand.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tidemill_eventsourcing::conformance::ManualClock;
/// use tidemill_eventsourcing::{EventStore, ExpectedVersion, MemoryEventStore, NewEvent, ReadStream, StoreConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill_eventsourcing::Result<()> {
/// let eight = SystemTime::UNIX_EPOCH + Duration::from_secs(8 * 3600);
/// let clock = ManualClock::at(eight);
/// let store = MemoryEventStore::with_config(StoreConfig::new().clock(clock.clock()));
/// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("A", "{}")]).await?;
/// clock.set(eight + Duration::from_secs(3600));
/// store.append("s-1", ExpectedVersion::Any, vec![NewEvent::new("B", "{}")]).await?;
/// let at_eight = store.read_stream("s-1", ReadStream::forward().as_of_time(eight)).await?;
/// assert_eq!(at_eight.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `start` (microseconds since the epoch).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// let clock = tidemill_eventsourcing::conformance::ManualClock::at(SystemTime::UNIX_EPOCH);
    /// assert_eq!((clock.clock())(), SystemTime::UNIX_EPOCH);
    /// ```
    pub fn at(start: SystemTime) -> Self {
        Self(Arc::new(AtomicI64::new(crate::event::to_micros(start))))
    }

    /// Sets the time.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let clock = tidemill_eventsourcing::conformance::ManualClock::at(SystemTime::UNIX_EPOCH);
    /// let later = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
    /// clock.set(later);
    /// assert_eq!((clock.clock())(), later);
    /// ```
    pub fn set(&self, t: SystemTime) {
        self.0.store(crate::event::to_micros(t), Ordering::SeqCst);
    }

    /// The clock for [`StoreConfig::clock`].
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tidemill_eventsourcing::{conformance::ManualClock, StoreConfig};
    /// let clock = ManualClock::at(SystemTime::UNIX_EPOCH);
    /// let config = StoreConfig::new().clock(clock.clock());
    /// # drop(config);
    /// ```
    pub fn clock(&self) -> crate::Clock {
        let v = self.0.clone();
        Arc::new(move || crate::event::from_micros(v.load(Ordering::SeqCst)))
    }
}

fn day_at(h: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000 / 86_400 * 86_400 + h * 3600)
}

/// Reads as of a time and as of a version.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::as_of_reads(&Memory).await;
/// # }
/// ```
pub async fn as_of_reads(h: &dyn Harness) {
    let clock = ManualClock::at(day_at(8));
    let config = StoreConfig::new()
        .table_prefix(unique_prefix("as_of"))
        .unwrap()
        .clock(clock.clock());
    let store = h.store(config).await;
    for (hour, t) in [(8, "A"), (9, "B"), (13, "C"), (15, "D")] {
        clock.set(day_at(hour));
        store
            .append("audit-1", ExpectedVersion::Any, vec![ev(t, "{}")])
            .await
            .unwrap();
    }
    let at = |r: ReadStream| {
        let store = store.clone();
        async move {
            store
                .read_stream("audit-1", r)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        at(ReadStream::forward().as_of_time(day_at(10))).await,
        ["A", "B"]
    );
    assert_eq!(
        at(ReadStream::forward().as_of_time(day_at(13))).await,
        ["A", "B", "C"]
    );
    assert_eq!(
        at(ReadStream::forward().as_of_time(day_at(7))).await,
        Vec::<String>::new()
    );
    assert_eq!(
        at(ReadStream::forward().as_of_version(3)).await,
        ["A", "B", "C"]
    );
    assert_eq!(
        at(ReadStream::backward().as_of_version(2)).await,
        ["B", "A"]
    );
    let events = store
        .read_stream("audit-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(events[1].recorded_at, day_at(9));
}

/// Truncate, soft delete (and appending after it), tombstone.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::truncate_and_delete(&Memory).await;
/// # }
/// ```
pub async fn truncate_and_delete(h: &dyn Harness) {
    let store = open(h, "lifecycle").await;
    let five: Vec<NewEvent> = (1..=5).map(|i| ev("E", &i.to_string())).collect();
    store
        .append("doc-1", ExpectedVersion::NoStream, five)
        .await
        .unwrap();
    store.truncate_before("doc-1", 3).await.unwrap();
    let left = store
        .read_stream("doc-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let log = log_with(&store, &StreamFilter::All, 3).await;
    assert_eq!(log.len(), 3, "truncated events leave the global log");
    // Versions go on.
    store
        .append("doc-1", ExpectedVersion::Exact(5), vec![ev("E", "6")])
        .await
        .unwrap();

    // Soft delete: hidden, and the next append continues the numbering.
    assert!(store
        .delete_stream("doc-1", ExpectedVersion::Exact(1))
        .await
        .unwrap_err()
        .is_conflict());
    store
        .delete_stream("doc-1", ExpectedVersion::Exact(6))
        .await
        .unwrap();
    assert!(store
        .read_stream("doc-1", ReadStream::forward())
        .await
        .unwrap()
        .is_empty());
    assert!(store.stream_info("doc-1").await.unwrap().deleted);
    let r = store
        .append("doc-1", ExpectedVersion::Any, vec![ev("Again", "7")])
        .await
        .unwrap();
    assert_eq!(r.version, 7);
    let after = store
        .read_stream("doc-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(after.iter().map(|e| e.version).collect::<Vec<_>>(), [7]);
    // A deleted stream appended to at its exact version is live again.
    store
        .delete_stream("doc-1", ExpectedVersion::Exact(7))
        .await
        .unwrap();
    let r = store
        .append("doc-1", ExpectedVersion::Exact(7), vec![ev("Back", "8")])
        .await
        .unwrap();
    assert_eq!(r.version, 8);
    let info = store.stream_info("doc-1").await.unwrap();
    assert_eq!((info.version, info.deleted), (Some(8), false));
    assert_eq!(
        store
            .read_stream("doc-1", ReadStream::forward())
            .await
            .unwrap()
            .len(),
        1
    );

    // Tombstone: gone for good.
    store
        .append("doc-2", ExpectedVersion::NoStream, vec![ev("E", "1")])
        .await
        .unwrap();
    store
        .tombstone("doc-2", ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(matches!(
        store.read_stream("doc-2", ReadStream::forward()).await,
        Err(Error::StreamTombstoned { .. })
    ));
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
    ] {
        assert!(
            matches!(
                store.append("doc-2", expected, vec![ev("E", "2")]).await,
                Err(Error::StreamTombstoned { .. })
            ),
            "{expected:?}"
        );
    }
    let log = log_with(&store, &StreamFilter::All, 6).await;
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|e| e.stream != "doc-2"));
}

/// Category reads of the global log.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::category_reads(&Memory).await;
/// # }
/// ```
pub async fn category_reads(h: &dyn Harness) {
    let store = open(h, "category").await;
    for s in [
        "booking-1",
        "bookings-1",
        "booking-2",
        "user-1",
        "booking_x-1",
    ] {
        store
            .append(s, ExpectedVersion::Any, vec![ev("E", "{}")])
            .await
            .unwrap();
    }
    log_with(&store, &StreamFilter::All, 5).await;
    let f = StreamFilter::parse("booking-*").unwrap();
    let got: Vec<String> = store
        .read_all(LogPosition::START, &f, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stream)
        .collect();
    assert_eq!(got, ["booking-1", "booking-2"]);
    let f = StreamFilter::category("booking_x").unwrap();
    assert_eq!(
        store
            .read_all(LogPosition::START, &f, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    // Paging with a limit.
    let all = store
        .read_all(LogPosition::START, &StreamFilter::All, 2)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let rest = store
        .read_all(all[1].position, &StreamFilter::All, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
}

/// Bad names and oversized events are refused before anything is written.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::bad_input(&Memory).await;
/// # }
/// ```
pub async fn bad_input(h: &dyn Harness) {
    let store = open(h, "bad_input").await;
    for bad in ["", "a b", "x'; DROP TABLE y; --", "a*"] {
        assert!(
            matches!(
                store
                    .append(bad, ExpectedVersion::Any, vec![ev("E", "1")])
                    .await,
                Err(Error::InvalidStream { .. })
            ),
            "{bad:?}"
        );
        assert!(store.read_stream(bad, ReadStream::forward()).await.is_err());
    }
    let big = NewEvent::new("Big", vec![b'x'; 65 * 1024]);
    assert!(matches!(
        store
            .append("big-1", ExpectedVersion::Any, vec![ev("Small", "1"), big])
            .await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(store
        .read_stream("big-1", ReadStream::forward())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .read_all(LogPosition::START, &StreamFilter::All, 10)
        .await
        .unwrap()
        .is_empty());
}

/// A read model writing each event id once: on SQL through the projection's transaction into
/// a table whose primary key makes a second application fail.
struct SeenIds {
    name: String,
    table: String,
    delay: Duration,
    applied: AtomicUsize,
    memory: parking_lot::Mutex<Vec<uuid::Uuid>>,
    fail_type: Option<String>,
}

#[async_trait]
impl Projection for SeenIds {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&self, tx: &mut ProjectionTx<'_>, e: &RecordedEvent) -> Result<(), BoxError> {
        if self.fail_type.as_deref() == Some(e.event_type.as_str()) {
            return Err(format!("cannot handle {}", e.event_type).into());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let id = e.id.to_string();
        let t = &self.table;
        match tx {
            #[cfg(feature = "postgres")]
            ProjectionTx::Postgres(c) => {
                sqlx::query(&format!("INSERT INTO {t} (event_id) VALUES ($1)"))
                    .bind(id)
                    .execute(&mut **c)
                    .await?;
            }
            #[cfg(feature = "mysql")]
            ProjectionTx::MySql(c) => {
                sqlx::query(&format!("INSERT INTO {t} (event_id) VALUES (?)"))
                    .bind(id)
                    .execute(&mut **c)
                    .await?;
            }
            #[cfg(feature = "sqlite")]
            ProjectionTx::Sqlite(c) => {
                sqlx::query(&format!("INSERT INTO {t} (event_id) VALUES (?)"))
                    .bind(id)
                    .execute(&mut **c)
                    .await?;
            }
            ProjectionTx::Memory(_) => self.memory.lock().push(e.id),
        }
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn reset(&self, tx: &mut ProjectionTx<'_>) -> Result<(), BoxError> {
        let t = &self.table;
        let create = format!("CREATE TABLE IF NOT EXISTS {t} (event_id VARCHAR(64) PRIMARY KEY)");
        let clear = format!("DELETE FROM {t}");
        match tx {
            #[cfg(feature = "postgres")]
            ProjectionTx::Postgres(c) => {
                sqlx::query(&create).execute(&mut **c).await?;
                sqlx::query(&clear).execute(&mut **c).await?;
            }
            #[cfg(feature = "mysql")]
            ProjectionTx::MySql(c) => {
                sqlx::query(&create).execute(&mut **c).await?;
                sqlx::query(&clear).execute(&mut **c).await?;
            }
            #[cfg(feature = "sqlite")]
            ProjectionTx::Sqlite(c) => {
                sqlx::query(&create).execute(&mut **c).await?;
                sqlx::query(&clear).execute(&mut **c).await?;
            }
            ProjectionTx::Memory(_) => self.memory.lock().clear(),
        }
        Ok(())
    }
}

impl SeenIds {
    fn new(prefix: &str, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            name: format!("{prefix}seen"),
            table: format!("{prefix}seen_ids"),
            delay,
            applied: AtomicUsize::new(0),
            memory: parking_lot::Mutex::new(Vec::new()),
            fail_type: None,
        })
    }
}

async fn fill(store: &Arc<dyn EventStore>, streams: usize, per: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for s in 0..streams {
        let events: Vec<NewEvent> = (0..per)
            .map(|i| ev("Filled", &format!("{{\"i\":{i}}}")))
            .collect();
        ids.extend(events.iter().map(|e| e.id));
        store
            .append(&format!("fill-{s}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    ids
}

/// A projection killed in the middle of catching up resumes from its checkpoint without
/// applying an event twice (SQL); with the live tail it then picks up new events; a rebuild
/// starts again from zero.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::projection_resumes_exactly_once(&Memory).await;
/// # }
/// ```
pub async fn projection_resumes_exactly_once(h: &dyn Harness) {
    let prefix = unique_prefix("projection");
    let store = h
        .store(StoreConfig::new().table_prefix(prefix.clone()).unwrap())
        .await;
    let ids = fill(&store, 10, 20).await;
    log_with(&store, &StreamFilter::All, ids.len()).await;
    let p = SeenIds::new(&prefix, Duration::from_millis(2));
    store.reset_projection(&*p).await.unwrap();
    let options = ProjectionOptions::new()
        .batch_size(7)
        .poll_interval(Duration::from_millis(20));

    // Kill it (abort the task, mid-transaction) once it applied part of the log.
    let task = tokio::spawn(run_projection(
        store.clone(),
        p.clone(),
        options.clone(),
        CancellationToken::new(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while p.applied.load(Ordering::SeqCst) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let checkpoint = store.load_checkpoint(p.name()).await.unwrap();
    assert!(
        checkpoint.is_some(),
        "some batches committed before the kill"
    );

    // Resume with live tail; append more while it runs.
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_projection(
        store.clone(),
        p.clone(),
        options.clone(),
        stop.clone(),
    ));
    let more = vec![ev("Late", "1"), ev("Late", "2")];
    let mut all_ids = ids.clone();
    all_ids.extend(more.iter().map(|e| e.id));
    store
        .append("late-1", ExpectedVersion::NoStream, more)
        .await
        .unwrap();
    let last = store.stream_info("late-1").await.unwrap();
    assert_eq!(last.version, Some(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cp = store
            .load_checkpoint(p.name())
            .await
            .unwrap()
            .unwrap_or_default();
        let tail = store.read_all(cp, &StreamFilter::All, 1).await.unwrap();
        if tail.is_empty()
            && count_seen(&store, &p, h.exactly_once_projections()).await >= all_ids.len()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    match task.await.unwrap() {
        Ended::Stopped => {}
        Ended::Failed(e) => panic!("projection failed (an event applied twice?): {e}"),
    }
    assert_eq!(
        count_seen(&store, &p, h.exactly_once_projections()).await,
        all_ids.len()
    );
    if h.exactly_once_projections() {
        // Every application committed exactly once (the kill's rolled-back batch included).
        assert!(p.applied.load(Ordering::SeqCst) >= all_ids.len());
    }

    // Rebuild from zero.
    store.reset_projection(&*p).await.unwrap();
    assert_eq!(store.load_checkpoint(p.name()).await.unwrap(), None);
    let ended = run_projection(
        store.clone(),
        p.clone(),
        options.clone().live(false),
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(ended, Ended::Stopped), "{ended:?}");
    assert_eq!(
        count_seen(&store, &p, h.exactly_once_projections()).await,
        all_ids.len()
    );
}

async fn count_seen(store: &Arc<dyn EventStore>, p: &SeenIds, sql: bool) -> usize {
    if sql {
        p.counted(store).await
    } else {
        // At least once on memory: count distinct ids.
        p.memory.lock().iter().collect::<HashSet<_>>().len()
    }
}

impl SeenIds {
    async fn counted(&self, store: &Arc<dyn EventStore>) -> usize {
        // The suite has no pool of its own: it counts inside a projection transaction that
        // fails on purpose, so nothing is committed or checkpointed.
        struct Counter {
            table: String,
            n: AtomicUsize,
        }
        #[async_trait]
        impl Projection for Counter {
            fn name(&self) -> &str {
                "__suite_counter"
            }
            async fn apply(
                &self,
                tx: &mut ProjectionTx<'_>,
                _: &RecordedEvent,
            ) -> Result<(), BoxError> {
                let sql = format!("SELECT COUNT(*) FROM {}", self.table);
                let n: i64 = match tx {
                    #[cfg(feature = "postgres")]
                    ProjectionTx::Postgres(c) => {
                        sqlx::query_scalar(&sql).fetch_one(&mut **c).await?
                    }
                    #[cfg(feature = "mysql")]
                    ProjectionTx::MySql(c) => sqlx::query_scalar(&sql).fetch_one(&mut **c).await?,
                    #[cfg(feature = "sqlite")]
                    ProjectionTx::Sqlite(c) => sqlx::query_scalar(&sql).fetch_one(&mut **c).await?,
                    ProjectionTx::Memory(_) => 0,
                };
                self.n.store(n as usize, Ordering::SeqCst);
                Err("counted".into())
            }
        }
        let c = Counter {
            table: self.table.clone(),
            n: AtomicUsize::new(0),
        };
        let any = store
            .read_all(LogPosition::START, &StreamFilter::All, 1)
            .await
            .unwrap();
        if any.is_empty() {
            return 0;
        }
        let _ = store.apply_projection(&c, &any).await.unwrap();
        c.n.load(Ordering::SeqCst)
    }
}

/// A failing event: `Stop` ends the projection at it with a typed error naming stream,
/// version and type; `DeadLetter` records it and goes on.
///
/// ```
/// # use std::sync::Arc;
/// # use tidemill_eventsourcing::conformance::Harness;
/// # use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
/// # struct Memory;
/// # #[async_trait::async_trait]
/// # impl Harness for Memory {
/// #     async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
/// #         Arc::new(MemoryEventStore::with_config(config))
/// #     }
/// #     fn exactly_once_projections(&self) -> bool { false }
/// # }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::projection_error_policies(&Memory).await;
/// # }
/// ```
pub async fn projection_error_policies(h: &dyn Harness) {
    let prefix = unique_prefix("policies");
    let store = h
        .store(StoreConfig::new().table_prefix(prefix.clone()).unwrap())
        .await;
    store
        .append(
            "shop-1",
            ExpectedVersion::NoStream,
            vec![ev("Ok", "1"), ev("Poison", "2"), ev("Ok", "3")],
        )
        .await
        .unwrap();
    let mut p = Arc::try_unwrap(SeenIds::new(&prefix, Duration::ZERO))
        .ok()
        .unwrap();
    p.fail_type = Some("Poison".into());
    let p = Arc::new(p);
    store.reset_projection(&*p).await.unwrap();
    log_with(&store, &StreamFilter::All, 3).await;
    let opts = ProjectionOptions::new().live(false);
    match run_projection(
        store.clone(),
        p.clone(),
        opts.clone(),
        CancellationToken::new(),
    )
    .await
    {
        Ended::Failed(Error::Projection {
            stream,
            version,
            event_type,
            ..
        }) => {
            assert_eq!(
                (stream.as_str(), version, event_type.as_str()),
                ("shop-1", 2, "Poison")
            );
        }
        other => panic!("expected a stop at the poison event, got {other:?}"),
    }
    let cp = store
        .load_checkpoint(p.name())
        .await
        .unwrap()
        .expect("the first event is checkpointed");
    let first = store
        .read_stream("shop-1", ReadStream::forward())
        .await
        .unwrap();
    assert_eq!(cp, first[0].position);
    assert_eq!(
        count_seen(&store, &p, h.exactly_once_projections()).await,
        1
    );

    let ended = run_projection(
        store.clone(),
        p.clone(),
        opts.on_error(OnError::DeadLetter),
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(ended, Ended::Stopped), "{ended:?}");
    assert_eq!(
        count_seen(&store, &p, h.exactly_once_projections()).await,
        2
    );
    let dead = store.dead_letters(p.name()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].0.version, dead[0].0.event_type.as_str()),
        (2, "Poison")
    );
    assert!(dead[0].1.contains("cannot handle Poison"));
}

/// Expands into one `#[tokio::test]` per check of the suite, given an expression building
/// the [`Harness`].
///
/// ```
/// mod memory_conformance {
///     use std::sync::Arc;
///     use tidemill_eventsourcing::conformance::Harness;
///     use tidemill_eventsourcing::{EventStore, MemoryEventStore, StoreConfig};
///
///     pub struct Memory;
///
///     #[async_trait::async_trait]
///     impl Harness for Memory {
///         async fn store(&self, config: StoreConfig) -> Arc<dyn EventStore> {
///             Arc::new(MemoryEventStore::with_config(config))
///         }
///         fn exactly_once_projections(&self) -> bool { false }
///     }
///
///     // In a test file: one `#[tokio::test]` per check.
///     tidemill_eventsourcing::event_store_conformance!(Memory);
/// }
/// # #[tokio::main] async fn main() {
/// tidemill_eventsourcing::conformance::bad_input(&memory_conformance::Memory).await;
/// # }
/// ```
#[macro_export]
macro_rules! event_store_conformance {
    ($harness:expr) => {
        $crate::event_store_conformance!(@checks $harness;
            append_and_read, expected_versions, concurrent_appenders_one_stream,
            many_streams_global_log, idempotent_retries, as_of_reads, truncate_and_delete,
            category_reads, bad_input, projection_resumes_exactly_once, projection_error_policies);
    };
    (@checks $harness:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
}
