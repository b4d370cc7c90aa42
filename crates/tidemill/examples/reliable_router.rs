//! A router with the full router-wide middleware set on the in-process pub/sub.
//!
//! A producer publishes an order every 200 ms; `greet` answers each with a greeting on another
//! topic, `audit` prints the greetings with their correlation ids. Every fifth order has no name:
//! a permanent error, so it skips the retries and goes to the poison queue at once, where
//! `poison_watch` reports it. Stop with Ctrl-C, or wait for the five seconds the demo runs.
//!
//! `cargo run -p tidemill --example reliable_router`

use std::sync::Arc;
use std::time::Duration;

use tidemill::middleware::{
    correlation_id, set_correlation_id, CircuitBreakerLayer, CorrelationIdLayer,
    CorrelationIdPublisher, PoisonQueueLayer, RecovererLayer, RetryLayer, ThrottleLayer,
    TimeoutLayer, POISON_HANDLER_KEY, POISON_REASON_KEY,
};
use tidemill::router::{Permanent, SignalsPlugin};
use tidemill::{
    HandlerError, HandlerResult, InProcessPubSub, Message, Publisher, PublisherExt, Router,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    router.add_plugin(SignalsPlugin);
    // Outermost first: the correlation id is set before anything else runs; the poison queue
    // sees what is left after retries; the recoverer, innermost, turns panics into errors the
    // other layers handle.
    router
        .layer(CorrelationIdLayer::new())
        .layer(PoisonQueueLayer::new(pubsub.clone(), "poison"))
        .layer(ThrottleLayer::new(10, Duration::from_secs(1)))
        .layer(CircuitBreakerLayer::new().consecutive_failures(10))
        .layer(
            RetryLayer::new()
                .max_retries(2)
                .initial_interval(Duration::from_millis(50)),
        )
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .layer(RecovererLayer::new());
    router.decorate_publishers(|p| Arc::new(CorrelationIdPublisher::new(p)) as Arc<dyn Publisher>);

    router
        .handler("greet")
        .subscribe("orders", pubsub.clone())
        .publish_to("greetings", pubsub.clone())
        .handle(|msg: Message| async move {
            let name = std::str::from_utf8(msg.payload())
                .map_err(|e| HandlerError::reject(Permanent::new(e)))?;
            if name.is_empty() {
                Err(Permanent::new("an order without a name"))?;
            }
            HandlerResult::Ok(Message::new(format!("hello, {name}")))
        })?;
    router
        .handler("audit")
        .subscribe("greetings", pubsub.clone())
        .handle(|msg: Message| async move {
            println!(
                "{} (correlation id {})",
                String::from_utf8_lossy(msg.payload()),
                correlation_id(&msg).unwrap_or("-")
            );
            HandlerResult::Ok(())
        })?;
    router
        .handler("poison_watch")
        .subscribe("poison", pubsub.clone())
        .handle(|msg: Message| async move {
            let md = msg.metadata();
            println!(
                "poisoned {} in {}: {}",
                msg.id(),
                md.get(POISON_HANDLER_KEY).unwrap_or("?"),
                md.get(POISON_REASON_KEY).unwrap_or("?")
            );
            HandlerResult::Ok(())
        })?;

    let producer = tokio::spawn({
        let (pubsub, router) = (pubsub.clone(), router.clone());
        async move {
            router.running().await;
            for i in 0u32.. {
                let name = if i % 5 == 4 {
                    String::new()
                } else {
                    format!("customer {i}")
                };
                let mut msg = Message::new(name);
                set_correlation_id(&mut msg, format!("order-{i}"));
                if pubsub.publish_one("orders", msg).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let stopper = tokio::spawn({
        let router = router.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            router.close().await
        }
    });

    // Runs until the stopper or Ctrl-C closes the router.
    router.run().await?;
    producer.abort();
    stopper.abort();
    Ok(())
}
