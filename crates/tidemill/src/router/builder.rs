//! [`HandlerBuilder`]: registers one handler with its subscription, output and options.

use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::handler::{
    self, handler_fn, BatchHandler, BoxHandler, Handler, HandlerOutput, HandlerResult,
    LayeredHandler,
};
use super::loops;
use super::outputs::PublishOutputs;
use super::run::{KeyFn, Pending, Runner};
use super::{BoxLayer, Router, RouterError};
use crate::message::Message;
use crate::pubsub::{Publisher, Subscriber};

/// Registers a handler: where it reads, where its outputs go, how many messages it runs at once,
/// and its own middleware. Finish with [`handle`](Self::handle), [`service`](Self::service), or
/// their batch forms.
///
/// ```
/// use std::time::Duration;
/// use tidemill::router::{HandlerResult, Router};
/// use tidemill::in_process::{InProcessConfig, InProcessPubSub};
/// use tidemill::Message;
///
/// # fn main() -> Result<(), tidemill::router::RouterError> {
/// // Eight at once needs a subscriber that lets eight deliveries be in flight.
/// let pubsub = InProcessPubSub::with_config(InProcessConfig::default().max_in_flight(8));
/// let router = Router::new();
/// router
///     .handler("enrich")
///     .subscribe("orders", pubsub.clone())
///     .publish_to("orders.enriched", pubsub.clone())
///     .concurrency(8)
///     .order_by_metadata("customer_id")
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     .handle(|msg: Message| async move { HandlerResult::Ok(msg) })?;
/// # Ok(()) }
/// ```
#[must_use = "a handler is registered only by `handle`, `service` or their batch forms"]
pub struct HandlerBuilder {
    router: Router,
    name: String,
    input: Option<(String, Arc<dyn Subscriber>, &'static str)>,
    output: Option<(String, Arc<dyn Publisher>)>,
    concurrency: usize,
    key: Option<KeyFn>,
    batch: (usize, Duration),
    layers: Vec<BoxLayer>,
}

impl std::fmt::Debug for HandlerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerBuilder")
            .field("name", &self.name)
            .field("input", &self.input.as_ref().map(|(t, _, _)| t))
            .field("output", &self.output.as_ref().map(|(t, _)| t))
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl HandlerBuilder {
    pub(super) fn new(router: Router, name: String) -> Self {
        Self {
            router,
            name,
            input: None,
            output: None,
            concurrency: 1,
            key: None,
            batch: (100, Duration::from_millis(100)),
            layers: Vec::new(),
        }
    }

    /// The topic to read and the subscriber to read it with. Required.
    pub fn subscribe(mut self, topic: impl Into<String>, subscriber: impl Subscriber) -> Self {
        let kind = std::any::type_name_of_val(&subscriber);
        self.input = Some((topic.into(), Arc::new(subscriber), kind));
        self
    }

    /// The topic the handler's outputs are published to, and the publisher. Without it the
    /// handler is consumer-only, and returning messages from it is an error (they are nacked).
    pub fn publish_to(mut self, topic: impl Into<String>, publisher: impl Publisher) -> Self {
        self.output = Some((topic.into(), Arc::new(publisher)));
        self
    }

    /// How many messages run at once. Default 1, which keeps order. The subscriber must let
    /// that many deliveries be in flight (e.g. [`InProcessConfig::max_in_flight`]): where it
    /// says it would not ([`Subscriber::max_in_flight`]), the handler is refused when it starts
    /// with [`RouterError::Config`].
    ///
    /// [`InProcessConfig::max_in_flight`]: crate::in_process::InProcessConfig::max_in_flight
    /// [`Subscriber::max_in_flight`]: crate::Subscriber::max_in_flight
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Keeps messages with the same key in order while running different keys in parallel (up
    /// to the concurrency). Messages for which `key` returns `None` are not ordered.
    ///
    /// ```
    /// # let pubsub = tidemill::InProcessPubSub::new();
    /// let builder = tidemill::Router::new()
    ///     .handler("h")
    ///     .subscribe("t", pubsub)
    ///     .concurrency(16)
    ///     .order_by_key(|msg| msg.metadata().get("account"));
    /// # drop(builder);
    /// ```
    pub fn order_by_key<F>(mut self, key: F) -> Self
    where
        F: for<'a> Fn(&'a Message) -> Option<&'a str> + Send + Sync + 'static,
    {
        let hasher = std::collections::hash_map::RandomState::new();
        self.key = Some(Arc::new(move |msg: &Message| {
            key(msg).map(|k| {
                let mut h = hasher.build_hasher();
                k.hash(&mut h);
                std::hash::Hasher::finish(&h)
            })
        }));
        self
    }

    /// Orders by the value of a metadata entry; see [`order_by_key`](Self::order_by_key).
    pub fn order_by_metadata(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.order_by_key(move |msg| msg.metadata().get(&key))
    }

    /// For batch handlers: a batch closes at `max_messages` or `max_wait` after its first
    /// message, whichever comes first. Default 100 messages or 100 ms.
    pub fn batch(mut self, max_messages: usize, max_wait: Duration) -> Self {
        self.batch = (max_messages.max(1), max_wait);
        self
    }

    /// Adds middleware for this handler only, inside the router-wide middleware. The first added
    /// is the outermost. Batch handlers take no layers: registering one after `layer` is
    /// refused with [`RouterError::LayersOnBatchHandler`].
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxHandler> + Send + Sync + 'static,
        L::Service: LayeredHandler,
    {
        self.layers.push(Arc::new(move |inner| {
            handler::box_layered(layer.layer(inner))
        }));
        self
    }

    /// Registers an async function of a message as the handler. It may return nothing, a
    /// message, an optional message or a list of messages. A closure needs no type annotations:
    ///
    /// ```
    /// # fn main() -> Result<(), tidemill::router::RouterError> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// tidemill::Router::new()
    ///     .handler("print")
    ///     .subscribe("events", pubsub)
    ///     .handle(|msg| async move {
    ///         println!("{}", msg.id());
    ///         Ok(())
    ///     })?;
    /// # Ok(()) }
    /// ```
    pub fn handle<F, Fut, O>(self, f: F) -> Result<(), RouterError>
    where
        F: Fn(Message) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
        O: HandlerOutput,
    {
        self.service(handler_fn(f))
    }

    /// Registers a tower service as the handler.
    pub fn service<S: Handler>(self, service: S) -> Result<(), RouterError> {
        let own_layers = self.layers.clone();
        // Each start (and restart) runs a fresh clone; the lock only makes the runner Sync.
        let service = parking_lot::Mutex::new(service);
        let runner: Runner = Arc::new(move |router_layers, subscription, ctx| {
            let service = service.lock().clone();
            let layers: Vec<BoxLayer> = router_layers
                .into_iter()
                .chain(own_layers.iter().cloned())
                .collect();
            if layers.is_empty() {
                // No middleware: run the service as it is, without boxing its futures.
                Box::pin(loops::messages(service, subscription, ctx, false))
            } else {
                // The outputs are published inside the layers, so retry and poison queue
                // layers see a publishing failure.
                let inner = PublishOutputs {
                    inner: service,
                    ctx: ctx.clone(),
                };
                let svc = layers
                    .iter()
                    .rev()
                    .fold(BoxHandler::new(inner), |svc, layer| layer(svc));
                Box::pin(loops::messages(svc, subscription, ctx, true))
            }
        });
        self.register(runner)
    }

    /// Registers an async function of a batch of messages as the handler. Router-wide middleware
    /// does not wrap batch handlers, and a batch handler's own layers are refused.
    pub fn handle_batch<F, Fut, O>(self, f: F) -> Result<(), RouterError>
    where
        F: Fn(Vec<Message>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = HandlerResult<O>> + Send + 'static,
        O: HandlerOutput,
    {
        self.batch_service(handler_fn(f))
    }

    /// Registers a tower service of batches as the handler.
    pub fn batch_service<S: BatchHandler>(self, service: S) -> Result<(), RouterError> {
        if !self.layers.is_empty() {
            return Err(RouterError::LayersOnBatchHandler(self.name));
        }
        let (max, wait) = self.batch;
        let service = parking_lot::Mutex::new(service);
        let runner: Runner = Arc::new(move |_router_layers, subscription, ctx| {
            let service = service.lock().clone();
            Box::pin(loops::batches(service, subscription, ctx, max, wait))
        });
        self.register(runner)
    }

    fn register(self, runner: Runner) -> Result<(), RouterError> {
        let (topic, subscriber, subscriber_kind) = self
            .input
            .ok_or_else(|| RouterError::MissingSubscription(self.name.clone()))?;
        let pending = Pending {
            name: self.name.as_str().into(),
            topic: topic.into(),
            subscriber,
            subscriber_kind,
            output: self.output.map(|(t, p)| (t.into(), p)),
            concurrency: self.concurrency,
            key: self.key,
            runner,
        };
        self.router.register(self.name, pending)
    }
}
