//! `tidemill publish`: messages from arguments, a file or stdin.

use std::collections::BTreeMap;
use std::time::Duration;

use tidemill::{Message, PublisherExt};
use tokio::io::AsyncReadExt;

use crate::cli::{Output, PublishArgs};
use crate::error::CliError;
use crate::session::Session;

/// A JSON line: the payload (a string as is, any other JSON value as its text), metadata, key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    payload: serde_json::Value,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// Turns the input into messages; malformed lines are returned with their numbers (from 1).
fn parse_input(args: &PublishArgs, input: &str) -> (Vec<Message>, Vec<(usize, String)>) {
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<(usize, &str)> = if args.messages.is_empty() {
        input
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty())
            .collect()
    } else {
        args.messages
            .iter()
            .enumerate()
            .map(|(i, m)| (i + 1, m.as_str()))
            .collect()
    };
    for (number, line) in lines {
        let mut message = if args.jsonl {
            match serde_json::from_str::<JsonLine>(line) {
                Ok(parsed) => {
                    let payload = match parsed.payload {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let mut m = match parsed.id {
                        Some(id) => Message::with_id(id, payload),
                        None => Message::new(payload),
                    };
                    for (k, v) in parsed.metadata {
                        m.metadata_mut().set(k, v);
                    }
                    if let Some(key) = parsed.key {
                        m.metadata_mut().set(tidemill_any::KEY_METADATA, key);
                    }
                    m
                }
                Err(e) => {
                    errors.push((number, format!("invalid JSON: {e}")));
                    continue;
                }
            }
        } else {
            Message::new(line.to_owned())
        };
        for (k, v) in &args.metadata {
            message.metadata_mut().set(k.clone(), v.clone());
        }
        if let Some(key) = &args.key {
            message
                .metadata_mut()
                .set(tidemill_any::KEY_METADATA, key.clone());
        }
        messages.push(message);
    }
    (messages, errors)
}

pub(crate) async fn run(args: PublishArgs) -> Result<(), CliError> {
    // Everything is checked before anything is sent: URL, options, topic, input.
    let config = tidemill_any::parse(&args.common.url)?;
    config.validate_topic(&args.topic)?;
    let input = if !args.messages.is_empty() {
        String::new()
    } else if let Some(path) = &args.file {
        tokio::fs::read_to_string(path)
            .await
            .map_err(CliError::io(format!("reading {}", path.display())))?
    } else {
        let mut s = String::new();
        tokio::io::stdin()
            .read_to_string(&mut s)
            .await
            .map_err(CliError::io("reading standard input"))?;
        s
    };
    let (messages, errors) = parse_input(&args, &input);
    if !errors.is_empty() && args.atomic {
        return Err(CliError::Malformed {
            lines: errors,
            sent_rest: false,
        });
    }
    let session = Session::connect(config, args.common.timeout).await?;
    let publisher = session.pubsub.publisher();
    let mut ids = Vec::new();
    let mut all = Vec::new();
    for _ in 0..args.count {
        for m in &messages {
            // A fresh id per copy, so that `--count` publishes distinct messages.
            let mut copy = if args.count > 1 {
                Message::new(m.payload().clone())
            } else {
                m.clone()
            };
            copy.metadata_mut().extend_from(m.metadata());
            all.push(copy);
        }
    }
    let interval = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let result = async {
        if args.atomic {
            ids.extend(all.iter().map(|m| m.id().to_owned()));
            session
                .timed("publishing", publisher.publish(&args.topic, all))
                .await??;
        } else if let Some(interval) = interval {
            let mut tick = tokio::time::interval(interval);
            for m in all {
                tick.tick().await;
                let id = m.id().to_owned();
                session
                    .timed("publishing", publisher.publish_one(&args.topic, m))
                    .await??;
                ids.push(id);
            }
        } else {
            let mut rest = all;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(100));
                let batch_ids: Vec<String> = rest.iter().map(|m| m.id().to_owned()).collect();
                session
                    .timed("publishing", publisher.publish(&args.topic, rest))
                    .await??;
                ids.extend(batch_ids);
                rest = tail;
            }
        }
        Ok::<(), CliError>(())
    }
    .await;
    session.close().await;
    result?;
    match args.common.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "topic": args.topic,
                "url": session.pubsub.redacted_url(),
                "published": ids.len(),
                "ids": ids,
                "malformed": errors.iter().map(|(n, e)| serde_json::json!({"line": n, "error": e})).collect::<Vec<_>>(),
            })
        ),
        Output::Text => eprintln!(
            "published {} message(s) to {} at {}",
            ids.len(),
            args.topic,
            session.pubsub.redacted_url()
        ),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Malformed {
            lines: errors,
            sent_rest: true,
        })
    }
}
