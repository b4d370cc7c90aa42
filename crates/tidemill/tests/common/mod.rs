//! Helpers shared by the middleware and component tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::router::RouterError;
use tidemill::{
    Acker, Delivery, InProcessPubSub, Message, Publisher, Router, Settle, Settlement, Subscriber,
    Subscription,
};
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn start(router: &Router) -> tokio::task::JoinHandle<Result<(), RouterError>> {
    let r = router.clone();
    tokio::spawn(async move { r.run().await })
}

/// Takes `n` messages from `sub`, acking each.
pub async fn take(sub: &mut Subscription, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
            .expect("stream ended")
            .unwrap();
        out.push(d.message().clone());
        d.ack();
    }
    out
}

/// Asserts nothing arrives on `sub` within `wait`.
pub async fn nothing_within(sub: &mut Subscription, wait: Duration) {
    if let Ok(Some(d)) = timeout(wait, sub.next()).await {
        panic!("unexpected message {:?}", d.map(|d| d.message().clone()));
    }
}

pub async fn publish_ids(ps: &impl Publisher, topic: &str, ids: impl IntoIterator<Item = usize>) {
    let msgs = ids
        .into_iter()
        .map(|i| Message::with_id(i.to_string(), format!("payload {i}")))
        .collect();
    ps.publish(topic, msgs).await.unwrap();
}

pub fn ids(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.id().to_owned()).collect()
}

/// Waits (on whatever clock runs) until `cond` holds.
pub async fn until(mut cond: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition not met in time");
}

/// Every settlement made through a [`RecordingSubscriber`], with the message id.
#[derive(Clone, Default)]
pub struct Settlements(Arc<Mutex<Vec<(String, Settlement)>>>);

impl Settlements {
    pub fn all(&self) -> Vec<(String, Settlement)> {
        self.0.lock().clone()
    }
    pub fn acks(&self) -> usize {
        self.0
            .lock()
            .iter()
            .filter(|(_, s)| *s == Settlement::Ack)
            .count()
    }
    pub fn nacks(&self) -> usize {
        self.0
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s, Settlement::Nack { .. }))
            .count()
    }
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }
}

struct Recorded {
    id: String,
    inner: Acker,
    log: Settlements,
}

impl Settle for Recorded {
    fn settle(self: Box<Self>, settlement: Settlement) {
        self.log.0.lock().push((self.id.clone(), settlement));
        self.inner.settle(settlement);
    }
}

/// An in-process subscriber that records how each delivery is settled.
#[derive(Clone)]
pub struct RecordingSubscriber {
    pub inner: InProcessPubSub,
    pub log: Settlements,
}

impl RecordingSubscriber {
    pub fn new(inner: InProcessPubSub) -> Self {
        Self {
            inner,
            log: Settlements::default(),
        }
    }
}

#[async_trait]
impl Subscriber for RecordingSubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        self.inner.max_in_flight()
    }

    fn dead_letter_publisher(&self) -> Option<Arc<dyn Publisher>> {
        self.inner.dead_letter_publisher()
    }

    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        let sub = self.inner.subscribe(topic).await?;
        let log = self.log.clone();
        let stream = sub.map(move |item| {
            item.map(|d| {
                let (message, acker) = d.into_parts();
                let settle = Recorded {
                    id: message.id().to_owned(),
                    inner: acker,
                    log: log.clone(),
                };
                Delivery::new(message, Acker::new(settle))
            })
        });
        Ok(Subscription::new(topic.to_owned(), stream))
    }

    async fn close(&self) -> tidemill::Result<()> {
        Subscriber::close(&self.inner).await
    }
}

/// A publisher that fails its first `failures` publishes, then publishes to `inner`.
#[derive(Clone)]
pub struct FlakyPublisher {
    pub inner: InProcessPubSub,
    pub failures: Arc<AtomicUsize>,
    pub calls: Arc<AtomicUsize>,
}

impl FlakyPublisher {
    pub fn new(inner: InProcessPubSub, failures: usize) -> Self {
        Self {
            inner,
            failures: Arc::new(AtomicUsize::new(failures)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[async_trait]
impl Publisher for FlakyPublisher {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> tidemill::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(tidemill::Error::publish(
                topic,
                messages.first().map_or("", |m| m.id()),
                "broker unavailable",
            ));
        }
        self.inner.publish(topic, messages).await
    }

    async fn close(&self) -> tidemill::Result<()> {
        Publisher::close(&self.inner).await
    }
}
