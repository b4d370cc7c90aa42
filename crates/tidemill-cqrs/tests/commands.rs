//! Command bus and processor, handler context, request-reply and version checks on the
//! in-process pub/sub.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::middleware::CORRELATION_ID_KEY;
use tidemill::{HandlerError, HandlerResult, InProcessPubSub, Message, Publisher, Router};
use tidemill_cqrs::{
    CommandBus, CommandProcessor, Context, Error, EventBus, EventProcessor, Named, ProcessorConfig,
    RequestReply, RequestReplyConfig, VersionCheck, VersionGuard, Versioned, NAME_KEY,
};
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SendNotification {
    to: String,
}
impl Named for SendNotification {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct NotificationSent {
    to: String,
}
impl Named for NotificationSent {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AuditNotification {
    to: String,
}
impl Named for AuditNotification {}

#[tokio::test]
async fn a_command_reaches_its_one_handler() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::new(&router, groups(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("send_notification", move |c: SendNotification| {
            let tx = tx.clone();
            async move {
                tx.send(c.to).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let second = processor.handle("other", |_: SendNotification| async {
        HandlerResult::Ok(())
    });
    match second {
        Err(Error::DuplicateCommandHandler { name, existing }) => {
            assert_eq!(name, "SendNotification");
            assert_eq!(existing, "send_notification");
        }
        other => panic!("expected a duplicate error, got {other:?}"),
    }
    assert_eq!(router.handler_names(), ["send_notification"]);
    let run = start(&router).await;
    let bus = CommandBus::new(pubsub.clone());
    assert_eq!(
        bus.topic_for("SendNotification"),
        "commands.SendNotification"
    );
    bus.send(&SendNotification { to: "ada".into() })
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, "ada");
    stop(&router, run).await;
}

#[tokio::test]
async fn the_same_handler_name_twice_on_a_router_is_an_error() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let events = EventProcessor::new(&router, groups(&pubsub));
    let commands = CommandProcessor::new(&router, groups(&pubsub));
    events
        .handle("h", |_: NotificationSent| async { HandlerResult::Ok(()) })
        .unwrap();
    let err = commands
        .handle("h", |_: SendNotification| async { HandlerResult::Ok(()) })
        .unwrap_err();
    assert!(matches!(err, Error::Router(_)), "{err:?}");
    // The failed registration does not hold the command type.
    commands
        .handle("h2", |_: SendNotification| async { HandlerResult::Ok(()) })
        .unwrap();
}

#[tokio::test]
async fn the_subscriber_constructor_gets_the_handler_name_and_its_errors_surface() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let processor = CommandProcessor::new(&router, {
        let asked = asked.clone();
        move |group: &str| {
            asked.lock().push(group.to_owned());
            if group == "broken" {
                return Err(tidemill::Error::Config("no such group".into()));
            }
            Ok(pubsub.with_group(group))
        }
    });
    let err = processor
        .handle("broken", |_: SendNotification| async {
            HandlerResult::Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::Subscriber { ref group, .. } if group == "broken"));
    processor
        .handle("works", |_: SendNotification| async {
            HandlerResult::Ok(())
        })
        .unwrap();
    assert_eq!(*asked.lock(), ["broken", "works"]);
}

#[tokio::test]
async fn follow_ups_carry_correlation_and_trace_context() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let config = || {
        ProcessorConfig::default()
            .event_bus(EventBus::new(pubsub.clone()))
            .command_bus(CommandBus::new(pubsub.clone()))
    };
    let commands = CommandProcessor::with_config(&router, groups(&pubsub), config());
    commands
        .handle(
            "send_notification",
            |c: SendNotification, ctx: Context| async move {
                let events = ctx.event_bus().unwrap();
                events
                    .publish(&NotificationSent { to: c.to.clone() })
                    .await
                    .map_err(HandlerError::new)?;
                let commands = ctx.command_bus().unwrap();
                commands
                    .send(&AuditNotification { to: c.to })
                    .await
                    .map_err(HandlerError::new)?;
                Ok(())
            },
        )
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Message)>();
    let events = EventProcessor::with_config(&router, groups(&pubsub), config());
    events
        .handle("on_sent", {
            let tx = tx.clone();
            move |_: NotificationSent, ctx: Context| {
                let tx = tx.clone();
                async move {
                    tx.send(("event".into(), ctx.message().clone())).unwrap();
                    HandlerResult::Ok(())
                }
            }
        })
        .unwrap();
    commands
        .handle("audit", move |_: AuditNotification, ctx: Context| {
            let tx = tx.clone();
            async move {
                tx.send(("command".into(), ctx.message().clone())).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;

    let traced = tidemill::Metadata::from_iter([
        (CORRELATION_ID_KEY, "corr-1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", "vendor=1"),
        ("baggage", "user=ada"),
        ("unrelated", "stays behind"),
    ]);
    CommandBus::new(pubsub.clone())
        .with_metadata(&traced)
        .send(&SendNotification { to: "ada".into() })
        .await
        .unwrap();
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    for (kind, msg) in &got {
        let md = msg.metadata();
        assert_eq!(md.get(CORRELATION_ID_KEY), Some("corr-1"), "{kind}");
        assert_eq!(
            md.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(md.get("tracestate"), Some("vendor=1"));
        assert_eq!(md.get("baggage"), Some("user=ada"));
        assert_eq!(md.get("unrelated"), None);
    }
    assert_eq!(got[0].1.metadata().get(NAME_KEY), Some("AuditNotification"));
    assert_eq!(got[1].1.metadata().get(NAME_KEY), Some("NotificationSent"));

    // Without a correlation id, the follow-ups are correlated by the first message's id.
    let mut first = None;
    let bus = CommandBus::with_config(
        pubsub.clone(),
        tidemill_cqrs::BusConfig::default().on_send(Arc::new(|msg, _| msg.set_id("first-id"))),
    );
    bus.send(&SendNotification { to: "bob".into() })
        .await
        .unwrap();
    for _ in 0..2 {
        let (_, msg) = recv(&mut rx).await;
        assert_eq!(msg.metadata().get(CORRELATION_ID_KEY), Some("first-id"));
        first.get_or_insert(msg);
    }
    stop(&router, run).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BookRoom {
    room: u32,
    nights: u32,
}
impl Named for BookRoom {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Booking {
    room: u32,
    price: u32,
}

fn replying(pubsub: &InProcessPubSub) -> ProcessorConfig {
    ProcessorConfig::default().reply_publisher(pubsub.clone())
}

#[tokio::test]
async fn a_request_gets_its_typed_result_or_its_error() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    // Stands in for a poison queue: a rejected command is taken off the topic.
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    processor
        .handle_with_result("book_room", |c: BookRoom| async move {
            if c.room == 13 {
                return Err(HandlerError::reject("room 13 does not exist"));
            }
            HandlerResult::Ok(Booking {
                room: c.room,
                price: c.nights * 100,
            })
        })
        .unwrap();
    let run = start(&router).await;
    let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
    let booking: Booking = requests
        .request(&BookRoom { room: 7, nights: 3 })
        .await
        .unwrap();
    assert_eq!(
        booking,
        Booking {
            room: 7,
            price: 300
        }
    );

    let err = requests
        .request::<_, Booking>(&BookRoom {
            room: 13,
            nights: 1,
        })
        .await
        .unwrap_err();
    match err {
        Error::Remote { name, message } => {
            assert_eq!(name, "BookRoom");
            assert_eq!(message, "room 13 does not exist");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }

    // Concurrent requests each get their own answer.
    let answers = futures::future::join_all((1..=8).map(|room| {
        let requests = requests.clone();
        async move {
            requests
                .request::<_, Booking>(&BookRoom { room, nights: room })
                .await
                .unwrap()
        }
    }))
    .await;
    for (i, booking) in answers.into_iter().enumerate() {
        let room = i as u32 + 1;
        assert_eq!(
            booking,
            Booking {
                room,
                price: room * 100
            }
        );
    }
    stop(&router, run).await;
}

#[tokio::test]
async fn a_request_without_result_waits_for_success() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("notify", move |c: SendNotification| {
            let tx = tx.clone();
            async move {
                tx.send(c.to).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
    requests
        .send_and_wait(&SendNotification { to: "ada".into() })
        .await
        .unwrap();
    // The handler ran before the reply came.
    assert_eq!(rx.try_recv().unwrap(), "ada");
    stop(&router, run).await;
}

#[tokio::test]
async fn a_request_nobody_answers_times_out() {
    let pubsub = InProcessPubSub::new();
    let requests = RequestReply::with_config(
        CommandBus::new(pubsub.clone()),
        pubsub.clone(),
        RequestReplyConfig::default()
            .timeout(Duration::from_millis(100))
            .reply_topic("replies.test"),
    );
    assert_eq!(requests.reply_topic(), "replies.test");
    let err = requests
        .request::<_, Booking>(&BookRoom { room: 1, nights: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { ref name, timeout } if name == "BookRoom" && timeout == Duration::from_millis(100)),
        "{err:?}"
    );
}

#[tokio::test]
async fn retried_failures_are_not_answered_until_final() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    let attempts = Arc::new(Mutex::new(0));
    processor
        .handle_with_result("flaky", {
            let attempts = attempts.clone();
            move |c: BookRoom| {
                let attempts = attempts.clone();
                async move {
                    let n = {
                        let mut a = attempts.lock();
                        *a += 1;
                        *a
                    };
                    if n < 3 {
                        return Err(HandlerError::retry_after(Duration::from_millis(10), "busy"));
                    }
                    HandlerResult::Ok(c.room)
                }
            }
        })
        .unwrap();
    let run = start(&router).await;
    let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
    let room: u32 = requests
        .request(&BookRoom { room: 9, nights: 1 })
        .await
        .unwrap();
    assert_eq!(room, 9);
    assert_eq!(*attempts.lock(), 3);
    stop(&router, run).await;
}

#[tokio::test]
async fn a_handler_can_send_several_replies() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    processor
        .handle_with_result("quote_rooms", |c: BookRoom, ctx: Context| async move {
            assert!(ctx.wants_reply());
            for night in 1..c.nights {
                ctx.reply(&format!("night {night}"))
                    .await
                    .map_err(HandlerError::new)?;
            }
            HandlerResult::Ok(format!("night {}", c.nights))
        })
        .unwrap();
    let run = start(&router).await;
    let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
    let replies: Vec<String> = requests
        .request_many::<_, String>(&BookRoom { room: 1, nights: 3 })
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(replies, ["night 1", "night 2", "night 3"]);
    // `request` skips to the final reply.
    let last: String = requests
        .request(&BookRoom { room: 1, nights: 2 })
        .await
        .unwrap();
    assert_eq!(last, "night 2");
    stop(&router, run).await;
}

#[tokio::test]
async fn a_streamed_request_ends_with_its_error() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let failures = Failures::default();
    router.layer(failures.clone());
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    processor
        .handle("partial", |_: BookRoom, ctx: Context| async move {
            ctx.reply(&1u32).await.map_err(HandlerError::new)?;
            Err(HandlerError::reject("sold out"))
        })
        .unwrap();
    let run = start(&router).await;
    let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
    let replies: Vec<Result<u32, Error>> = requests
        .request_many(&BookRoom { room: 1, nights: 1 })
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(replies.len(), 2);
    assert_eq!(*replies[0].as_ref().unwrap(), 1);
    assert!(matches!(&replies[1], Err(Error::Remote { message, .. }) if message == "sold out"));
    stop(&router, run).await;
}

impl Versioned for EmployeeTransferred {
    fn version(&self) -> u64 {
        self.version
    }
}

impl Versioned for EmployeeLeft {
    fn version(&self) -> u64 {
        self.version
    }
}

#[derive(Debug, Default, PartialEq)]
struct Employee {
    department: String,
    left: bool,
    version: u64,
}

/// The seed's version check: the leaving (version 2) arrives before the transfer (version 1)
/// on another topic; it comes back until the transfer is applied.
#[tokio::test]
async fn an_early_event_comes_back_until_its_predecessor_is_applied() {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = EventProcessor::new(&router, groups(&pubsub));
    let employee = Arc::new(Mutex::new(Employee::default()));
    let guard = VersionGuard::new().retry_after(Duration::from_millis(20));
    let early = Arc::new(Mutex::new(0));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    processor
        .handle("project_transfer", {
            let employee = employee.clone();
            move |e: EmployeeTransferred| {
                let employee = employee.clone();
                async move {
                    let mut emp = employee.lock();
                    if guard.check_event(emp.version, &e)? == VersionCheck::Apply {
                        emp.department = e.to;
                        emp.version = e.version;
                    }
                    HandlerResult::Ok(())
                }
            }
        })
        .unwrap();
    processor
        .handle("project_leaving", {
            let (employee, early) = (employee.clone(), early.clone());
            move |e: EmployeeLeft| {
                let (employee, early, done_tx) = (employee.clone(), early.clone(), done_tx.clone());
                async move {
                    let mut emp = employee.lock();
                    match guard.check_event(emp.version, &e) {
                        Ok(VersionCheck::Apply) => {
                            emp.left = true;
                            emp.version = e.version;
                            done_tx.send(()).unwrap();
                        }
                        Ok(VersionCheck::AlreadyApplied) => {}
                        Err(err) => {
                            *early.lock() += 1;
                            return Err(err);
                        }
                    }
                    HandlerResult::Ok(())
                }
            }
        })
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::new(pubsub.clone());
    bus.publish(&EmployeeLeft {
        employee: 1,
        version: 2,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish(&EmployeeTransferred {
        employee: 1,
        to: "sales".into(),
        version: 1,
    })
    .await
    .unwrap();
    recv(&mut done).await;
    assert_eq!(
        *employee.lock(),
        Employee {
            department: "sales".into(),
            left: true,
            version: 2
        }
    );
    assert!(*early.lock() >= 1);
    // A redelivered event is skipped.
    bus.publish(&EmployeeLeft {
        employee: 1,
        version: 2,
    })
    .await
    .unwrap();
    nothing(&mut done).await;
    stop(&router, run).await;
}

#[tokio::test]
async fn a_raw_message_without_reply_request_gets_no_reply() {
    // A plain command with a result handler: nobody waits, nothing is published for replies.
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let processor = CommandProcessor::with_config(&router, groups(&pubsub), replying(&pubsub));
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle_with_result("book", move |c: BookRoom, ctx: Context| {
            let tx = tx.clone();
            async move {
                tx.send(ctx.wants_reply()).unwrap();
                HandlerResult::Ok(c.room)
            }
        })
        .unwrap();
    let run = start(&router).await;
    pubsub
        .publish(
            "commands.BookRoom",
            vec![Message::new(r#"{"room":1,"nights":1}"#).with_metadata(NAME_KEY, "BookRoom")],
        )
        .await
        .unwrap();
    assert!(!recv(&mut rx).await);
    stop(&router, run).await;
}
