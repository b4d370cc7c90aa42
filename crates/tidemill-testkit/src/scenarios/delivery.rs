//! What arrives where: content, counts, topics, order, many publishers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidemill::Message;

use super::{check, claims, run};
use crate::helpers::{
    self, ack_everything, binary_message, keyed_message, spawn_consumer, test_message, Decision,
    Expected, Policy, Tally, Tasks, KEY_KEY,
};
use crate::TestTarget;

/// Publishes 100 messages (every tenth with a binary payload) and receives them with payload,
/// metadata and id intact; in publish order where the target claims order. With
/// `new_subscriber_receives_old_messages` it publishes first and subscribes afterwards,
/// otherwise it subscribes first.
pub async fn publish_subscribe(target: Arc<dyn TestTarget>) {
    const NAME: &str = "publish_subscribe";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let n = ctx.count(100);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::new(
            (0..n)
                .map(|i| {
                    if i % 10 == 9 {
                        binary_message(i)
                    } else {
                        test_message(i)
                    }
                })
                .collect(),
        );
        let publisher = ctx.publisher().await;
        let subscriber = ctx.member(&group).await;
        let subscription = if ctx.features.new_subscriber_receives_old_messages {
            ctx.stage(format!(
                "publishing {n} messages to {topic} before subscribing"
            ));
            ctx.publish(&*publisher, &topic, expected.messages(), 10)
                .await;
            ctx.stage(format!("subscribing to {topic} after publishing"));
            ctx.subscribe(&*subscriber, &topic).await
        } else {
            ctx.stage(format!("subscribing to {topic}"));
            let subscription = ctx.subscribe(&*subscriber, &topic).await;
            ctx.stage(format!("publishing {n} messages to {topic}"));
            ctx.publish(&*publisher, &topic, expected.messages(), 10)
                .await;
            subscription
        };
        let tally = Tally::new();
        let _consumer = spawn_consumer(subscription, tally.clone(), 0, ack_everything());
        ctx.stage(format!("waiting for {n} messages on {topic}"));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(30)))
                .await,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
        let received = tally.received(None);
        for msg in &received {
            check(NAME, expected.check_content(msg));
        }
        if ctx.features.guaranteed_order || ctx.features.guaranteed_order_with_single_subscriber {
            check(NAME, verify_order(&expected, &received));
        }
    })
    .await
}

/// Checks that the first deliveries of the ids in `received` follow the order of `expected`.
fn verify_order(expected: &Expected, received: &[Message]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    let mut last: Option<usize> = None;
    let mut out_of_order = Vec::new();
    for msg in received {
        if !seen.insert(msg.shared_id()) {
            continue;
        }
        let Some(pos) = expected.position(msg.id()) else {
            continue;
        };
        if let Some(prev) = last {
            if pos < prev {
                out_of_order.push(format!("#{pos} arrived after #{prev}"));
            }
        }
        last = Some(last.map_or(pos, |l| l.max(pos)));
    }
    if out_of_order.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} messages out of publish order although order is claimed: {}",
        out_of_order.len(),
        out_of_order
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Twenty topics with 100 messages each, published and consumed concurrently through one
/// subscriber: every topic gets exactly its own messages.
pub async fn many_topics_concurrently(target: Arc<dyn TestTarget>) {
    const NAME: &str = "many_topics_concurrently";
    run(target, NAME, Duration::from_secs(90), |ctx| async move {
        let topics = 20;
        let n = ctx.count(100);
        let group = helpers::group_name();
        let publisher = ctx.publisher().await;
        let subscriber = ctx.member(&group).await;
        let mut consumers = Tasks::default();
        let mut per_topic = Vec::new();
        for i in 0..topics {
            let topic = helpers::topic_name();
            ctx.stage(format!("subscribing to topic {} of {topics}", i + 1));
            let subscription = ctx.subscribe(&*subscriber, &topic).await;
            let tally = Tally::new();
            consumers.append(spawn_consumer(
                subscription,
                tally.clone(),
                i,
                ack_everything(),
            ));
            per_topic.push((topic, Expected::numbered(n), tally));
        }
        ctx.stage(format!(
            "publishing {n} messages to each of {topics} topics at once"
        ));
        let mut publishing = Tasks::default();
        for (topic, expected, _) in &per_topic {
            let (publisher, topic, messages) = (
                publisher.clone(),
                topic.clone(),
                expected.messages().to_vec(),
            );
            publishing.spawn(async move {
                if let Err(err) = helpers::publish_batches(&*publisher, &topic, &messages, 10).await
                {
                    panic!("{NAME}: publishing to {topic} failed: {err}");
                }
            });
        }
        publishing.join().await;
        for (i, (topic, expected, tally)) in per_topic.iter().enumerate() {
            ctx.stage(format!(
                "waiting for the messages of topic {} ({topic})",
                i + 1
            ));
            let result = tally
                .wait_all_acked(expected, helpers::scaled(Duration::from_secs(30)))
                .await;
            check(&format!("{NAME}: topic {topic}"), result);
        }
        for (topic, expected, tally) in &per_topic {
            check(
                &format!("{NAME}: topic {topic}"),
                tally.verify(expected, ctx.exactly_once()),
            );
        }
    })
    .await
}

