//! The [`Router`]: runs handlers on subscriptions, with middleware, plugins, decorators and
//! graceful shutdown.
//!
//! A handler takes a message and returns the messages to publish. The router acks a message only
//! after its handler succeeded *and* the outputs were published; otherwise it nacks (or does what
//! the [`HandlerError`]'s [`Disposition`] says).
//!
//! Middleware are tower layers. Router-wide layers ([`Router::layer`]) wrap every handler, a
//! handler's own layers ([`HandlerBuilder::layer`]) wrap only it, and the first added is the
//! outermost. Router-wide layers wrap handlers of single messages, not batch handlers.

mod builder;
mod events;
pub(crate) mod handler;
mod loops;
mod outputs;
mod plugin;
mod restart;
mod run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{BoxError, Error};
use crate::pubsub::{Publisher, Subscriber};

pub use builder::HandlerBuilder;
pub use events::RouterEvent;
pub use handler::{
    handler_fn, BatchHandler, BoxHandler, Disposition, Handler, HandlerContext, HandlerError,
    HandlerFn, HandlerOutput, HandlerResult, LayeredHandler, MapOutput, Permanent,
};
pub use outputs::{NoOutputTopic, OutputPublishFailed, DEFAULT_DEAD_LETTER_TOPIC};
pub use plugin::{Plugin, SignalsPlugin};
pub use restart::RestartPolicy;

/// A router-wide layer, type-erased so it can wrap handlers of any type.
type BoxLayer = Arc<dyn Fn(BoxHandler) -> BoxHandler + Send + Sync>;
type PublisherDecorator = Arc<dyn Fn(Arc<dyn Publisher>) -> Arc<dyn Publisher> + Send + Sync>;
type SubscriberDecorator = Arc<dyn Fn(Arc<dyn Subscriber>) -> Arc<dyn Subscriber> + Send + Sync>;

/// Options of a [`Router`].
///
/// ```
/// use std::time::Duration;
/// use tidemill::router::{Router, RouterConfig};
///
/// let router = Router::with_config(
///     RouterConfig::default()
///         .close_timeout(Duration::from_secs(5))
///         .close_pubsubs(false),
/// );
/// # drop(router);
/// ```
#[derive(Clone)]
pub struct RouterConfig {
    close_timeout: Duration,
    close_pubsubs: bool,
    restart: RestartPolicy,
    dead_letter: Option<(Arc<str>, Arc<dyn Publisher>)>,
    reject_delay: Duration,
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            .field("close_timeout", &self.close_timeout)
            .field("close_pubsubs", &self.close_pubsubs)
            .field("restart", &self.restart)
            .field("dead_letter", &self.dead_letter.as_ref().map(|(t, _)| t))
            .field("reject_delay", &self.reject_delay)
            .finish()
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            close_timeout: Duration::from_secs(30),
            close_pubsubs: true,
            restart: RestartPolicy::default(),
            dead_letter: None,
            reject_delay: Duration::from_secs(30),
        }
    }
}

impl RouterConfig {
    /// How long closing waits for in-flight messages before giving up on them (they are then
    /// nacked and `run` reports [`RouterError::CloseTimeout`]). Default 30 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Whether closing the router closes the publishers and subscribers its handlers use, once
    /// their in-flight work is done. Default true.
    pub fn close_pubsubs(mut self, close: bool) -> Self {
        self.close_pubsubs = close;
        self
    }

    /// What happens when a handler's loop dies; see [`RestartPolicy`].
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// Where messages rejected for good go when no poison queue layer took them: `topic`
    /// through `publisher`, for every handler. Without it, each handler uses its subscriber's
    /// own pub/sub ([`Subscriber::dead_letter_publisher`]) and [`DEFAULT_DEAD_LETTER_TOPIC`];
    /// a subscriber without one keeps such messages, nacked with the
    /// [reject delay](Self::reject_delay), and logs and reports each.
    ///
    /// ```
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let config = tidemill::router::RouterConfig::default().dead_letter(pubsub, "dead_letters");
    /// # drop(config);
    /// ```
    pub fn dead_letter(mut self, publisher: impl Publisher, topic: impl Into<Arc<str>>) -> Self {
        self.dead_letter = Some((topic.into(), Arc::new(publisher)));
        self
    }

