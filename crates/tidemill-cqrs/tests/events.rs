//! Event bus, event processor and event group processor on the in-process pub/sub.

mod common;

use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::router::Disposition;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router};
use tidemill_cqrs::{
    topic, BusConfig, EventBus, EventGroupProcessor, EventProcessor, Named, ProcessorConfig,
    CONTENT_TYPE_KEY, NAME_KEY,
};
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserSignedUp {
    email: String,
}
impl Named for UserSignedUp {}

#[tokio::test]
async fn every_handler_gets_the_event_in_its_own_group() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = EventProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for handler in ["send_welcome_email", "add_to_mailing_list"] {
        let tx = tx.clone();
        processor
            .handle(
                handler,
                move |e: UserSignedUp, ctx: tidemill_cqrs::Context| {
                    let tx = tx.clone();
                    async move {
                        tx.send((ctx.handler_name().to_owned(), e.email)).unwrap();
                        HandlerResult::Ok(())
                    }
                },
            )
            .unwrap();
    }
    assert_eq!(
        router.handler_names(),
        ["add_to_mailing_list", "send_welcome_email"]
    );
    let run = start(&router).await;
    let bus = EventBus::new(pubsub.clone());
    bus.publish(&UserSignedUp {
        email: "ada@example.com".into(),
    })
    .await
    .unwrap();
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await];
    got.sort();
    assert_eq!(
        got,
        [
            (
                "add_to_mailing_list".to_owned(),
                "ada@example.com".to_owned()
            ),
            (
                "send_welcome_email".to_owned(),
                "ada@example.com".to_owned()
            ),
        ]
    );
    nothing(&mut rx).await;
    stop(&router, run).await;
}

#[tokio::test]
async fn a_handler_added_later_does_not_replay_for_the_others() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = EventProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = |tx: mpsc::UnboundedSender<(&'static str, String)>, name: &'static str| {
        move |e: UserSignedUp| {
            let tx = tx.clone();
            async move {
                tx.send((name, e.email)).unwrap();
                HandlerResult::Ok(())
            }
        }
    };
    processor
        .handle("first", handler(tx.clone(), "first"))
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::new(pubsub.clone());
    bus.publish(&UserSignedUp { email: "a".into() })
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, ("first", "a".to_owned()));

    processor
        .handle("second", handler(tx.clone(), "second"))
        .unwrap();
    // The new handler subscribes in the background once registered on a running router.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    bus.publish(&UserSignedUp { email: "b".into() })
        .await
        .unwrap();
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await];
    got.sort();
    assert_eq!(got, [("first", "b".to_owned()), ("second", "b".to_owned())]);
    nothing(&mut rx).await;
    stop(&router, run).await;
}

