//! Outages: these tests stop the shared server, so their names contain `broker_restart` and CI
//! runs them on their own. Each leaves the server running.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_redis::{RedisPublisher, RedisSubscriber};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// Restarts the server if a test failed while it was down.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg("redis-cli ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log")
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_publish_waits_for_the_server_or_fails() {
    let _restore = Restore;
    let topic = common::topic();
    let waiting =
        RedisPublisher::connect(common::config().publish_retry_timeout(Duration::from_secs(20)))
            .await
            .unwrap();
    let impatient = RedisPublisher::connect(common::config().publish_retry_timeout(Duration::ZERO))
        .await
        .unwrap();
    let subscriber = RedisSubscriber::connect(common::config().group(common::group()))
        .await
        .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    waiting
        .publish(&topic, vec![Message::with_id("before", "")])
        .await
        .unwrap();

    common::stop_redis().await.unwrap();
    // Without retries, an outage is an error naming the message, never a success.
    let err = impatient
        .publish(&topic, vec![Message::with_id("lost", "")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lost"), "{err}");
    // With retries, publish waits for the server to come back.
    let publishing = {
        let (waiting, topic) = (waiting.clone(), topic.clone());
        tokio::spawn(async move {
            waiting
                .publish(&topic, vec![Message::with_id("during", "")])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !publishing.is_finished(),
        "publish returned while the server was down"
    );
    common::start_redis().await.unwrap();
    publishing.await.unwrap().unwrap();

    // The subscription reconnected by itself and got both messages, the group survived.
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let d = timeout(WAIT, sub.next())
            .await
            .expect("a delivery after the restart")
            .expect("the stream survives")
            .unwrap();
        ids.push(d.message().id().to_owned());
        d.ack();
    }
    assert_eq!(ids, ["before", "during"]);
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_without_persistence_declares_the_group_again() {
    let _restore = Restore;
    let topic = common::topic();
    let subscriber = RedisSubscriber::connect(common::config().group(common::group()))
        .await
        .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    // A restart that loses everything: stop without saving, as a crash would.
    let _ = tokio::process::Command::new("redis-cli")
        .args(["-p", "6379", "shutdown", "nosave"])
        .output()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::start_redis().await.unwrap();

    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("after", "")])
        .await
        .unwrap();
    let d = timeout(WAIT, sub.next())
        .await
        .expect("a delivery after the group was declared again")
        .unwrap()
        .unwrap();
    assert_eq!(d.message().id(), "after");
    d.ack();
    subscriber.close().await.unwrap();
}
