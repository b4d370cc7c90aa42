//! Publishing: the entry layout, trimming, batches, and what is refused before sending.

mod common;

use std::collections::HashMap;

use redis::streams::StreamRangeReply;
use redis::Value;
use tidemill::{Error, Message, Publisher};
use tidemill_redis::{MaxLen, RedisPublisher};

async fn entries(key: &str) -> Vec<(String, HashMap<String, Value>)> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    reply.ids.into_iter().map(|e| (e.id, e.map)).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("not a string: {other:?}"),
    }
}

#[tokio::test]
async fn metadata_and_id_are_stream_fields_beside_the_payload() {
    let topic = common::topic();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    let msg = Message::with_id("order-1", vec![0u8, 159, 146, 150])
        .with_metadata("kind", "created")
        .with_metadata("traceparent", "00-abc-def-01");
    publisher.publish(&topic, vec![msg]).await.unwrap();

    let entries = entries(&topic).await;
    assert_eq!(entries.len(), 1);
    let fields = &entries[0].1;
    assert_eq!(text(&fields["message_id"]), "order-1");
    assert_eq!(
        fields["payload"],
        Value::BulkString(vec![0u8, 159, 146, 150])
    );
    assert_eq!(text(&fields["kind"]), "created");
    assert_eq!(text(&fields["traceparent"]), "00-abc-def-01");
    assert_eq!(fields.len(), 4);
}

#[tokio::test]
async fn a_batch_is_stored_in_order() {
    let topic = common::topic();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    let messages: Vec<Message> = (0..500)
        .map(|i| Message::with_id(format!("m{i}"), format!("p{i}")))
        .collect();
    publisher.publish(&topic, messages).await.unwrap();
    let ids: Vec<String> = entries(&topic)
        .await
        .iter()
        .map(|(_, f)| text(&f["message_id"]))
        .collect();
    let expected: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn max_len_trims_per_topic_exactly_or_approximately() {
    let (exact, approx, untrimmed) = (common::topic(), common::topic(), common::topic());
    let config = common::config()
        .max_len(MaxLen::Approximate(100))
        .topic_max_len(exact.clone(), MaxLen::Exact(10));
    let publisher = RedisPublisher::connect(config).await.unwrap();
    for topic in [&exact, &approx] {
        for chunk in 0..10 {
            let batch = (0..100)
                .map(|i| Message::with_id(format!("{chunk}-{i}"), "x"))
                .collect();
            publisher.publish(topic, batch).await.unwrap();
        }
    }
    let exact_entries = entries(&exact).await;
    assert_eq!(exact_entries.len(), 10);
    // The newest entries stay.
    assert_eq!(text(&exact_entries[9].1["message_id"]), "9-99");
    let approx_len = entries(&approx).await.len();
    assert!(
        (100..1000).contains(&approx_len),
        "approximate trimming kept {approx_len} entries"
    );

    let plain = RedisPublisher::connect(common::config()).await.unwrap();
    let batch: Vec<Message> = (0..300)
        .map(|i| Message::with_id(i.to_string(), ""))
        .collect();
    plain.publish(&untrimmed, batch).await.unwrap();
    assert_eq!(entries(&untrimmed).await.len(), 300);
}

#[tokio::test]
async fn reserved_metadata_keys_and_bad_topics_are_refused_before_sending() {
    let topic = common::topic();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    let batch = vec![
        Message::with_id("ok", "x"),
        Message::with_id("bad", "x").with_metadata("payload", "clash"),
    ];
    let err = publisher.publish(&topic, batch).await.unwrap_err();
    match &err {
        Error::InvalidMetadata {
            message_id, key, ..
        } => {
            assert_eq!(key, "payload");
            assert_eq!(message_id, "bad");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(entries(&topic).await.is_empty(), "nothing may be sent");

    let err = publisher
        .publish("", vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTopic { .. }), "{err}");
}

#[tokio::test]
async fn a_server_error_names_the_topic_and_message() {
    let topic = common::topic();
    // A key of another type makes XADD fail on the server.
    let _: () = redis::cmd("SET")
        .arg(&topic)
        .arg("not a stream")
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    let err = publisher
        .publish(&topic, vec![Message::with_id("m-7", "x")])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&topic) && text.contains("m-7"), "{text}");
    assert!(text.contains("WRONGTYPE"), "{text}");
}

#[tokio::test]
async fn close_refuses_further_publishes_and_is_idempotent() {
    let publisher = RedisPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&common::topic(), vec![Message::new("x")])
        .await
        .unwrap();
    publisher.close().await.unwrap();
    publisher.close().await.unwrap();
    let err = publisher
        .publish(&common::topic(), vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(err.is_closed(), "{err}");
}
