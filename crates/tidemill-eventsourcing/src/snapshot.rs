//! Snapshots: an aggregate's state at a version, so loading reads only the tail after it.

use std::time::SystemTime;

use bytes::Bytes;

/// A stored snapshot.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use tidemill_eventsourcing::Aggregate;
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: i64 }
/// # #[derive(Debug, Serialize, Deserialize)] #[serde(tag = "type", content = "data")] enum Ev { Added { by: i64 } }
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # impl Aggregate for Counter {
/// #     const CATEGORY: &'static str = "counter";
/// #     type Event = Ev; type Command = i64; type Error = TooBig;
/// #     fn apply(&mut self, e: &Ev) { let Ev::Added { by } = e; self.value += by }
/// #     fn handle(&self, by: i64) -> Result<Vec<Ev>, TooBig> { if self.value + by >= 10 { Err(TooBig) } else { Ok(vec![Ev::Added { by }]) } }
/// # }
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{EventStore, MemoryEventStore, Repository};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(MemoryEventStore::new());
/// let repo = Repository::<Counter>::new(store.clone());
/// repo.execute("c1", 2).await?;
/// repo.take_snapshot("c1").await?;
/// let snap = store.load_snapshot("counter-c1").await?.unwrap();
/// assert_eq!((snap.version, &snap.payload[..]), (1, &br#"{"value":2}"#[..]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRecord {
    /// The aggregate's stream.
    pub stream: String,
    /// The stream version the state includes.
    pub version: u64,
    /// The snapshot's schema version: a snapshot whose version differs from the aggregate's
    /// current [`SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION) is ignored.
    pub schema_version: u32,
    /// The encoded state (JSON in the typed layer).
    pub payload: Bytes,
    /// When it was taken.
    pub recorded_at: SystemTime,
}

/// When the repository takes a snapshot.
///
/// ```
/// use tidemill_eventsourcing::SnapshotPolicy;
/// let p = SnapshotPolicy::EveryN(100);
/// assert!(p.due(95, 101));
/// assert!(!p.due(101, 150));
/// assert!(!SnapshotPolicy::Never.due(0, 1000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// No snapshots.
    #[default]
    Never,
    /// After an append that crosses a multiple of N versions.
    EveryN(u64),
}

impl SnapshotPolicy {
    /// Whether an append taking the stream from version `before` to `after` is due one.
    ///
    /// ```
    /// use tidemill_eventsourcing::SnapshotPolicy;
    /// assert!(SnapshotPolicy::EveryN(10).due(9, 10));
    /// assert!(!SnapshotPolicy::EveryN(10).due(10, 19));
    /// ```
    pub fn due(self, before: u64, after: u64) -> bool {
        match self {
            Self::Never => false,
            Self::EveryN(0) => false,
            Self::EveryN(n) => before / n != after / n,
        }
    }
}
