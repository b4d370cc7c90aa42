//! Publish and consume throughput of tidemill-sql against plain sqlx doing the same work, in the
//! same run, on PostgreSQL, MariaDB and SQLite, plus the transactional outbox's overhead.
//!
//! `cargo bench -p tidemill-sql --bench throughput` (set `TIDEMILL_SQL_BENCH_N` for the
//! message count per measurement, default 2000; `TIDEMILL_SQL_BENCH_DBS=sqlite,postgres` to pick).
//!
//! - publish: one message per call, concurrency 1 and 8; plain sqlx is one INSERT per message
//!   into a table of the same columns with an auto-increment key.
//! - consume: read every message in batches and record the offset; tidemill through a
//!   consumer group (one delivery and ack per message), plain sqlx with SELECT ... LIMIT 128
//!   and an UPDATE of an offsets row per batch.
//! - outbox: a transaction inserting a business row and one event, through `publish_in_tx` vs
//!   a plain INSERT into the events table.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_sql::{Backend, SqlConfig, SqlPool, SqlPubSub, SubscriberOverrides};

const PREFIX: &str = "tmsql_bench_";
const RAW: &str = "tmsql_bench_raw";
const RAW_OFFSETS: &str = "tmsql_bench_raw_offsets";
const BUSINESS: &str = "tmsql_bench_orders";

macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            SqlPool::Postgres($p) => $body,
            SqlPool::MySql($p) => $body,
            SqlPool::Sqlite($p) => $body,
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    };
}

