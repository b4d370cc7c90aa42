//! Router throughput on the in-process pub/sub with observability off and on, in one run.
//!
//! The workload: a publisher task sends messages in batches to `in`; handler `relay` returns
//! each one to `out`, where handler `sink` consumes it. Each message thus passes two handlings
//! and two publishes: with traces on, three spans and two context propagations a message.
//!
//! Everything runs on one current-thread runtime, so the figures measure the work a message
//! costs rather than how threads happen to be woken, and each row also gives the CPU time a
//! message took (process-wide, so the span exporter's thread counts too).
//!
//! `cargo bench -p tidemill-otel --bench overhead` prints the tables. Options through the
//! environment: `TIDEMILL_BENCH_MESSAGES` (default 200,000), `TIDEMILL_BENCH_ROUNDS` (default 3;
//! the configurations run interleaved and each reports its median), `TIDEMILL_BENCH_WORK_US`
//! (the work of the slower handler variant, default 20 µs), `TIDEMILL_BENCH_ONLY` (run only the
//! configurations whose label contains this, beside `off`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tidemill::in_process::InProcessConfig;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router};
use tidemill_otel::{LoggingLayer, Metrics, Observability, TracingPublisher};
use tokio::sync::Notify;
use tracing::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Takes spans and drops them, standing for an exporter whose cost is off this process's
/// hot path (the batch processor hands spans to its own thread).
#[derive(Debug, Default)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Off,
    /// A layer that does nothing: the router's path for handlers with middleware.
    Identity,
    /// The pub/sub decorators of metrics and traces, no layer.
    Decorators,
    Metrics,
    /// Layers and decorators installed, no OpenTelemetry layer in the subscriber.
    TracesUnexported,
    /// Traces through `tracing-opentelemetry` and the SDK, every span sampled.
    Traces,
    /// As `Traces`, with the OpenTelemetry layer configured lean (see [`lean_dispatch`]).
    TracesLean,
    /// As `Traces`, sampling one trace in ten (parent-based, as production setups do).
    TracesSampled,
    /// Traces, metrics and logs (logs at INFO, so successes are not written).
    All,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Off => "off",
            Setup::Identity => "identity layer (no observability)",
            Setup::Decorators => "decorators only",
            Setup::Metrics => "metrics",
            Setup::TracesUnexported => "traces, no OTel layer",
            Setup::Traces => "traces (SDK, all sampled)",
            Setup::TracesLean => "traces (lean OTel layer, all sampled)",
            Setup::TracesSampled => "traces (10% of traces sampled)",
            Setup::All => "traces + metrics + logs",
        }
    }
}

fn otel_dispatch(provider: &SdkTracerProvider) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
            .with(LevelFilter::INFO),
    )
}

/// The OpenTelemetry layer without what the messaging spans do not need: source locations,
/// thread attributes, busy/idle timings and the `target` attribute.
fn lean_dispatch(provider: &SdkTracerProvider) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("bench"))
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_target(false),
            )
            .with(LevelFilter::INFO),
    )
}

/// CPU time this process used so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with ')': utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Runs the workload on a fresh runtime under `dispatch`; returns messages a second and CPU
/// time a message.
fn run(setup: Setup, n: usize, batch: usize, work: Duration, dispatch: &Dispatch) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _main = tracing::dispatcher::set_default(dispatch);
    let cpu = cpu_time();
    let rate = rt.block_on(workload(setup, n, batch, work));
    let cpu_per_msg = (cpu_time() - cpu).as_secs_f64() * 1e6 / n as f64;
    (rate, cpu_per_msg)
}

