//! A handler's start: decorated pub/subs, the loop context, and the supervisor that runs its
//! loop, restarts it when it dies and reports what happened; and how a handling is settled.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::events::{Events, RouterEvent};
use super::handler::{AckSlot, Disposition, HandlerContext, HandlerError};
use super::outputs::OutputPublishFailed;
use super::restart::{RestartPolicy, HEALTHY_RUN};
use super::{BoxLayer, PublisherDecorator, RouterError, SubscriberDecorator};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::message::Message;
use crate::pubsub::{Acker, Publisher, Subscriber, Subscription};

/// Maps a message to the hash of its ordering key.
pub(super) type KeyFn = Arc<dyn Fn(&Message) -> Option<u64> + Send + Sync>;

/// Runs a handler's loop once the router-wide layers and the subscription are known; called
/// again for each restart.
pub(super) type Runner = Arc<
    dyn Fn(Vec<BoxLayer>, Subscription, Arc<LoopContext>) -> BoxFuture<'static, LoopEnd>
        + Send
        + Sync,
>;

/// Why a handler's loop returned.
pub(super) enum LoopEnd {
    /// It was told to stop.
    Stopped,
    /// Its subscription ended without being told to stop.
    SubscriptionEnded,
    /// Its service failed in `poll_ready` and can take no more messages.
    Unready(String),
}

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
    pub(super) events: Events,
    pub(super) restart: RestartPolicy,
    pub(super) dead_letter: Option<(Arc<str>, Arc<dyn Publisher>)>,
    pub(super) reject_delay: Duration,
    /// Told when the restart policy gives up on the handler.
    pub(super) on_failure: Arc<dyn Fn(RouterError) + Send + Sync>,
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
    pub(crate) name: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) output: Option<(Arc<str>, Arc<dyn Publisher>)>,
    pub(crate) concurrency: usize,
    pub(crate) key: Option<KeyFn>,
    pub(crate) stop: CancellationToken,
    pub(crate) context: HandlerContext,
    /// The context without an acker, shared by every message handled without middleware.
    pub(crate) shared_context: Arc<HandlerContext>,
    pub(crate) events: Events,
    /// Where messages rejected for good go: the topic and the publisher.
    pub(crate) dead_letter: Option<(Arc<dyn Publisher>, Arc<str>)>,
    /// How long a rejected message that could not be dead-lettered waits before it comes back.
    pub(crate) reject_delay: Duration,
    /// Output publishing failures in a row, for the growing nack delay.
    pub(crate) output_failures: AtomicU32,
    pub(crate) retry_backoff: Backoff,
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
            subscriber: subscriber.clone(),
            publisher: output.as_ref().map(|(_, p)| p.clone()),
        };
        let dead_letter = match ctx.dead_letter {
            Some((topic, publisher)) => Some((publisher, topic)),
            None => subscriber
                .dead_letter_publisher()
                .map(|p| (p, Arc::from(super::DEFAULT_DEAD_LETTER_TOPIC))),
        };
        let context = HandlerContext {
            handler: self.name.clone(),
            topic: self.topic.clone(),
            subscriber: self.subscriber_kind,
            acker: None,
        };
        let loop_ctx = Arc::new(LoopContext {
            shared_context: Arc::new(context.clone()),
            context,
            name: self.name,
            topic: self.topic,
            output,
            concurrency: self.concurrency,
            key: self.key,
            stop: ctx.stop,
            events: ctx.events,
            dead_letter,
            reject_delay: ctx.reject_delay,
            output_failures: AtomicU32::new(0),
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
        });
        let supervisor = Supervisor {
            runner: self.runner,
            layers: ctx.layers,
            subscriber,
            ctx: loop_ctx,
            policy: ctx.restart,
            on_failure: ctx.on_failure,
        };
        let task = tokio::spawn(supervisor.run(subscription));
        Ok(Started { task, pubsubs })
    }
}

/// Runs a handler's loop, and when it dies, reports it and restarts it as the policy says.
struct Supervisor {
    runner: Runner,
    layers: Vec<BoxLayer>,
    subscriber: Arc<dyn Subscriber>,
    ctx: Arc<LoopContext>,
    policy: RestartPolicy,
    on_failure: Arc<dyn Fn(RouterError) + Send + Sync>,
}

