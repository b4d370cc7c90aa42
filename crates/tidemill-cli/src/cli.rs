//! The command line's shape: commands, arguments and their help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tidemill_any::StartPosition;

/// Publish, consume, inspect and benchmark messages on any tidemill broker, picked by URL:
/// memory://, sqlite://path, sqlite::memory:, postgres://, mysql://, mariadb://, redis://,
/// nats://, amqp://, kafka://host:port,host:port.
#[derive(Parser, Debug)]
#[command(name = "tidemill", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish messages from arguments, a file or standard input (one per line, or JSON lines).
    #[command(
        after_help = "Example:\n  echo '{\"payload\":\"hi\",\"metadata\":{\"kind\":\"greeting\"}}' | tidemill publish redis://127.0.0.1:6379 greetings --jsonl"
    )]
    Publish(PublishArgs),
    /// Print the messages of a topic as they arrive.
    #[command(
        visible_alias = "tail",
        after_help = "Example:\n  tidemill consume 'postgres://postgres@127.0.0.1/test' orders --group audit --from beginning --format json --count 10"
    )]
    Consume(ConsumeArgs),
    /// Inspect the poison topic, and requeue or discard its messages.
    #[command(
        after_help = "Example:\n  tidemill poison list sqlite://app.db\n  tidemill poison requeue sqlite://app.db --filter tidemill_poison_handler=billing --yes"
    )]
    Poison(PoisonArgs),
    /// Publish and consume N messages and print the rates and latencies.
    #[command(
        after_help = "Example:\n  tidemill bench nats://127.0.0.1:4222 -n 10000 -s 256 -c 4"
    )]
    Bench(BenchArgs),
    /// Run the router demo: publish, greet, print (the URL, TIDEMILL_URL or WATERMILL_PUBSUB_TYPE picks the broker).
    #[command(
        after_help = "Example:\n  TIDEMILL_URL=nats://127.0.0.1:4222 tidemill demo --interval 1s --count 5"
    )]
    Demo(tidemill_cli::demo::DemoArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  tidemill completions bash > /etc/bash_completion.d/tidemill"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How data is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Tables and sentences, for people.
    #[default]
    Text,
    /// JSON, for scripts.
    Json,
}

/// Options every command that connects has.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The broker, e.g. redis://127.0.0.1:6379 (options as query parameters: ?group=g&from=end).
    pub url: String,
    /// How long to wait for the broker to answer before giving up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print text for people or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    /// The topic.
    pub topic: String,
    /// Messages to publish (one message per argument); without them, lines of --file or stdin.
    pub messages: Vec<String>,
    /// Read the messages from this file instead of standard input.
    #[arg(long, conflicts_with = "messages")]
    pub file: Option<PathBuf>,
    /// Lines are JSON objects: {"payload": ..., "metadata": {"k": "v"}, "key": ..., "id": ...}.
    #[arg(long)]
    pub jsonl: bool,
    /// Metadata added to every message (repeatable).
    #[arg(long = "metadata", short = 'm', value_name = "K=V", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// Partition key of every message (Kafka partitions by it; others carry it as metadata).
    #[arg(long)]
    pub key: Option<String>,
    /// Publish the messages this many times.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// At most this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// All or nothing: a malformed line sends nothing, and all messages go in one publish call.
    #[arg(long)]
    pub atomic: bool,
}

/// How deliveries are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload only, one per line.
    Raw,
    /// One JSON object per line: id, payload, metadata.
    Json,
    /// Id, metadata and payload, for reading.
    Pretty,
}