#[tokio::test]
async fn the_bus_names_the_event_and_runs_its_hook() {
    let pubsub = InProcessPubSub::new();
    let mut sub = tidemill::Subscriber::subscribe(&pubsub, "custom.UserSignedUp")
        .await
        .unwrap();
    let bus = EventBus::with_config(
        pubsub.clone(),
        BusConfig::default()
            .topic(topic::prefixed("custom."))
            .on_send(Arc::new(|msg, outgoing| {
                let event = outgoing.value::<UserSignedUp>().unwrap();
                msg.metadata_mut().set("partition_key", event.email.clone());
                msg.metadata_mut().set("topic_seen", outgoing.topic());
            })),
    );
    bus.publish(&UserSignedUp {
        email: "x@y".into(),
    })
    .await
    .unwrap();
    let delivery = futures::StreamExt::next(&mut sub).await.unwrap().unwrap();
    let md = delivery.message().metadata();
    assert_eq!(md.get(NAME_KEY), Some("UserSignedUp"));
    assert_eq!(md.get(CONTENT_TYPE_KEY), Some("application/json"));
    assert_eq!(md.get("partition_key"), Some("x@y"));
    assert_eq!(md.get("topic_seen"), Some("custom.UserSignedUp"));
    assert_eq!(delivery.message().payload().as_ref(), br#"{"email":"x@y"}"#);
    delivery.ack();
}

#[tokio::test]
async fn one_type_handlers_skip_other_types_on_a_shared_topic() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = EventProcessor::with_config(
        &router,
        groups(&pubsub),
        ProcessorConfig::default().topic(topic::single("events")),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("on_left", move |e: EmployeeLeft| {
            let tx = tx.clone();
            async move {
                tx.send(e.employee).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::with_config(
        pubsub.clone(),
        BusConfig::default().topic(topic::single("events")),
    );
    bus.publish(&OfficeOpened {
        city: "Oslo".into(),
    })
    .await
    .unwrap();
    bus.publish(&EmployeeLeft {
        employee: 7,
        version: 1,
    })
    .await
    .unwrap();
    assert_eq!(recv(&mut rx).await, 7);
    assert!(failures.take().is_empty());
    stop(&router, run).await;
}

/// The employee example: a transfer and a leaving of one employee, two event types on one topic,
/// handled by one group so the leaving is never handled before the transfer.
#[tokio::test]
async fn a_group_handles_events_of_several_types_in_order() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = EventGroupProcessor::with_config(
        &router,
        groups(&pubsub),
        ProcessorConfig::default().ack_on_unknown(true),
    );
    let log: Arc<Mutex<Vec<(u64, &'static str)>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    processor
        .group("employee-related")
        .on({
            let log = log.clone();
            move |e: EmployeeTransferred| {
                let log = log.clone();
                async move {
                    // Slow, so a leaving handled in parallel would overtake it.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    log.lock().push((e.employee, "transferred"));
                    HandlerResult::Ok(())
                }
            }
        })
        .on({
            let log = log.clone();
            move |e: EmployeeLeft| {
                let (log, done_tx) = (log.clone(), done_tx.clone());
                async move {
                    log.lock().push((e.employee, "left"));
                    done_tx.send(e.employee).unwrap();
                    HandlerResult::Ok(())
                }
            }
        })
        .register()
        .unwrap();
    assert_eq!(router.handler_names(), ["employee-related"]);
    let run = start(&router).await;

    let bus = EventBus::with_config(
        pubsub.clone(),
        BusConfig::default().topic(topic::single("events")),
    );
    for employee in 1..=5 {
        bus.publish(&EmployeeTransferred {
            employee,
            to: "sales".into(),
            version: 1,
        })
        .await
        .unwrap();
        bus.publish(&OfficeOpened {
            city: "Lyon".into(),
        })
        .await
        .unwrap();
        bus.publish(&EmployeeLeft {
            employee,
            version: 2,
        })
        .await
        .unwrap();
    }
    for _ in 1..=5 {
        recv(&mut done).await;
    }
    let expected: Vec<(u64, &str)> = (1..=5)
        .flat_map(|e| [(e, "transferred"), (e, "left")])
        .collect();
    assert_eq!(*log.lock(), expected);
    // Unknown events were acked, not rejected.
    assert!(failures.take().is_empty());
    stop(&router, run).await;
}

#[tokio::test]
async fn a_group_rejects_unknown_events_unless_told_to_ack() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = EventGroupProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .group("employees")
        .on(move |e: EmployeeLeft| {
            let tx = tx.clone();
            async move {
                tx.send(e.employee).unwrap();
                HandlerResult::Ok(())
            }
        })
        .register()
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::with_config(
        pubsub.clone(),
        BusConfig::default().topic(topic::single("events")),
    );
    bus.publish(&OfficeOpened {
        city: "Rome".into(),
    })
    .await
    .unwrap();
    // No name at all.
    pubsub
        .publish("events", vec![Message::new("{}")])
        .await
        .unwrap();
    bus.publish(&EmployeeLeft {
        employee: 3,
        version: 1,
    })
    .await
    .unwrap();
    assert_eq!(recv(&mut rx).await, 3);
    let seen = failures.take();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, Disposition::Reject);
    assert!(
        seen[0].1.contains("no handler for \"OfficeOpened\""),
        "{}",
        seen[0].1
    );
    assert_eq!(seen[1].0, Disposition::Reject);
    assert!(
        seen[1].1.contains("has no \"name\" metadata"),
        "{}",
        seen[1].1
    );
    stop(&router, run).await;
}

#[tokio::test]
async fn two_handlers_of_one_type_in_a_group_is_an_error() {
    let router = Router::new();
    let processor = EventGroupProcessor::new(&router, groups(&InProcessPubSub::new()));
    let err = processor
        .group("g")
        .on(|_: EmployeeLeft| async { HandlerResult::Ok(()) })
        .on(|_: EmployeeLeft| async { HandlerResult::Ok(()) })
        .register()
        .unwrap_err();
    assert!(matches!(
        err,
        tidemill_cqrs::Error::DuplicateGroupHandler { .. }
    ));
    assert!(router.handler_names().is_empty());
}

#[tokio::test]
async fn undecodable_payloads_are_rejected_not_panicked_on() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = EventProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("welcome", move |e: UserSignedUp| {
            let tx = tx.clone();
            async move {
                tx.send(e.email).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    pubsub
        .publish(
            "events.UserSignedUp",
            vec![Message::new("{not json").with_metadata(NAME_KEY, "UserSignedUp")],
        )
        .await
        .unwrap();
    EventBus::new(pubsub.clone())
        .publish(&UserSignedUp { email: "ok".into() })
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "ok");
    let seen = failures.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Disposition::Reject);
    assert!(seen[0].1.starts_with("decoding message"), "{}", seen[0].1);
    stop(&router, run).await;
}

#[tokio::test]
async fn handler_errors_keep_their_disposition() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = EventProcessor::new(&router, groups(&pubsub));
    processor
        .handle("fails", |_: UserSignedUp| async {
            Err::<(), _>(tidemill::HandlerError::drop_message("not interested"))
        })
        .unwrap();
    let run = start(&router).await;
    EventBus::new(pubsub.clone())
        .publish(&UserSignedUp { email: "x".into() })
        .await
        .unwrap();
    for _ in 0..100 {
        if !failures.seen.lock().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        failures.take(),
        [(Disposition::Drop, "not interested".to_owned())]
    );
    stop(&router, run).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Renamed {
    n: u32,
}
impl Named for Renamed {
    fn name() -> std::borrow::Cow<'static, str> {
        "renamed.v2".into()
    }
}

#[tokio::test]
async fn overridden_names_pick_topic_and_handler() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = EventProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("renamed", move |e: Renamed, ctx: tidemill_cqrs::Context| {
            let tx = tx.clone();
            async move {
                tx.send((e.n, ctx.name().map(str::to_owned), ctx.message().clone()))
                    .unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::new(pubsub.clone());
    assert_eq!(bus.topic_for(&Renamed::name()), "events.renamed.v2");
    bus.publish(&Renamed { n: 4 }).await.unwrap();
    let (n, name, _msg) = recv(&mut rx).await;
    assert_eq!((n, name.as_deref()), (4, Some("renamed.v2")));
    stop(&router, run).await;
}