impl Supervisor {
    async fn run(self, first: Subscription) {
        let ctx = &self.ctx;
        let mut subscription = Some(first);
        let mut restarts = 0u32;
        loop {
            let reason = match subscription.take() {
                Some(subscription) => {
                    let started = tokio::time::Instant::now();
                    let fut = (self.runner)(self.layers.clone(), subscription, ctx.clone());
                    // A panic must not end the loop unseen: catch it, report it, restart.
                    let end = AssertUnwindSafe(fut).catch_unwind().await;
                    if started.elapsed() >= HEALTHY_RUN {
                        restarts = 0;
                    }
                    match end {
                        Ok(LoopEnd::Stopped) => return,
                        _ if ctx.stop.is_cancelled() => return,
                        Ok(LoopEnd::SubscriptionEnded) => "its subscription ended".to_owned(),
                        Ok(LoopEnd::Unready(error)) => {
                            format!("its service can take no more messages: {error}")
                        }
                        Err(panic) => format!("it panicked: {}", panic_message(&*panic)),
                    }
                }
                None => match self.subscriber.subscribe(&ctx.topic).await {
                    Ok(s) => {
                        ctx.events.emit(RouterEvent::HandlerRestarted {
                            handler: &ctx.name,
                            restarts,
                        });
                        tracing::warn!(handler = %ctx.name, restarts, "handler restarted");
                        subscription = Some(s);
                        continue;
                    }
                    Err(error) => format!("subscribing again failed: {error}"),
                },
            };
            let restart_in = self.policy.next(restarts);
            tracing::error!(
                handler = %ctx.name, topic = %ctx.topic, %reason, ?restart_in,
                "handler loop died"
            );
            ctx.events.emit(RouterEvent::HandlerDied {
                handler: &ctx.name,
                reason: &reason,
                restart_in,
            });
            let Some(delay) = restart_in else {
                (self.on_failure)(RouterError::HandlerFailed {
                    handler: ctx.name.to_string(),
                    reason,
                });
                return;
            };
            restarts += 1;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = ctx.stop.cancelled() => return,
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Closes each distinct publisher, then each distinct subscriber; returns the first error.
pub(super) async fn close_all(pubsubs: Vec<PubSubs>) -> Result<(), Error> {
    let mut publishers: Vec<Arc<dyn Publisher>> = Vec::new();
    let mut subscribers: Vec<Arc<dyn Subscriber>> = Vec::new();
    for p in pubsubs {
        if let Some(publisher) = p.publisher {
            if !publishers
                .iter()
                .any(|q| q.instance_id() == publisher.instance_id())
            {
                publishers.push(publisher);
            }
        }
        if !subscribers
            .iter()
            .any(|q| q.instance_id() == p.subscriber.instance_id())
        {
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

/// How a message's handling ended.
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Ack,
    Nack(Option<Duration>),
}

impl Outcome {
    pub(super) fn settle(self, acker: Acker) {
        match self {
            Outcome::Ack => acker.ack(),
            Outcome::Nack(None) => acker.nack(),
            Outcome::Nack(Some(delay)) => acker.nack_after(delay),
        }
    }

    pub(super) fn settle_via(self, settler: Settler, ctx: &LoopContext, id: Option<&str>) {
        match settler {
            Settler::Own(acker) => self.settle(acker),
            Settler::Shared(slot) => match slot.lock().take() {
                Some(acker) => self.settle(acker),
                None => {
                    if !matches!(self, Outcome::Ack) {
                        tracing::warn!(
                            handler = %ctx.name, topic = %ctx.topic, message_id = id.unwrap_or_default(),
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
pub(super) enum Settler {
    Own(Acker),
    Shared(AckSlot),
}

impl LoopContext {
    /// Puts the handler context into `message`; with middleware, the acker is shared with it so
    /// a layer can ack early.
    pub(super) fn prepare(
        &self,
        message: &mut Message,
        acker: Acker,
        with_middleware: bool,
    ) -> Settler {
        if !with_middleware {
            // One context for every message: no allocation per message.
            message
                .extensions_mut()
                .insert_shared(self.shared_context.clone());
            return Settler::Own(acker);
        }
        let mut context = self.context.clone();
        let slot: AckSlot = Arc::new(parking_lot::Mutex::new(Some(acker)));
        context.acker = Some(slot.clone());
        message.extensions_mut().insert(context);
        Settler::Shared(slot)
    }

    /// Publishes a successful handling's outputs (unless the middleware's innermost service
    /// already did) and says how to settle its input. `original` is the input as received, to
    /// dead-letter.
    pub(super) async fn finish(
        &self,
        original: Message,
        result: Result<Vec<Message>, HandlerError>,
        published: bool,
    ) -> Outcome {
        let error = match result {
            Ok(outputs) if outputs.is_empty() || published => return Outcome::Ack,
            Ok(outputs) => match self.publish_outputs(outputs).await {
                Ok(()) => return Outcome::Ack,
                Err(error) => error,
            },
            Err(error) => error,
        };
        let disposition = error.disposition();
        tracing::warn!(
            handler = %self.name, topic = %self.topic, message_id = original.id(),
            ?disposition, %error, "handler failed"
        );
        match disposition {
            Disposition::Drop => Outcome::Ack,
            Disposition::RetryAfter(delay) => Outcome::Nack(Some(delay)),
            Disposition::Reject => {
                if self.dead_letter(original, &error).await {
                    Outcome::Ack
                } else {
                    Outcome::Nack(Some(self.reject_delay))
                }
            }
            _ if error.downcast_ref::<OutputPublishFailed>().is_some() => {
                Outcome::Nack(Some(self.output_retry_delay()))
            }
            _ => Outcome::Nack(None),
        }
    }

    pub(super) fn subscription_error(&self, error: &Error) {
        tracing::warn!(handler = %self.name, topic = %self.topic, %error, "subscription error");
    }
}
