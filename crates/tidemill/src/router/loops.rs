//! The loops that feed a subscription's deliveries to a handler and settle them: one at a time,
//! concurrently (in order within a key), or in batches.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tower::ServiceExt;

use super::handler::{BatchHandler, Handler, HandlerError};
use super::run::{LoopContext, LoopEnd, Settler};
use crate::message::Message;
use crate::pubsub::Subscription;

/// Runs a handler of single messages until stopped or until its subscription ends.
/// `with_middleware`: the service is wrapped in layers, whose innermost service publishes the
/// outputs, and which share the acker.
pub(super) async fn messages<S: Handler>(
    svc: S,
    subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_middleware: bool,
) -> LoopEnd {
    if ctx.concurrency == 1 && ctx.key.is_none() {
        sequential(svc, subscription, ctx, with_middleware).await
    } else {
        concurrent(svc, subscription, ctx, with_middleware).await
    }
}

/// One message at a time: the common case, kept free of bookkeeping.
async fn sequential<S: Handler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_middleware: bool,
) -> LoopEnd {
    loop {
        if ctx.stop.is_cancelled() {
            return LoopEnd::Stopped;
        }
        let item = tokio::select! {
            biased;
            item = subscription.next() => item,
            _ = ctx.stop.cancelled() => return LoopEnd::Stopped,
        };
        let (mut message, acker) = match item {
            Some(Ok(delivery)) => delivery.into_parts(),
            Some(Err(error)) => {
                ctx.subscription_error(&error);
                continue;
            }
            None if ctx.stop.is_cancelled() => return LoopEnd::Stopped,
            None => return LoopEnd::SubscriptionEnded,
        };
        let original = message.clone();
        let settler = ctx.prepare(&mut message, acker, with_middleware);
        // Read only where a warning may need it: a fresh id is not written out otherwise.
        let id = with_middleware.then(|| message.shared_id());
        let result = match svc.ready().await {
            Ok(svc) => svc.call(message).await,
            Err(error) => {
                drop(settler);
                return unready(error);
            }
        };
        ctx.finish(original, result, with_middleware)
            .await
            .settle_via(settler, &ctx, id.as_deref());
    }
}

fn unready(error: HandlerError) -> LoopEnd {
    LoopEnd::Unready(error.to_string())
}

type Waiting = (Message, Message, Settler);

/// Up to `concurrency` messages at once, in order within a key.
///
/// One hand-written poll function drives everything (completions, readiness, new deliveries,
/// the stop signal), so a message costs no more than a pass through it.
async fn concurrent<S: Handler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    with_middleware: bool,
) -> LoopEnd {
    let mut in_flight = FuturesUnordered::new();
    // Keys with a message in flight, and the messages of that key waiting behind it.
    let mut busy: HashMap<u64, VecDeque<Waiting>> = HashMap::new();
    let mut waiting = 0usize;
    // Messages whose key became free, started before anything new is taken.
    let mut runnable: VecDeque<(Waiting, Option<u64>)> = VecDeque::new();
    let max_waiting = ctx.concurrency.saturating_mul(4).max(16);
    let mut receiving = true;
    let mut ready = false;
    let mut end = LoopEnd::Stopped;
    let stop = ctx.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);

    futures::future::poll_fn(|cx| loop {
        let mut progressed = false;
        while let Poll::Ready(Some(done)) = in_flight.poll_next_unpin(cx) {
            progressed = true;
            let Some(key) = done else { continue };
            match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => {
                    waiting -= 1;
                    runnable.push_back((next, Some(key)));
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
                        end = unready(error);
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
            if let Some((next, key)) = runnable.pop_front() {
                ready = false;
                progressed = true;
                in_flight.push(call(&mut svc, next, key, &ctx, with_middleware));
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
                    if !ctx.stop.is_cancelled() {
                        end = LoopEnd::SubscriptionEnded;
                    }
                    receiving = false;
                    break;
                }
                Poll::Pending => break,
            };
            progressed = true;
            let (mut message, acker) = delivery.into_parts();
            let original = message.clone();
            let settler = ctx.prepare(&mut message, acker, with_middleware);
            let key = ctx.key.as_ref().and_then(|f| f(&message));
            if let Some(key) = key {
                if let Some(queue) = busy.get_mut(&key) {
                    queue.push_back((message, original, settler));
                    waiting += 1;
                    continue;
                }
                busy.insert(key, VecDeque::new());
            }
            ready = false;
            in_flight.push(call(
                &mut svc,
                (message, original, settler),
                key,
                &ctx,
                with_middleware,
            ));
        }
        if !receiving && in_flight.is_empty() && runnable.is_empty() {
            return Poll::Ready(());
        }
        if !progressed {
            return Poll::Pending;
        }
    })
    .await;
    end
}

fn call<S: Handler>(
    svc: &mut S,
    (message, original, settler): Waiting,
    key: Option<u64>,
    ctx: &Arc<LoopContext>,
    with_middleware: bool,
) -> impl Future<Output = Option<u64>> + Send + 'static {
    let id = with_middleware.then(|| message.shared_id());
    let fut = svc.call(message);
    let ctx = ctx.clone();
    async move {
        let result = fut.await;
        ctx.finish(original, result, with_middleware)
            .await
            .settle_via(settler, &ctx, id.as_deref());
        key
    }
}

/// Collects batches of up to `max` messages (or what arrived within `wait`) and handles each
/// as one: all acked or all nacked (a rejected batch is dead-lettered message by message).
pub(super) async fn batches<S: BatchHandler>(
    mut svc: S,
    mut subscription: Subscription,
    ctx: Arc<LoopContext>,
    max: usize,
    wait: Duration,
) -> LoopEnd {
    let mut ended = false;
    while !ended {
        let first = tokio::select! {
            biased;
            item = subscription.next() => item,
            _ = ctx.stop.cancelled() => return LoopEnd::Stopped,
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
        let originals = messages.clone();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(messages).await,
            Err(error) => return unready(error),
        };
        match result {
            Err(error) if error.disposition() == super::Disposition::Reject => {
                // One by one, so each message's settlement matches where it went.
                for (original, acker) in originals.into_iter().zip(ackers) {
                    let err = HandlerError::reject(error.to_string());
                    ctx.finish(original, Err(err), false).await.settle(acker);
                }
            }
            result => {
                let first = originals.into_iter().next().expect("a batch has a message");
                let outcome = ctx.finish(first, result, false).await;
                for acker in ackers {
                    outcome.settle(acker);
                }
            }
        }
    }
    if ctx.stop.is_cancelled() {
        LoopEnd::Stopped
    } else {
        LoopEnd::SubscriptionEnded
    }
}
