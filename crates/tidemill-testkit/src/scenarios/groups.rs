//! Many subscribers: consumer groups, subscribers that come and go, cancelled subscriptions.

use std::sync::Arc;
use std::time::Duration;

use super::{check, claims, run};
use crate::helpers::{
    self, ack_everything, spawn_consumer, Decision, Expected, Next, Tally, Tasks,
};
use crate::TestTarget;

/// 5,000 messages from 50 concurrent publishing tasks, consumed by 50 subscribers. With consumer
/// groups the subscribers share one group and every message is acked at least once (exactly once
/// where claimed); without, every subscriber gets every message.
pub async fn concurrent_publishers_and_subscribers(target: Arc<dyn TestTarget>) {
    const NAME: &str = "concurrent_publishers_and_subscribers";
    run(target, NAME, Duration::from_secs(120), |ctx| async move {
        let n = ctx.count(5_000);
        let (publishers, subscribers) = (50, 50);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(n);
        let grouped = ctx.features.consumer_groups;
        let shared = Tally::new();
        let mut tallies = Vec::new();
        let mut consumers = Tasks::default();
        for i in 0..subscribers {
            ctx.stage(format!(
                "subscribing subscriber {} of {subscribers} to {topic}",
                i + 1
            ));
            let subscriber = ctx.member(&group).await;
            let subscription = ctx.subscribe(&*subscriber, &topic).await;
            let tally = if grouped {
                shared.clone()
            } else {
                Tally::new()
            };
            consumers.append(spawn_consumer(
                subscription,
                tally.clone(),
                i,
                ack_everything(),
            ));
            if !grouped {
                tallies.push(tally);
            }
        }
        if grouped {
            tallies.push(shared);
        }
        let publisher = ctx.publisher().await;
        ctx.stage(format!("publishing {n} messages from {publishers} tasks"));
        helpers::step(
            format!("{NAME}: publishing from {publishers} tasks"),
            helpers::scaled(Duration::from_secs(90)),
            helpers::publish_from_tasks(&[publisher], &topic, expected.messages(), publishers, 10),
        )
        .await;
        for (i, tally) in tallies.iter().enumerate() {
            let who = if grouped {
                format!("group of {subscribers}")
            } else {
                format!("subscriber {i}")
            };
            ctx.stage(format!("waiting for {n} messages ({who})"));
            let result = tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(60)))
                .await;
            check(&format!("{NAME}: {who}"), result);
            check(
                &format!("{NAME}: {who}"),
                tally.verify(&expected, ctx.exactly_once()),
            );
        }
    })
    .await
}

/// 1,000 messages read in batches of 100 by one subscriber after another: each acks a batch,
/// closes, and the next one (same group, or persistent) continues. Every message is acked at
/// least once. Needs `consumer_groups` or `persistent`.
pub async fn continue_after_subscriber_close(target: Arc<dyn TestTarget>) {
    const NAME: &str = "continue_after_subscriber_close";
    let f = target.features();
    if !claims(
        f.consumer_groups || f.persistent,
        "consumer_groups or persistent",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(180), |ctx| async move {
        let total = ctx.count(1_000);
        let batch = (total / 10).max(1);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(total);
        let tally = Tally::new();

        ctx.stage(format!("subscribing the first subscriber to {topic}"));
        let mut subscriber = ctx.member(&group).await;
        let mut subscription = Some(ctx.subscribe(&*subscriber, &topic).await);

        let publisher = ctx.publisher().await;
        let mut publishing = Tasks::default();
        {
            let (topic, messages) = (topic.clone(), expected.messages().to_vec());
            publishing.spawn(async move {
                if let Err(err) = helpers::publish_batches(&*publisher, &topic, &messages, 50).await
                {
                    panic!("{NAME}: publishing to {topic} failed: {err}");
                }
            });
        }

        let max_rounds = 3 * total.div_ceil(batch) + 10;
        let mut round = 0;
        while tally.acked_ids() < total {
            round += 1;
            if round > max_rounds {
                check(NAME, tally.verify(&expected, false));
                panic!(
                    "{NAME}: no end after {max_rounds} subscribers [{}]",
                    tally.summary()
                );
            }
            let mut current = match subscription.take() {
                Some(s) => s,
                None => {
                    ctx.stage(format!("subscribing subscriber {round}"));
                    subscriber = ctx.member(&group).await;
                    ctx.subscribe(&*subscriber, &topic).await
                }
            };
            ctx.stage(format!(
                "subscriber {round} reading a batch of {batch} ({} of {total} acked so far)",
                tally.acked_ids()
            ));
            let mut fresh = 0;
            let patience = helpers::scaled(Duration::from_secs(10));
            while fresh < batch && tally.acked_ids() < total {
                match helpers::next_delivery(&mut current, patience).await {
                    Next::Delivery(d) => {
                        tally.on_delivery(round, d.message());
                        if tally.acks_of(d.message().id()) == 0 {
                            fresh += 1;
                        }
                        helpers::settle(d, Decision::Ack, &tally);
                    }
                    Next::Error(err) => tally.on_error(round, &err),
                    Next::Ended => panic!(
                        "{NAME}: the stream of subscriber {round} ended before it was closed [{}]",
                        tally.summary()
                    ),
                    Next::TimedOut => {
                        let lost = tally.verify(&expected, false).err().unwrap_or_default();
                        panic!(
                            "{NAME}: subscriber {round} got nothing new for {patience:?} after \
                             {fresh} messages of its batch; {lost}"
                        );
                    }
                }
            }
            ctx.stage(format!("closing subscriber {round}"));
            drop(current);
            ctx.close_subscriber(&*subscriber).await;
        }
        ctx.stage("waiting for the publisher");
        publishing.join().await;
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
        println!("{NAME}: {round} subscribers read {total} messages");
    })
    .await
}

