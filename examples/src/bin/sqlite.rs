//! SQLite: a router handler prints the orders a publisher sends, through a temporary file.
//! Run: `cargo run -p tidemill-examples --bin sqlite [URL]` (or set `SQLITE_URL`).

use std::time::Duration;
use tidemill::{Message, PublisherExt, Router};
use tidemill_sql::{SqlConfig, SqlPubSub};

static SEEN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0); // handled messages

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = tidemill::new_uuid(); // a fresh file, topic and group on every run
    let dir = std::env::temp_dir().join(format!("tidemill-example-{id}"));
    std::fs::create_dir(&dir)?;
    let url = std::env::args().nth(1).or(std::env::var("SQLITE_URL").ok());
    let url = url.unwrap_or(format!("sqlite://{}/events.db", dir.display()));
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

    for n in 1..=3 {
        let order = Message::new(format!("order #{n}"));
        pubsub.publisher().publish_one(&topic, order).await?;
    }
    let _seen = tokio::time::timeout(Duration::from_secs(30), SEEN.acquire_many(3)).await??;
    running.close().await?;
    std::fs::remove_dir_all(dir)?; // the database with its WAL files
    Ok(())
}