async fn workload(setup: Setup, n: usize, batch: usize, work: Duration) -> f64 {
    let ps = InProcessPubSub::with_config(InProcessConfig::default().buffer_size(1024));
    let router = Router::new();
    let metrics = Metrics::new();
    match setup {
        Setup::Off => {}
        Setup::Identity => {
            router.layer(tower::layer::util::Identity::new());
        }
        Setup::Decorators => {
            router
                .decorate_publishers(TracingPublisher::decorator())
                .decorate_publishers(metrics.publisher_decorator())
                .decorate_subscribers(metrics.subscriber_decorator());
        }
        Setup::Metrics => Observability::none()
            .metrics(metrics.clone())
            .install(&router),
        Setup::TracesUnexported | Setup::Traces | Setup::TracesLean | Setup::TracesSampled => {
            Observability::new().without_logging().install(&router)
        }
        Setup::All => Observability::new()
            .metrics(metrics.clone())
            .logging(LoggingLayer::new())
            .install(&router),
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let all_seen = Arc::new(Notify::new());
    let spin = move || {
        if !work.is_zero() {
            let until = Instant::now() + work;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    };
    router
        .handler("relay")
        .subscribe("in", ps.clone())
        .publish_to("out", ps.clone())
        .handle(move |msg: Message| {
            spin();
            async move { HandlerResult::Ok(msg) }
        })
        .unwrap();
    let (s, done) = (seen.clone(), all_seen.clone());
    router
        .handler("sink")
        .subscribe("out", ps.clone())
        .handle(move |msg: Message| {
            std::hint::black_box(&msg);
            spin();
            if s.fetch_add(1, Ordering::Relaxed) + 1 == n {
                done.notify_one();
            }
            async { HandlerResult::Ok(()) }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let publisher: Arc<dyn Publisher> = match setup {
        Setup::Off | Setup::Identity => Arc::new(ps.clone()),
        Setup::Metrics => Arc::new(metrics.publisher(ps.clone())),
        _ => Arc::new(TracingPublisher::new(metrics.publisher(ps.clone()))),
    };
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        let mut left = n;
        while left > 0 {
            let k = left.min(batch);
            let messages = (0..k)
                .map(|_| Message::new(&b"0123456789abcdef"[..]))
                .collect();
            publisher.publish("in", messages).await.unwrap();
            left -= k;
        }
    });
    all_seen.notified().await;
    let elapsed = start.elapsed();
    producer.await.unwrap();
    let nacks = metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("tidemill_subscriber_messages_nacked_total") && !l.ends_with(" 0")
        })
        .count();
    assert_eq!(nacks, 0, "messages were nacked");
    router.close().await.unwrap();
    running.await.unwrap().unwrap();
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env("TIDEMILL_BENCH_MESSAGES", 200_000);
    let rounds = env("TIDEMILL_BENCH_ROUNDS", 3).max(1);
    let work = Duration::from_micros(env("TIDEMILL_BENCH_WORK_US", 20) as u64);
    let batch = 100;
    let only = std::env::var("TIDEMILL_BENCH_ONLY").unwrap_or_default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Discard)
        .build();
    let none = Dispatch::none();
    let otel = otel_dispatch(&provider);
    let lean = lean_dispatch(&provider);
    let sampling_provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.1,
        ))))
        .with_batch_exporter(Discard)
        .build();
    let sampled = otel_dispatch(&sampling_provider);
    let setups = [
        Setup::Off,
        Setup::Identity,
        Setup::Decorators,
        Setup::Metrics,
        Setup::TracesUnexported,
        Setup::Traces,
        Setup::TracesLean,
        Setup::TracesSampled,
        Setup::All,
    ];
    println!(
        "{n} messages through publish -> relay -> publish -> sink, one current-thread runtime, median of {rounds} interleaved rounds"
    );
    for (handler_work, count) in [(Duration::ZERO, n), (work, (n / 10).max(1_000))] {
        let title = if handler_work.is_zero() {
            "no-op handlers".to_owned()
        } else {
            format!("handlers doing {} µs of work", handler_work.as_micros())
        };
        // Warm up allocator, scheduler and span machinery.
        run(Setup::All, count / 10 + 1, batch, handler_work, &otel);
        let mut rates = vec![Vec::new(); setups.len()];
        for _ in 0..rounds {
            for (i, setup) in setups.iter().enumerate() {
                if !only.is_empty() && !setup.label().contains(&only) && *setup != Setup::Off {
                    rates[i].push((f64::NAN, f64::NAN));
                    continue;
                }
                let dispatch = match setup {
                    Setup::Traces | Setup::All => &otel,
                    Setup::TracesLean => &lean,
                    Setup::TracesSampled => &sampled,
                    _ => &none,
                };
                rates[i].push(run(*setup, count, batch, handler_work, dispatch));
            }
        }
        let cpu: Vec<f64> = rates
            .iter()
            .map(|r| median(r.iter().map(|(_, c)| *c).collect()))
            .collect();
        let rates: Vec<f64> = rates
            .into_iter()
            .map(|r| median(r.into_iter().map(|(rate, _)| rate).collect()))
            .collect();
        println!("\n{title} ({count} messages)");
        println!(
            "{:<36} {:>10} {:>16} {:>12}",
            "observability", "msgs/s", "throughput loss", "CPU µs/msg"
        );
        for ((setup, rate), cpu) in setups.iter().zip(&rates).zip(&cpu) {
            if rate.is_nan() {
                continue;
            }
            let loss = (1.0 - rate / rates[0]) * 100.0;
            println!(
                "{:<36} {:>10.0} {:>15.1}% {:>12.2}",
                setup.label(),
                rate,
                loss,
                cpu
            );
        }
    }
    let _ = provider.shutdown();
    let _ = sampling_provider.shutdown();
}
