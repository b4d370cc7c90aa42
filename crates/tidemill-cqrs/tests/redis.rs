//! The processors and request-reply on Redis Streams (a server at 127.0.0.1:6379; the tests
//! say so and pass when there is none).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::{HandlerResult, Router};
use tidemill_cqrs::{
    topic, BusConfig, CommandBus, CommandProcessor, EventBus, EventGroupProcessor, EventProcessor,
    LazySubscriber, Named, ProcessorConfig, RequestReply,
};
use tidemill_redis::{RedisConfig, RedisPublisher, RedisSubscriber};
use tokio::sync::mpsc;

const URL: &str = "redis://127.0.0.1:6379";

async fn redis() -> Option<(RedisConfig, RedisPublisher)> {
    let config = RedisConfig::from_url(URL)
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .block_time(Duration::from_millis(50));
    match RedisPublisher::connect(config.clone()).await {
        Ok(publisher) => Some((config, publisher)),
        Err(err) => {
            eprintln!("no Redis at {URL} ({err}): skipped");
            None
        }
    }
}

fn unique() -> String {
    tidemill::new_uuid().replace('-', "")
}

/// A constructor making a Redis subscriber in the consumer group named after the handler.
fn redis_groups(
    config: &RedisConfig,
    prefix: &str,
) -> impl Fn(&str) -> tidemill::Result<LazySubscriber> + Send + Sync + 'static {
    let config = config.clone();
    let prefix = prefix.to_owned();
    move |group: &str| {
        let config = config.clone().group(format!("{prefix}.{group}"));
        Ok(LazySubscriber::new(move || {
            RedisSubscriber::connect(config.clone())
        }))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserSignedUp {
    email: String,
}
impl Named for UserSignedUp {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_event_handlers_each_get_the_event() {
    let Some((config, publisher)) = redis().await else {
        return;
    };
    let run_id = unique();
    let topics = topic::prefixed(format!("t_{run_id}."));
    let router = Router::new();
    let processor = EventProcessor::with_config(
        &router,
        redis_groups(&config, &run_id),
        ProcessorConfig::default().topic(topics.clone()),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    for name in ["welcome_email", "mailing_list"] {
        let tx = tx.clone();
        processor
            .handle(name, move |e: UserSignedUp| {
                let tx = tx.clone();
                async move {
                    tx.send((name, e.email)).unwrap();
                    HandlerResult::Ok(())
                }
            })
            .unwrap();
    }
    let run = start(&router).await;
    let bus = EventBus::with_config(publisher.clone(), BusConfig::default().topic(topics));
    bus.publish(&UserSignedUp {
        email: "ada".into(),
    })
    .await
    .unwrap();
    let mut got = vec![recv(&mut rx).await, recv(&mut rx).await];
    got.sort();
    assert_eq!(
        got,
        [
            ("mailing_list", "ada".to_owned()),
            ("welcome_email", "ada".to_owned())
        ]
    );
    stop(&router, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_keeps_employee_events_in_order() {
    let Some((config, publisher)) = redis().await else {
        return;
    };
    let run_id = unique();
    let events_topic = topic::single(format!("t_{run_id}.events"));
    let router = Router::new();
    let processor = EventGroupProcessor::with_config(
        &router,
        redis_groups(&config, &run_id),
        ProcessorConfig::default()
            .topic(events_topic.clone())
            .ack_on_unknown(true),
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
                    tokio::time::sleep(Duration::from_millis(5)).await;
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
                    done_tx.send(()).unwrap();
                    HandlerResult::Ok(())
                }
            }
        })
        .register()
        .unwrap();
    let run = start(&router).await;
    let bus = EventBus::with_config(publisher.clone(), BusConfig::default().topic(events_topic));
    for employee in 1..=3 {
        bus.publish(&EmployeeTransferred {
            employee,
            to: "sales".into(),
            version: 1,
        })
        .await
        .unwrap();
        bus.publish(&OfficeOpened {
            city: "Oslo".into(),
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
    for _ in 1..=3 {
        recv(&mut done).await;
    }
    let expected: Vec<(u64, &str)> = (1..=3)
        .flat_map(|e| [(e, "transferred"), (e, "left")])
        .collect();
    assert_eq!(*log.lock(), expected);
    stop(&router, run).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BookRoom {
    room: u32,
}
impl Named for BookRoom {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_request_reply() {
    let Some((config, publisher)) = redis().await else {
        return;
    };
    let run_id = unique();
    let topics = topic::prefixed(format!("t_{run_id}.commands."));
    let router = Router::new();
    let processor = CommandProcessor::with_config(
        &router,
        redis_groups(&config, &run_id),
        ProcessorConfig::default()
            .topic(topics.clone())
            .reply_publisher(publisher.clone()),
    );
    processor
        .handle_with_result("book_room", |c: BookRoom| async move {
            HandlerResult::Ok(format!("booked {}", c.room))
        })
        .unwrap();
    let run = start(&router).await;
    let replies = RedisSubscriber::connect(config.clone().no_group())
        .await
        .unwrap();
    let requests = RequestReply::new(
        CommandBus::with_config(publisher.clone(), BusConfig::default().topic(topics)),
        replies,
    );
    let answer: String = requests.request(&BookRoom { room: 12 }).await.unwrap();
    assert_eq!(answer, "booked 12");
    stop(&router, run).await;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ShipParcel {
    id: u64,
}
impl Named for ShipParcel {}

/// An undecodable command on Redis goes to the default dead-letter stream once, with its
/// reason, and the valid command behind it runs: no redelivery loop ahead of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_undecodable_command_is_dead_lettered_once_and_the_next_runs() {
    use futures::StreamExt;
    use tidemill::middleware::POISON_REASON_KEY;
    use tidemill::router::DEFAULT_DEAD_LETTER_TOPIC;
    use tidemill::{Message, PublisherExt, Subscriber};

    let Some((config, publisher)) = redis().await else {
        return;
    };
    let run_id = unique();
    // Reads only what is written to the shared dead-letter stream from now on.
    let dead_letters = RedisSubscriber::connect(config.clone().no_group())
        .await
        .unwrap();
    let mut dead = dead_letters
        .subscribe(DEFAULT_DEAD_LETTER_TOPIC)
        .await
        .unwrap();
    let topics = topic::prefixed(format!("t_{run_id}.commands."));
    let router = Router::new();
    let processor = CommandProcessor::with_config(
        &router,
        redis_groups(&config, &run_id),
        ProcessorConfig::default().topic(topics.clone()),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    processor
        .handle("ship", move |c: ShipParcel| {
            let tx = tx.clone();
            async move {
                tx.send(c.id).unwrap();
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let run = start(&router).await;
    let garbage_id = format!("garbage-{run_id}");
    let garbage = Message::with_id(garbage_id.clone(), "{not json")
        .with_metadata(tidemill_cqrs::NAME_KEY, "ShipParcel");
    publisher
        .publish_one(&format!("t_{run_id}.commands.ShipParcel"), garbage)
        .await
        .unwrap();
    CommandBus::with_config(publisher.clone(), BusConfig::default().topic(topics))
        .send(&ShipParcel { id: 7 })
        .await
        .unwrap();
    assert_eq!(recv(&mut rx).await, 7);
    // Other tests may dead-letter on the same stream: count only this one.
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, dead.next()).await {
        if d.message().id() == garbage_id {
            seen += 1;
            let reason = d.message().metadata().get(POISON_REASON_KEY).unwrap();
            assert!(reason.contains("ShipParcel"), "{reason}");
        }
        d.ack();
    }
    assert_eq!(seen, 1, "dead-lettered exactly once");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "the garbage never reached the handler"
    );
    stop(&router, run).await;
    dead_letters.close().await.unwrap();
}
