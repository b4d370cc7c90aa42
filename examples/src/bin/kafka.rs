//! Kafka: a router handler prints the orders a publisher sends.
//! Run: `cargo run -p tidemill-examples --bin kafka [URL]` (or set `KAFKA_URL`).

use std::time::Duration;
use tidemill::{Message, Publisher, PublisherExt, Router};
use tidemill_kafka::{KafkaConfig, KafkaPublisher, KafkaSubscriber};

static SEEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0); // handled messages

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).or(std::env::var("KAFKA_URL").ok());
    let config = KafkaConfig::from_url(&url.unwrap_or("kafka://127.0.0.1:9092".into()))?;
    let id = tidemill::new_uuid(); // a fresh topic and group on every run
    let (topic, config) = (format!("orders-{id}"), config.group(format!("print-{id}")));

    let router = Router::new();
    router
        .handler("print")
        .subscribe(&topic, KafkaSubscriber::new(config.clone())?)
        .handle(|msg| async move {
            println!("received {}", String::from_utf8_lossy(msg.payload()));
            SEEN.add_permits(1);
            Ok(())
        })?;
    let running = router.start().await?;

    let publisher = KafkaPublisher::new(config)?;
    for n in 1..=3 {
        let order = Message::new(format!("order #{n}"));
        publisher.publish_one(&topic, order).await?;
    }
    let _seen = tokio::time::timeout(Duration::from_secs(30), SEEN.acquire_many(3)).await??;
    publisher.close().await?;
    running.close().await?;
    Ok(())
}