/// `?` placeholders in PostgreSQL's `$n` form when needed.
fn sql(backend: Backend, s: &str) -> String {
    if backend != Backend::Postgres {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn raw_ddl(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Postgres => vec![
            format!("CREATE TABLE IF NOT EXISTS {RAW} (id BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, message_id TEXT NOT NULL, payload BYTEA NOT NULL, metadata JSONB NOT NULL, created_at BIGINT NOT NULL)"),
            format!("CREATE INDEX IF NOT EXISTS {RAW}_topic ON {RAW} (topic, id)"),
            format!("CREATE TABLE IF NOT EXISTS {RAW_OFFSETS} (grp TEXT PRIMARY KEY, pos BIGINT NOT NULL)"),
            format!("CREATE TABLE IF NOT EXISTS {BUSINESS} (id TEXT NOT NULL, amount BIGINT NOT NULL)"),
        ],
        Backend::MySql => vec![
            format!("CREATE TABLE IF NOT EXISTS {RAW} (id BIGINT AUTO_INCREMENT PRIMARY KEY, topic VARCHAR(255) NOT NULL, message_id VARCHAR(255) NOT NULL, payload LONGBLOB NOT NULL, metadata LONGTEXT NOT NULL, created_at BIGINT NOT NULL, KEY (topic, id)) ENGINE=InnoDB"),
            format!("CREATE TABLE IF NOT EXISTS {RAW_OFFSETS} (grp VARCHAR(255) PRIMARY KEY, pos BIGINT NOT NULL) ENGINE=InnoDB"),
            format!("CREATE TABLE IF NOT EXISTS {BUSINESS} (id VARCHAR(64) NOT NULL, amount BIGINT NOT NULL) ENGINE=InnoDB"),
        ],
        Backend::Sqlite => vec![
            format!("CREATE TABLE IF NOT EXISTS {RAW} (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, message_id TEXT NOT NULL, payload BLOB NOT NULL, metadata TEXT NOT NULL, created_at INTEGER NOT NULL)"),
            format!("CREATE INDEX IF NOT EXISTS {RAW}_topic ON {RAW} (topic, id)"),
            format!("CREATE TABLE IF NOT EXISTS {RAW_OFFSETS} (grp TEXT PRIMARY KEY, pos INTEGER NOT NULL)"),
            format!("CREATE TABLE IF NOT EXISTS {BUSINESS} (id TEXT NOT NULL, amount INTEGER NOT NULL)"),
        ],
    }
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn metadata_json() -> &'static str {
    r#"{"kind":"bench"}"#
}

fn message(size: usize) -> Message {
    Message::new(vec![7u8; size]).with_metadata("kind", "bench")
}

async fn raw_insert(pool: &SqlPool, backend: Backend, topic: &str, size: usize) {
    let q = sql(
        backend,
        &format!(
            "INSERT INTO {RAW} (topic, message_id, payload, metadata, created_at) VALUES (?, ?, ?, {}, ?)",
            if backend == Backend::Postgres { "?::jsonb" } else { "?" }
        ),
    );
    let id = uuid::Uuid::new_v4().to_string();
    let payload = vec![7u8; size];
    on_pool!(pool, |p| {
        sqlx::query(&q)
            .bind(topic)
            .bind(&id)
            .bind(&payload)
            .bind(metadata_json())
            .bind(0i64)
            .execute(p)
            .await
            .unwrap();
    });
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn report(db: &str, what: &str, tidemill: f64, raw: f64) {
    println!(
        "{db:<9} {what:<26} tidemill {tidemill:>9.0} msg/s   sqlx {raw:>9.0} msg/s   ratio {:.2}",
        tidemill / raw
    );
}

async fn publish(ps: &SqlPubSub, backend: Backend, db: &str, n: usize, size: usize, conc: usize) {
    let topic = unique("pub");
    let publisher = ps.publisher();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / conc {
                publisher
                    .publish(&topic, vec![message(size)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tm = rate(n / conc * conc, started.elapsed());

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (pool, topic) = (ps.pool().clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / conc {
                raw_insert(&pool, backend, &topic, size).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw = rate(n / conc * conc, started.elapsed());
    report(db, &format!("publish {size:>3} B, c={conc}"), tm, raw);
}

async fn consume(ps: &SqlPubSub, backend: Backend, db: &str, n: usize, size: usize) {
    let topic = unique("sub");
    let publisher = ps.publisher();
    let msgs: Vec<Message> = (0..n).map(|_| message(size)).collect();
    for chunk in msgs.chunks(500) {
        publisher.publish(&topic, chunk.to_vec()).await.unwrap();
    }
    let m = format!("{PREFIX}messages");
    let copy = sql(
        backend,
        &format!("INSERT INTO {RAW} (topic, message_id, payload, metadata, created_at) SELECT topic, message_id, payload, metadata, created_at FROM {m} WHERE topic = ? ORDER BY position"),
    );
    on_pool!(ps.pool(), |p| {
        sqlx::query(&copy).bind(&topic).execute(p).await.unwrap();
    });

    let sub = ps
        .subscriber_with(SubscriberOverrides::new().group(unique("g")))
        .unwrap();
    let started = Instant::now();
    let mut s = sub.subscribe(&topic).await.unwrap();
    for _ in 0..n {
        let d = s.next().await.unwrap().unwrap();
        d.ack();
    }
    sub.close().await.unwrap();
    let tm = rate(n, started.elapsed());

    let grp = unique("g");
    let ins = sql(
        backend,
        &format!("INSERT INTO {RAW_OFFSETS} (grp, pos) VALUES (?, 0)"),
    );
    let sel = sql(
        backend,
        &format!("SELECT id, message_id, payload, metadata FROM {RAW} WHERE topic = ? AND id > ? ORDER BY id LIMIT 128"),
    );
    let sel = if backend == Backend::Postgres {
        sel.replace("metadata FROM", "metadata::text FROM")
    } else {
        sel
    };
    let upd = sql(
        backend,
        &format!("UPDATE {RAW_OFFSETS} SET pos = ? WHERE grp = ?"),
    );
    let started = Instant::now();
    on_pool!(ps.pool(), |p| {
        sqlx::query(&ins).bind(&grp).execute(p).await.unwrap();
        let mut pos = 0i64;
        let mut got = 0;
        while got < n {
            let rows: Vec<(i64, String, Vec<u8>, String)> = sqlx::query_as(&sel)
                .bind(&topic)
                .bind(pos)
                .fetch_all(p)
                .await
                .unwrap();
            for (id, mid, payload, md) in rows {
                let map: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&md).unwrap();
                let msg = Message::from_parts(mid, payload, tidemill::Metadata::from_iter(map));
                std::hint::black_box(msg);
                pos = id;
                got += 1;
            }
            sqlx::query(&upd)
                .bind(pos)
                .bind(&grp)
                .execute(p)
                .await
                .unwrap();
        }
    });
    let raw = rate(n, started.elapsed());
    report(db, &format!("consume {size:>3} B"), tm, raw);
}

async fn outbox(ps: &SqlPubSub, backend: Backend, db: &str, n: usize) {
    let topic = unique("outbox");
    let outbox = ps.outbox();
    let biz = sql(
        backend,
        &format!("INSERT INTO {BUSINESS} (id, amount) VALUES (?, ?)"),
    );
    let raw_ev = sql(
        backend,
        &format!(
            "INSERT INTO {RAW} (topic, message_id, payload, metadata, created_at) VALUES (?, ?, ?, {}, ?)",
            if backend == Backend::Postgres { "?::jsonb" } else { "?" }
        ),
    );
    let started = Instant::now();
    on_pool!(ps.pool(), |p| {
        for i in 0..n {
            let mut tx = p.begin().await.unwrap();
            sqlx::query(&biz)
                .bind(format!("o{i}"))
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            outbox
                .publish_in_tx(&mut tx, &topic, vec![message(64)])
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    });
    let tm = rate(n, started.elapsed());
    let started = Instant::now();
    on_pool!(ps.pool(), |p| {
        for i in 0..n {
            let mut tx = p.begin().await.unwrap();
            sqlx::query(&biz)
                .bind(format!("o{i}"))
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(&raw_ev)
                .bind(&topic)
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(vec![7u8; 64])
                .bind(metadata_json())
                .bind(0i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    });
    let raw = rate(n, started.elapsed());
    report(db, "outbox tx (row + event)", tm, raw);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("TIDEMILL_SQL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let wanted =
        std::env::var("TIDEMILL_SQL_BENCH_DBS").unwrap_or_else(|_| "postgres,mysql,sqlite".into());
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let dbs = [
        (
            "postgres",
            Backend::Postgres,
            "postgres://postgres@127.0.0.1:5432/test".to_owned(),
        ),
        (
            "mariadb",
            Backend::MySql,
            "mysql://root@127.0.0.1:3306/test".to_owned(),
        ),
        ("sqlite", Backend::Sqlite, sqlite_url),
    ];
    println!("{n} messages per measurement");
    for (name, backend, url) in dbs {
        if !wanted
            .split(',')
            .any(|w| name.starts_with(w.trim()) || (w.trim() == "mysql" && name == "mariadb"))
        {
            continue;
        }
        let config = SqlConfig::from_url(url)
            .unwrap()
            .table_prefix(PREFIX)
            .unwrap()
            .max_connections(10);
        let ps = SqlPubSub::connect(config).await.unwrap();
        ps.initialize().await.unwrap();
        on_pool!(ps.pool(), |p| {
            for stmt in raw_ddl(backend) {
                sqlx::query(&stmt).execute(p).await.unwrap();
            }
        });
        for size in [16, 64, 256] {
            publish(&ps, backend, name, n, size, 1).await;
            publish(&ps, backend, name, n, size, 8).await;
            consume(&ps, backend, name, n, size).await;
        }
        outbox(&ps, backend, name, n / 2).await;
    }
}
