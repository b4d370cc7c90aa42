//! Surviving the broker going away.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{check, claims, run};
use crate::helpers::{self, ack_everything, spawn_consumer, Expected, Tally, Tasks};
use crate::TestTarget;

/// 10,000 messages published from ten tasks while a group (or a persistent subscriber) consumes
/// them; once a third is published the broker is restarted with the target's
/// [`RestartFn`](crate::RestartFn). Publishers publish again whatever returned an error
/// (at-least-once publishing). Every id is acked at least once (exactly once where claimed, except
/// for ids whose publish call failed and was made again: the failed call may have been stored), and
/// no subscription's stream ends: subscribers reconnect by themselves. Needs `restart_broker`,
/// and `consumer_groups` or `persistent`.
///
/// It stops a broker other tests may be using: run it on its own (its name contains
/// `broker_restart`, for filtering).
pub async fn broker_restart_loses_nothing(target: Arc<dyn TestTarget>) {
    const NAME: &str = "broker_restart_loses_nothing";
    let f = target.features();
    let Some(restart) = f.restart_broker.clone() else {
        println!("skipped: needs restart_broker");
        return;
    };
    if !claims(
        f.consumer_groups || f.persistent,
        "consumer_groups or persistent",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(300), |ctx| async move {
        let n = ctx.count(10_000);
        let tasks = 10;
        let batch = 10;
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(n);
        let tally = Tally::new();
        let members = if ctx.features.consumer_groups { 4 } else { 1 };
        let mut consumers = Tasks::default();
        for i in 0..members {
            ctx.stage(format!(
                "subscribing member {} of {members} to {topic}",
                i + 1
            ));
            let subscriber = ctx.member(&group).await;
            let subscription = ctx.subscribe(&*subscriber, &topic).await;
            consumers.append(spawn_consumer(
                subscription,
                tally.clone(),
                i,
                ack_everything(),
            ));
        }
        let publisher = ctx.publisher().await;

        let published = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicU32::new(0));
        // Ids whose publish call failed and was made again: they may be stored twice.
        let published_again = Arc::new(Mutex::new(HashSet::<Arc<str>>::new()));
        let (restarting_tx, restarting) = tokio::sync::watch::channel(false);
        let third = n / 3;
        ctx.stage(format!("publishing the first third of {n} messages"));
        let mut publishing = Tasks::default();
        for chunk in expected.messages().chunks(n.div_ceil(tasks)) {
            let (publisher, topic, chunk) = (publisher.clone(), topic.clone(), chunk.to_vec());
            let (published, failures) = (published.clone(), failures.clone());
            let published_again = published_again.clone();
            let mut restarting = restarting.clone();
            publishing.spawn(async move {
                for messages in chunk.chunks(batch) {
                    if published.load(Ordering::Acquire) >= third {
                        // The rest goes out once the restart has begun, so it meets the outage.
                        let _ = restarting.wait_for(|r| *r).await;
                    }
                    let first = messages[0].id().to_owned();
                    match helpers::publish_retrying(
                        &*publisher,
                        &topic,
                        messages.to_vec(),
                        Duration::from_millis(100),
                        helpers::scaled(Duration::from_secs(120)),
                    )
                    .await
                    {
                        Ok(failed) => {
                            failures.fetch_add(failed, Ordering::Relaxed);
                            if failed > 0 {
                                published_again
                                    .lock()
                                    .extend(messages.iter().map(|m| Arc::<str>::from(m.id())));
                            }
                        }
                        Err(err) => panic!(
                            "{NAME}: publishing the batch starting with {first} still failed \
                             after retrying for 120 s: {err}"
                        ),
                    }
                    published.fetch_add(messages.len(), Ordering::AcqRel);
                }
            });
        }

        while published.load(Ordering::Acquire) < third {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ctx.stage(format!(
            "restarting the broker ({} published, {} acked)",
            published.load(Ordering::Acquire),
            tally.acked_ids()
        ));
        let _ = restarting_tx.send(true);
        let began = Instant::now();
        if let Err(err) = restart().await {
            panic!("{NAME}: restarting the broker failed: {err}");
        }
        let restart_took = began.elapsed();

        ctx.stage("publishing the rest after the restart");
        publishing.join().await;
        ctx.stage(format!("waiting for {n} messages after the restart"));
        let result = tally
            .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(120)))
            .await;
        check(NAME, result);
        let published_again = published_again.lock().clone();
        check(
            NAME,
            tally.verify_exempting(&expected, ctx.exactly_once(), &published_again),
        );
        let ended = tally.ended();
        assert!(
            ended.is_empty(),
            "{NAME}: the streams of consumers {ended:?} ended during the restart; subscriptions \
             must survive it"
        );
        println!(
            "{NAME}: restart took {restart_took:?}; {} failed publish calls retried; {} \
             deliveries beyond one per message [{}]",
            failures.load(Ordering::Relaxed),
            tally.deliveries().saturating_sub(n),
            tally.summary()
        );
    })
    .await
}
