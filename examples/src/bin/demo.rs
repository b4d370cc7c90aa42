//! The demo from the talk the project started from: a publisher sends to `incoming_topic` every
//! few seconds; `hello_handler` answers each message with a greeting on `outgoing_topic`; two
//! consumer-only handlers print what passes on both topics. Router-wide middleware: correlation
//! id, poison queue, throttle, circuit breaker, retry, timeout, recoverer; the signals plugin
//! closes the router on Ctrl-C. The same output on SQLite (the default: an embedded database
//! file, no server) or on the in-process pub/sub.
//!
//! ```text
//! cargo run -p tidemill-examples --bin demo -- --interval 1s --count 5
//! cargo run -p tidemill-examples --bin demo -- --pubsub in-process
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tidemill::middleware::{
    correlation_id, set_correlation_id, CircuitBreakerLayer, CorrelationIdLayer,
    CorrelationIdPublisher, PoisonQueueLayer, RecovererLayer, RetryLayer, ThrottleLayer,
    TimeoutLayer,
};
use tidemill::router::{HandlerResult, SignalsPlugin};
use tidemill::{new_uuid, InProcessPubSub, Message, Publisher, Router, Subscriber};
use tidemill_sql::{SqlConfig, SqlPubSub};

const INCOMING: &str = "incoming_topic";
const OUTGOING: &str = "outgoing_topic";

#[derive(Parser, Debug)]
#[command(about = "tidemill's router demo: publish, greet, print")]
struct Args {
    /// Time between two published messages.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many messages (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// The pub/sub to run on.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pubsub: Backend,
    /// The SQLite database file (default: a new file in the temporary directory).
    #[arg(long)]
    database: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// An embedded SQLite database: messages survive a restart.
    Sqlite,
    /// The in-process pub/sub: nothing leaves the process.
    InProcess,
}

/// Publishers and subscribers of the chosen backend; each handler reads as its own group.
enum PubSub {
    Sql(SqlPubSub),
    InProcess(InProcessPubSub),
}

impl PubSub {
    async fn connect(args: &Args) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(match args.pubsub {
            Backend::InProcess => PubSub::InProcess(InProcessPubSub::new()),
            Backend::Sqlite => {
                let path = args.database.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("tidemill-demo-{}.db", new_uuid()))
                });
                let url = format!("sqlite://{}", path.display());
                PubSub::Sql(SqlPubSub::connect(SqlConfig::from_url(url)?).await?)
            }
        })
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            PubSub::Sql(ps) => Arc::new(ps.publisher()),
            PubSub::InProcess(ps) => Arc::new(ps.clone()),
        }
    }

    fn subscriber(&self, group: &str) -> Result<Arc<dyn Subscriber>, Box<dyn std::error::Error>> {
        Ok(match self {
            PubSub::Sql(ps) => Arc::new(ps.subscriber(Some(group))?),
            PubSub::InProcess(ps) => Arc::new(ps.with_group(group)),
        })
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let pubsub = PubSub::connect(&args).await?;
    let publisher = pubsub.publisher();

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
        .subscribe(INCOMING, pubsub.subscriber("hello_handler")?)
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
        .subscribe(INCOMING, pubsub.subscriber("incoming_topic_handler")?)
        .handle(print_incoming)?;
    router
        .handler("outgoing_topic_handler")
        .subscribe(OUTGOING, pubsub.subscriber("outgoing_topic_handler")?)
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
                if let Err(err) = pubsub.publish(INCOMING, vec![msg]).await {
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
    Ok(())
}
