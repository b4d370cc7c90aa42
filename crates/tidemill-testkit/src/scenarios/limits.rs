//! What a pub/sub refuses: the same messages, with the same typed error, as its
//! [`Limits`](tidemill::Limits) predict, and everything it accepts arrives unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidemill::{Error, Message};

use super::{must_next, run};
use crate::helpers;
use crate::TestTarget;

/// Metadata names and values that some broker cannot carry as they are.
fn awkward_metadata() -> Vec<(String, String)> {
    [
        ("ключ-🔑", "v"),
        ("with space", "v"),
        ("colon:key", "v"),
        ("x-death", "v"),
        ("x-delivery-count", "3"),
        ("x-first-death-reason", "v"),
        ("message_id", "spoof"),
        ("payload", "spoof"),
        ("tidemill_message_id", "spoof"),
        ("nats-msg-id", "spoof"),
        ("line-break-value", "a\r\nb"),
        ("unicode-value", "é ✓ 🔑"),
        ("plain-key", "plain value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(std::iter::once(("k".repeat(300), "long name".to_owned())))
    .collect()
}

/// Publishes one message per awkward metadata entry. For each, the publisher's own
/// [`limits`](tidemill::Publisher::limits) say beforehand whether it is accepted; a refused one
/// must fail with [`Error::InvalidMetadata`] and never arrive, an accepted one must arrive with
/// that entry unchanged. A panic, another error, a silently changed or dropped entry fails.
pub async fn metadata_is_refused_as_the_limits_say_or_carried_unchanged(
    target: Arc<dyn TestTarget>,
) {
    const NAME: &str = "metadata_is_refused_as_the_limits_say_or_carried_unchanged";
    run(target, NAME, Duration::from_secs(60), |ctx| async move {
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let publisher = ctx.publisher().await;
        let subscriber = ctx.member(&group).await;
        let mut subscription = ctx.subscribe(&*subscriber, &topic).await;
        let limits = publisher.limits();
        let mut accepted: HashMap<String, (String, String)> = HashMap::new();
        for (i, (key, value)) in awkward_metadata().into_iter().enumerate() {
            let id = format!("meta-{i}");
            let message = Message::with_id(id.clone(), format!("payload {i}"))
                .with_metadata(&key, &value);
            let predicted = limits.check(&topic, &message);
            ctx.stage(format!("publishing metadata {key:?}"));
            let result = tokio::time::timeout(
                helpers::scaled(Duration::from_secs(30)),
                publisher.publish(&topic, vec![message]),
            )
            .await
            .unwrap_or_else(|_| panic!("{NAME}: publishing metadata {key:?} hung"));
            match (predicted, result) {
                (Ok(()), Ok(())) => {
                    accepted.insert(id, (key, value));
                }
                (Err(Error::InvalidMetadata { .. }), Err(Error::InvalidMetadata { .. })) => {}
                (predicted, result) => panic!(
                    "{NAME}: metadata {key:?}: the limits said {predicted:?}, publishing gave {result:?}"
                ),
            }
        }
        ctx.stage("receiving what was accepted");
        while !accepted.is_empty() {
            let delivery = must_next(
                NAME,
                &mut subscription,
                helpers::scaled(Duration::from_secs(20)),
                "an accepted message",
            )
            .await;
            let id = delivery.message().id().to_owned();
            let Some((key, value)) = accepted.remove(&id) else {
                panic!("{NAME}: {id} arrived although it was refused, or twice");
            };
            let got = delivery.message().metadata().get(&key).map(str::to_owned);
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "{NAME}: metadata {key:?} of {id} changed on the way"
            );
            delivery.ack();
        }
    })
    .await;
}
