//! Messages a processor cannot handle: undecodable payloads and unknown command names go to
//! the dead-letter topic once, never in a loop, and never ahead of the valid ones; skipped
//! events are counted; a subscriber in the wrong consumer group is refused.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::middleware::POISON_REASON_KEY;
use tidemill::router::DEFAULT_DEAD_LETTER_TOPIC;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router, Subscriber};
use tidemill_cqrs::{
    CommandBus, CommandProcessor, Error, EventBus, EventProcessor, Named, ProcessorConfig, NAME_KEY,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ShipOrder {
    id: u64,
}
impl Named for ShipOrder {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
}
impl Named for OrderPlaced {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderCancelled {
    id: u64,
}
impl Named for OrderCancelled {}

async fn next_dead_letter(sub: &mut tidemill::Subscription) -> Message {
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a dead letter arrives")
        .unwrap()
        .unwrap();
    let m = d.message().clone();
    d.ack();
    m
}

#[tokio::test]
async fn an_undecodable_command_is_dead_lettered_once_and_the_next_one_runs() {
    let pubsub = InProcessPubSub::new();
    let mut dead = pubsub.subscribe(DEFAULT_DEAD_LETTER_TOPIC).await.unwrap();
    let router = Router::new();
    let processor = CommandProcessor::new(&router, groups(&pubsub));
    let shipped = Arc::new(Mutex::new(Vec::new()));
    let s = shipped.clone();
    processor
        .handle("ship", move |c: ShipOrder| {
            let s = s.clone();
            async move {
                s.lock().push(c.id);
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    let garbage = Message::with_id("garbage", "{not json").with_metadata(NAME_KEY, "ShipOrder");
    pubsub
        .publish("commands.ShipOrder", vec![garbage])
        .await
        .unwrap();
    CommandBus::new(pubsub.clone())
        .send(&ShipOrder { id: 7 })
        .await
        .unwrap();
    let dl = next_dead_letter(&mut dead).await;
    assert_eq!(dl.id(), "garbage");
    assert!(dl
        .metadata()
        .get(POISON_REASON_KEY)
        .unwrap()
        .contains("ShipOrder"));
    until(|| shipped.lock().as_slice() == [7]).await;
    // Exactly once in the dead-letter topic.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), dead.next())
            .await
            .is_err()
    );
    stop(&router, run).await;
}

#[tokio::test]
async fn a_command_nobody_handles_is_rejected_not_acked() {
    let pubsub = InProcessPubSub::new();
    let mut dead = pubsub.subscribe(DEFAULT_DEAD_LETTER_TOPIC).await.unwrap();
    let router = Router::new();
    // One topic for every command, as a typo'd name would travel on it.
    let processor = CommandProcessor::with_config(
        &router,
        groups(&pubsub),
        ProcessorConfig::default().topic(tidemill_cqrs::topic::single("commands")),
    );
    processor
        .handle("ship", |_: ShipOrder| async { HandlerResult::Ok(()) })
        .unwrap();
    let run = start(&router).await;
    let typo = Message::with_id("typo", r#"{"id":1}"#).with_metadata(NAME_KEY, "ShipOrdr");
    pubsub.publish("commands", vec![typo]).await.unwrap();
    let dl = next_dead_letter(&mut dead).await;
    assert_eq!(dl.id(), "typo");
    assert!(
        dl.metadata()
            .get(POISON_REASON_KEY)
            .unwrap()
            .contains("ShipOrdr"),
        "{:?}",
        dl.metadata().get(POISON_REASON_KEY)
    );
    stop(&router, run).await;
}

#[tokio::test]
async fn events_of_other_types_are_skipped_and_counted() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let skipped = Arc::new(Mutex::new(Vec::new()));
    let sk = skipped.clone();
    let processor = EventProcessor::with_config(
        &router,
        groups(&pubsub),
        ProcessorConfig::default()
            .topic(tidemill_cqrs::topic::single("orders"))
            .on_skip(move |handler: &str, name: &str| sk.lock().push(format!("{handler}:{name}"))),
    );
    let placed = Arc::new(AtomicUsize::new(0));
    let p = placed.clone();
    processor
        .handle("count_placed", move |_: OrderPlaced| {
            p.fetch_add(1, Ordering::SeqCst);
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::with_config(
        pubsub.clone(),
        tidemill_cqrs::BusConfig::default().topic(tidemill_cqrs::topic::single("orders")),
    );
    bus.publish(&OrderCancelled { id: 1 }).await.unwrap();
    bus.publish(&OrderPlaced { id: 2 }).await.unwrap();
    until(|| placed.load(Ordering::SeqCst) == 1).await;
    assert_eq!(skipped.lock().as_slice(), ["count_placed:OrderCancelled"]);
    stop(&router, run).await;
}

#[tokio::test]
async fn a_subscriber_in_another_group_is_refused() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let shared = pubsub.with_group("everyone");
    let processor = EventProcessor::new(&router, move |_group: &str| Ok(shared.clone()));
    let err = processor
        .handle("count_placed", |_: OrderPlaced| async {
            HandlerResult::Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::GroupMismatch { expected, actual } if expected == "count_placed" && actual == "everyone"),
        "{err}"
    );

    // One subscriber, no group, for two handlers: refused as well.
    let router = Router::new();
    let one = Arc::new(pubsub.clone());
    let processor = EventProcessor::new(&router, move |_group: &str| Ok(one.clone()));
    processor
        .handle("a", |_: OrderPlaced| async { HandlerResult::Ok(()) })
        .unwrap();
    let err = processor
        .handle("b", |_: OrderCancelled| async { HandlerResult::Ok(()) })
        .unwrap_err();
    assert!(matches!(err, Error::SharedSubscriber { .. }), "{err}");
}
