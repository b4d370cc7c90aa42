//! The inbox pattern: "message seen" commits or rolls back with the handler's own writes, and
//! concurrent handlers of one key never both win.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{unique, Db};
use tidemill_sql::{Backend, SqlDedupStore, Tables};

per_backend!(
    seen_mark_follows_the_transaction,
    concurrent_transactions_one_winner,
    purge_forgets_old_keys,
    middleware_handles_a_message_once_across_processes,
    middleware_handles_a_failed_message_again,
    store_respects_the_ttl_and_forgets_removed_keys,
);

/// A store on a pool of its own, as another process would have.
async fn pooled_store(db: &Db) -> SqlDedupStore {
    let ps = db.pubsub().await;
    SqlDedupStore::on_pool(ps.pool().clone()).tables(Tables::new(common::PREFIX).unwrap())
}

async fn middleware_handles_a_message_once_across_processes(backend: Backend) {
    let db = Db::new(backend);
    tidemill_testkit::dedup::handled_once_across_processes(
        pooled_store(&db).await,
        pooled_store(&db).await,
        Duration::from_secs(60),
    )
    .await;
}

async fn middleware_handles_a_failed_message_again(backend: Backend) {
    let db = Db::new(backend);
    tidemill_testkit::dedup::failed_handling_is_handled_again(
        pooled_store(&db).await,
        pooled_store(&db).await,
        Duration::from_secs(60),
    )
    .await;
}

async fn store_respects_the_ttl_and_forgets_removed_keys(backend: Backend) {
    use tidemill::middleware::DeduplicationStore;
    let db = Db::new(backend);
    let (a, b) = (pooled_store(&db).await, pooled_store(&db).await);
    let ttl = Duration::from_millis(200);
    let key = unique("ttl");
    assert!(DeduplicationStore::check_and_set(&a, &key, ttl)
        .await
        .unwrap());
    assert!(!DeduplicationStore::check_and_set(&b, &key, ttl)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired: new again for exactly one of two concurrent checkers.
    let (x, y) = tokio::join!(
        DeduplicationStore::check_and_set(&a, &key, ttl),
        DeduplicationStore::check_and_set(&b, &key, ttl)
    );
    assert_eq!(u8::from(x.unwrap()) + u8::from(y.unwrap()), 1);
    DeduplicationStore::remove(&b, &key).await.unwrap();
    assert!(
        DeduplicationStore::check_and_set(&a, &key, Duration::from_secs(60))
            .await
            .unwrap()
    );
    // Without a pool the store says so instead of pretending.
    let err = DeduplicationStore::check_and_set(&store(), &key, ttl)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("on_pool"), "{err}");
}

fn store() -> SqlDedupStore {
    SqlDedupStore::with_tables(Tables::new(common::PREFIX).unwrap())
}

async fn seen_mark_follows_the_transaction(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let store = store();
    let key = unique("msg");
    on_pool!(ps.pool(), |pool| {
        // The handler fails: its transaction rolls back, and so does "seen".
        let mut tx = pool.begin().await.unwrap();
        assert!(store.check_and_set_in_tx(&mut tx, &key).await.unwrap());
        tx.rollback().await.unwrap();
        // The redelivery is handled and commits.
        let mut tx = pool.begin().await.unwrap();
        assert!(store.check_and_set_in_tx(&mut tx, &key).await.unwrap());
        tx.commit().await.unwrap();
        // A duplicate after that is recognised.
        let mut tx = pool.begin().await.unwrap();
        assert!(!store.check_and_set_in_tx(&mut tx, &key).await.unwrap());
        tx.rollback().await.unwrap();
    });
    assert!(!store.check_and_set(ps.pool(), &key).await.unwrap());
    assert!(store
        .check_and_set(ps.pool(), &unique("other"))
        .await
        .unwrap());
}

async fn concurrent_transactions_one_winner(backend: Backend) {
    let db = Db::new(backend);
    let ps = db.pubsub().await;
    let key = unique("race");
    let wins = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (ps, key, wins) = (ps.clone(), key.clone(), wins.clone());
        tasks.push(tokio::spawn(async move {
            let store = store();
            on_pool!(ps.pool(), |pool| {
                let mut tx = pool.begin().await.unwrap();
                if store.check_and_set_in_tx(&mut tx, &key).await.unwrap() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.commit().await.unwrap();
            });
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);
}

async fn purge_forgets_old_keys(backend: Backend) {
    // Tables of its own: purging must not touch the keys of tests running beside it.
    let db = Db::new(backend);
    let ps = db
        .pubsub_with(|c| c.table_prefix("tmsql_purge_").unwrap())
        .await;
    let store = SqlDedupStore::with_tables(Tables::new("tmsql_purge_").unwrap());
    let key = unique("old");
    assert!(store.check_and_set(ps.pool(), &key).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        store
            .purge_older_than(ps.pool(), Duration::from_millis(10))
            .await
            .unwrap()
            >= 1
    );
    assert!(store.check_and_set(ps.pool(), &key).await.unwrap());
    assert!(store
        .check_and_set_in_tx(&mut pool_conn(&ps).await, "")
        .await
        .is_err());
}

async fn pool_conn(ps: &tidemill_sql::SqlPubSub) -> sqlx::pool::PoolConnection<sqlx::Sqlite> {
    // Key validation happens before any SQL; any connection type will do.
    let _ = ps;
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    pool.acquire().await.unwrap()
}
