//! `tidemill consume` / `tail`: print deliveries, ack once printed, nack whatever was not.

use std::io::Write;

use base64::Engine;
use futures::StreamExt;
use tidemill::{Delivery, Message};
use tidemill_any::{BackendKind, SubscriberOptions};

use crate::cli::{ConsumeArgs, Format, Output};
use crate::error::CliError;
use crate::session::Session;
use crate::signal::shutdown;

/// Unsettled deliveries a peek may hold where the backend has a window.
const PEEK_WINDOW: usize = 10_000;

pub(crate) async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let config = tidemill_any::parse(&args.common.url)?;
    config.validate_topic(&args.topic)?;
    let peek = args.no_ack;
    let mut options = SubscriberOptions::default().with_group(args.group.clone());
    if let Some(from) = args.from {
        options = options.from(from);
    }
    if peek
        && matches!(
            config.kind(),
            BackendKind::Sqlite
                | BackendKind::Postgres
                | BackendKind::MySql
                | BackendKind::Redis
                | BackendKind::Nats
                | BackendKind::Amqp
        )
    {
        // A peek holds what it printed until it ends: the window must not stop delivery.
        let window = args.count.map(|c| c as usize).unwrap_or(PEEK_WINDOW).max(1);
        options = options.max_in_flight(window.min(if config.kind() == BackendKind::Amqp {
            u16::MAX as usize
        } else {
            usize::MAX
        }));
    }
    // An impossible start position is refused before connecting.
    config.check_subscriber(&options)?;
    let format = args.format.unwrap_or(match args.common.output {
        Output::Json => Format::Json,
        Output::Text => Format::Raw,
    });
    let session = Session::connect(config, args.common.timeout).await?;
    let result = consume(&session, &args, options, format, peek).await;
    session.close().await;
    result
}

async fn consume(
    session: &Session,
    args: &ConsumeArgs,
    options: SubscriberOptions,
    format: Format,
    peek: bool,
) -> Result<(), CliError> {
    let subscriber = session.pubsub.subscriber(options).await?;
    let result = async {
        let mut subscription = session
            .timed("subscribing", subscriber.subscribe(&args.topic))
            .await??;
        eprintln!(
            "consuming {} at {}{}",
            args.topic,
            session.pubsub.redacted_url(),
            args.group
                .as_ref()
                .map(|g| format!(" as group {g}"))
                .unwrap_or_default()
        );
        let mut held: Vec<Delivery> = Vec::new();
        let mut printed = 0u64;
        let mut stdout = std::io::stdout().lock();
        let stop = shutdown();
        tokio::pin!(stop);
        loop {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            let idle = async {
                match args.idle_timeout {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let delivery = tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = idle => break,
                next = subscription.next() => match next {
                    None => break,
                    Some(Err(e)) => { eprintln!("warning: {e}"); continue; }
                    Some(Ok(d)) => d,
                },
            };
            let shown = matches(delivery.message(), &args.filter);
            if shown {
                // Printed and flushed before it is acked: an ack never runs ahead of the output.
                if let Err(e) = print(&mut stdout, &args.topic, delivery.message(), format)
                    .and_then(|()| stdout.flush())
                {
                    delivery.nack();
                    return Err(CliError::Io {
                        what: "writing to standard output".into(),
                        source: e,
                    });
                }
                printed += 1;
            }
            if peek {
                held.push(delivery);
            } else {
                delivery.ack();
            }
        }
        // What a peek held goes back to the broker for the next consumer.
        for d in held {
            d.nack();
        }
        drop(subscription);
        Ok(())
    }
    .await;
    if let Err(e) = session
        .timed("closing the subscriber", subscriber.close())
        .await?
    {
        eprintln!("warning: closing the subscriber: {e}");
    }
    result
}

fn matches(message: &Message, filter: &[(String, String)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| message.metadata().get(k) == Some(v.as_str()))
}

/// The message as JSON: the payload as text if it is UTF-8, else base64 in `payload_base64`.
pub(crate) fn to_json(topic: &str, message: &Message) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = message
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    let mut object = serde_json::json!({
        "id": message.id(),
        "topic": topic,
        "metadata": metadata,
    });
    match std::str::from_utf8(message.payload()) {
        Ok(text) => object["payload"] = text.into(),
        Err(_) => {
            object["payload_base64"] = base64::engine::general_purpose::STANDARD
                .encode(message.payload())
                .into()
        }
    }
    object
}

fn print(
    out: &mut impl Write,
    topic: &str,
    message: &Message,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Raw => {
            out.write_all(message.payload())?;
            out.write_all(b"\n")
        }
        Format::Json => writeln!(out, "{}", to_json(topic, message)),
        Format::Pretty => {
            writeln!(out, "── {} ({topic})", message.id())?;
            for (k, v) in message.metadata().iter() {
                writeln!(out, "   {k}: {v}")?;
            }
            writeln!(out, "{}\n", String::from_utf8_lossy(message.payload()))
        }
    }
}
