//! The loops that feed a subscription's deliveries to a handler and settle them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::handler::{AckSlot, BatchHandler, Disposition, Handler, HandlerContext, HandlerError};
use super::{BoxLayer, PublisherDecorator, SubscriberDecorator};
use crate::error::Error;
use crate::message::Message;
use crate::pubsub::{Acker, Publisher, Subscriber, Subscription};

/// Maps a message to the hash of its ordering key.
pub(super) type KeyFn = Arc<dyn Fn(&Message) -> Option<u64> + Send + Sync>;

/// Starts a handler's loop once the router-wide layers and the subscription are known.
pub(super) type Runner =
    Box<dyn FnOnce(Vec<BoxLayer>, Subscription, Arc<LoopContext>) -> BoxFuture<'static, ()> + Send>;

/// A registered handler that has not started.
pub(super) struct Pending {
    pub(super) name: Arc<str>,
    pub(super) topic: Arc<str>,
    pub(super) subscriber: Arc<dyn Subscriber>,
    pub(super) subscriber_kind: &'static str,
    pub(super) output: Option<(Arc<str>, Arc<dyn Publisher>)>,
    pub(super) concurrency: usize,
    pub(super) key: Option<KeyFn>,
    pub(super) runner: Runner,
}

/// What the router hands a handler when it starts.
pub(super) struct StartContext {
    pub(super) layers: Vec<BoxLayer>,
    pub(super) publisher_decorators: Vec<PublisherDecorator>,
    pub(super) subscriber_decorators: Vec<SubscriberDecorator>,
    pub(super) stop: CancellationToken,
}

/// The pub/subs a running handler uses, closed with the router.
pub(super) struct PubSubs {
    subscriber: Arc<dyn Subscriber>,
    publisher: Option<Arc<dyn Publisher>>,
}

pub(super) struct Started {
    pub(super) task: JoinHandle<()>,
    pub(super) pubsubs: PubSubs,
}

/// What a handler's loop needs besides its service and subscription.
pub(crate) struct LoopContext {
    name: Arc<str>,
    topic: Arc<str>,
    output: Option<(Arc<str>, Arc<dyn Publisher>)>,
    concurrency: usize,
    key: Option<KeyFn>,
    stop: CancellationToken,
    context: HandlerContext,
}

impl Pending {
    pub(super) async fn start(self, ctx: StartContext) -> Result<Started, Error> {
        // Decorators are applied so that the first added ends up outermost.
        let subscriber = ctx
            .subscriber_decorators
            .iter()
            .rev()
            .fold(self.subscriber, |s, d| d(s));
        let output = self.output.map(|(topic, publisher)| {
            let publisher = ctx
                .publisher_decorators
                .iter()
                .rev()
                .fold(publisher, |p, d| d(p));
            (topic, publisher)
        });
        let subscription = subscriber.subscribe(&self.topic).await?;
        let pubsubs = PubSubs {
            subscriber,
            publisher: output.as_ref().map(|(_, p)| p.clone()),
        };
        let context = HandlerContext {
            handler: self.name.clone(),
            topic: self.topic.clone(),
            subscriber: self.subscriber_kind,
            acker: None,
        };
        let loop_ctx = Arc::new(LoopContext {
            context,
            name: self.name,
            topic: self.topic,
            output,
            concurrency: self.concurrency,
            key: self.key,
            stop: ctx.stop,
        });
        let task = tokio::spawn((self.runner)(ctx.layers, subscription, loop_ctx));
        Ok(Started { task, pubsubs })
    }
}

/// Closes each distinct publisher, then each distinct subscriber; returns the first error.
pub(super) async fn close_all(pubsubs: Vec<PubSubs>) -> Result<(), Error> {
    let mut publishers: Vec<Arc<dyn Publisher>> = Vec::new();
    let mut subscribers: Vec<Arc<dyn Subscriber>> = Vec::new();
    for p in pubsubs {
        if let Some(publisher) = p.publisher {
            if !publishers.iter().any(|q| same(q, &publisher)) {
                publishers.push(publisher);
            }
        }
        if !subscribers.iter().any(|q| same(q, &p.subscriber)) {
            subscribers.push(p.subscriber);
        }
    }
    let mut result = Ok(());
    for publisher in publishers {
        let closed = publisher.close().await;
        result = result.and(closed);
    }
    for subscriber in subscribers {
        let closed = subscriber.close().await;
        result = result.and(closed);
    }
    result
}

fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// How a message's handling ended.
#[derive(Clone, Copy)]
enum Outcome {
    Ack,
    Nack(Option<Duration>),
}

impl Outcome {
    fn settle(self, acker: Acker) {
        match self {
            Outcome::Ack => acker.ack(),
            Outcome::Nack(None) => acker.nack(),
            Outcome::Nack(Some(delay)) => acker.nack_after(delay),
        }
    }

