//! Acks and nacks: what comes back, what never does, and what it costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{check, claims, must_next, run};
use crate::helpers::{self, spawn_consumer, Decision, Expected, Next, Policy, Tally, Tasks};
use crate::TestTarget;

/// The first two deliveries are nacked, everything else acked: all 100 messages end up acked,
/// the nacked ones after coming back.
pub async fn nacked_messages_come_back(target: Arc<dyn TestTarget>) {
    const NAME: &str = "nacked_messages_come_back";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(100).max(10));
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let subscription = ctx.subscribe(&*subscriber, &topic).await;
        let seen = AtomicUsize::new(0);
        let policy: Policy = Arc::new(move |_, _| {
            if seen.fetch_add(1, Ordering::Relaxed) < 2 {
                Decision::Nack
            } else {
                Decision::Ack
            }
        });
        let tally = Tally::new();
        let _consumer = spawn_consumer(subscription, tally.clone(), 0, policy);
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;
        ctx.stage(format!(
            "waiting for {} messages, two of them nacked once",
            expected.len()
        ));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(30)))
                .await,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
        for msg in tally.received(None).iter().take(2) {
            let n = tally.deliveries_of(msg.id());
            assert!(
                n >= 2,
                "{NAME}: {} was nacked but delivered only {n}x",
                expected.describe(msg.id())
            );
        }
    })
    .await
}

/// While the first message is held unsettled nothing else arrives (500 ms); a nacked message
/// comes back before the next one; then the rest arrive in publish order. Needs
/// `guaranteed_order`.
pub async fn no_next_message_while_one_is_unacked(target: Arc<dyn TestTarget>) {
    const NAME: &str = "no_next_message_while_one_is_unacked";
    if !claims(target.features().guaranteed_order, "guaranteed_order") {
        return;
    }
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let wait = helpers::scaled(Duration::from_secs(10));
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(20).max(3));
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let mut subscription = ctx.subscribe(&*subscriber, &topic).await;
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 5)
            .await;

        ctx.stage("receiving the first message");
        let first = must_next(NAME, &mut subscription, wait, "the first message").await;
        assert_eq!(
            first.message().id(),
            expected.messages()[0].id(),
            "{NAME}: the first delivery is {}, not #0",
            expected.describe(first.message().id())
        );
        ctx.stage("holding #0 unacked for 500 ms");
        if let Some(d) = helpers::expect_quiet(&mut subscription, Duration::from_millis(500)).await
        {
            panic!(
                "{NAME}: {} arrived while #0 was held unacked",
                expected.describe(d.message().id())
            );
        }
        first.ack();

        ctx.stage("nacking #1");
        let second = must_next(NAME, &mut subscription, wait, "#1").await;
        assert_eq!(
            second.message().id(),
            expected.messages()[1].id(),
            "{NAME}: after acking #0 came {}, not #1",
            expected.describe(second.message().id())
        );
        second.nack();
        for (i, msg) in expected.messages().iter().enumerate().skip(1) {
            ctx.stage(format!("waiting for #{i} in order"));
            let d = must_next(NAME, &mut subscription, wait, &format!("#{i}")).await;
            assert_eq!(
                d.message().id(),
                msg.id(),
                "{NAME}: expected #{i}{} next, got {}",
                if i == 1 {
                    " (nacked, so it comes back first)"
                } else {
                    ""
                },
                expected.describe(d.message().id())
            );
            d.ack();
        }
    })
    .await
}

/// Every message is rejected three times (a nack, a nack without delay, a drop) before it is
/// acked: all 100 end up acked.
pub async fn continue_after_many_nacks(target: Arc<dyn TestTarget>) {
    const NAME: &str = "continue_after_many_nacks";
    run(target, NAME, Duration::from_secs(120), |ctx| async move {
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(100).max(10));
        let policy: Policy = Arc::new(|_, n| match n {
            1 => Decision::Nack,
            2 => Decision::NackAfter(Duration::ZERO),
            3 => Decision::Drop,
            _ => Decision::Ack,
        });
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
                policy.clone(),
            ));
        }
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;
        ctx.stage(format!(
            "waiting for {} messages rejected 3 times each",
            expected.len()
        ));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(90)))
                .await,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
    })
    .await
}