/// Subscribers of one group are created, subscribe, read a little and close (or just drop their
/// subscription, with deliveries still unsettled) from ten tasks at once while 1,000 messages
/// are published; then a last subscriber of the group gets the rest. Every message is acked at
/// least once (exactly once where claimed). Needs `consumer_groups` or `persistent`.
pub async fn concurrent_subscribe_and_close(target: Arc<dyn TestTarget>) {
    const NAME: &str = "concurrent_subscribe_and_close";
    let f = target.features();
    if !claims(
        f.consumer_groups || f.persistent,
        "consumer_groups or persistent",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(180), |ctx| async move {
        let total = ctx.count(1_000);
        let (churners, cycles) = (10, 5);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(total);
        let tally = Tally::new();

        ctx.stage(format!("subscribing the first member to {topic}"));
        let first = ctx.member(&group).await;
        drop(ctx.subscribe(&*first, &topic).await);

        let publisher = ctx.publisher().await;
        let mut publishing = Tasks::default();
        {
            let (topic, messages) = (topic.clone(), expected.messages().to_vec());
            publishing.spawn(async move {
                for chunk in messages.chunks(10) {
                    if let Err(err) = publisher.publish(&topic, chunk.to_vec()).await {
                        panic!("{NAME}: publishing to {topic} failed: {err}");
                    }
                    tokio::task::yield_now().await;
                }
            });
        }

        ctx.stage(format!(
            "{churners} tasks subscribing and closing {cycles} times each"
        ));
        let mut churn = Tasks::default();
        for task in 0..churners {
            let (ctx, tally, topic, group) =
                (ctx.clone(), tally.clone(), topic.clone(), group.clone());
            churn.spawn(async move {
                for cycle in 0..cycles {
                    let consumer = 1 + task * cycles + cycle;
                    let subscriber = ctx.member(&group).await;
                    let mut subscription = ctx.subscribe(&*subscriber, &topic).await;
                    let mut held = Vec::new();
                    for _ in 0..rand::random_range(0..20) {
                        match helpers::next_delivery(&mut subscription, Duration::from_millis(50))
                            .await
                        {
                            Next::Delivery(d) => {
                                tally.on_delivery(consumer, d.message());
                                if cycle % 2 == 1 && held.is_empty() {
                                    held.push(d);
                                } else {
                                    helpers::settle(d, Decision::Ack, &tally);
                                }
                            }
                            Next::Error(err) => tally.on_error(consumer, &err),
                            Next::Ended | Next::TimedOut => break,
                        }
                    }
                    drop(subscription);
                    for d in held {
                        // Unsettled when its subscription went away: a nack.
                        tally.on_reject(d.message().id());
                        drop(d);
                    }
                    if cycle % 2 == 0 {
                        ctx.close_subscriber(&*subscriber).await;
                    }
                }
            });
        }
        churn.join().await;
        ctx.stage("waiting for the publisher");
        publishing.join().await;

        ctx.stage(format!(
            "a last subscriber reading the rest ({} of {total} acked by the others)",
            tally.acked_ids()
        ));
        let last = ctx.member(&group).await;
        let subscription = ctx.subscribe(&*last, &topic).await;
        let _consumer = spawn_consumer(subscription, tally.clone(), 0, ack_everything());
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(60)))
                .await,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
    })
    .await
}

