//! Publishing and streams: headers, `Nats-Msg-Id` deduplication, streams created on demand with
//! their options, existing streams found by subject, topic validation, URL configuration.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tidemill::{Error, Message, Publisher, Subscriber};
use tidemill_nats::{
    topology::encode_name, NatsConfig, NatsPublisher, NatsSubscriber, Retention, Storage,
    StreamProvisioning,
};

fn js(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(client)
}

#[tokio::test]
async fn metadata_travels_as_headers_and_id_as_nats_msg_id() {
    let topic = common::topic();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher.ensure_topic(&topic).await.unwrap();
    let js = js(publisher.client().clone());
    let stream = js.get_stream(encode_name(&topic)).await.unwrap();
    let msg = Message::with_id("order-1", "payload").with_metadata("kind", "created");
    publisher.publish(&topic, vec![msg]).await.unwrap();
    // Read it with the raw client: the headers are there, the payload is untouched.
    let raw = stream.get_raw_message(1).await.unwrap();
    assert_eq!(raw.payload.as_ref(), b"payload");
    assert_eq!(
        raw.headers.get_last("Nats-Msg-Id").unwrap().as_str(),
        "order-1"
    );
    assert_eq!(raw.headers.get_last("kind").unwrap().as_str(), "created");
}

#[tokio::test]
async fn republishing_an_id_is_dropped_by_the_server() {
    let topic = common::topic();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    let msg = Message::with_id("same-id", "x");
    publisher.publish(&topic, vec![msg.clone()]).await.unwrap();
    publisher
        .publish(&topic, vec![msg.clone(), msg])
        .await
        .unwrap();
    let js = js(publisher.client().clone());
    let mut stream = js.get_stream(encode_name(&topic)).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn streams_are_created_with_the_configured_options() {
    let topic = common::topic();
    let config = common::config()
        .stream_prefix("TM_")
        .retention(Retention::Interest)
        .storage(Storage::Memory)
        .max_age(Duration::from_secs(3600))
        .duplicate_window(Duration::from_secs(30));
    let publisher = NatsPublisher::connect(config).await.unwrap();
    publisher
        .publish(&topic, vec![Message::new("x")])
        .await
        .unwrap();
    let js = js(publisher.client().clone());
    let mut stream = js
        .get_stream(format!("TM_{}", encode_name(&topic)))
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, vec![topic.clone()]);
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Interest
    );
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.duplicate_window, Duration::from_secs(30));
}

#[tokio::test]
async fn topics_map_onto_an_existing_stream_by_subject() {
    let prefix = format!("app{}", uuid::Uuid::new_v4().simple());
    let client = async_nats::connect(common::URL).await.unwrap();
    let js = js(client.clone());
    let name = format!("EXISTING_{prefix}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let config = common::config().provisioning(StreamProvisioning::ExistingBySubject);
    let publisher = NatsPublisher::from_client(client.clone(), config.clone());
    let topic = format!("{prefix}.orders");
    publisher
        .publish(&topic, vec![Message::new("a")])
        .await
        .unwrap();
    let mut stream = js.get_stream(&name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    let subscriber = NatsSubscriber::from_client(client, config.group("g"));
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().payload().as_ref(), b"a");
    delivery.ack();

    // Without a stream covering the subject nothing is created and the error says so.
    let err = publisher
        .publish(&common::topic(), vec![Message::new("b")])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no JetStream stream covers"),
        "{err}"
    );
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn invalid_subjects_are_rejected_before_sending() {
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    for topic in [
        "",
        "a b",
        "a.*",
        "a.>",
        "a..b",
        ".a",
        "$JS.API.x",
        "_INBOX.x",
    ] {
        let err = publisher
            .publish(topic, vec![Message::new("x")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTopic { .. }),
            "{topic:?}: {err}"
        );
    }
    let err = publisher
        .publish(
            &common::topic(),
            vec![Message::new("x").with_metadata("bad key", "v")],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMetadata { .. }), "{err}");
}

#[tokio::test]
async fn configured_from_a_url() {
    let config = NatsConfig::from_url(&format!(
        "{}?group=url-group&batch=8&nack_delay_ms=50",
        common::URL
    ))
    .unwrap();
    let topic = common::topic();
    let publisher = NatsPublisher::connect(config.clone()).await.unwrap();
    let subscriber = NatsSubscriber::connect(config).await.unwrap();
    assert_eq!(subscriber.group(), Some("url-group"));
    let mut subscription = subscriber.subscribe(&topic).await.unwrap();
    publisher
        .publish(&topic, vec![Message::new("hi")])
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    delivery.ack();
    publisher.close().await.unwrap();
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn connect_errors_name_the_address_without_credentials() {
    let config = NatsConfig::from_url("nats://user:hunter2@127.0.0.1:1")
        .unwrap()
        .connect_timeout(Duration::from_millis(300));
    let err = NatsPublisher::connect(config).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