/// Acked messages are never delivered again and nacked ones are: one in ten is nacked once, the
/// rest acked; nothing acked comes back within 500 ms, and with consumer groups, once that
/// subscriber is closed, a new subscriber of the group gets nothing old (but does get a message
/// published afterwards).
pub async fn settlement_ends_a_message_lifetime(target: Arc<dyn TestTarget>) {
    const NAME: &str = "settlement_ends_a_message_lifetime";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let wait = helpers::scaled(Duration::from_secs(10));
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(100).max(10));
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let subscription = ctx.subscribe(&*subscriber, &topic).await;
        let policy: Policy = Arc::new(|msg, n| {
            if n == 1 && helpers::seq_of(msg).is_some_and(|s| s % 10 == 3) {
                Decision::Nack
            } else {
                Decision::Ack
            }
        });
        let tally = Tally::new();
        let consumer = spawn_consumer(subscription, tally.clone(), 0, policy);
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;
        ctx.stage(format!("waiting for {} messages", expected.len()));
        check(NAME, tally.wait_all_acked(&expected, wait * 3).await);
        ctx.stage("watching for redeliveries of acked messages for 500 ms");
        tokio::time::sleep(Duration::from_millis(500)).await;
        check(NAME, tally.verify_none_after_ack(&expected));
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
        for msg in expected
            .messages()
            .iter()
            .filter(|m| helpers::seq_of(m).is_some_and(|s| s % 10 == 3))
        {
            let n = tally.deliveries_of(msg.id());
            assert!(
                n >= 2,
                "{NAME}: {} was nacked but delivered only {n}x",
                expected.describe(msg.id())
            );
        }
        if !ctx.features.consumer_groups {
            return;
        }
        // Closing waits for settlements still on their way to the broker.
        consumer.abort().await;
        ctx.close_subscriber(&*subscriber).await;
        ctx.stage("a new subscriber of the group watching for old messages for 500 ms");
        let next = ctx.subscriber(Some(&group)).await;
        let mut subscription = ctx.subscribe(&*next, &topic).await;
        if let Some(d) = helpers::expect_quiet(&mut subscription, Duration::from_millis(500)).await
        {
            panic!(
                "{NAME}: a new subscriber of the group got {} again after it was acked",
                expected.describe(d.message().id())
            );
        }
        let probe = helpers::test_message(expected.len());
        ctx.publish(&*publisher, &topic, std::slice::from_ref(&probe), 1)
            .await;
        ctx.stage("the new subscriber waiting for a message published after it subscribed");
        match helpers::next_delivery(&mut subscription, wait).await {
            Next::Delivery(d) if d.message().id() == probe.id() => d.ack(),
            Next::Delivery(d) => panic!(
                "{NAME}: a new subscriber of the group got {} again after it was acked",
                expected.describe(d.message().id())
            ),
            other => panic!(
                "{NAME}: the new subscriber of the group got {other:?} instead of a new message"
            ),
        }
    })
    .await
}

