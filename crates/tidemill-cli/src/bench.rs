//! `tidemill bench`: Watermill's benchmark method on any URL. A consumer subscribes first;
//! C publishers then publish N messages of S bytes between them while it consumes them. Rates
//! are messages (and payload megabytes) per second of each side's wall time; latencies come from
//! HDR histograms: the publish call, and publish-to-delivery.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemill::Message;
use tidemill_any::SubscriberOptions;

use crate::cli::{BenchArgs, Output};
use crate::error::CliError;
use crate::session::Session;

const SENT_AT: &str = "bench_sent_at_us";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// One side's figures.
struct Side {
    messages: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), CliError> {
    let config = tidemill_any::parse(&args.common.url)?;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench_{}", tidemill::new_uuid().replace('-', "")));
    config.validate_topic(&topic)?;
    let mut options =
        SubscriberOptions::group(format!("bench_{}", tidemill::new_uuid().replace('-', "")));
    if let Some(n) = args.max_in_flight {
        options = options.max_in_flight(n);
    }
    config.check_subscriber(&options)?;
    let session = Session::connect(config, args.common.timeout).await?;
    let result = bench(&session, &args, &topic, options).await;
    session.close().await;
    let (publish, consume) = result?;
    report(&args, &session, &publish, &consume);
    Ok(())
}

async fn bench(
    session: &Session,
    args: &BenchArgs,
    topic: &str,
    options: SubscriberOptions,
) -> Result<(Side, Side), CliError> {
    let n = args.messages;
    let subscriber = session.pubsub.subscriber(options).await?;
    let mut subscription = session
        .timed("subscribing", subscriber.subscribe(topic))
        .await??;
    let bar = if args.common.output == Output::Text {
        ProgressBar::with_draw_target(Some(n * 2), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_message("published + consumed");

    let start = Instant::now();
    let consumer = {
        let bar = bar.clone();
        let stall = session.timeout.max(Duration::from_secs(30));
        async move {
            let mut seen = HashSet::with_capacity(n as usize);
            let mut latency = histogram();
            while (seen.len() as u64) < n {
                let next = match tokio::time::timeout(stall, subscription.next()).await {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(_) => break,
                };
                let delivery = match next {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("warning: {e}");
                        continue;
                    }
                };
                if let Some(sent) = delivery
                    .message()
                    .metadata()
                    .get(SENT_AT)
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    let _ = latency.record(now_us().saturating_sub(sent).max(1));
                }
                if seen.insert(delivery.message().id().to_owned()) {
                    bar.inc(1);
                }
                delivery.ack();
            }
            (seen.len() as u64, start.elapsed(), latency)
        }
    };
    let publisher = session.pubsub.publisher();
    let payload = bytes::Bytes::from(vec![b'x'; args.size]);
    let publishers = args.publishers.max(1) as u64;
    let batch = args.batch.max(1) as u64;
    let producers: Vec<_> = (0..publishers)
        .map(|p| {
            let share = n / publishers + u64::from(p < n % publishers);
            let publisher = Arc::clone(&publisher);
            let payload = payload.clone();
            let topic = topic.to_owned();
            let bar = bar.clone();
            let timeout = session.timeout;
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut sent = 0;
                while sent < share {
                    let k = batch.min(share - sent);
                    let messages: Vec<Message> = (0..k)
                        .map(|_| {
                            Message::new(payload.clone())
                                .with_metadata(SENT_AT, now_us().to_string())
                        })
                        .collect();
                    let t = Instant::now();
                    match tokio::time::timeout(timeout, publisher.publish(&topic, messages)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(CliError::PubSub(e)),
                        Err(_) => {
                            return Err(CliError::Bench(format!(
                                "a publish call took longer than {}",
                                humantime::format_duration(timeout)
                            )))
                        }
                    }
                    let _ = latency.record((t.elapsed().as_micros() as u64).max(1));
                    sent += k;
                    bar.inc(k);
                }
                Ok(latency)
            })
        })
        .collect();
    let publishing = async {
        let mut latency = histogram();
        for p in producers {
            let h = p
                .await
                .map_err(|e| CliError::Bench(format!("a publisher failed: {e}")))??;
            latency.add(&h).expect("same bounds");
        }
        Ok::<_, CliError>((start.elapsed(), latency))
    };
    let (published, (consumed, consume_elapsed, consume_latency)) =
        tokio::join!(publishing, consumer);
    bar.finish_and_clear();
    let close = session
        .timed("closing the subscriber", subscriber.close())
        .await;
    let (publish_elapsed, publish_latency) = published?;
    if let Ok(Err(e)) = close {
        eprintln!("warning: closing the subscriber: {e}");
    }
    if consumed < n {
        return Err(CliError::Bench(format!(
            "consumed {consumed} of {n} messages before the consumer stalled"
        )));
    }
    Ok((
        Side {
            messages: n,
            elapsed: publish_elapsed,
            latency: publish_latency,
        },
        Side {
            messages: consumed,
            elapsed: consume_elapsed,
            latency: consume_latency,
        },
    ))
}

fn rate(side: &Side) -> f64 {
    side.messages as f64 / side.elapsed.as_secs_f64().max(1e-9)
}

fn report(args: &BenchArgs, session: &Session, publish: &Side, consume: &Side) {
    let mb = |side: &Side| rate(side) * args.size as f64 / 1_000_000.0;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    match args.common.output {
        Output::Json => {
            let side = |name: &str, s: &Side| {
                serde_json::json!({
                    "phase": name,
                    "messages": s.messages,
                    "seconds": s.elapsed.as_secs_f64(),
                    "msgs_per_sec": rate(s),
                    "mb_per_sec": mb(s),
                    "latency_ms": {
                        "p50": ms(&s.latency, 0.5), "p90": ms(&s.latency, 0.9),
                        "p99": ms(&s.latency, 0.99), "max": s.latency.max() as f64 / 1000.0,
                    },
                })
            };
            println!(
                "{}",
                serde_json::json!({
                    "url": session.pubsub.redacted_url(),
                    "backend": session.pubsub.kind().name(),
                    "messages": args.messages,
                    "size": args.size,
                    "publishers": args.publishers,
                    "batch": args.batch,
                    "results": [side("publish", publish), side("consume", consume)],
                })
            );
        }
        Output::Text => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header(vec![
                "phase", "messages", "seconds", "msgs/s", "MB/s", "p50 ms", "p90 ms", "p99 ms",
                "max ms",
            ]);
            for (name, s, what) in [
                ("publish", publish, "per publish call"),
                ("consume", consume, "publish to delivery"),
            ] {
                let _ = what;
                table.add_row(vec![
                    name.to_owned(),
                    s.messages.to_string(),
                    format!("{:.2}", s.elapsed.as_secs_f64()),
                    format!("{:.0}", rate(s)),
                    format!("{:.2}", mb(s)),
                    format!("{:.2}", ms(&s.latency, 0.5)),
                    format!("{:.2}", ms(&s.latency, 0.9)),
                    format!("{:.2}", ms(&s.latency, 0.99)),
                    format!("{:.2}", s.latency.max() as f64 / 1000.0),
                ]);
            }
            println!(
                "{} ({}): {} messages of {} bytes, {} publisher(s), {} per call",
                session.pubsub.redacted_url(),
                session.pubsub.kind(),
                args.messages,
                args.size,
                args.publishers,
                args.batch
            );
            println!("{table}");
            println!("latency: publish = one publish call; consume = from publish to delivery");
        }
    }
}
