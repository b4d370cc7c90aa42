//! Core NATS mode (no JetStream, queue groups) and the key-value deduplication store, including
//! why the store creates its bucket itself on server 2.9.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tidemill::{Message, Publisher, Subscriber, Subscription};
use tidemill_nats::{CoreNatsPublisher, CoreNatsSubscriber, KvDeduplicationStore};

async fn drain(subscription: &mut Subscription, wait: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(wait, subscription.next()).await {
        ids.push(d.message().id().to_owned());
        d.nack(); // does nothing in core NATS: the message does not come back
    }
    ids
}

#[tokio::test]
async fn core_nats_queue_groups_share_and_plain_subscribers_get_all() {
    let topic = common::topic();
    let group = common::group();
    let a = CoreNatsSubscriber::connect(common::config().group(&group))
        .await
        .unwrap();
    let b = CoreNatsSubscriber::connect(common::config().group(&group))
        .await
        .unwrap();
    let all = CoreNatsSubscriber::connect(common::config()).await.unwrap();
    let (mut sa, mut sb, mut s_all) = (
        a.subscribe(&topic).await.unwrap(),
        b.subscribe(&topic).await.unwrap(),
        all.subscribe(&topic).await.unwrap(),
    );
    let publisher = CoreNatsPublisher::connect(common::config()).await.unwrap();
    let messages: Vec<Message> = (0..40)
        .map(|i| Message::with_id(format!("m{i}"), "x").with_metadata("k", "v"))
        .collect();
    publisher.publish(&topic, messages).await.unwrap();
    let wait = Duration::from_millis(500);
    let (ra, rb, r_all) = tokio::join!(
        drain(&mut sa, wait),
        drain(&mut sb, wait),
        drain(&mut s_all, wait)
    );
    assert_eq!(
        r_all.len(),
        40,
        "a plain subscriber gets every message, once"
    );
    assert_eq!(
        ra.len() + rb.len(),
        40,
        "the queue group shares the messages, nacks bring nothing back"
    );
    assert!(ra.iter().all(|id| !rb.contains(id)));
    a.close().await.unwrap();
    assert!(sa.next().await.is_none(), "closing ends the stream");
    // Nothing is kept for subscribers that come later.
    let late = CoreNatsSubscriber::connect(common::config()).await.unwrap();
    let mut s_late = late.subscribe(&topic).await.unwrap();
    assert!(drain(&mut s_late, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test]
async fn dedup_store_sets_each_key_once_within_its_window() {
    let bucket = format!("dedup-{}", uuid::Uuid::new_v4().simple());
    let store = KvDeduplicationStore::connect(&common::config(), &bucket, Duration::from_secs(1))
        .await
        .unwrap();
    let other = KvDeduplicationStore::connect(&common::config(), &bucket, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(store.check_and_set("id-1").await.unwrap());
    assert!(
        !other.check_and_set("id-1").await.unwrap(),
        "another process sees the key"
    );
    assert!(store.check_and_set("with spaces/and.dots").await.unwrap());
    assert!(!store.check_and_set("with spaces/and.dots").await.unwrap());
    // After the window the key is new again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(store.check_and_set("id-1").await.unwrap());
}

#[tokio::test]
async fn dedup_store_races_have_one_winner() {
    let bucket = format!("dedup-{}", uuid::Uuid::new_v4().simple());
    let store = KvDeduplicationStore::connect(&common::config(), &bucket, Duration::from_secs(60))
        .await
        .unwrap();
    let wins = futures::future::join_all((0..20).map(|_| store.check_and_set("contended"))).await;
    assert_eq!(wins.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
}

/// The client's own bucket creation does not work against server 2.9 (it expects account
/// fields 2.9 does not send), which is why the store creates the bucket's stream itself.
#[tokio::test]
async fn the_clients_bucket_creation_fails_on_server_2_9() {
    let client = async_nats::connect(common::URL).await.unwrap();
    let version = client.server_info().version;
    let js = async_nats::jetstream::new(client);
    let result = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: format!("probe-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        })
        .await;
    if version.starts_with("2.9.") {
        let err = result.expect_err("create_key_value fails on 2.9");
        println!("server {version}: create_key_value fails: {err}");
    } else {
        println!(
            "server {version}: create_key_value works: {}",
            result.is_ok()
        );
    }
}

async fn kv_store(bucket: &str, window: Duration) -> KvDeduplicationStore {
    KvDeduplicationStore::connect(&common::config(), bucket, window)
        .await
        .unwrap()
}

#[tokio::test]
async fn dedup_middleware_handles_a_message_once_across_processes() {
    let bucket = format!("dedup-{}", uuid::Uuid::new_v4().simple());
    let window = Duration::from_secs(60);
    tidemill_testkit::dedup::handled_once_across_processes(
        kv_store(&bucket, window).await,
        kv_store(&bucket, window).await,
        window,
    )
    .await;
}

#[tokio::test]
async fn dedup_middleware_handles_a_failed_message_again() {
    let bucket = format!("dedup-{}", uuid::Uuid::new_v4().simple());
    let window = Duration::from_secs(60);
    tidemill_testkit::dedup::failed_handling_is_handled_again(
        kv_store(&bucket, window).await,
        kv_store(&bucket, window).await,
        window,
    )
    .await;
}

#[tokio::test]
async fn dedup_store_refuses_a_ttl_other_than_its_window_and_keeps_an_existing_window() {
    use tidemill::middleware::DeduplicationStore;
    let bucket = format!("dedup-{}", uuid::Uuid::new_v4().simple());
    let store = kv_store(&bucket, Duration::from_secs(60)).await;
    let err = DeduplicationStore::check_and_set(&store, "k", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same window"), "{err}");
    assert!(
        DeduplicationStore::check_and_set(&store, "k", Duration::from_secs(60))
            .await
            .unwrap()
    );
    // Opened again with another window: the bucket's own applies, and is what it reports.
    let again = kv_store(&bucket, Duration::from_secs(5)).await;
    assert_eq!(again.window(), Duration::from_secs(60));
    DeduplicationStore::remove(&again, "k").await.unwrap();
    assert!(again.check_and_set("k").await.unwrap());
}
