//! After the broker drops the connections, subscriptions come back by themselves, declaring
//! their queues again (exclusive and auto-delete ones too), and the publisher reconnects.
//! The connections are closed from the broker side (`rabbitmqctl close_connection`), picked by
//! their connection name, so other tests on the broker are not touched.

mod common;

use std::time::Duration;

use tidemill::{Message, Publisher, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber, Topology};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_publisher_survive_dropped_connections() {
    let marker = common::fresh("reconnect");
    let topic = common::fresh("re");
    let config = AmqpConfig::from_url(&common::url())
        .unwrap()
        .connection_name(marker.clone());
    // An exclusive, auto-delete queue (no group) and a transient auto-delete group queue: both
    // vanish with the connection and must be declared again.
    let exclusive = AmqpSubscriber::connect(config.clone()).await.unwrap();
    let transient_config = config
        .clone()
        .topology(Topology::durable_pubsub().durable(false))
        .group("g");
    let transient = AmqpSubscriber::connect(transient_config.clone())
        .await
        .unwrap();
    let mut a = exclusive.subscribe(&topic).await.unwrap();
    let mut b = transient
        .subscribe(&common::fresh("re_transient"))
        .await
        .unwrap();
    let transient_topic = b.topic().to_owned();
    let publisher = AmqpPublisher::connect(config.clone()).await.unwrap();
    let transient_publisher = AmqpPublisher::connect(transient_config).await.unwrap();

    publisher
        .publish(&topic, vec![Message::with_id("before", "x")])
        .await
        .unwrap();
    common::next(&mut a, WAIT).await.ack();

    let killed = common::kill_connections(&marker).await;
    assert!(killed >= 4, "closed {killed} connections");

    // The publisher reconnects inside publish; the subscriptions resume and get what comes
    // after they are back. Publish until each has seen one (its queue may not be back yet).
    for (sub, publisher, topic) in [
        (&mut a, &publisher, topic.as_str()),
        (&mut b, &transient_publisher, transient_topic.as_str()),
    ] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{topic}: nothing after reconnecting"
            );
            publisher
                .publish(topic, vec![Message::with_id("after", "x")])
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(sub))
                .await
            {
                Ok(Some(Ok(d))) => {
                    assert_eq!(d.message().id(), "after");
                    d.ack();
                    break;
                }
                Ok(Some(Err(_))) | Err(_) => continue,
                Ok(None) => panic!("{topic}: the subscription ended"),
            }
        }
    }
    publisher.close().await.unwrap();
    transient_publisher.close().await.unwrap();
    exclusive.close().await.unwrap();
    transient.close().await.unwrap();
}

/// A server that takes the connection but never answers the AMQP handshake (a broker still
/// starting looks like this) fails the connection within the connect timeout: an unbounded
/// attempt would hold the subscriber's connection lock, and `close` behind it, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_comes_fails_within_the_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let config = AmqpConfig::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .connect_timeout(Duration::from_millis(500));
    for attempt in [
        Box::pin(async { AmqpSubscriber::connect(config.clone()).await.map(drop) })
            as std::pin::Pin<Box<dyn std::future::Future<Output = tidemill::Result<()>> + Send>>,
        Box::pin(async { AmqpPublisher::connect(config.clone()).await.map(drop) }),
    ] {
        let result = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .expect("the attempt ends by itself");
        let err = result.expect_err("nobody completed the handshake");
        assert!(
            err.to_string().contains("no AMQP connection within"),
            "{err}"
        );
    }
    held.abort();
}