/// Sixteen keys, 100 messages each, published concurrently (each key's messages in order) and
/// consumed by a single subscriber that nacks one delivery in twenty: within every key the
/// messages are processed (acked) in publish order, the nacked ones coming back in their place.
/// Needs `guaranteed_order` or `guaranteed_order_with_single_subscriber`.
pub async fn order_per_key(target: Arc<dyn TestTarget>) {
    const NAME: &str = "order_per_key";
    let f = target.features();
    if !claims(
        f.guaranteed_order || f.guaranteed_order_with_single_subscriber,
        "guaranteed_order or guaranteed_order_with_single_subscriber",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(90), |ctx| async move {
        let keys = 16;
        let per_key = ctx.count(100);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let by_key: Vec<(String, Vec<Message>)> = (0..keys)
            .map(|k| {
                let key = format!("key-{k}");
                let msgs = (0..per_key).map(|i| keyed_message(&key, i)).collect();
                (key, msgs)
            })
            .collect();
        let expected = Expected::new(by_key.iter().flat_map(|(_, m)| m.clone()).collect());
        let publisher = ctx.publisher().await;
        let subscriber = ctx.member(&group).await;
        ctx.stage(format!("subscribing to {topic}"));
        let subscription = ctx.subscribe(&*subscriber, &topic).await;
        let tally = Tally::new();
        // The policy runs once per delivery of the single consumer, in delivery order, so the
        // order it acks in is the order of processing.
        let acked = Arc::new(Mutex::new(Vec::new()));
        let policy: Policy = {
            let acked = acked.clone();
            Arc::new(move |msg, n| {
                let roll = rand::random_range(0..40u32);
                if n == 1 && roll < 2 {
                    if roll == 0 {
                        Decision::Nack
                    } else {
                        Decision::NackAfter(Duration::ZERO)
                    }
                } else {
                    acked.lock().push(msg.clone());
                    Decision::Ack
                }
            })
        };
        let _consumer = spawn_consumer(subscription, tally.clone(), 0, policy);
        ctx.stage(format!(
            "publishing {keys} keys x {per_key} messages to {topic}"
        ));
        let mut publishing = Tasks::default();
        for (key, msgs) in by_key {
            let (publisher, topic) = (publisher.clone(), topic.clone());
            publishing.spawn(async move {
                // Batches of 1 to 5 messages, each call awaited: the key's order is defined.
                let mut rest = &msgs[..];
                while !rest.is_empty() {
                    let take = rand::random_range(1..=5usize).min(rest.len());
                    if let Err(err) = publisher.publish(&topic, rest[..take].to_vec()).await {
                        panic!("{NAME}: publishing {key} failed: {err}");
                    }
                    rest = &rest[take..];
                }
            });
        }
        publishing.join().await;
        ctx.stage(format!(
            "waiting for {} messages on {topic}",
            expected.len()
        ));
        check(
            NAME,
            tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(60)))
                .await,
        );
        check(NAME, tally.verify(&expected, ctx.exactly_once()));
        let mut last: HashMap<String, usize> = HashMap::new();
        let mut violations = Vec::new();
        for msg in acked.lock().iter() {
            let key = msg.metadata().get(KEY_KEY).unwrap_or("").to_owned();
            let seq = helpers::seq_of(msg).unwrap_or(usize::MAX);
            if let Some(prev) = last.get(&key) {
                if seq <= *prev {
                    violations.push(format!("{key}: seq {seq} acked after seq {prev}"));
                }
            }
            last.insert(key, seq);
        }
        if !violations.is_empty() {
            panic!(
                "{NAME}: {} messages processed out of order within their key: {}",
                violations.len(),
                violations[..violations.len().min(10)].join(", ")
            );
        }
    })
    .await
}