    /// How long a message rejected for good that could not be dead-lettered waits before it
    /// comes back. Default 30 s.
    pub fn reject_delay(mut self, delay: Duration) -> Self {
        self.reject_delay = delay;
        self
    }
}

/// What went wrong in the router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// A handler of that name is already registered.
    #[error("a handler named {0:?} already exists")]
    DuplicateHandler(String),
    /// No handler of that name is registered.
    #[error("no handler named {0:?}")]
    UnknownHandler(String),
    /// A handler was registered without a subscription.
    #[error("handler {0:?} has no subscription: call `subscribe` before `handle`")]
    MissingSubscription(String),
    /// The router is already running.
    #[error("the router is already running")]
    AlreadyRunning,
    /// The router was closed.
    #[error("the router is closed")]
    Closed,
    /// A plugin failed when the router started.
    #[error("plugin {plugin:?} failed: {source}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A handler could not subscribe to its topic.
    #[error("handler {handler:?} could not subscribe: {source}")]
    Subscribe {
        /// The handler.
        handler: String,
        /// The cause.
        #[source]
        source: Error,
    },
    /// In-flight messages did not finish within the close timeout; they were nacked.
    #[error("handlers {handlers:?} did not finish within the close timeout of {timeout:?}")]
    CloseTimeout {
        /// The close timeout.
        timeout: Duration,
        /// The handlers that were still busy.
        handlers: Vec<String>,
    },
    /// Closing a publisher or subscriber failed.
    #[error("{0} (closing the pub/subs)")]
    Close(#[source] Error),
    /// A handler's loop died and its [`RestartPolicy`] gave up; the router closed.
    #[error("handler {handler:?} stopped for good: {reason}")]
    HandlerFailed {
        /// The handler.
        handler: String,
        /// Why its loop died the last time.
        reason: String,
    },
    /// Layers were added to a batch handler, which does not run them.
    #[error("handler {0:?}: a batch handler takes no layers; wrap its service yourself")]
    LayersOnBatchHandler(String),
    /// A handler's settings cannot take effect.
    #[error("handler {handler:?}: {reason}")]
    Config {
        /// The handler.
        handler: String,
        /// What cannot work, and what to change.
        reason: String,
    },
}

impl RouterError {
    /// A copy for a second caller (`close` beside `run`), keeping the variant and the text.
    fn duplicate(&self) -> Self {
        match self {
            Self::CloseTimeout { timeout, handlers } => Self::CloseTimeout {
                timeout: *timeout,
                handlers: handlers.clone(),
            },
            Self::HandlerFailed { handler, reason } => Self::HandlerFailed {
                handler: handler.clone(),
                reason: reason.clone(),
            },
            Self::Close(err) => Self::Close(Error::Other(err.to_string().into())),
            other => Self::Close(Error::Other(other.to_string().into())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Plugins run and handlers subscribe.
    Starting,
    Running,
    Closing,
    Closed,
}

/// Runs handlers. Cloning gives another handle on the same router.
///
/// ```
/// use tidemill::router::Router;
/// use tidemill::{InProcessPubSub, Message, PublisherExt};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// router
///     .handler("print")
///     .subscribe("events", pubsub.clone())
///     .handle(|msg| async move {
///         println!("got {}", msg.id());
///         Ok(())
///     })?;
///
/// // Or `router.run().await` in a task of your own.
/// let running = router.start().await?;
/// pubsub.publish_one("events", Message::new("x")).await?;
/// running.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.inner.config)
            .field("state", &*self.inner.state.borrow())
            .field("handlers", &self.handler_names())
            .finish()
    }
}

struct Inner {
    config: RouterConfig,
    state: watch::Sender<State>,
    shutdown: CancellationToken,
    layers: Mutex<Vec<BoxLayer>>,
    publisher_decorators: Mutex<Vec<PublisherDecorator>>,
    subscriber_decorators: Mutex<Vec<SubscriberDecorator>>,
    plugins: Mutex<Vec<Arc<dyn Plugin>>>,
    handlers: Mutex<HashMap<String, HandlerSlot>>,
    hooks: Mutex<Vec<events::EventHook>>,
    /// Why a handler failed for good, which closes the router.
    fatal: Mutex<Option<RouterError>>,
    /// What closing ended in, for `close` beside `run`.
    closed_with: Mutex<Option<RouterError>>,
    /// Handlers added while running whose start failed, with the reason.
    failed_starts: Mutex<HashMap<String, String>>,
    /// Bumped when a handler started or failed to, for `handler_ready`.
    starts: watch::Sender<u64>,
}

/// A registered handler: waiting for the router to run, or running.
struct HandlerSlot {
    pending: Option<run::Pending>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    pubsubs: Option<run::PubSubs>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with the default options.
    pub fn new() -> Self {
        Self::with_config(RouterConfig::default())
    }

