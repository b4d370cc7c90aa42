//! The logging layer's events carry handler, topic, message id and correlation id, and no
//! payload unless asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tidemill::middleware::{set_correlation_id, CorrelationIdLayer};
use tidemill::router::HandlerError;
use tidemill::{HandlerResult, InProcessPubSub, Message, Publisher, Router};
use tidemill_otel::LoggingLayer;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

type Event = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Event);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "tidemill_otel" {
            return;
        }
        let mut fields = Event::new();
        fields.insert("level".into(), event.metadata().level().to_string());
        event.record(&mut Fields(&mut fields));
        self.0.lock().push(fields);
    }
}

async fn handle_two(layer: LoggingLayer) -> Vec<Event> {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let pubsub = InProcessPubSub::new();
    let router = Router::new();
    router.layer(CorrelationIdLayer::new()).layer(layer);
    let (done, mut handled) = mpsc::unbounded_channel::<()>();
    router
        .handler("check")
        .subscribe("payments", pubsub.clone())
        .handle(move |msg: Message| {
            let done = done.clone();
            async move {
                done.send(()).unwrap();
                if msg.payload().as_ref() == b"card 4111 1111 1111 1111" {
                    return Err(HandlerError::reject("card refused"));
                }
                HandlerResult::Ok(())
            }
        })
        .unwrap();
    let running = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    let mut ok = Message::with_id("p-1", "cash");
    set_correlation_id(&mut ok, "c-1");
    let refused = Message::with_id("p-2", "card 4111 1111 1111 1111");
    pubsub.publish("payments", vec![ok, refused]).await.unwrap();
    handled.recv().await.unwrap();
    handled.recv().await.unwrap();
    router.close().await.unwrap();
    running.await.unwrap().unwrap();
    let events = capture.0.lock().clone();
    events
}

#[tokio::test(flavor = "current_thread")]
async fn events_carry_the_message_fields_and_no_payload() {
    let events = handle_two(LoggingLayer::new()).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let ok = &events[0];
    assert_eq!(ok["level"], "DEBUG");
    assert_eq!(ok["message"], "message handled");
    assert_eq!(ok["handler"], "check");
    assert_eq!(ok["topic"], "payments");
    assert_eq!(ok["message_id"], "p-1");
    assert_eq!(ok["correlation_id"], "c-1");
    assert_eq!(ok["outputs"], "0");
    assert!(ok.contains_key("duration_ms"));
    let refused = &events[1];
    assert_eq!(refused["level"], "ERROR");
    assert_eq!(refused["message"], "message rejected");
    assert_eq!(refused["message_id"], "p-2");
    assert_eq!(refused["error"], "card refused");
    assert_eq!(refused["disposition"], "Reject");
    // The correlation id middleware gave it one.
    assert_eq!(refused["correlation_id"].len(), 36);
    for event in &events {
        assert!(!event.contains_key("payload"));
        assert!(!event.values().any(|v| v.contains("4111")));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn payloads_only_when_asked_for() {
    let events = handle_two(LoggingLayer::new().with_payload(4)).await;
    assert_eq!(events[0]["payload"], "cash");
    assert_eq!(events[1]["payload"], "card... (24 bytes)");
}
