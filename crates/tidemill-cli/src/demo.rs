//! The demo from the talk the project started from: a publisher sends to `incoming_topic` every
//! few seconds; `hello_handler` answers each message with a greeting on `outgoing_topic`; two
//! consumer-only handlers print what passes on both topics. Router-wide middleware: correlation
//! id, poison queue, throttle, circuit breaker, retry, timeout, recoverer; the signals plugin
//! closes the router on Ctrl-C or SIGTERM. The same output on every broker: the URL picks it
//! (`--url`, else `TIDEMILL_URL`, else the seed's `WATERMILL_PUBSUB_TYPE`: empty or `gochannel`
//! for the in-process pub/sub, `nats` for NATS on 127.0.0.1:4222), else `--pubsub` (SQLite in a
//! new temporary file by default, no server needed).
//!
//! ```text
//! tidemill demo --interval 1s --count 5
//! TIDEMILL_URL=redis://127.0.0.1:6379 tidemill demo --count 3
//! WATERMILL_PUBSUB_TYPE= tidemill demo
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tidemill::middleware::{
    correlation_id, set_correlation_id, CircuitBreakerLayer, CorrelationIdLayer,
    CorrelationIdPublisher, PoisonQueueLayer, RecovererLayer, RetryLayer, ThrottleLayer,
    TimeoutLayer,
};
use tidemill::router::{HandlerResult, SignalsPlugin};
use tidemill::{new_uuid, Message, Publisher, PublisherExt, Router};
use tidemill_any::SubscriberOptions;

const INCOMING: &str = "incoming_topic";
const OUTGOING: &str = "outgoing_topic";

/// The demo's options.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Time between two published messages.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop after this many messages (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// The broker's URL (overrides TIDEMILL_URL, WATERMILL_PUBSUB_TYPE and --pubsub).
    #[arg(long)]
    pub url: Option<String>,
    /// The pub/sub to run on when no URL is given.
    #[arg(long, value_enum, default_value_t = DemoBackend::Sqlite)]
    pub pubsub: DemoBackend,
    /// The SQLite database file (default: a new file in the temporary directory).
    #[arg(long)]
    pub database: Option<PathBuf>,
}

/// The pub/subs `--pubsub` names.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DemoBackend {
    /// An embedded SQLite database: messages survive a restart.
    Sqlite,
    /// The in-process pub/sub: nothing leaves the process.
    InProcess,
}

/// The URL the demo runs on: `--url`, `TIDEMILL_URL`, `WATERMILL_PUBSUB_TYPE`, `--pubsub`.
pub fn demo_url(args: &DemoArgs) -> String {
    if let Some(url) = &args.url {
        return url.clone();
    }
    if let Ok(url) = std::env::var("TIDEMILL_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    if let Ok(kind) = std::env::var("WATERMILL_PUBSUB_TYPE") {
        // The seed: empty selects the in-process pub/sub (GoChannel), otherwise NATS.
        return match kind.as_str() {
            "" | "gochannel" | "memory" | "in-process" => "memory://".into(),
            _ => std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        };
    }
    match args.pubsub {
        DemoBackend::InProcess => "memory://".into(),
        DemoBackend::Sqlite => {
            let path = args.database.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("tidemill-demo-{}.db", new_uuid()))
            });
            format!("sqlite://{}", path.display())
        }
    }
}

async fn hello_handler(msg: Message) -> HandlerResult<Message> {
    println!(
        "hello_handler received message {} (correlation id {})",
        msg.id(),
        correlation_id(&msg).unwrap_or("-")
    );
    Ok(Message::new(format!(
        "Hello! I got your message: {}",
        String::from_utf8_lossy(msg.payload())
    )))
}

async fn print_incoming(msg: Message) -> HandlerResult<()> {
    println!(
        "incoming_topic_handler received message {}: {}",
        msg.id(),
        String::from_utf8_lossy(msg.payload())
    );
    Ok(())
}

/// Greetings seen by `outgoing_topic_handler`, so a run with `--count` can stop once all arrived.
static GREETINGS: AtomicU64 = AtomicU64::new(0);

async fn print_outgoing(msg: Message) -> HandlerResult<()> {
    GREETINGS.fetch_add(1, Ordering::SeqCst);
    println!(
        "outgoing_topic_handler received message {}: {} (correlation id {})",
        msg.id(),
        String::from_utf8_lossy(msg.payload()),
        correlation_id(&msg).unwrap_or("-")
    );
    Ok(())
}

/// Runs the demo until `--count` messages were greeted, or until Ctrl-C / SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    GREETINGS.store(0, Ordering::SeqCst);
    let pubsub = tidemill_any::connect(&demo_url(&args)).await?;
    let publisher = pubsub.publisher();
    let subscriber = |group: &'static str| pubsub.subscriber(SubscriberOptions::group(group));
    let router = Router::new();
    router.add_plugin(SignalsPlugin);
    // Outermost first: the correlation id is set before anything runs; the poison queue takes
    // what retries gave up on; the recoverer, innermost, turns a panic into an error.
    router
        .layer(CorrelationIdLayer::new())
        .layer(PoisonQueueLayer::new(publisher.clone(), "poison_queue"))
        .layer(ThrottleLayer::new(10, Duration::from_secs(1)))
        .layer(CircuitBreakerLayer::new().consecutive_failures(10))
        .layer(RetryLayer::new().max_retries(5))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .layer(RecovererLayer::new());
    router.decorate_publishers(|p| Arc::new(CorrelationIdPublisher::new(p)) as Arc<dyn Publisher>);

    router
        .handler("hello_handler")
        .subscribe(INCOMING, subscriber("hello_handler").await?)
        .publish_to(OUTGOING, publisher.clone())
        .layer(tower::layer::layer_fn(|inner| {
            // A middleware of this handler only.
            tower::util::MapRequest::new(inner, |msg: Message| {
                println!(
                    "executing hello_handler specific middleware for {}",
                    msg.id()
                );
                msg
            })
        }))
        .handle(hello_handler)?;
    router
        .handler("incoming_topic_handler")
        .subscribe(INCOMING, subscriber("incoming_topic_handler").await?)
        .handle(print_incoming)?;
    router
        .handler("outgoing_topic_handler")
        .subscribe(OUTGOING, subscriber("outgoing_topic_handler").await?)
        .handle(print_outgoing)?;

    let producer = tokio::spawn({
        let router = router.clone();
        let pubsub = publisher.clone();
        async move {
            router.running().await;
            let mut sent = 0;
            while args.count == 0 || sent < args.count {
                let mut msg = Message::new("Hello, tidemill!");
                set_correlation_id(&mut msg, new_uuid().to_string());
                println!(
                    "\nsending message {}, correlation id {}",
                    msg.id(),
                    correlation_id(&msg).unwrap_or("-")
                );
                if let Err(err) = pubsub.publish_one(INCOMING, msg).await {
                    eprintln!("publishing failed: {err}");
                    break;
                }
                sent += 1;
                tokio::time::sleep(args.interval).await;
            }
            // Let the last greetings arrive before closing (a database is polled).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while GREETINGS.load(Ordering::SeqCst) < sent && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            router.close().await
        }
    });

    router.run().await?;
    producer.abort();
    pubsub.close().await?;
    Ok(())
}