/// A subscriber nacks the same message over and over for 2 s: the process uses well under a
/// core meanwhile (less than 30 % of the wall time in CPU time) and the message keeps coming
/// back. The CPU bound is checked when each test runs in a process of its own (cargo-nextest);
/// elsewhere other tests' work would be counted, and only the redeliveries are checked.
pub async fn nack_loop_does_not_spin(target: Arc<dyn TestTarget>) {
    const NAME: &str = "nack_loop_does_not_spin";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let wait = helpers::scaled(Duration::from_secs(10));
        let window = Duration::from_secs(2);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let mut subscription = ctx.subscribe(&*subscriber, &topic).await;
        let publisher = ctx.publisher().await;
        let msg = helpers::test_message(0);
        ctx.publish(&*publisher, &topic, std::slice::from_ref(&msg), 1)
            .await;
        ctx.stage("receiving the message");
        match helpers::next_delivery(&mut subscription, wait).await {
            Next::Delivery(d) => d.nack(),
            other => panic!("{NAME}: expected the message, got {other:?}"),
        }

        ctx.stage("nacking the message over and over for 2 s");
        let cpu_before = helpers::process_cpu_time();
        let start = Instant::now();
        let mut redeliveries = 0u32;
        while start.elapsed() < window {
            match helpers::next_delivery(&mut subscription, window.saturating_sub(start.elapsed()))
                .await
            {
                Next::Delivery(d) => {
                    assert_eq!(
                        d.message().id(),
                        msg.id(),
                        "{NAME}: a foreign message arrived"
                    );
                    redeliveries += 1;
                    d.nack();
                }
                Next::Error(_) | Next::TimedOut => {}
                Next::Ended => panic!("{NAME}: the stream ended while nothing closed it"),
            }
        }
        let wall = start.elapsed();
        let cpu = cpu_before
            .zip(helpers::process_cpu_time())
            .map(|(before, after)| after.saturating_sub(before));

        ctx.stage(format!(
            "waiting for the message to come back ({redeliveries} times so far)"
        ));
        let mut last = None;
        while redeliveries < 2 || last.is_none() {
            match helpers::next_delivery(&mut subscription, wait).await {
                Next::Delivery(d) => {
                    redeliveries += 1;
                    if redeliveries >= 2 {
                        last = Some(d);
                    } else {
                        d.nack();
                    }
                }
                Next::Error(_) => {}
                other => panic!(
                    "{NAME}: the nacked message stopped coming back after {redeliveries} \
                     redeliveries: {other:?}"
                ),
            }
        }
        if let Some(d) = last {
            d.ack();
        }

        let isolated = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
        match cpu {
            Some(cpu) if isolated => {
                let share = cpu.as_secs_f64() / wall.as_secs_f64();
                println!(
                    "{NAME}: {redeliveries} redeliveries, {cpu:?} CPU in {wall:?} ({:.1} %)",
                    share * 100.0
                );
                assert!(
                    share < 0.30,
                    "{NAME}: nacking one message over and over used {cpu:?} of CPU time in \
                     {wall:?} ({:.0} % of a core): the redelivery loop spins",
                    share * 100.0
                );
            }
            _ => println!(
                "{NAME}: {redeliveries} redeliveries; CPU time not checked (needs a process per \
                 test, as cargo-nextest runs them)"
            ),
        }
    })
    .await
}

/// Every delivery is settled exactly once. Settling consumes the delivery, so settling twice
/// does not compile:
///
/// ```compile_fail
/// fn twice(delivery: tidemill::Delivery) {
///     delivery.ack();
///     delivery.ack();
/// }
/// ```
///
/// At run time, 200 messages are settled at random (acked, nacked, nacked without delay or
/// dropped unsettled) until each is acked: at the end every id was acked, and no acked id was
/// delivered again.
pub async fn every_delivery_settled_once(target: Arc<dyn TestTarget>) {
    const NAME: &str = "every_delivery_settled_once";
    run(target, NAME, Duration::from_secs(90), |ctx| async move {
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(200).max(20));
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let subscription = ctx.subscribe(&*subscriber, &topic).await;
        let tally = Tally::new();
        let _consumer = spawn_consumer(subscription, tally.clone(), 0, random_settlement(35));
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;
        ctx.stage(format!(
            "settling {} messages at random until all are acked",
            expected.len()
        ));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(60)))
                .await,
        );
        ctx.stage("watching for redeliveries of acked messages for 300 ms");
        tokio::time::sleep(Duration::from_millis(300)).await;
        check(NAME, tally.verify_none_after_ack(&expected));
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
    })
    .await
}

/// A policy that rejects `percent` % of deliveries (nack, nack without delay or drop) and acks
/// the rest.
fn random_settlement(percent: u32) -> Policy {
    Arc::new(move |_, _| {
        let roll = rand::random_range(0..100u32);
        if roll >= percent {
            Decision::Ack
        } else if roll % 3 == 0 {
            Decision::Nack
        } else if roll % 3 == 1 {
            Decision::NackAfter(Duration::ZERO)
        } else {
            Decision::Drop
        }
    })
}

/// 1,000 messages consumed by four subscribers of a group (one without groups) that reject a
/// fifth of the deliveries at random: every id is acked exactly once and never delivered after
/// its ack. Needs `exactly_once`.
pub async fn exactly_once_across_nacks(target: Arc<dyn TestTarget>) {
    const NAME: &str = "exactly_once_across_nacks";
    if !claims(target.features().exactly_once, "exactly_once") {
        return;
    }
    run(target, NAME, Duration::from_secs(120), |ctx| async move {
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(ctx.count(1_000));
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
                random_settlement(20),
            ));
        }
        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 20)
            .await;
        ctx.stage(format!("waiting for {} messages", expected.len()));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(90)))
                .await,
        );
        ctx.stage("watching for redeliveries of acked messages for 300 ms");
        tokio::time::sleep(Duration::from_millis(300)).await;
        check(NAME, tally.verify(&expected, true));
    })
    .await
}
