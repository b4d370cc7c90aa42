//! `tidemill poison`: what the core's poison-queue middleware wrote — its reason, original topic
//! and handler — and moving messages back to their topics or discarding them.
//!
//! The poison topic is read as a consumer group (`--group`, default `tidemill_poison`): every
//! delivery is held unsettled until the command ends, then settled so that the next look finds
//! exactly the messages not requeued or discarded:
//!
//! - the chosen ones are acked (a requeued one once it is back on its topic);
//! - the others are nacked, so they come back — where each message is settled on its own;
//! - where acks commit an offset (SQL in log mode, Kafka), a nacked message would hold back the
//!   commit of every chosen one after it, which would then come back too. So the others read
//!   before the last chosen one are published again to the poison topic (same id, payload and
//!   metadata, after the rest) and acked, and only those after it are nacked.
//!
//! Copies with the same id (a redelivery, or a message published again after a failure) are
//! one message: all of them are settled together.

use std::collections::HashMap;
use std::io::Write;

use futures::StreamExt;
use tidemill::middleware::{
    POISON_HANDLER_KEY, POISON_REASON_KEY, POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
use tidemill::{Delivery, Message, PublisherExt};
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
        let mut held: Vec<Held> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        while let Ok(Some(next)) = tokio::time::timeout(args.wait, subscription.next()).await {
            match next {
                Ok(d) => match by_id.get(d.message().id()) {
                    Some(&i) => held[i].copies.push(d),
                    None => {
                        by_id.insert(d.message().id().to_owned(), held.len());
                        held.push(Held { copies: vec![d] });
                    }
                },
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        let outcome = act(session, args, action, &mut held).await;
        // Whatever is still held stays for the next look.
        for h in held {
            h.nack();
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
    held: &mut Vec<Held>,
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
            // What happens to each message, in the order read.
            let plan: Vec<Plan> = held
                .iter()
                .map(|h| {
                    if !selected(selection, h.message()) {
                        return Plan::Keep;
                    }
                    if !requeue {
                        return Plan::Discard;
                    }
                    match h.message().metadata().get(POISON_TOPIC_KEY) {
                        Some(topic) => Plan::Requeue(topic.to_owned()),
                        None => {
                            eprintln!(
                                "warning: {} has no original topic ({POISON_TOPIC_KEY}); left in place",
                                h.message().id()
                            );
                            Plan::Keep
                        }
                    }
                })
                .collect();
            let chosen = plan.iter().filter(|p| !matches!(p, Plan::Keep)).count();
            if chosen == 0 {
                return Err(CliError::NotFound(format!(
                    "no message on {} matches",
                    args.topic
                )));
            }
            let verb = if requeue { "requeue" } else { "discard" };
            if !yes && !confirm(&format!("{verb} {chosen} message(s) from {}?", args.topic))? {
                return Err(CliError::NotFound("aborted: nothing changed".into()));
            }
            let publisher = session.pubsub.publisher();
            let mut items: Vec<(Held, Plan)> = std::mem::take(held).into_iter().zip(plan).collect();

            // Where an ack commits an offset, the kept messages read before the last chosen one
            // move to the end of the poison topic, so that nothing holds that commit back.
            if session.pubsub.commits_acked_prefix() {
                let last = items
                    .iter()
                    .rposition(|(_, p)| !matches!(p, Plan::Keep))
                    .expect("something is chosen");
                let moved: Vec<Message> = items[..last]
                    .iter()
                    .filter(|(_, p)| matches!(p, Plan::Keep))
                    .map(|(h, _)| h.message().clone())
                    .collect();
                if !moved.is_empty() {
                    if let Err(e) = session
                        .timed(
                            "publishing the kept messages again",
                            publisher.publish(&args.topic, moved),
                        )
                        .await
                        .and_then(|r| r.map_err(CliError::from))
                    {
                        held.extend(items.into_iter().map(|(h, _)| h));
                        return Err(e);
                    }
                    let mut rest = Vec::with_capacity(items.len());
                    for (i, (h, p)) in items.into_iter().enumerate() {
                        if i < last && matches!(p, Plan::Keep) {
                            h.ack();
                        } else {
                            rest.push((h, p));
                        }
                    }
                    items = rest;
                }
            }

            let fresh_ids = session.pubsub.drops_repeated_ids();
            let mut done = Vec::new();
            let mut failure = None;
            for (h, p) in items {
                let topic = match p {
                    Plan::Keep => {
                        held.push(h);
                        continue;
                    }
                    _ if failure.is_some() => {
                        held.push(h);
                        continue;
                    }
                    Plan::Discard => {
                        done.push(Done {
                            id: h.message().id().to_owned(),
                            topic: None,
                            new_id: None,
                        });
                        h.ack();
                        continue;
                    }
                    Plan::Requeue(topic) => topic,
                };
                let message = requeued(h.message(), fresh_ids);
                let new_id = fresh_ids.then(|| message.id().to_owned());
                match session
                    .timed("requeueing", publisher.publish_one(&topic, message))
                    .await
                    .and_then(|r| r.map_err(CliError::from))
                {
                    Ok(()) => {
                        // Acked only once it is back on its topic.
                        done.push(Done {
                            id: h.message().id().to_owned(),
                            topic: Some(topic),
                            new_id,
                        });
                        h.ack();
                    }
                    Err(e) => {
                        held.push(h);
                        failure = Some(e);
                    }
                }
            }
            if json {
                let rows: Vec<_> = done
                    .iter()
                    .map(|d| {
                        let mut row = serde_json::json!({"id": d.id, "topic": d.topic});
                        if let Some(new_id) = &d.new_id {
                            row["new_id"] = new_id.as_str().into();
                        }
                        row
                    })
                    .collect();
                println!("{}", serde_json::json!({ verb: rows }));
            } else {
                for d in &done {
                    match (&d.topic, &d.new_id) {
                        (Some(topic), Some(new_id)) => {
                            println!("requeued {} to {topic} as {new_id}", d.id)
                        }
                        (Some(topic), None) => println!("requeued {} to {topic}", d.id),
                        (None, _) => println!("discarded {}", d.id),
                    }
                }
            }
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

/// What a requeue or discard does with one message.
enum Plan {
    Keep,
    Discard,
    /// Back to this topic.
    Requeue(String),
}

/// A message requeued or discarded.
struct Done {
    id: String,
    /// Where it was requeued to.
    topic: Option<String>,
    /// The id it was requeued with, where the broker would drop the old one.
    new_id: Option<String>,
}

/// The message to publish to its original topic: without the poison entries, and with a new
/// id (the old one in `tidemill_requeued_from`) where the broker would drop the old one as a
/// duplicate of the message first published.
fn requeued(poisoned: &Message, fresh_id: bool) -> Message {
    let (id, payload, mut metadata) = poisoned.clone().into_parts();
    for key in [
        POISON_REASON_KEY,
        POISON_TOPIC_KEY,
        POISON_HANDLER_KEY,
        POISON_SUBSCRIBER_KEY,
    ] {
        metadata.remove(key);
    }
    if fresh_id {
        metadata.set(REQUEUED_FROM_KEY, id.to_string());
        Message::from_parts(tidemill::new_uuid(), payload, metadata)
    } else {
        Message::from_parts(id, payload, metadata)
    }
}

/// Where a message requeued with a new id keeps the id it had.
pub(crate) const REQUEUED_FROM_KEY: &str = "tidemill_requeued_from";

/// One message of the poison topic and every delivery of it this read got.
struct Held {
    copies: Vec<Delivery>,
}

impl Held {
    fn message(&self) -> &Message {
        self.copies[0].message()
    }

    fn ack(self) {
        for d in self.copies {
            d.ack();
        }
    }

    fn nack(self) {
        for d in self.copies {
            d.nack();
        }
    }
}

fn confirm(question: &str) -> Result<bool, CliError> {
    use std::io::IsTerminal;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    let read = std::io::stdin()
        .read_line(&mut answer)
        .map_err(CliError::io("reading the answer"))?;
    if read == 0 {
        eprintln!();
        let why = if std::io::stdin().is_terminal() {
            "no answer"
        } else {
            "no answer: standard input is not a terminal"
        };
        return Err(CliError::NotFound(format!(
            "aborted, nothing changed ({why}); pass --yes to skip the question"
        )));
    }
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