    fn settle_via(self, settler: Settler, ctx: &LoopContext, id: &str) {
        match settler {
            Settler::Own(acker) => self.settle(acker),
            Settler::Shared(slot) => match slot.lock().take() {
                Some(acker) => self.settle(acker),
                None => {
                    if !matches!(self, Outcome::Ack) {
                        tracing::warn!(
                            handler = %ctx.name, topic = %ctx.topic, message_id = id,
                            "the handling failed after the message was acked early"
                        );
                    }
                }
            },
        }
    }
}

/// Who settles a message: the loop alone, or the loop and the middleware through the
/// message's [`HandlerContext`].
enum Settler {
    Own(Acker),
    Shared(AckSlot),
}

impl LoopContext {
    /// Puts the handler context into `message` when middleware will read it.
    fn prepare(&self, message: &mut Message, acker: Acker, with_context: bool) -> Settler {
        if !with_context {
            return Settler::Own(acker);
        }
        let slot: AckSlot = Arc::new(parking_lot::Mutex::new(Some(acker)));
        let mut context = self.context.clone();
        context.acker = Some(slot.clone());
        message.extensions_mut().insert(context);
        Settler::Shared(slot)
    }
}

impl LoopContext {
    /// Publishes a successful handling's outputs and says how to settle its input(s).
    async fn finish(&self, id: &str, result: Result<Vec<Message>, HandlerError>) -> Outcome {
        match result {
            Ok(outputs) if outputs.is_empty() => Outcome::Ack,
            Ok(outputs) => match &self.output {
                Some((topic, publisher)) => match publisher.publish(topic, outputs).await {
                    Ok(()) => Outcome::Ack,
                    Err(error) => {
                        tracing::warn!(
                            handler = %self.name, topic = %self.topic, message_id = id,
                            output_topic = %topic, %error,
                            "publishing the handler's output failed; nacking the message"
                        );
                        Outcome::Nack(None)
                    }
                },
                None => {
                    tracing::error!(
                        handler = %self.name, topic = %self.topic, message_id = id,
                        "a consumer-only handler returned messages; nacking the message"
                    );
                    Outcome::Nack(None)
                }
            },
            Err(error) => {
                let disposition = error.disposition();
                tracing::warn!(
                    handler = %self.name, topic = %self.topic, message_id = id,
                    ?disposition, %error, "handler failed"
                );
                match disposition {
                    Disposition::Drop => Outcome::Ack,
                    Disposition::RetryAfter(delay) => Outcome::Nack(Some(delay)),
                    _ => Outcome::Nack(None),
                }
            }
        }
    }

    fn subscription_ended(&self) {
        if !self.stop.is_cancelled() {
            tracing::warn!(handler = %self.name, topic = %self.topic, "the subscription ended; the handler stops");
        }
    }

    fn subscription_error(&self, error: &Error) {
        tracing::warn!(handler = %self.name, topic = %self.topic, %error, "subscription error");
    }
}

/// Runs a handler of single messages until stopped or until its subscription ends.
pub(super) async fn messages<S: Handler>(
    svc: S,
    subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_context: bool,
) {
    if ctx.concurrency == 1 && ctx.key.is_none() {
        sequential(svc, subscription, ctx, with_context).await
    } else {
        concurrent(svc, subscription, ctx, with_context).await
    }
}

/// One message at a time: the common case, kept free of bookkeeping.
async fn sequential<S: Handler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_context: bool,
) {
    loop {
        if ctx.stop.is_cancelled() {
            break;
        }
        let item = tokio::select! {
            biased;
            item = subscription.next() => item,
            _ = ctx.stop.cancelled() => break,
        };
        let (mut message, acker) = match item {
            Some(Ok(delivery)) => delivery.into_parts(),
            Some(Err(error)) => {
                ctx.subscription_error(&error);
                continue;
            }
            None => {
                ctx.subscription_ended();
                break;
            }
        };
        let settler = ctx.prepare(&mut message, acker, with_context);
        let id = message.shared_id();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(message).await,
            Err(error) => {
                stop_on_unready(&ctx, &error);
                drop(settler);
                break;
            }
        };
        ctx.finish(&id, result).await.settle_via(settler, &ctx, &id);
    }
}

fn stop_on_unready(ctx: &LoopContext, error: &HandlerError) {
    tracing::error!(
        handler = %ctx.name, %error,
        "the handler service failed and cannot take more messages; the handler stops"
    );
}