/// 10,000 messages from 20 publishers, each closed (twice: closing again is harmless) once it
/// published its share: every message arrives.
pub async fn many_publishers_closed_after_their_share(target: Arc<dyn TestTarget>) {
    const NAME: &str = "many_publishers_closed_after_their_share";
    run(target, NAME, Duration::from_secs(120), |ctx| async move {
        let n = ctx.count(10_000);
        let publishers = 20;
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
        ctx.stage(format!("creating {publishers} publishers"));
        let mut each = Vec::new();
        for _ in 0..publishers {
            each.push(ctx.publisher().await);
        }
        ctx.stage(format!(
            "publishing {n} messages from {publishers} publishers"
        ));
        let share = n.div_ceil(publishers);
        let mut publishing = Tasks::default();
        for (publisher, chunk) in each.into_iter().zip(expected.messages().chunks(share)) {
            let (topic, chunk) = (topic.clone(), chunk.to_vec());
            publishing.spawn(async move {
                if let Err(err) = helpers::publish_batches(&*publisher, &topic, &chunk, 50).await {
                    panic!("{NAME}: publishing to {topic} failed: {err}");
                }
                for attempt in ["closing", "closing again"] {
                    if let Err(err) = publisher.close().await {
                        panic!("{NAME}: {attempt} a publisher after its share failed: {err}");
                    }
                }
            });
        }
        publishing.join().await;
        ctx.stage(format!("waiting for {n} messages on {topic}"));
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

/// Two topics consumed with the same group name: messages of one never reach subscribers of
/// the other.
pub async fn topics_are_isolated(target: Arc<dyn TestTarget>) {
    const NAME: &str = "topics_are_isolated";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let (topic_a, topic_b) = (helpers::topic_name(), helpers::topic_name());
        let group = helpers::group_name();
        let expected_a = Expected::numbered(ctx.count(100));
        let expected_b = Expected::numbered(ctx.count(10));
        let (tally_a, tally_b) = (Tally::new(), Tally::new());
        let mut consumers = Tasks::default();
        for (i, (topic, tally)) in [(&topic_a, &tally_a), (&topic_b, &tally_b)]
            .into_iter()
            .enumerate()
        {
            ctx.stage(format!("subscribing to {topic}"));
            let subscriber = ctx.member(&group).await;
            let subscription = ctx.subscribe(&*subscriber, topic).await;
            consumers.append(spawn_consumer(
                subscription,
                tally.clone(),
                i,
                ack_everything(),
            ));
        }
        let publisher = ctx.publisher().await;
        ctx.stage("publishing to both topics");
        ctx.publish(&*publisher, &topic_a, expected_a.messages(), 10)
            .await;
        ctx.publish(&*publisher, &topic_b, expected_b.messages(), 10)
            .await;
        for (topic, expected, tally) in [
            (&topic_a, &expected_a, &tally_a),
            (&topic_b, &expected_b, &tally_b),
        ] {
            ctx.stage(format!("waiting for the messages of {topic}"));
            let result = tally
                .wait_all_acked(expected, helpers::scaled(Duration::from_secs(30)))
                .await;
            check(&format!("{NAME}: {topic}"), result);
        }
        ctx.stage("watching for strays");
        tokio::time::sleep(Duration::from_millis(300)).await;
        check(
            &format!("{NAME}: subscriber of {topic_a}"),
            tally_a.verify(&expected_a, ctx.exactly_once()),
        );
        check(
            &format!("{NAME}: subscriber of {topic_b}"),
            tally_b.verify(&expected_b, ctx.exactly_once()),
        );
    })
    .await
}

/// Messages published before anyone subscribed reach a new subscriber and, with groups, every
/// new group; messages published afterwards reach them too. Needs
/// `new_subscriber_receives_old_messages`.
pub async fn new_subscriber_receives_old_messages(target: Arc<dyn TestTarget>) {
    const NAME: &str = "new_subscriber_receives_old_messages";
    if !claims(
        target.features().new_subscriber_receives_old_messages,
        "new_subscriber_receives_old_messages",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let topic = helpers::topic_name();
        let mut expected = Expected::numbered(ctx.count(100));
        let publisher = ctx.publisher().await;
        ctx.stage(format!(
            "publishing {} messages to {topic}, nobody subscribed",
            expected.len()
        ));
        ctx.publish(&*publisher, &topic, expected.messages(), 10)
            .await;

        let mut groups = vec![None];
        if ctx.features.consumer_groups {
            groups.push(Some(helpers::group_name()));
            groups.push(Some(helpers::group_name()));
        }
        let mut consumers = Tasks::default();
        let mut tallies = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            ctx.stage(format!("subscribing to {topic} (group {group:?})"));
            let subscriber = ctx.subscriber(group.as_deref()).await;
            let subscription = ctx.subscribe(&*subscriber, &topic).await;
            let tally = Tally::new();
            consumers.append(spawn_consumer(
                subscription,
                tally.clone(),
                i,
                ack_everything(),
            ));
            tallies.push((group.clone(), tally));
        }
        for (group, tally) in &tallies {
            ctx.stage(format!("waiting for the old messages (group {group:?})"));
            let result = tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(30)))
                .await;
            check(&format!("{NAME}: old messages, group {group:?}"), result);
        }
        let newer: Vec<Message> = (expected.len()..expected.len() + ctx.count(10).max(2))
            .map(test_message)
            .collect();
        expected.extend(newer.clone());
        ctx.stage("publishing messages after subscribing");
        ctx.publish(&*publisher, &topic, &newer, 10).await;
        for (group, tally) in &tallies {
            ctx.stage(format!("waiting for all messages (group {group:?})"));
            let result = tally
                .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(30)))
                .await;
            check(&format!("{NAME}: group {group:?}"), result);
            check(
                &format!("{NAME}: group {group:?}"),
                tally.verify(&expected, ctx.exactly_once()),
            );
        }
    })
    .await
}
