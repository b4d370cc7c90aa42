//! The router on top of the pub/sub: closing it under load.

use std::sync::Arc;
use std::time::Duration;

use tidemill::router::{HandlerResult, RouterConfig};
use tidemill::{Message, Router};

use super::{check, claims, run};
use crate::helpers::{self, ack_everything, spawn_consumer, Expected, Tally};
use crate::TestTarget;

/// A router closed while its handler works through 2,000 messages finishes what it holds and
/// loses nothing: the messages it did not take come to the next subscriber of its group.
pub async fn router_close_under_load_loses_nothing(target: Arc<dyn TestTarget>) {
    const NAME: &str = "router_close_under_load_loses_nothing";
    let f = target.features();
    if !claims(
        f.consumer_groups || f.persistent,
        "consumer_groups or persistent",
    ) {
        return;
    }
    run(target, NAME, Duration::from_secs(180), |ctx| async move {
        let n = ctx.count(2_000);
        let topic = helpers::topic_name();
        let group = helpers::group_name();
        let expected = Expected::numbered(n);
        let handled = Tally::new();

        ctx.stage("starting a router on a subscriber of the group");
        let subscriber = ctx.member(&group).await;
        // The router closes its pub/subs as in production, except an in-process one, whose
        // messages would go with it.
        let router = Router::with_config(
            RouterConfig::default()
                .close_timeout(helpers::scaled(Duration::from_secs(30)))
                .close_pubsubs(!ctx.features.require_single_instance),
        );
        let h = handled.clone();
        router
            .handler("under_load")
            .subscribe(topic.clone(), subscriber)
            .handle(move |msg: Message| {
                let h = h.clone();
                async move {
                    h.on_delivery(0, &msg);
                    tokio::time::sleep(Duration::from_micros(500)).await;
                    h.on_ack(msg.id());
                    HandlerResult::Ok(())
                }
            })
            .expect("registering the handler");
        let running = tokio::spawn({
            let router = router.clone();
            async move { router.run().await }
        });
        router.running().await;

        let publisher = ctx.publisher().await;
        ctx.publish(&*publisher, &topic, expected.messages(), 100)
            .await;
        ctx.stage(format!("waiting for the router to handle a third of {n}"));
        assert!(
            handled
                .wait_acked_ids(n / 3, helpers::scaled(Duration::from_secs(60)))
                .await,
            "{NAME}: the router handled only {} of {n}",
            handled.acked_ids()
        );

        ctx.stage("closing the router under load");
        helpers::step(
            format!("{NAME}: closing the router"),
            helpers::scaled(Duration::from_secs(60)),
            async {
                router
                    .close()
                    .await
                    .map_err(|e| tidemill::Error::Other(e.into()))
            },
        )
        .await;
        let result = running.await.expect("the router's task");
        assert!(
            result.is_ok(),
            "{NAME}: the router did not close cleanly: {result:?}"
        );
        let by_router = handled.acked_ids();

        ctx.stage("reading the rest with the next subscriber of the group");
        let next = ctx.member(&group).await;
        let subscription = ctx.subscribe(&*next, &topic).await;
        let _consumer = spawn_consumer(subscription, handled.clone(), 1, ack_everything());
        let waited = handled
            .wait_all_acked(&expected, helpers::scaled(Duration::from_secs(90)))
            .await;
        check(
            &format!("{NAME} ({by_router} handled before the close)"),
            waited,
        );
        check(NAME, handled.verify(&expected, ctx.exactly_once()));
    })
    .await
}
