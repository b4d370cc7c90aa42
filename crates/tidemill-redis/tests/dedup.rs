//! The deduplicator's store: atomic set-if-absent with expiry.

mod common;

use std::time::Duration;

use tidemill_redis::RedisDeduplicationStore;

async fn store() -> RedisDeduplicationStore {
    RedisDeduplicationStore::connect(common::config())
        .await
        .unwrap()
        .key_prefix(format!("test-dedup:{}:", uuid::Uuid::new_v4().simple()))
}

#[tokio::test]
async fn first_check_is_new_later_ones_are_duplicates() {
    let store = store().await;
    assert!(store
        .check_and_set("a", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!store
        .check_and_set("a", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(store
        .check_and_set("b", Duration::from_secs(60))
        .await
        .unwrap());
}

#[tokio::test]
async fn a_key_is_new_again_after_its_ttl() {
    let store = store().await;
    assert!(store
        .check_and_set("k", Duration::from_millis(100))
        .await
        .unwrap());
    assert!(!store
        .check_and_set("k", Duration::from_millis(100))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store
        .check_and_set("k", Duration::from_millis(100))
        .await
        .unwrap());
}

#[tokio::test]
async fn of_many_concurrent_checks_exactly_one_wins() {
    let prefix = format!("test-dedup:{}:", uuid::Uuid::new_v4().simple());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        // A connection each, as separate processes would have.
        let store = RedisDeduplicationStore::connect(common::config())
            .await
            .unwrap()
            .key_prefix(prefix.clone());
        tasks.push(tokio::spawn(async move {
            store
                .check_and_set("contended", Duration::from_secs(60))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn connected() -> RedisDeduplicationStore {
    RedisDeduplicationStore::connect(common::config())
        .await
        .unwrap()
}

#[tokio::test]
async fn middleware_handles_a_message_once_across_processes() {
    tidemill_testkit::dedup::handled_once_across_processes(
        connected().await,
        connected().await,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn middleware_handles_a_failed_message_again() {
    tidemill_testkit::dedup::failed_handling_is_handled_again(
        connected().await,
        connected().await,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn a_removed_key_is_new_again() {
    let store = store().await;
    assert!(store
        .check_and_set("r", Duration::from_secs(60))
        .await
        .unwrap());
    store.remove("r").await.unwrap();
    store.remove("never-set").await.unwrap();
    assert!(store
        .check_and_set("r", Duration::from_secs(60))
        .await
        .unwrap());
}
