//! `tidemill poison`: what the core's poison-queue middleware wrote — its reason, original topic
//! and handler — and moving messages back to their topics or discarding them.
//!
//! The poison topic is read as a consumer group (`--group`, default `tidemill_poison`): every
//! delivery is held unsettled until the command ends; the ones requeued or discarded are acked,
//! all others nacked, so they stay for the next look.

use std::collections::HashSet;
use std::io::Write;

use futures::StreamExt;
use tidemill::middleware::{
    POISON_HANDLER_KEY, POISON_REASON_KEY, POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
use tidemill::{Delivery, Message};
use tidemill_any::{BackendKind, SubscriberOptions};

use crate::cli::{Output, PoisonAction, PoisonArgs, PoisonTarget, Selection};
use crate::consume::to_json;
use crate::error::CliError;
use crate::session::Session;

pub(crate) async fn run(args: PoisonArgs) -> Result<(), CliError> {
    let action = args.action;
    let args = action.target();
    let config = tidemill_any::parse(&args.common.url)?;
    config.validate_topic(&args.topic)?;
    let mut options = SubscriberOptions::group(args.group.clone());
    if !matches!(config.kind(), BackendKind::Kafka | BackendKind::Memory) {
        // Everything is held until the command ends: the window must not stop delivery.
        options = options.max_in_flight(u16::MAX as usize);
    }
    config.check_subscriber(&options)?;
    let session = Session::connect(config, args.common.timeout).await?;
    let result = poison(&session, args, &action, options).await;
    session.close().await;
    result
}

async fn poison(
    session: &Session,
    args: &PoisonTarget,
    action: &PoisonAction,
    options: SubscriberOptions,
) -> Result<(), CliError> {
    let subscriber = session.pubsub.subscriber(options).await?;
    let result = async {
        let mut subscription = session
            .timed("subscribing", subscriber.subscribe(&args.topic))
            .await??;
        // Read until the topic is quiet for `--wait`.
        let mut held: Vec<Delivery> = Vec::new();
        let mut ids = HashSet::new();
        while let Ok(Some(next)) = tokio::time::timeout(args.wait, subscription.next()).await {
            match next {
                Ok(d) => {
                    // A nacked message may come back while we read: keep one of each.
                    if ids.insert(d.message().id().to_owned()) {
                        held.push(d);
                    } else {
                        d.nack();
                    }
                }
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        let outcome = act(session, args, action, &mut held).await;
        for d in held {
            d.nack();
        }
        drop(subscription);
        outcome
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

fn selected(selection: &Selection, message: &Message) -> bool {
    if let Some(id) = &selection.id {
        return message.id() == id;
    }
    if !selection.filter.is_empty() {
        return selection
            .filter
            .iter()
            .all(|(k, v)| message.metadata().get(k) == Some(v.as_str()));
    }
    selection.all
}

async fn act(
    session: &Session,
    args: &PoisonTarget,
    action: &PoisonAction,
    held: &mut Vec<Delivery>,
) -> Result<(), CliError> {
    let json = args.common.output == Output::Json;
    match action {
        PoisonAction::List { .. } => {
            if json {
                let rows: Vec<_> = held
                    .iter()
                    .map(|d| to_json(&args.topic, d.message()))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                table.set_header(vec!["id", "original topic", "handler", "reason"]);
                for d in held.iter() {
                    let md = d.message().metadata();
                    table.add_row(vec![
                        d.message().id(),
                        md.get(POISON_TOPIC_KEY).unwrap_or("-"),
                        md.get(POISON_HANDLER_KEY).unwrap_or("-"),
                        md.get(POISON_REASON_KEY).unwrap_or("-"),
                    ]);
                }
                println!("{table}");
                println!("{} message(s) on {}", held.len(), args.topic);
            }
            Ok(())
        }
        PoisonAction::Show { id, .. } => {
            let d = held
                .iter()
                .find(|d| d.message().id() == id)
                .ok_or_else(|| CliError::NotFound(format!("no message {id} on {}", args.topic)))?;
            if json {
                println!("{}", to_json(&args.topic, d.message()));
            } else {
                let m = d.message();
                let md = m.metadata();
                println!("id:             {}", m.id());
                println!(
                    "original topic: {}",
                    md.get(POISON_TOPIC_KEY).unwrap_or("-")
                );
                println!(
                    "handler:        {}",
                    md.get(POISON_HANDLER_KEY).unwrap_or("-")
                );
                println!(
                    "subscriber:     {}",
                    md.get(POISON_SUBSCRIBER_KEY).unwrap_or("-")
                );
                println!(
                    "reason:         {}",
                    md.get(POISON_REASON_KEY).unwrap_or("-")
                );
                for (k, v) in md
                    .iter()
                    .filter(|(k, _)| !k.starts_with("tidemill_poison_"))
                {
                    println!("metadata:       {k}={v}");
                }
                println!("payload:\n{}", String::from_utf8_lossy(m.payload()));
            }
            Ok(())
        }
        PoisonAction::Requeue { selection, yes, .. }
        | PoisonAction::Discard { selection, yes, .. } => {
            let requeue = matches!(action, PoisonAction::Requeue { .. });
            let (chosen, rest): (Vec<Delivery>, Vec<Delivery>) = std::mem::take(held)
                .into_iter()
                .partition(|d| selected(selection, d.message()));
            *held = rest;
            if chosen.is_empty() {
                held.extend(chosen);
                return Err(CliError::NotFound(format!(
                    "no message on {} matches",
                    args.topic
                )));
            }
            let verb = if requeue { "requeue" } else { "discard" };
            if !yes
                && !confirm(&format!(
                    "{verb} {} message(s) from {}?",
                    chosen.len(),
                    args.topic
                ))?
            {
                held.extend(chosen);
                return Err(CliError::NotFound("aborted: nothing changed".into()));
            }
            let publisher = session.pubsub.publisher();
            let mut done = Vec::new();
            for d in chosen {
                if requeue {
                    let Some(topic) = d
                        .message()
                        .metadata()
                        .get(POISON_TOPIC_KEY)
                        .map(str::to_owned)
                    else {
                        eprintln!(
                            "warning: {} has no original topic ({POISON_TOPIC_KEY}); left in place",
                            d.message().id()
                        );
                        held.push(d);
                        continue;
                    };
                    let (id, payload, mut metadata) = d.message().clone().into_parts();
                    for key in [
                        POISON_REASON_KEY,
                        POISON_TOPIC_KEY,
                        POISON_HANDLER_KEY,
                        POISON_SUBSCRIBER_KEY,
                    ] {
                        metadata.remove(key);
                    }
                    let message = Message::from_parts(id, payload, metadata);
                    match session
                        .timed("requeueing", publisher.publish(&topic, vec![message]))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            held.push(d);
                            return Err(e.into());
                        }
                        Err(e) => {
                            held.push(d);
                            return Err(e);
                        }
                    }
                    // Acked only once it is back on its topic.
                    done.push((d.message().id().to_owned(), topic));
                } else {
                    done.push((d.message().id().to_owned(), String::new()));
                }
                d.ack();
            }
            if json {
                let rows: Vec<_> = done
                    .iter()
                    .map(|(id, topic)| serde_json::json!({"id": id, "topic": if requeue { Some(topic) } else { None }}))
                    .collect();
                println!("{}", serde_json::json!({ verb: rows }));
            } else {
                for (id, topic) in &done {
                    if requeue {
                        println!("requeued {id} to {topic}");
                    } else {
                        println!("discarded {id}");
                    }
                }
            }
            Ok(())
        }
    }
}

fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(CliError::io("reading the answer"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
