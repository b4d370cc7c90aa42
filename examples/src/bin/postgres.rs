//! PostgreSQL: a router handler prints the orders a publisher sends.
//! Run: `cargo run -p tidemill-examples --bin postgres [URL]` (or set `PG_URL`).

use std::time::Duration;
use tidemill::{Message, Publisher, PublisherExt, Router};
use tidemill_sql::{SqlConfig, SqlPubSub};

static SEEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0); // handled messages

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).or(std::env::var("PG_URL").ok());
    let url = url.unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let id = tidemill::new_uuid(); // a fresh topic and group on every run
    let (topic, group) = (format!("orders-{id}"), format!("print-{id}"));
    let pubsub = SqlPubSub::connect(SqlConfig::from_url(url)?.group(group)).await?;

    let router = Router::new();
    router
        .handler("print")
        .subscribe(&topic, pubsub.subscriber()?)
        .handle(|msg| async move {
            println!("received {}", String::from_utf8_lossy(msg.payload()));
            SEEN.add_permits(1);
            Ok(())
        })?;
    let running = router.start().await?;

    let publisher = pubsub.publisher();
    for n in 1..=3 {
        let order = Message::new(format!("order #{n}"));
        publisher.publish_one(&topic, order).await?;
    }
    let _seen = tokio::time::timeout(Duration::from_secs(30), SEEN.acquire_many(3)).await??;
    publisher.close().await?;
    running.close().await?;
    Ok(())
}
