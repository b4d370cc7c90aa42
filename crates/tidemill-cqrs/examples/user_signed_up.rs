//! One event, two reactions: when a user signs up, send a welcome email and add them to the
//! mailing list. Each handler has its own consumer group, so adding the second one needed no
//! change to the first, nor to whoever publishes the event.
//!
//! Run with `cargo run -p tidemill-cqrs --example user_signed_up`.

use serde::{Deserialize, Serialize};
use tidemill::{HandlerResult, InProcessPubSub, Router};
use tidemill_cqrs::{Context, EventBus, EventProcessor, Named};
use tokio::sync::mpsc;

/// Something that happened, so named in the past tense.
#[derive(Debug, Serialize, Deserialize)]
struct UserSignedUp {
    user_id: u64,
    email: String,
}
impl Named for UserSignedUp {}

async fn send_welcome_email(event: UserSignedUp) -> HandlerResult<()> {
    println!("welcome email to {}", event.email);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    router.layer(tidemill::middleware::CorrelationIdLayer::new());

    let processor = EventProcessor::new(&router, {
        let pubsub = pubsub.clone();
        move |handler: &str| Ok(pubsub.with_group(handler))
    });
    processor.handle("send_welcome_email", send_welcome_email)?;

    let (done, mut finished) = mpsc::unbounded_channel();
    processor.handle(
        "add_to_mailing_list",
        move |event: UserSignedUp, ctx: Context| {
            let done = done.clone();
            async move {
                println!(
                    "user {} joins the mailing list (correlation id {:?})",
                    event.user_id,
                    ctx.correlation_id()
                );
                done.send(()).ok();
                Ok(())
            }
        },
    )?;

    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    let events = EventBus::new(pubsub.clone());
    events
        .publish(&UserSignedUp {
            user_id: 1,
            email: "ada@example.com".into(),
        })
        .await?;

    finished.recv().await;
    router.close().await?;
    run.await??;
    Ok(())
}
