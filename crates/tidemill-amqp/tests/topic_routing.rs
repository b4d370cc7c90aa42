//! The seed's events/booking example on a topic exchange: the events service publishes to the
//! `events` exchange with routing keys `<entity>.<change>.<location>`; `evts_booking` is bound
//! with `event.#` and shared by two booking subscribers (round robin), `evts_search` with
//! `event.created.*`; a third queue shows `event.*.europe`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use tidemill::{Message, Publisher, Subscriber};
use tidemill_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber, Topology};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_booking_topic_routing() {
    // Fresh names keep runs apart; the shape is the seed's.
    let exchange = common::fresh("events");
    let run = common::fresh("run");
    let topology = Topology::topic_exchange(exchange.clone())
        .durable(false)
        .queue_name(move |_pattern, service| format!("evts_{service}_{run}"));
    let config = AmqpConfig::from_url(&common::url())
        .unwrap()
        .topology(topology);

    // Two booking instances share evts_booking; search and a europe-only view have their own.
    let booking_a = AmqpSubscriber::connect(config.clone().group("booking"))
        .await
        .unwrap();
    let booking_b = AmqpSubscriber::connect(config.clone().group("booking"))
        .await
        .unwrap();
    let search = AmqpSubscriber::connect(config.clone().group("search"))
        .await
        .unwrap();
    let europe = AmqpSubscriber::connect(config.clone().group("europe"))
        .await
        .unwrap();
    let mut booking_a_sub = booking_a.subscribe("event.#").await.unwrap();
    let mut booking_b_sub = booking_b.subscribe("event.#").await.unwrap();
    let mut search_sub = search.subscribe("event.created.*").await.unwrap();
    let mut europe_sub = europe.subscribe("event.*.europe").await.unwrap();

    let events = AmqpPublisher::connect(config.clone().mandatory(true))
        .await
        .unwrap();
    let emit = |key: &str, name: &str| {
        Message::with_id(format!("{key}/{name}"), format!("{{\"name\":\"{name}\"}}"))
            .with_metadata("x-event-name", key)
            .with_metadata("content_type", "application/json")
    };
    events
        .publish(
            "event.created.europe",
            vec![emit("event.created.europe", "Metallica Berlin")],
        )
        .await
        .unwrap();
    events
        .publish(
            "event.created.america",
            vec![emit("event.created.america", "Metallica NYC")],
        )
        .await
        .unwrap();
    events
        .publish(
            "event.updated.europe",
            vec![emit("event.updated.europe", "Metallica Berlin moved")],
        )
        .await
        .unwrap();
    events
        .publish(
            "event.booked.asia",
            vec![emit("event.booked.asia", "Seat 12")],
        )
        .await
        .unwrap();

    // Nothing is bound for locations: with mandatory routing that is an error naming the id.
    let err = events
        .publish(
            "location.created.europe",
            vec![Message::with_id("loc-1", "Olympiastadion")],
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("loc-1") && text.contains("location.created.europe"),
        "{text}"
    );

    // evts_booking got all four event changes, split between its two consumers.
    let mut booked = HashSet::new();
    let (mut a, mut b) = (0, 0);
    while booked.len() < 4 {
        tokio::select! {
            d = common::next(&mut booking_a_sub, WAIT) => { a += 1; booked.insert(d.message().id().to_owned()); d.ack(); }
            d = common::next(&mut booking_b_sub, WAIT) => { b += 1; booked.insert(d.message().id().to_owned()); d.ack(); }
        }
    }
    assert!(
        a > 0 && b > 0,
        "round robin between the booking consumers: {a} and {b}"
    );
    common::quiet(&mut booking_a_sub, QUIET).await;
    common::quiet(&mut booking_b_sub, QUIET).await;

    // evts_search only got the creations, in publish order, with their metadata.
    let mut created = Vec::new();
    for _ in 0..2 {
        let d = common::next(&mut search_sub, WAIT).await;
        assert_eq!(
            d.message().metadata().get("content_type"),
            Some("application/json")
        );
        created.push(
            d.message()
                .metadata()
                .get("x-event-name")
                .unwrap()
                .to_owned(),
        );
        d.ack();
    }
    assert_eq!(created, ["event.created.europe", "event.created.america"]);
    common::quiet(&mut search_sub, QUIET).await;

    // event.*.europe: any change in Europe.
    let mut in_europe = Vec::new();
    for _ in 0..2 {
        let d = common::next(&mut europe_sub, WAIT).await;
        in_europe.push(d.message().id().to_owned());
        d.ack();
    }
    assert_eq!(
        in_europe,
        [
            "event.created.europe/Metallica Berlin",
            "event.updated.europe/Metallica Berlin moved"
        ]
    );
    common::quiet(&mut europe_sub, QUIET).await;

    events.close().await.unwrap();
    for s in [booking_a, booking_b, search, europe] {
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_need_a_topic_exchange() {
    let config = AmqpConfig::from_url(&common::url()).unwrap();
    let subscriber = AmqpSubscriber::connect(config.clone()).await.unwrap();
    let err = subscriber.subscribe("event.#").await.unwrap_err();
    assert!(matches!(err, tidemill::Error::InvalidTopic { .. }), "{err}");
    let topic_config =
        config.topology(Topology::topic_exchange(common::fresh("events")).durable(false));
    let publisher = AmqpPublisher::connect(topic_config).await.unwrap();
    let err = publisher
        .publish("event.*", vec![Message::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, tidemill::Error::InvalidTopic { .. }), "{err}");
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
}
