//! Snapshots: an aggregate's state at a version, so loading reads only the tail after it.

use std::time::SystemTime;

use bytes::Bytes;

/// A stored snapshot.
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
    pub fn due(self, before: u64, after: u64) -> bool {
        match self {
            Self::Never => false,
            Self::EveryN(0) => false,
            Self::EveryN(n) => before / n != after / n,
        }
    }
}