    /// A router with the given options.
    pub fn with_config(config: RouterConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: watch::channel(State::Idle).0,
                shutdown: CancellationToken::new(),
                layers: Mutex::default(),
                publisher_decorators: Mutex::default(),
                subscriber_decorators: Mutex::default(),
                plugins: Mutex::default(),
                handlers: Mutex::default(),
                hooks: Mutex::default(),
                fatal: Mutex::default(),
                closed_with: Mutex::default(),
                failed_starts: Mutex::default(),
                starts: watch::channel(0).0,
            }),
        }
    }

    /// Adds router-wide middleware: a tower layer that wraps every handler of single messages
    /// started from now on. The first added is the outermost.
    ///
    /// ```
    /// use std::time::Duration;
    /// let router = tidemill::Router::new();
    /// router.layer(tidemill::middleware::TimeoutLayer::new(Duration::from_secs(10)));
    /// ```
    pub fn layer<L>(&self, layer: L) -> &Self
    where
        L: tower::Layer<BoxHandler> + Send + Sync + 'static,
        L::Service: LayeredHandler,
    {
        self.inner.layers.lock().push(Arc::new(move |inner| {
            handler::box_layered(layer.layer(inner))
        }));
        self
    }

    /// Adds a decorator applied to the publisher of every handler started from now on, e.g. to
    /// add tracing or metrics. The first added is the outermost.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let router = tidemill::Router::new();
    /// router.decorate_publishers(|publisher| publisher); // wrap it in your own Publisher
    /// ```
    pub fn decorate_publishers(
        &self,
        decorator: impl Fn(Arc<dyn Publisher>) -> Arc<dyn Publisher> + Send + Sync + 'static,
    ) -> &Self {
        self.inner
            .publisher_decorators
            .lock()
            .push(Arc::new(decorator));
        self
    }

    /// Adds a decorator applied to the subscriber of every handler started from now on. The first
    /// added is the outermost.
    ///
    /// ```
    /// let router = tidemill::Router::new();
    /// router.decorate_subscribers(|subscriber| subscriber);
    /// ```
    pub fn decorate_subscribers(
        &self,
        decorator: impl Fn(Arc<dyn Subscriber>) -> Arc<dyn Subscriber> + Send + Sync + 'static,
    ) -> &Self {
        self.inner
            .subscriber_decorators
            .lock()
            .push(Arc::new(decorator));
        self
    }

    /// Adds a plugin, run when the router starts.
    ///
    /// ```
    /// let router = tidemill::Router::new();
    /// router.add_plugin(tidemill::router::SignalsPlugin);
    /// ```
    pub fn add_plugin(&self, plugin: impl Plugin) -> &Self {
        self.inner.plugins.lock().push(Arc::new(plugin));
        self
    }

    /// Adds an observer of [`RouterEvent`]s (handlers that died or restarted, messages
    /// dead-lettered), for handlers started from now on.
    pub fn on_event(&self, hook: impl Fn(&RouterEvent<'_>) + Send + Sync + 'static) -> &Self {
        self.inner.hooks.lock().push(Arc::new(hook));
        self
    }

    /// Starts registering a handler named `name`. Names are unique within a router.
    pub fn handler(&self, name: impl Into<String>) -> HandlerBuilder {
        HandlerBuilder::new(self.clone(), name.into())
    }

    /// The names of the registered handlers.
    pub fn handler_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.handlers.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether the router is running: every handler registered before `run` has subscribed.
    pub fn is_running(&self) -> bool {
        *self.inner.state.borrow() == State::Running
    }

    /// Waits until the router is running, that is until every handler registered before `run`
    /// has subscribed (returns at once if it already runs, or if it closed).
    pub async fn running(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state
            .wait_for(|s| !matches!(s, State::Idle | State::Starting))
            .await;
    }

    /// Runs the router: starts the plugins, subscribes every handler, and processes messages
    /// until [`Router::close`] (or a plugin, such as [`SignalsPlugin`]) closes it. Returns once
    /// in-flight work is done and the pub/subs are closed.
    pub async fn run(&self) -> Result<(), RouterError> {
        let mut started = false;
        self.inner.state.send_if_modified(|s| {
            started = *s == State::Idle;
            if started {
                *s = State::Starting;
            }
            started
        });
        if !started {
            return Err(match *self.inner.state.borrow() {
                State::Starting | State::Running => RouterError::AlreadyRunning,
                _ => RouterError::Closed,
            });
        }
        let plugins: Vec<_> = self.inner.plugins.lock().clone();
        for plugin in plugins {
            if let Err(source) = plugin.on_start(self) {
                self.shutdown().await.ok();
                return Err(RouterError::Plugin {
                    plugin: plugin.name().to_owned(),
                    source,
                });
            }
        }
        let names: Vec<String> = self.inner.handlers.lock().keys().cloned().collect();
        for name in names {
            if let Err(err) = self.start_handler(&name).await {
                self.shutdown().await.ok();
                return Err(err);
            }
        }
        self.inner.state.send_if_modified(|s| {
            let starting = *s == State::Starting;
            if starting {
                *s = State::Running;
            }
            starting
        });
        self.inner.shutdown.cancelled().await;
        self.shutdown().await
    }

    /// Closes the router: stops receiving, waits for in-flight messages (up to the close
    /// timeout), then closes the pub/subs. Waits until that is done.
    pub async fn close(&self) -> Result<(), RouterError> {
        self.inner.shutdown.cancel();
        let was_idle = self.inner.state.send_if_modified(|s| {
            let idle = *s == State::Idle;
            if idle {
                *s = State::Closed;
            }
            idle
        });
        if was_idle {
            return Ok(());
        }
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|s| *s == State::Closed).await;
        match &*self.inner.closed_with.lock() {
            Some(err) => Err(err.duplicate()),
            None => Ok(()),
        }
    }

    /// Runs the router in a task of its own and returns once every handler has subscribed (or
    /// with the error that kept it from starting). Close it through the returned handle.
    ///
    /// ```
    /// use tidemill::{InProcessPubSub, Message, PublisherExt, Router};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pubsub = InProcessPubSub::new();
    /// let router = Router::new();
    /// router
    ///     .handler("print")
    ///     .subscribe("events", pubsub.clone())
    ///     .handle(|msg| async move {
    ///         println!("got {}", msg.id());
    ///         Ok(())
    ///     })?;
    /// let running = router.start().await?;
    /// pubsub.publish_one("events", Message::new("x")).await?;
    /// running.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(&self) -> Result<RunningRouter, RouterError> {
        let mut task = tokio::spawn({
            let router = self.clone();
            async move { router.run().await }
        });
        tokio::select! {
            _ = self.running() => {}
            result = &mut task => {
                // It ended before running: that is its error (or it was closed meanwhile).
                return match result {
                    Ok(Ok(())) => Err(RouterError::Closed),
                    Ok(Err(err)) => Err(err),
                    Err(join) => Err(RouterError::Close(Error::Other(join.to_string().into()))),
                };
            }
        }
        Ok(RunningRouter {
            router: self.clone(),
            task,
        })
    }

    /// Waits until handler `name` has subscribed, and says whether it could. For a handler added
    /// while the router runs, `handle` returns at once and the subscription happens after: this
    /// is how to learn its outcome.
    pub async fn handler_ready(&self, name: &str) -> Result<(), RouterError> {
        let mut starts = self.inner.starts.subscribe();
        loop {
            if let Some(reason) = self.inner.failed_starts.lock().get(name) {
                return Err(RouterError::Config {
                    handler: name.to_owned(),
                    reason: reason.clone(),
                });
            }
            match self.inner.handlers.lock().get(name) {
                Some(slot) if slot.task.is_some() => return Ok(()),
                Some(_) => {}
                None => return Err(RouterError::UnknownHandler(name.to_owned())),
            }
            if starts.changed().await.is_err() {
                return Err(RouterError::Closed);
            }
        }
    }

    /// Stops one handler: it stops receiving and finishes its in-flight messages; the router
    /// goes on with the others.
    pub async fn stop_handler(&self, name: &str) -> Result<(), RouterError> {
        let (stop, task) = {
            let mut handlers = self.inner.handlers.lock();
            let slot = handlers
                .remove(name)
                .ok_or_else(|| RouterError::UnknownHandler(name.to_owned()))?;
            (slot.stop, slot.task)
        };
        stop.cancel();
        if let Some(task) = task {
            let timeout = self.inner.config.close_timeout;
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
                return Err(RouterError::CloseTimeout {
                    timeout,
                    handlers: vec![name.to_owned()],
                });
            }
        }
        Ok(())
    }

    fn register(&self, name: String, pending: run::Pending) -> Result<(), RouterError> {
        let state = *self.inner.state.borrow();
        if matches!(state, State::Closing | State::Closed) {
            return Err(RouterError::Closed);
        }
        {
            let mut handlers = self.inner.handlers.lock();
            if handlers.contains_key(&name) {
                return Err(RouterError::DuplicateHandler(name));
            }
            handlers.insert(
                name.clone(),
                HandlerSlot {
                    pending: Some(pending),
                    stop: self.inner.shutdown.child_token(),
                    task: None,
                    pubsubs: None,
                },
            );
        }
        if matches!(state, State::Starting | State::Running) {
            // Added while running: start it now; a failure to subscribe is logged and the
            // handler removed, since there is no caller left to return it to.
            let router = self.clone();
            self.inner.failed_starts.lock().remove(&name);
            tokio::spawn(async move {
                if let Err(err) = router.start_handler(&name).await {
                    tracing::error!(handler = %name, error = %err, "handler could not start");
                    router.inner.handlers.lock().remove(&name);
                    router
                        .inner
                        .failed_starts
                        .lock()
                        .insert(name.clone(), err.to_string());
                    router.inner.starts.send_modify(|n| *n += 1);
                }
            });
        }
        Ok(())
    }

    async fn start_handler(&self, name: &str) -> Result<(), RouterError> {
        let (pending, stop) = {
            let mut handlers = self.inner.handlers.lock();
            let Some(slot) = handlers.get_mut(name) else {
                return Ok(());
            };
            let Some(pending) = slot.pending.take() else {
                return Ok(());
            };
            (pending, slot.stop.clone())
        };
        if let Some(limit) = pending.subscriber.max_in_flight() {
            if pending.concurrency > limit {
                return Err(RouterError::Config {
                    handler: name.to_owned(),
                    reason: format!(
                        "concurrency {} needs {} deliveries in flight, but its subscriber lets \
                         only {limit} be: raise the subscriber's max_in_flight or lower the \
                         concurrency",
                        pending.concurrency, pending.concurrency
                    ),
                });
            }
        }
        let router = Arc::downgrade(&self.inner);
        let on_failure = Arc::new(move |err: RouterError| {
            if let Some(inner) = router.upgrade() {
                inner.fatal.lock().get_or_insert(err);
                inner.shutdown.cancel();
            }
        });
        let ctx = run::StartContext {
            layers: self.inner.layers.lock().clone(),
            publisher_decorators: self.inner.publisher_decorators.lock().clone(),
            subscriber_decorators: self.inner.subscriber_decorators.lock().clone(),
            stop,
            events: events::Events(self.inner.hooks.lock().clone().into()),
            restart: self.inner.config.restart,
            dead_letter: self.inner.config.dead_letter.clone(),
            reject_delay: self.inner.config.reject_delay,
            on_failure,
        };
        let started = pending
            .start(ctx)
            .await
            .map_err(|source| RouterError::Subscribe {
                handler: name.to_owned(),
                source,
            })?;
        let mut handlers = self.inner.handlers.lock();
        match handlers.get_mut(name) {
            Some(slot) => {
                slot.task = Some(started.task);
                slot.pubsubs = Some(started.pubsubs);
            }
            // Stopped while subscribing.
            None => started.task.abort(),
        }
        drop(handlers);
        self.inner.starts.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), RouterError> {
        self.inner.state.send_replace(State::Closing);
        self.inner.shutdown.cancel();
        let slots: Vec<(String, HandlerSlot)> = self.inner.handlers.lock().drain().collect();
        let timeout = self.inner.config.close_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut late = Vec::new();
        let mut pubsubs = Vec::new();
        for (name, slot) in slots {
            if let Some(task) = slot.task {
                let abort = task.abort_handle();
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    // Dropping the handler's futures drops their deliveries: they are nacked.
                    abort.abort();
                    late.push(name);
                }
            }
            pubsubs.extend(slot.pubsubs);
        }
        let mut result = if late.is_empty() {
            Ok(())
        } else {
            late.sort();
            Err(RouterError::CloseTimeout {
                timeout,
                handlers: late,
            })
        };
        // Only now, with no handler left running, may the publishers go.
        if self.inner.config.close_pubsubs {
            if let Err(err) = run::close_all(pubsubs).await {
                result = result.and(Err(RouterError::Close(err)));
            }
        }
        // A handler that failed for good is why the router closed: that comes first.
        if let Some(fatal) = self.inner.fatal.lock().take() {
            result = Err(fatal);
        }
        if let Err(err) = &result {
            *self.inner.closed_with.lock() = Some(err.duplicate());
        }
        self.inner.state.send_replace(State::Closed);
        self.inner.starts.send_modify(|n| *n += 1);
        result
    }
}

/// A router running in a task of its own, from [`Router::start`].
#[derive(Debug)]
#[must_use = "dropping it leaves the router running; close it"]
pub struct RunningRouter {
    router: Router,
    task: JoinHandle<Result<(), RouterError>>,
}

impl RunningRouter {
    /// The router, to add or stop handlers while it runs.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Closes the router and returns what its run ended in.
    pub async fn close(self) -> Result<(), RouterError> {
        let closed = self.router.close().await;
        match self.task.await {
            Ok(result) => result.and(closed),
            Err(join) => Err(RouterError::Close(Error::Other(join.to_string().into()))),
        }
    }

    /// Waits until the router stops by itself (a plugin closed it, or a handler failed for
    /// good) and returns what its run ended in.
    pub async fn wait(self) -> Result<(), RouterError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(RouterError::Close(Error::Other(join.to_string().into()))),
        }
    }
}
