//! The demo from the talk the project started from, runnable from this package; the logic
//! lives in `tidemill_cli::demo` (also `tidemill demo`). The URL picks the broker: `--url`,
//! else `TIDEMILL_URL`, else the seed's `WATERMILL_PUBSUB_TYPE` (empty: in-process; `nats`:
//! NATS), else `--pubsub` (SQLite by default, no server needed).
//!
//! ```text
//! cargo run -p tidemill-examples --bin demo -- --interval 1s --count 5
//! cargo run -p tidemill-examples --bin demo -- --pubsub in-process
//! TIDEMILL_URL=redis://127.0.0.1:6379 cargo run -p tidemill-examples --bin demo -- --count 3
//! ```

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "tidemill's router demo: publish, greet, print")]
struct Args {
    #[command(flatten)]
    demo: tidemill_cli::demo::DemoArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    tidemill_cli::demo::run(Args::parse().demo).await
}
