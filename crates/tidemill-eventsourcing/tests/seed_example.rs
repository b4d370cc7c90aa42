//! The worked example users asked for: users created at 08:00 and 09:00, #1 deleted at
//! 13:00, #2 renamed at 15:00. At the end there is one user, at 10:00 there were two, and
//! the audit log lists the four events in order. On SQLite and PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tidemill_eventsourcing::conformance::ManualClock;
use tidemill_eventsourcing::{
    decode_event, encode_event, EventStore, ExpectedVersion, LogPosition, RecordedEvent,
    SqlEventStore, StoreConfig, StreamFilter, Upcasters,
};

// The names are the event types users expect in the audit log.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", content = "data")]
enum UserEvent {
    UserCreated { id: u32, name: String },
    UserDeleted { id: u32 },
    UserRenamed { id: u32, name: String },
}

fn at(hour: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + hour * 3600)
}

/// The users as of the end of `events`.
fn users(events: &[RecordedEvent], until: SystemTime) -> BTreeMap<u32, String> {
    let mut users = BTreeMap::new();
    for e in events.iter().filter(|e| e.recorded_at <= until) {
        match decode_event::<UserEvent>(e, &Upcasters::new(), 1).unwrap() {
            UserEvent::UserCreated { id, name } | UserEvent::UserRenamed { id, name } => {
                users.insert(id, name);
            }
            UserEvent::UserDeleted { id } => {
                users.remove(&id);
            }
        }
    }
    users
}

async fn worked_example(url: &str, prefix: String) {
    let clock = ManualClock::at(at(8));
    let config = StoreConfig::new()
        .table_prefix(prefix)
        .unwrap()
        .clock(clock.clock());
    let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::connect(url, config).await.unwrap());
    let steps = [
        (
            8,
            "user-1",
            UserEvent::UserCreated {
                id: 1,
                name: "Ada".into(),
            },
        ),
        (
            9,
            "user-2",
            UserEvent::UserCreated {
                id: 2,
                name: "Grace".into(),
            },
        ),
        (13, "user-1", UserEvent::UserDeleted { id: 1 }),
        (
            15,
            "user-2",
            UserEvent::UserRenamed {
                id: 2,
                name: "Grace H.".into(),
            },
        ),
    ];
    for (hour, stream, event) in &steps {
        clock.set(at(*hour));
        store
            .append(
                stream,
                ExpectedVersion::Any,
                vec![encode_event(event, 1).unwrap()],
            )
            .await
            .unwrap();
    }

    // The audit log: the category in order (waiting for PostgreSQL's horizon).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = store
            .read_all(
                LogPosition::START,
                &StreamFilter::parse("user-*").unwrap(),
                100,
            )
            .await
            .unwrap();
        if log.len() >= 4 || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let audit: Vec<(SystemTime, UserEvent)> = log
        .iter()
        .map(|e| {
            (
                e.recorded_at,
                decode_event(e, &Upcasters::new(), 1).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        steps
            .iter()
            .map(|(h, _, e)| (at(*h), e.clone()))
            .collect::<Vec<_>>()
    );

    let end = users(&log, at(24));
    assert_eq!(end, BTreeMap::from([(2, "Grace H.".to_owned())]));
    let ten = users(&log, at(10));
    assert_eq!(
        ten,
        BTreeMap::from([(1, "Ada".to_owned()), (2, "Grace".to_owned())])
    );

    // The same through per-stream "as of" reads.
    let u1 = store
        .read_stream(
            "user-1",
            tidemill_eventsourcing::ReadStream::forward().as_of_time(at(10)),
        )
        .await
        .unwrap();
    assert_eq!(u1.len(), 1);
}

#[tokio::test]
async fn seed_worked_example_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    worked_example(&url, common::unique_prefix("seed")).await;
}

#[tokio::test]
async fn seed_worked_example_postgres() {
    let url = common::pg_url();
    let tables = common::DropTables::new(url.clone());
    worked_example(&url, tables.prefix(common::unique_prefix("seed"))).await;
}
