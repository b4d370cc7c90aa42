//! The parts of the `tidemill` command line that other programs run too: the [`demo`].
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     demo: tidemill_cli::demo::DemoArgs,
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! tidemill_cli::demo::run(Args::parse().demo).await
//! # }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod demo;