/// Up to `concurrency` messages at once, in order within a key.
///
/// One hand-written poll function drives everything (completions, readiness, new deliveries,
/// the stop signal), so a message costs no more than a pass through it.
async fn concurrent<S: Handler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_context: bool,
) {
    let mut in_flight = FuturesUnordered::new();
    // Keys with a message in flight, and the messages of that key waiting behind it.
    let mut busy: HashMap<u64, VecDeque<(Message, Settler)>> = HashMap::new();
    let mut waiting = 0usize;
    // Messages whose key became free, started before anything new is taken.
    let mut runnable: VecDeque<(Message, Settler, Option<u64>)> = VecDeque::new();
    let max_waiting = ctx.concurrency.saturating_mul(4).max(16);
    let mut receiving = true;
    let mut ready = false;
    let stop = ctx.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);

    futures::future::poll_fn(|cx| loop {
        let mut progressed = false;
        while let Poll::Ready(Some(done)) = in_flight.poll_next_unpin(cx) {
            progressed = true;
            let Some(key) = done else { continue };
            match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                Some((message, acker)) => {
                    waiting -= 1;
                    runnable.push_back((message, acker, Some(key)));
                }
                None => {
                    busy.remove(&key);
                }
            }
        }
        if receiving && stopped.as_mut().poll(cx).is_ready() {
            receiving = false;
        }
        while in_flight.len() < ctx.concurrency && (receiving || !runnable.is_empty()) {
            if !ready {
                match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => ready = true,
                    Poll::Ready(Err(error)) => {
                        stop_on_unready(&ctx, &error);
                        // What waits is nacked by dropping it; in-flight work still finishes.
                        receiving = false;
                        runnable.clear();
                        busy.clear();
                        waiting = 0;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if let Some((message, acker, key)) = runnable.pop_front() {
                ready = false;
                progressed = true;
                in_flight.push(call(&mut svc, message, acker, key, &ctx));
                continue;
            }
            if waiting >= max_waiting {
                break;
            }
            let delivery = match subscription.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(delivery))) => delivery,
                Poll::Ready(Some(Err(error))) => {
                    ctx.subscription_error(&error);
                    progressed = true;
                    continue;
                }
                Poll::Ready(None) => {
                    ctx.subscription_ended();
                    receiving = false;
                    break;
                }
                Poll::Pending => break,
            };
            progressed = true;
            let (mut message, acker) = delivery.into_parts();
            let acker = ctx.prepare(&mut message, acker, with_context);
            let key = ctx.key.as_ref().and_then(|f| f(&message));
            if let Some(key) = key {
                if let Some(queue) = busy.get_mut(&key) {
                    queue.push_back((message, acker));
                    waiting += 1;
                    continue;
                }
                busy.insert(key, VecDeque::new());
            }
            ready = false;
            in_flight.push(call(&mut svc, message, acker, key, &ctx));
        }
        if !receiving && in_flight.is_empty() && runnable.is_empty() {
            return Poll::Ready(());
        }
        if !progressed {
            return Poll::Pending;
        }
    })
    .await
}

fn call<S: Handler>(
    svc: &mut S,
    message: Message,
    acker: Settler,
    key: Option<u64>,
    ctx: &Arc<LoopContext>,
) -> impl Future<Output = Option<u64>> + Send + 'static {
    let id = message.shared_id();
    let fut = svc.call(message);
    let ctx = ctx.clone();
    async move {
        let result = fut.await;
        ctx.finish(&id, result).await.settle_via(acker, &ctx, &id);
        key
    }
}

/// Collects batches of up to `max` messages (or what arrived within `wait`) and handles each
/// as one: all acked or all nacked.
pub(super) async fn batches<S: BatchHandler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    max: usize,
    wait: Duration,
) {
    let mut ended = false;
    while !ended && !ctx.stop.is_cancelled() {
        let first = tokio::select! {
            biased;
            item = subscription.next() => item,
            _ = ctx.stop.cancelled() => break,
        };
        let first = match first {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                ctx.subscription_error(&error);
                continue;
            }
            None => break,
        };
        let mut messages = Vec::with_capacity(max);
        let mut ackers = Vec::with_capacity(max);
        let (m, a) = first.into_parts();
        messages.push(m);
        ackers.push(a);
        let deadline = tokio::time::Instant::now() + wait;
        while messages.len() < max {
            tokio::select! {
                biased;
                item = subscription.next() => match item {
                    Some(Ok(delivery)) => {
                        let (m, a) = delivery.into_parts();
                        messages.push(m);
                        ackers.push(a);
                    }
                    Some(Err(error)) => ctx.subscription_error(&error),
                    None => {
                        ended = true;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let id = format!("{} (+{} more)", messages[0].id(), messages.len() - 1);
        let result = match svc.ready().await {
            Ok(svc) => svc.call(messages).await,
            Err(error) => {
                stop_on_unready(&ctx, &error);
                break;
            }
        };
        let outcome = ctx.finish(&id, result).await;
        for acker in ackers {
            outcome.settle(acker);
        }
    }
}
