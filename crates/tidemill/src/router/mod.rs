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
pub(crate) mod handler;
mod plugin;
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
pub use handler::{
    handler_fn, BatchHandler, BoxHandler, Disposition, Handler, HandlerContext, HandlerError,
    HandlerFn, HandlerOutput, HandlerResult, LayeredHandler, MapOutput, Permanent,
};
pub use plugin::{Plugin, SignalsPlugin};

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
#[derive(Clone, Debug)]
pub struct RouterConfig {
    close_timeout: Duration,
    close_pubsubs: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            close_timeout: Duration::from_secs(30),
            close_pubsubs: true,
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
    #[error("closing the pub/subs failed: {0}")]
    Close(#[source] Error),
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
/// use std::time::Duration;
/// use tidemill::router::{HandlerResult, Router};
/// use tidemill::{InProcessPubSub, Message, Publisher};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// router
///     .handler("print")
///     .subscribe("events", pubsub.clone())
///     .handle(|msg: Message| async move {
///         println!("got {}", msg.id());
///         HandlerResult::Ok(())
///     })?;
///
/// let run = tokio::spawn({
///     let router = router.clone();
///     async move { router.run().await }
/// });
/// router.running().await;
/// pubsub.publish("events", vec![Message::new("x")]).await?;
/// router.close().await?;
/// run.await??;
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
        Ok(())
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
            tokio::spawn(async move {
                if let Err(err) = router.start_handler(&name).await {
                    tracing::error!(handler = %name, error = %err, "handler could not start");
                    router.inner.handlers.lock().remove(&name);
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
        let ctx = run::StartContext {
            layers: self.inner.layers.lock().clone(),
            publisher_decorators: self.inner.publisher_decorators.lock().clone(),
            subscriber_decorators: self.inner.subscriber_decorators.lock().clone(),
            stop,
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
        self.inner.state.send_replace(State::Closed);
        result
    }
}
