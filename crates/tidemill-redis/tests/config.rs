//! Configuration from URLs and builders; secrets stay out of errors and logs.

mod common;

use std::time::Duration;

use tidemill::Error;
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};

#[test]
fn url_and_builder() {
    let config = RedisConfig::from_url("redis://user:hunter2@127.0.0.1:6390/3")
        .unwrap()
        .group("g")
        .batch_size(0);
    assert_eq!(config.address(), "redis://user@127.0.0.1:6390/3");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(matches!(
        RedisConfig::from_url("postgres://x"),
        Err(Error::Config(_))
    ));
    let config = RedisConfig::default().password("swordfish").database(2);
    assert_eq!(config.address(), "redis://127.0.0.1:6379/2");
}

#[tokio::test]
async fn connect_errors_name_the_address_without_the_password() {
    // Nothing listens on port 1.
    let config = RedisConfig::from_url("redis://app:hunter2@127.0.0.1:1")
        .unwrap()
        .connect_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(5));
    let err = RedisPublisher::connect(config.clone()).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let err = RedisSubscriber::connect(config).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test]
async fn wrong_password_is_a_connect_error() {
    let config = common::config().password("not-the-password");
    let err = RedisPublisher::connect(config).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}
