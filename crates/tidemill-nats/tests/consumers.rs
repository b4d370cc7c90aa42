//! Consumers: groups as durable consumers, fan-out without group, where delivery starts, and the
//! check of an existing durable that server 2.9 would otherwise let a create change.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tidemill::StartPosition;
use tidemill::{Delivery, Message, Publisher, Subscriber, Subscription};
use tidemill_nats::{topology::encode_name, NatsPublisher, NatsSubscriber};

async fn next(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("a delivery within 5 s")
        .expect("the stream goes on")
        .expect("no error")
}

async fn quiet(subscription: &mut Subscription, wait: Duration) -> bool {
    tokio::time::timeout(wait, subscription.next())
        .await
        .is_err()
}

#[tokio::test]
async fn a_group_is_a_durable_pull_consumer_filtered_on_the_topic() {
    let (topic, group) = (common::topic(), common::group());
    let subscriber = NatsSubscriber::connect(common::config().group(&group))
        .await
        .unwrap();
    let _subscription = subscriber.subscribe(&topic).await.unwrap();
    let js = async_nats::jetstream::new(subscriber.client().clone());
    let stream = js.get_stream(encode_name(&topic)).await.unwrap();
    let info = stream.consumer_info(encode_name(&group)).await.unwrap();
    assert_eq!(
        info.config.durable_name.as_deref(),
        Some(encode_name(&group).as_str())
    );
    assert_eq!(info.config.filter_subject, topic);
    assert_eq!(
        info.config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    subscriber.close().await.unwrap();
}

#[tokio::test]
async fn group_members_share_and_groups_each_get_all() {
    let topic = common::topic();
    let (g1, g2) = (common::group(), common::group());
    let a = NatsSubscriber::connect(common::config().group(&g1))
        .await
        .unwrap();
    let b = NatsSubscriber::connect(common::config().group(&g1).batch_size(1))
        .await
        .unwrap();
    let c = NatsSubscriber::connect(common::config().group(&g2))
        .await
        .unwrap();
    let (mut sa, mut sb, mut sc) = (
        a.subscribe(&topic).await.unwrap(),
        b.subscribe(&topic).await.unwrap(),
        c.subscribe(&topic).await.unwrap(),
    );
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    let messages: Vec<Message> = (0..20).map(|i| Message::new(format!("{i}"))).collect();
    publisher.publish(&topic, messages).await.unwrap();
    let mut shared = std::collections::HashSet::new();
    while shared.len() < 20 {
        let d = tokio::select! {
            d = next(&mut sa) => d,
            d = next(&mut sb) => d,
        };
        assert!(
            shared.insert(d.message().id().to_owned()),
            "a group member got a duplicate"
        );
        d.ack();
    }
    for _ in 0..20 {
        next(&mut sc).await.ack();
    }
    for s in [a, b, c] {
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn subscribers_without_group_each_get_every_message() {
    let topic = common::topic();
    let a = NatsSubscriber::connect(common::config()).await.unwrap();
    let b = NatsSubscriber::connect(common::config()).await.unwrap();
    let (mut sa, mut sb) = (
        a.subscribe(&topic).await.unwrap(),
        b.subscribe(&topic).await.unwrap(),
    );
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(
            &topic,
            vec![Message::with_id("1", "x"), Message::with_id("2", "y")],
        )
        .await
        .unwrap();
    for s in [&mut sa, &mut sb] {
        let (d1, d2) = (next(s).await, next(s).await);
        assert_eq!((d1.message().id(), d2.message().id()), ("1", "2"));
        d1.ack();
        d2.ack();
    }
    // The ephemeral consumers go away with their subscriber.
    let js = async_nats::jetstream::new(publisher.client().clone());
    a.close().await.unwrap();
    b.close().await.unwrap();
    let mut stream = js.get_stream(encode_name(&topic)).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
}

#[tokio::test]
async fn delivery_starts_at_the_beginning_now_or_a_time() {
    let topic = common::topic();
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher
        .publish(&topic, vec![Message::with_id("old", "")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher
        .publish(&topic, vec![Message::with_id("middle", "")])
        .await
        .unwrap();

    let all = NatsSubscriber::connect(common::config().group(common::group()))
        .await
        .unwrap();
    let new = NatsSubscriber::connect(common::config().start_position(StartPosition::End))
        .await
        .unwrap();
    let timed =
        NatsSubscriber::connect(common::config().start_position(StartPosition::Time(since)))
            .await
            .unwrap();
    let (mut s_all, mut s_new, mut s_timed) = (
        all.subscribe(&topic).await.unwrap(),
        new.subscribe(&topic).await.unwrap(),
        timed.subscribe(&topic).await.unwrap(),
    );
    publisher
        .publish(&topic, vec![Message::with_id("late", "")])
        .await
        .unwrap();
    let ids = |ds: Vec<Delivery>| {
        ds.into_iter()
            .map(|d| {
                let id = d.message().id().to_owned();
                d.ack();
                id
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(vec![
            next(&mut s_all).await,
            next(&mut s_all).await,
            next(&mut s_all).await
        ]),
        ["old", "middle", "late"]
    );
    assert_eq!(ids(vec![next(&mut s_new).await]), ["late"]);
    assert_eq!(
        ids(vec![next(&mut s_timed).await, next(&mut s_timed).await]),
        ["middle", "late"]
    );
    assert!(quiet(&mut s_new, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn an_existing_durable_with_another_filter_is_refused() {
    let (topic, group) = (common::topic(), common::group());
    let publisher = NatsPublisher::connect(common::config()).await.unwrap();
    publisher.ensure_topic(&topic).await.unwrap();
    let js = async_nats::jetstream::new(publisher.client().clone());
    let stream = js.get_stream(encode_name(&topic)).await.unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(encode_name(&group)),
            ..Default::default()
        })
        .await
        .unwrap();
    let subscriber = NatsSubscriber::connect(common::config().group(&group))
        .await
        .unwrap();
    let err = subscriber.subscribe(&topic).await.unwrap_err();
    assert!(err.to_string().contains("filters"), "{err}");
}
