//! A command with exactly one handler: send a notification. The handler reports what it did
//! with an event, which carries the command's correlation id on.
//!
//! Run with `cargo run -p tidemill-cqrs --example send_notification`.

use serde::{Deserialize, Serialize};
use tidemill::middleware::CORRELATION_ID_KEY;
use tidemill::{HandlerError, HandlerResult, InProcessPubSub, Metadata, Router};
use tidemill_cqrs::{
    CommandBus, CommandProcessor, Context, EventBus, EventProcessor, Named, ProcessorConfig,
};
use tokio::sync::mpsc;

/// Something to do, so named in the imperative.
#[derive(Debug, Serialize, Deserialize)]
struct SendNotification {
    user_id: u64,
    text: String,
}
impl Named for SendNotification {}

#[derive(Debug, Serialize, Deserialize)]
struct NotificationSent {
    user_id: u64,
}
impl Named for NotificationSent {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    let groups = {
        let pubsub = pubsub.clone();
        move |handler: &str| Ok(pubsub.with_group(handler))
    };

    let commands = CommandProcessor::with_config(
        &router,
        groups.clone(),
        ProcessorConfig::default().event_bus(EventBus::new(pubsub.clone())),
    );
    commands.handle(
        "send_notification",
        |command: SendNotification, ctx: Context| async move {
            println!("to user {}: {}", command.user_id, command.text);
            let events = ctx.event_bus().expect("configured with an event bus");
            events
                .publish(&NotificationSent {
                    user_id: command.user_id,
                })
                .await
                .map_err(HandlerError::new)?;
            Ok(())
        },
    )?;

    let (done, mut finished) = mpsc::unbounded_channel();
    EventProcessor::new(&router, groups).handle(
        "log_notifications",
        move |event: NotificationSent, ctx: Context| {
            let done = done.clone();
            async move {
                println!(
                    "user {} notified (correlation id {:?})",
                    event.user_id,
                    ctx.correlation_id()
                );
                done.send(()).ok();
                HandlerResult::Ok(())
            }
        },
    )?;

    let run = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;

    CommandBus::new(pubsub.clone())
        .with_metadata(&Metadata::from_iter([(CORRELATION_ID_KEY, "request-42")]))
        .send(&SendNotification {
            user_id: 7,
            text: "your order shipped".into(),
        })
        .await?;

    finished.recv().await;
    router.close().await?;
    run.await??;
    Ok(())
}
