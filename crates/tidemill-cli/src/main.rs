//! `tidemill`: publish, consume and benchmark messages on any tidemill broker, picked by URL.
//!
//! ```text
//! tidemill publish redis://127.0.0.1:6379 orders 'order #1' 'order #2'
//! tidemill consume redis://127.0.0.1:6379 orders --group audit --format json
//! tidemill poison requeue redis://127.0.0.1:6379 --all --yes
//! tidemill bench nats://127.0.0.1:4222 -n 10000 -s 256 -c 4
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod bench;
mod cli;
mod consume;
mod error;
mod poison;
mod publish;
mod session;
mod signal;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), CliError> = runtime.block_on(async {
        match cli.command {
            Command::Publish(args) => publish::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Poison(args) => poison::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => tidemill_cli::demo::run(args)
                .await
                .map_err(|e| CliError::Bench(format!("the demo failed: {e}"))),
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "tidemill",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    // Adapters' background tasks must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