/// `consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// The topic.
    pub topic: String,
    /// Consumer group (members share the messages; each group gets them all).
    #[arg(long)]
    pub group: Option<String>,
    /// Where a new subscription or group starts: beginning, end, an RFC 3339 time or an offset.
    #[arg(long, value_parser = parse_start)]
    pub from: Option<StartPosition>,
    /// Only print messages whose metadata has K=V (repeatable: all must match). With --ack,
    /// the others are acked unprinted; with --no-ack they are left for the next consumer.
    #[arg(long, value_name = "K=V", value_parser = parse_pair)]
    pub filter: Vec<(String, String)>,
    /// Ack each message once printed (the default).
    #[arg(long, overrides_with = "no_ack")]
    pub ack: bool,
    /// Peek: settle nothing; every message goes back to the broker when the command ends.
    #[arg(long)]
    pub no_ack: bool,
    /// Stop after printing this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when nothing arrived for this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// How messages are printed (default raw; json with --output json).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages to publish and consume.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(short = 's', long, default_value_t = 256)]
    pub size: usize,
    /// Concurrent publishers.
    #[arg(short = 'c', long, default_value_t = 4)]
    pub publishers: usize,
    /// Messages per publish call.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Unsettled deliveries the consumer may hold (where the backend has the setting).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// The topic (default: a new one per run).
    #[arg(long)]
    pub topic: Option<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_start(s: &str) -> Result<StartPosition, String> {
    s.parse().map_err(|e: tidemill::Error| e.to_string())
}

/// `poison`.
#[derive(Args, Debug)]
pub struct PoisonArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PoisonAction,
}

/// Where the poison topic is.
#[derive(Args, Debug)]
pub struct PoisonTarget {
    #[command(flatten)]
    pub common: Common,
    /// The poison topic.
    #[arg(long, default_value = "poison_queue")]
    pub topic: String,
    /// The consumer group that reads the poison topic.
    #[arg(long, default_value = "tidemill_poison")]
    pub group: String,
    /// Stop reading when nothing arrived for this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// The poison subcommands.
#[derive(Subcommand, Debug)]
pub enum PoisonAction {
    /// A table of the messages: id, original topic, handler, reason.
    List {
        #[command(flatten)]
        target: PoisonTarget,
    },
    /// One message in full.
    Show {
        #[command(flatten)]
        target: PoisonTarget,
        /// The message id.
        id: String,
    },
    /// Publish messages back to their original topic, then remove them from the poison topic.
    ///
    /// The others stay for the next look. Where acks commit an offset (SQL in log mode, Kafka),
    /// those read before the last chosen one are published to the poison topic again (same id)
    /// and so move to its end. On NATS the requeued message gets a new id (JetStream would drop
    /// the old one as a duplicate), the old one in metadata tidemill_requeued_from.
    #[command(
        after_help = "Example:\n  tidemill poison requeue redis://127.0.0.1:6379 --filter tidemill_poison_handler=billing --yes"
    )]
    Requeue {
        #[command(flatten)]
        target: PoisonTarget,
        #[command(flatten)]
        selection: Selection,
        /// Do not ask (without it, a "y" on standard input is needed).
        #[arg(long)]
        yes: bool,
    },
    /// Remove messages from the poison topic; the others stay for the next look (see
    /// `requeue` for offset backends).
    #[command(after_help = "Example:\n  tidemill poison discard sqlite://app.db 3f2a...e1 --yes")]
    Discard {
        #[command(flatten)]
        target: PoisonTarget,
        #[command(flatten)]
        selection: Selection,
        /// Do not ask (without it, a "y" on standard input is needed).
        #[arg(long)]
        yes: bool,
    },
}

/// Which messages: one id, those matching a metadata filter, or all.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// The message with this id.
    pub id: Option<String>,
    /// The messages whose metadata has K=V (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_pair)]
    pub filter: Vec<(String, String)>,
    /// Every message.
    #[arg(long)]
    pub all: bool,
}

impl PoisonAction {
    /// The poison topic this action works on.
    pub fn target(&self) -> &PoisonTarget {
        match self {
            Self::List { target }
            | Self::Show { target, .. }
            | Self::Requeue { target, .. }
            | Self::Discard { target, .. } => target,
        }
    }
}
