//! Publishing: confirms, mandatory routing, the channel pool, errors that name topic and id,
//! metadata on the wire, closing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use tidemill::{Error, Message, Publisher, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpError, AmqpPublisher, AmqpSubscriber, Topology};

const WAIT: Duration = Duration::from_secs(10);

fn config() -> AmqpConfig {
    AmqpConfig::from_url(&common::url()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_turns_no_queue_bound_into_an_error() {
    let topic = common::fresh("unbound");
    let lenient = AmqpPublisher::connect(config()).await.unwrap();
    // Confirmed, and dropped by the broker: no queue is bound. That is the default.
    lenient
        .publish(&topic, vec![Message::new("lost")])
        .await
        .unwrap();

    let strict = AmqpPublisher::connect(config().mandatory(true))
        .await
        .unwrap();
    let err = strict
        .publish(&topic, vec![Message::with_id("m-404", "x")])
        .await
        .unwrap_err();
    match &err {
        Error::Publish {
            topic: t,
            message_id,
            source,
        } => {
            assert_eq!(t, &topic);
            assert_eq!(message_id, "m-404");
            assert!(matches!(
                source.downcast_ref::<AmqpError>(),
                Some(AmqpError::Unroutable { .. })
            ));
        }
        other => panic!("expected a publish error, got {other:?}"),
    }

    // Once a queue is bound, the same publisher succeeds.
    let subscriber = AmqpSubscriber::connect(config().group("g")).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    strict
        .publish(&topic, vec![Message::with_id("m-200", "x")])
        .await
        .unwrap();
    let d = common::next(&mut sub, WAIT).await;
    assert_eq!(d.message().id(), "m-200");
    d.ack();

    assert!(
        AmqpPublisher::connect(config().mandatory(true).confirms(false))
            .await
            .is_err()
    );
    for p in [lenient, strict] {
        p.close().await.unwrap();
    }
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_the_channel_pool() {
    let topic = common::fresh("pool");
    let subscriber = AmqpSubscriber::connect(config().group("g").max_in_flight(200))
        .await
        .unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let publisher = Arc::new(
        AmqpPublisher::connect(config().channel_pool_size(3))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..12 {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for b in 0..10 {
                let batch = (0..5)
                    .map(|i| Message::with_id(format!("{t}-{b}-{i}"), "x"))
                    .collect();
                publisher.publish(&topic, batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    while ids.len() < 600 {
        let d = common::next(&mut sub, WAIT).await;
        ids.insert(d.message().id().to_owned());
        d.ack();
    }
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_travels_in_properties_and_headers() {
    let topic = common::fresh("meta");
    let config = config().topology(Topology::work_queue());
    let publisher = AmqpPublisher::connect(config.clone()).await.unwrap();
    let msg = Message::with_id("id-42", "{}")
        .with_metadata("correlation_id", "corr-7")
        .with_metadata("content_type", "application/json")
        .with_metadata("tenant", "acme");
    publisher.publish(&topic, vec![msg.clone()]).await.unwrap();

    // On the wire: the AMQP properties, and only the rest as headers.
    let got = common::get_one(&topic, WAIT).await.expect("the message");
    let props = &got.delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("id-42")
    );
    assert_eq!(
        props.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-7")
    );
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    let headers = props.headers().as_ref().expect("headers");
    assert_eq!(headers.inner().len(), 1);
    assert_eq!(
        headers.inner().get("tenant"),
        Some(&AMQPValue::LongString(LongString::from("acme")))
    );

    // And back: a message from a plain AMQP producer reads as the same tidemill message.
    let (conn, channel) = common::raw().await;
    let mut raw_headers = FieldTable::default();
    raw_headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    raw_headers.insert("attempt".into(), AMQPValue::LongInt(3));
    channel
        .basic_publish(
            "".into(),
            topic.as_str().into(),
            Default::default(),
            b"{}",
            BasicProperties::default()
                .with_message_id("id-42".into())
                .with_correlation_id("corr-7".into())
                .with_content_type("application/json".into())
                .with_headers(raw_headers),
        )
        .await
        .unwrap();
    let subscriber = AmqpSubscriber::connect(config).await.unwrap();
    let mut sub = subscriber.subscribe(&topic).await.unwrap();
    let d = common::next(&mut sub, WAIT).await;
    let expected = msg.with_metadata("attempt", "3");
    assert!(d.message().same_content(&expected), "{:?}", d.message());
    d.ack();
    let _ = conn.close(200, "done".into()).await;
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_before_sending() {
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    for topic in ["", "amq.topic", "a.#"] {
        let err = publisher
            .publish(topic, vec![Message::new("x")])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTopic { .. }),
            "{topic:?}: {err}"
        );
    }
    let long_key = Message::with_id("k", "x").with_metadata("k".repeat(300), "v");
    let err = publisher
        .publish(&common::fresh("t"), vec![long_key])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidMetadata { ref message_id, .. } if message_id == "k"),
        "{err}"
    );
    publisher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_final_and_idempotent() {
    let publisher = AmqpPublisher::connect(config()).await.unwrap();
    publisher.close().await.unwrap();
    publisher.close().await.unwrap();
    let err = publisher
        .publish("t", vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(err.is_closed());

    let subscriber = AmqpSubscriber::connect(config()).await.unwrap();
    subscriber.close().await.unwrap();
    subscriber.close().await.unwrap();
    assert!(subscriber.subscribe("t").await.unwrap_err().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_hide_the_password() {
    let config = AmqpConfig::new("amqp://guest:hunter2@127.0.0.1:1/%2f");
    let err = AmqpPublisher::connect(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }));
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    let err = AmqpSubscriber::connect(config).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));

    let wrong = AmqpConfig::new("amqp://guest:wrong-password@127.0.0.1:5672/%2f");
    let err = AmqpPublisher::connect(wrong).await.unwrap_err();
    assert!(
        !format!("{err} {err:?}").contains("wrong-password"),
        "{err:?}"
    );
}