/// Closing a subscriber ends its subscription's stream; with consumer groups, deliveries a
/// subscription held unsettled when it was dropped (cancelled) come back to the next subscriber
/// of the group.
pub async fn cancelled_subscription_ends_and_returns_deliveries(target: Arc<dyn TestTarget>) {
    const NAME: &str = "cancelled_subscription_ends_and_returns_deliveries";
    run(target, NAME, Duration::from_secs(90), |ctx| async move {
        let wait = helpers::scaled(Duration::from_secs(10));
        let publisher = ctx.publisher().await;

        // Closing the subscriber ends the stream.
        let topic = helpers::topic_name();
        let subscriber = ctx.member(&helpers::group_name()).await;
        ctx.stage(format!("subscribing to {topic}"));
        let mut subscription = ctx.subscribe(&*subscriber, &topic).await;
        let expected = Expected::numbered(3);
        ctx.publish(&*publisher, &topic, expected.messages(), 3)
            .await;
        ctx.stage("receiving a first message");
        match helpers::next_delivery(&mut subscription, wait).await {
            Next::Delivery(d) => d.ack(),
            other => panic!("{NAME}: expected a delivery on {topic}, got {other:?}"),
        }
        ctx.close_subscriber(&*subscriber).await;
        ctx.stage("waiting for the stream to end after closing its subscriber");
        loop {
            match helpers::next_delivery(&mut subscription, wait).await {
                Next::Ended => break,
                Next::Delivery(d) => drop(d),
                Next::Error(_) => {}
                Next::TimedOut => panic!(
                    "{NAME}: the subscription's stream did not end within {wait:?} after its \
                     subscriber was closed"
                ),
            }
        }

        if !ctx.features.consumer_groups {
            println!(
                "{NAME}: returning held deliveries to the group skipped: needs consumer_groups"
            );
            return;
        }
        // Deliveries held by a cancelled subscription come back to the group.
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(10);
        let first = ctx.subscriber(Some(&group)).await;
        ctx.stage(format!("subscribing the first member to {topic}"));
        let mut subscription = ctx.subscribe(&*first, &topic).await;
        ctx.publish(&*publisher, &topic, expected.messages(), 5)
            .await;
        ctx.stage("holding deliveries unsettled");
        let mut held = Vec::new();
        while held.len() < 3 {
            let limit = if held.is_empty() {
                wait
            } else {
                Duration::from_millis(300)
            };
            match helpers::next_delivery(&mut subscription, limit).await {
                Next::Delivery(d) => held.push(d),
                Next::Error(_) => {}
                Next::Ended => panic!("{NAME}: the stream ended while nothing closed it"),
                Next::TimedOut if held.is_empty() => {
                    panic!("{NAME}: nothing arrived on {topic} within {wait:?}")
                }
                Next::TimedOut => break,
            }
        }
        let held_ids: Vec<String> = held
            .iter()
            .map(|d| expected.describe(d.message().id()))
            .collect();
        drop(subscription);
        drop(held);
        ctx.stage(format!(
            "a second member waiting for all 10 messages, including {} held by the cancelled one",
            held_ids.join(", ")
        ));
        let second = ctx.subscriber(Some(&group)).await;
        let subscription = ctx.subscribe(&*second, &topic).await;
        let tally = Tally::new();
        let _consumer = spawn_consumer(subscription, tally.clone(), 1, ack_everything());
        let result = tally.wait_all_acked(&expected, wait * 3).await;
        check(
            &format!(
                "{NAME}: after cancelling a subscription holding {}",
                held_ids.join(", ")
            ),
            result,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
    })
    .await
}

/// Two consumer groups of two subscribers each: both groups get all 50 messages. Needs
/// `consumer_groups`.
pub async fn consumer_groups_each_get_all(target: Arc<dyn TestTarget>) {
    const NAME: &str = "consumer_groups_each_get_all";
    if !claims(target.features().consumer_groups, "consumer_groups") {
        return;
    }
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let topic = helpers::topic_name();
        let expected = Expected::numbered(ctx.count(50).max(10));
        let mut consumers = Tasks::default();
        let mut tallies = Vec::new();
        for g in 0..2 {
            let group = helpers::group_name();
            let tally = Tally::new();
            for member in 0..2 {
                ctx.stage(format!("subscribing member {member} of group {group}"));
                let subscriber = ctx.subscriber(Some(&group)).await;
                let subscription = ctx.subscribe(&*subscriber, &topic).await;
                consumers.append(spawn_consumer(
                    subscription,
                    tally.clone(),
                    g * 2 + member,
                    ack_everything(),
                ));
            }
            tallies.push((group, tally));
        }
        let publisher = ctx.publisher().await;
        ctx.stage(format!("publishing {} messages to {topic}", expected.len()));
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;
        for (group, tally) in &tallies {
            ctx.stage(format!("waiting for group {group}"));
            let result = tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(30)))
                .await;
            check(&format!("{NAME}: group {group}"), result);
            check(
                &format!("{NAME}: group {group}"),
                tally.verify(&expected, ctx.exactly_once()),
            );
        }
    })
    .await
}
