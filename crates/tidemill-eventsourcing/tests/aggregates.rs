//! Aggregates through the repository: snapshots, their schema version, upcasting, retries on
//! conflict, and typed errors for events the reader cannot decode. On SQLite files (the
//! typed layer is the same on every backend).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tidemill_eventsourcing::{
    Aggregate, Error, EventStore, ExecuteError, ExpectedVersion, NewEvent, Repository,
    SnapshotPolicy, SnapshotRecord, SqlEventStore, StoreConfig, Upcasters,
};

async fn sqlite() -> Arc<dyn EventStore> {
    let dir = tempfile::tempdir().unwrap().keep();
    let url = format!("sqlite://{}", dir.join("events.db").display());
    Arc::new(
        SqlEventStore::connect(&url, StoreConfig::new())
            .await
            .unwrap(),
    )
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Account {
    open: bool,
    balance: i64,
    owner_first: String,
    owner_last: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", content = "data")]
enum AccountEvent {
    /// Schema v2: v1 had a single `owner` field.
    Opened {
        first: String,
        last: String,
    },
    Deposited {
        amount: i64,
    },
    Withdrawn {
        amount: i64,
    },
}

#[derive(Debug, Clone)]
enum Command {
    Open(String, String),
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum Rejected {
    #[error("already open")]
    AlreadyOpen,
    #[error("not open")]
    NotOpen,
    #[error("insufficient funds: {0}")]
    Insufficient(i64),
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    const SNAPSHOT_VERSION: u32 = 1;
    type Event = AccountEvent;
    type Command = Command;
    type Error = Rejected;

    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Opened { first, last } => {
                self.open = true;
                self.owner_first = first.clone();
                self.owner_last = last.clone();
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }

    fn handle(&self, c: Command) -> Result<Vec<AccountEvent>, Rejected> {
        match c {
            Command::Open(first, last) if !self.open => {
                Ok(vec![AccountEvent::Opened { first, last }])
            }
            Command::Open(..) => Err(Rejected::AlreadyOpen),
            _ if !self.open => Err(Rejected::NotOpen),
            Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            Command::Withdraw(amount) if amount > self.balance => {
                Err(Rejected::Insufficient(self.balance))
            }
            Command::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Opened" {
            2
        } else {
            1
        }
    }
}

fn upcasters() -> Upcasters {
    Upcasters::new().register("Opened", 1, |v| {
        let owner = v["owner"]
            .as_str()
            .ok_or("v1 Opened without owner")?
            .to_owned();
        let (first, last) = owner.split_once(' ').unwrap_or((&owner, ""));
        Ok(json!({ "first": first, "last": last }))
    })
}

#[tokio::test]
async fn repository_handles_commands_with_typed_rejections() {
    let store = sqlite().await;
    let repo = Repository::<Account>::new(store.clone()).upcasters(upcasters());
    assert!(matches!(
        repo.execute("a1", Command::Deposit(5)).await,
        Err(ExecuteError::Rejected(Rejected::NotOpen))
    ));
    repo.execute("a1", Command::Open("Ada".into(), "Lovelace".into()))
        .await
        .unwrap();
    repo.execute("a1", Command::Deposit(10)).await.unwrap();
    let err = repo.execute("a1", Command::Withdraw(11)).await.unwrap_err();
    assert!(matches!(
        err,
        ExecuteError::Rejected(Rejected::Insufficient(10))
    ));
    repo.execute("a1", Command::Withdraw(4)).await.unwrap();
    let loaded = repo.load("a1").await.unwrap();
    assert_eq!(loaded.version, Some(3));
    assert_eq!(loaded.state.balance, 6);
    let stored = store
        .read_stream("account-a1", Default::default())
        .await
        .unwrap();
    assert_eq!(stored[0].event_type, "Opened");
    assert_eq!(stored[0].schema_version, 2);
}

#[tokio::test]
async fn snapshots_every_n_and_ignored_after_a_schema_change() {
    let store = sqlite().await;
    let repo = Repository::<Account>::new(store.clone()).snapshots(SnapshotPolicy::EveryN(10));
    repo.execute("s1", Command::Open("A".into(), "B".into()))
        .await
        .unwrap();
    for _ in 0..24 {
        repo.execute("s1", Command::Deposit(1)).await.unwrap();
    }
    let loaded = repo.load("s1").await.unwrap();
    assert_eq!(loaded.snapshot, Some(20));
    assert_eq!(loaded.events_read, 5);
    assert_eq!(loaded.state.balance, 24);
    // The same result without the snapshot.
    let plain = Repository::<Account>::new(store.clone())
        .load("s1")
        .await
        .unwrap();
    assert_eq!((plain.snapshot, plain.events_read), (None, 25));
    assert_eq!(plain.state, loaded.state);

    // A snapshot of another schema version is ignored.
    store
        .save_snapshot(SnapshotRecord {
            stream: "account-s1".into(),
            version: 25,
            schema_version: 0,
            payload: br#"{"shape":"old"}"#.to_vec().into(),
            recorded_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    let loaded = repo.load("s1").await.unwrap();
    assert_eq!(
        (loaded.snapshot, loaded.events_read, loaded.state.balance),
        (None, 25, 24)
    );
}

#[tokio::test]
async fn a_v1_event_is_read_as_v2() {
    let store = sqlite().await;
    store
        .append(
            "account-old",
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("Opened", r#"{"owner":"Grace Hopper"}"#).schema_version(1),
                NewEvent::new("Deposited", r#"{"amount":7}"#),
            ],
        )
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store.clone()).upcasters(upcasters());
    let loaded = repo.load("old").await.unwrap();
    assert_eq!(
        (
            loaded.state.owner_first.as_str(),
            loaded.state.owner_last.as_str()
        ),
        ("Grace", "Hopper")
    );
    assert_eq!(loaded.state.balance, 7);
    // Without the upcaster the v1 payload is a typed decode error.
    let err = Repository::<Account>::new(store)
        .load("old")
        .await
        .unwrap_err();
    match err {
        Error::Decode {
            stream,
            version,
            event_type,
            schema_version,
            ..
        } => {
            assert_eq!(
                (
                    stream.as_str(),
                    version,
                    event_type.as_str(),
                    schema_version
                ),
                ("account-old", 1, "Opened", 1)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_type_and_bad_payload_are_typed_errors() {
    let store = sqlite().await;
    store
        .append(
            "account-u",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Frozen", "{}").schema_version(1)],
        )
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store.clone());
    match repo.load("u").await.unwrap_err() {
        Error::UnknownEventType {
            stream,
            version,
            event_type,
        } => {
            assert_eq!(
                (stream.as_str(), version, event_type.as_str()),
                ("account-u", 1, "Frozen")
            );
        }
        other => panic!("{other:?}"),
    }
    store
        .append(
            "account-b",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Deposited", "not json")],
        )
        .await
        .unwrap();
    match repo.load("b").await.unwrap_err() {
        Error::Decode {
            stream,
            version,
            event_type,
            ..
        } => {
            assert_eq!(
                (stream.as_str(), version, event_type.as_str()),
                ("account-b", 1, "Deposited")
            );
        }
        other => panic!("{other:?}"),
    }
    store
        .append(
            "account-c",
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Deposited", r#"{"amount":"x"}"#)],
        )
        .await
        .unwrap();
    assert!(matches!(
        repo.load("c").await.unwrap_err(),
        Error::Decode { .. }
    ));
}

#[tokio::test]
async fn concurrent_commands_retry_on_conflict() {
    let store = sqlite().await;
    let repo = Repository::<Account>::new(store.clone()).retry_on_conflict(50);
    repo.execute("r1", Command::Open("A".into(), "B".into()))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                repo.execute("r1", Command::Deposit(1)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let loaded = repo.load("r1").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (40, Some(41)));

    // Without retries a stale command is a conflict.
    let no_retry = Repository::<Account>::new(store.clone());
    let stale = no_retry.load("r1").await.unwrap();
    store
        .append(
            "account-r1",
            ExpectedVersion::Exact(41),
            vec![NewEvent::new("Deposited", r#"{"amount":1}"#)],
        )
        .await
        .unwrap();
    // Simulate the race: append with the stale version directly.
    let err = store
        .append(
            "account-r1",
            ExpectedVersion::Exact(stale.version.unwrap()),
            vec![NewEvent::new("Deposited", r#"{"amount":1}"#)],
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Conflict {
            actual: Some(42),
            ..
        }
    ));
}
