//! No message is ever skipped: many concurrent publishing transactions commit (or roll back) in
//! random order after random delays, while members of two groups consume; every committed row
//! is consumed exactly once per group and no rolled-back row is ever seen.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{drain_into, unique, Db};
use parking_lot::Mutex;
use rand::Rng;
use tidemill::{Message, Publisher, Subscriber};
use tidemill_sql::{Backend, SubscriberOverrides};

per_backend!(every_committed_row_is_consumed_once_per_group);

const WRITERS: usize = 16;
const TXS_PER_WRITER: usize = 20;

async fn every_committed_row_is_consumed_once_per_group(backend: Backend) {
    let db = Db::new(backend);
    let ps = db
        .pubsub_with(|c| c.max_connections(WRITERS as u32 + 8).batch_size(7))
        .await;
    let topic = unique("noskip");
    let groups = [unique("g1"), unique("g2")];

    // Consumers run all along, so they read while transactions are still open.
    let mut subscribers = Vec::new();
    let mut receivers = Vec::new();
    for group in &groups {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let sub = ps
                .subscriber_with(SubscriberOverrides::new().group(group))
                .unwrap();
            drain_into(sub.subscribe(&topic).await.unwrap(), tx.clone());
            subscribers.push(sub);
        }
        receivers.push(rx);
    }

    // On MariaDB, transactions that create a topic's sequence row at the same time can deadlock
    // (as MariaDB says, such a transaction is to be retried); creating the topic first avoids it.
    {
        use tidemill::SubscribeInitializer;
        ps.subscriber_with(SubscriberOverrides::new().group(&groups[0]))
            .unwrap()
            .initialize_topic(&topic)
            .await
            .unwrap();
    }
    let committed = Arc::new(Mutex::new(HashSet::new()));
    let rolled_back = Arc::new(Mutex::new(HashSet::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let ps = ps.clone();
        let topic = topic.clone();
        let committed = committed.clone();
        let rolled_back = rolled_back.clone();
        writers.push(tokio::spawn(async move {
            let outbox = ps.outbox();
            let publisher = ps.publisher();
            for t in 0..TXS_PER_WRITER {
                let (n, delay, commit, plain) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(1..=3),
                        Duration::from_millis(rng.random_range(0..25)),
                        rng.random_bool(0.85),
                        rng.random_bool(0.2),
                    )
                };
                let msgs: Vec<Message> = (0..n)
                    .map(|i| Message::with_id(format!("{w}-{t}-{i}"), "x"))
                    .collect();
                let ids: Vec<String> = msgs.iter().map(|m| m.id().to_owned()).collect();
                if plain {
                    // Publishes outside transactions race with the transactional ones.
                    publisher.publish(&topic, msgs).await.unwrap();
                    committed.lock().extend(ids);
                    continue;
                }
                on_pool!(ps.pool(), |pool| {
                    let mut tx = pool.begin().await.unwrap();
                    outbox.publish_in_tx(&mut tx, &topic, msgs).await.unwrap();
                    tokio::time::sleep(delay).await;
                    if commit {
                        tx.commit().await.unwrap();
                        committed.lock().extend(ids);
                    } else {
                        tx.rollback().await.unwrap();
                        rolled_back.lock().extend(ids);
                    }
                });
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let committed = committed.lock().clone();
    let rolled_back = rolled_back.lock().clone();
    assert!(!committed.is_empty());

    for (group, rx) in groups.iter().zip(receivers.iter_mut()) {
        let mut seen = HashSet::new();
        while seen.len() < committed.len() {
            let id = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "group {group}: {} of {} rows consumed; missing e.g. {:?}",
                        seen.len(),
                        committed.len(),
                        committed.difference(&seen).take(5).collect::<Vec<_>>()
                    )
                })
                .unwrap();
            assert!(!rolled_back.contains(&id), "rolled-back row {id} delivered");
            assert!(
                seen.insert(id.clone()),
                "group {group}: {id} consumed twice"
            );
        }
        assert_eq!(seen, committed);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for rx in &mut receivers {
        assert!(rx.try_recv().is_err(), "a row was consumed twice");
    }
    for s in subscribers {
        s.close().await.unwrap();
    }
}
