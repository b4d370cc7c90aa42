//! Event store figures on SQLite (a file, WAL) and PostgreSQL, beside plain sqlx inserts of
//! the same rows in the same run (interleaved rounds, medians):
//!
//! - appends of 1 and 10 events per call with 1 and 8 concurrent writers (events/s, ratio to
//!   raw sqlx inserts);
//! - loading a 10,000-event aggregate with and without a snapshot;
//! - a projection catching up over the global log (events/s).
//!
//! `cargo bench -p tidemill-eventsourcing --bench eventstore`. Environment:
//! `BENCH_ROUNDS` (default 5), `BENCH_CALLS` (calls per writer per round, default 200),
//! `BENCH_PROJECTION_EVENTS` (default 1,000,000), `BENCH_BACKENDS` (default `sqlite,postgres`),
//! `TIDEMILL_SQL_PG_URL`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;
use tidemill_eventsourcing::{
    Aggregate, EventStore, ExpectedVersion, NewEvent, Projection, ProjectionOptions, ProjectionTx,
    RecordedEvent, Repository, SnapshotPolicy, SqlEventStore, StoreConfig,
};
use tidemill_sql::SqlPool;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn payload(i: usize) -> String {
    format!(r#"{{"amount":{i},"note":"benchmark event payload of a typical size"}}"#)
}

/// The rows an append writes, inserted with plain sqlx: one multi-row INSERT per call, in
/// autocommit, into a table of the same shape.
async fn raw_insert(pool: &SqlPool, table: &str, stream: &str, version: i64, n: usize) {
    macro_rules! insert {
        ($db:ty, $p:expr) => {{
            let mut qb = QueryBuilder::<$db>::new(format!(
                "INSERT INTO {table} (stream, version, event_id, event_type, schema_version, payload, metadata, recorded_at) "
            ));
            qb.push_values(0..n, |mut b, i| {
                b.push_bind(stream)
                    .push_bind(version + 1 + i as i64)
                    .push_bind(uuid::Uuid::now_v7().to_string())
                    .push_bind("Deposited")
                    .push_bind(1i64)
                    .push_bind(payload(i).into_bytes())
                    .push_bind("{}")
                    .push_bind(0i64);
            });
            qb.build().execute($p).await.unwrap();
        }};
    }
    match pool {
        SqlPool::Postgres(p) => insert!(sqlx::Postgres, p),
        SqlPool::Sqlite(p) => insert!(sqlx::Sqlite, p),
        _ => unreachable!(),
    }
}

async fn exec(pool: &SqlPool, sql: &str) {
    match pool {
        SqlPool::Postgres(p) => drop(sqlx::query(sql).execute(p).await.unwrap()),
        SqlPool::Sqlite(p) => drop(sqlx::query(sql).execute(p).await.unwrap()),
        _ => unreachable!(),
    }
}

/// Drops a run's tables (the PostgreSQL database is shared; SQLite's file goes with its
/// directory).
async fn drop_tables(store: &SqlEventStore, prefix: &str, extra: &[&str]) {
    let pool = store.pool();
    let names = [
        "events",
        "streams",
        "snapshots",
        "checkpoints",
        "dead_letters",
    ];
    for name in names.iter().chain(extra) {
        exec(pool, &format!("DROP TABLE IF EXISTS \"{prefix}{name}\"")).await;
    }
}

struct Target {
    name: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn open(t: &Target, prefix: &str) -> Arc<SqlEventStore> {
    let config = StoreConfig::new().table_prefix(prefix).unwrap();
    Arc::new(SqlEventStore::connect(&t.url, config).await.unwrap())
}

async fn appends(t: &Target, rounds: usize, calls: usize) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let store = open(t, &format!("bench{tag}_")).await;
    let pool = store.pool().clone();
    let raw = format!("\"bench{tag}_raw\"");
    let ddl = if t.name == "postgres" {
        format!("CREATE TABLE {raw} (position BIGSERIAL PRIMARY KEY, stream TEXT NOT NULL, version BIGINT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, schema_version BIGINT NOT NULL, payload BYTEA NOT NULL, metadata TEXT NOT NULL, recorded_at BIGINT NOT NULL)")
    } else {
        format!("CREATE TABLE {raw} (position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, version INTEGER NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, payload BLOB NOT NULL, metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL)")
    };
    exec(&pool, &ddl).await;
    // The same indexes the store's table has, so both write the same amount.
    for (n, cols) in [("s", "stream, version"), ("i", "event_id")] {
        exec(
            &pool,
            &format!("CREATE UNIQUE INDEX \"bench{tag}_raw_{n}\" ON {raw} ({cols})"),
        )
        .await;
    }
    if t.name == "postgres" {
        exec(&pool, &format!("ALTER TABLE {raw} ADD COLUMN tx_id BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)")).await;
        exec(
            &pool,
            &format!("CREATE INDEX \"bench{tag}_raw_l\" ON {raw} (tx_id, position)"),
        )
        .await;
    }
    println!(
        "\n[{}] appends ({} rounds of {} calls per writer; events/s, median)",
        t.name, rounds, calls
    );
    println!(
        "{:<26} {:>12} {:>12} {:>7}",
        "case", "event store", "raw sqlx", "ratio"
    );
    let mut round_id = 0usize;
    for per_call in [1usize, 10] {
        for writers in [1usize, 8] {
            let mut es = Vec::new();
            let mut rw = Vec::new();
            for _ in 0..rounds {
                round_id += 1;
                // Event store.
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..writers {
                    let store = store.clone();
                    let stream = format!("acct-{round_id}-{w}");
                    tasks.push(tokio::spawn(async move {
                        let mut version = 0u64;
                        for _ in 0..calls {
                            let events = (0..per_call)
                                .map(|i| NewEvent::new("Deposited", payload(i)))
                                .collect();
                            let expected = if version == 0 {
                                ExpectedVersion::NoStream
                            } else {
                                ExpectedVersion::Exact(version)
                            };
                            version = store
                                .append(&stream, expected, events)
                                .await
                                .unwrap()
                                .version;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                es.push((writers * calls * per_call) as f64 / start.elapsed().as_secs_f64());
                // Raw sqlx.
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..writers {
                    let pool = pool.clone();
                    let raw = raw.clone();
                    let stream = format!("acct-{round_id}-{w}");
                    tasks.push(tokio::spawn(async move {
                        for c in 0..calls {
                            raw_insert(&pool, &raw, &stream, (c * per_call) as i64, per_call).await;
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                rw.push((writers * calls * per_call) as f64 / start.elapsed().as_secs_f64());
            }
            let (e, r) = (median(es), median(rw));
            println!(
                "{:<26} {:>12.0} {:>12.0} {:>7.2}",
                format!("{per_call} per call, {writers} writer(s)"),
                e,
                r,
                e / r
            );
        }
    }
    drop_tables(&store, &format!("bench{tag}_"), &["raw"]).await;
}

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum AccountEvent {
    Deposited { amount: i64 },
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "account";
    type Event = AccountEvent;
    type Command = i64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, e: &AccountEvent) {
        let AccountEvent::Deposited { amount } = e;
        self.balance += amount;
    }
    fn handle(&self, amount: i64) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![AccountEvent::Deposited { amount }])
    }
}

async fn loading(t: &Target, rounds: usize) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let store = open(t, &format!("bload{tag}_")).await;
    let events = 10_000;
    let mut version = 0;
    for chunk in 0..events / 500 {
        let batch = (0..500)
            .map(|i| NewEvent::new("Deposited", format!(r#"{{"amount":{}}}"#, chunk * 500 + i)))
            .collect();
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        version = store
            .append("account-big", expected, batch)
            .await
            .unwrap()
            .version;
    }
    let dyn_store: Arc<dyn EventStore> = store.clone();
    let plain = Repository::<Account>::new(dyn_store.clone());
    let snap = Repository::<Account>::new(dyn_store).snapshots(SnapshotPolicy::EveryN(1000));
    snap.take_snapshot("big").await.unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let l = plain.load("big").await.unwrap();
        a.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(l.events_read, events);
        let start = Instant::now();
        let l = snap.load("big").await.unwrap();
        b.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(l.snapshot, Some(events as u64));
    }
    println!(
        "\n[{}] loading a {events}-event aggregate (ms, median of {rounds})",
        t.name
    );
    println!("  without snapshot: {:>8.2} ms", median(a));
    println!("  with snapshot:    {:>8.2} ms", median(b));
    drop_tables(&store, &format!("bload{tag}_"), &[]).await;
}

/// A projection that only counts (its checkpoint is still written per batch).
struct Count(AtomicU64);

#[async_trait::async_trait]
impl Projection for Count {
    fn name(&self) -> &str {
        "bench_count"
    }
    async fn apply(
        &self,
        _: &mut ProjectionTx<'_>,
        _: &RecordedEvent,
    ) -> Result<(), tidemill::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn catch_up(t: &Target, n: usize) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let store = open(t, &format!("bproj{tag}_")).await;
    let started = Instant::now();
    let per = 1000;
    for s in 0..n / per {
        let batch = (0..per)
            .map(|i| NewEvent::new("Deposited", payload(i)))
            .collect();
        store
            .append(&format!("account-{s}"), ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
    }
    let fill = started.elapsed();
    // PostgreSQL's global log stops below the oldest running transaction: wait for it.
    let dyn_store: Arc<dyn EventStore> = store.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = Arc::new(Count(AtomicU64::new(0)));
    let start = Instant::now();
    let ended = tidemill_eventsourcing::run_projection(
        dyn_store,
        p.clone(),
        ProjectionOptions::new().batch_size(5000).live(false),
        CancellationToken::new(),
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    let done = p.0.load(Ordering::Relaxed);
    println!(
        "\n[{}] projection catch-up over {} events (filled in {:.1} s)",
        t.name,
        n / per * per,
        fill.as_secs_f64()
    );
    println!(
        "  {:.0} events/s ({done} applied in {secs:.2} s, {ended:?})",
        done as f64 / secs
    );
    drop_tables(&store, &format!("bproj{tag}_"), &[]).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rounds = env("BENCH_ROUNDS", 5);
    let calls = env("BENCH_CALLS", 200);
    let n = env("BENCH_PROJECTION_EVENTS", 1_000_000);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    rt.block_on(async {
        for b in backends.split(',') {
            let target = match b {
                "sqlite" => {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                    Target {
                        name: "sqlite",
                        url,
                        _dir: Some(dir),
                    }
                }
                "postgres" => Target {
                    name: "postgres",
                    url: std::env::var("TIDEMILL_SQL_PG_URL")
                        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
                    _dir: None,
                },
                other => panic!("unknown backend {other}"),
            };
            appends(&target, rounds, calls).await;
            loading(&target, rounds).await;
            catch_up(&target, n).await;
        }
    });
}
