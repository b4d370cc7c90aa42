//! Projections run under a [`tidemill::Router`]: they start when the router starts and stop
//! when it closes, and [`Router::close`] returns only after they stopped.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::{HandlerResult, Message, Router, Subscriber, Subscription};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::projection::{Ended, Projection, ProjectionGroup, ProjectionOptions};
use crate::store::EventStore;

/// A projection and how it runs.
type Entry = (Arc<dyn Projection>, ProjectionOptions);

/// A [`ProjectionGroup`] tied to a router's lifecycle.
///
/// [`register`](Self::register) adds a consumer-only handler to the router whose subscriber
/// is the group itself: the router's start subscribes it (the projections start), and the
/// router's close, after its handlers finished, closes it (the projections finish the batch
/// they are in, commit it with its checkpoint, and end). So `router.close()` returns only
/// once every projection stopped.
///
/// Failures are reported the way the router reports a failing close: `router.run()` returns
/// [`RouterError::Close`](tidemill::router::RouterError::Close) holding
/// [`Error::ProjectionsFailed`]. A projection failing with
/// [`OnError::Fail`](crate::OnError::Fail) stops the group and closes the router; one with
/// [`OnError::Stop`](crate::OnError::Stop) ends alone and is reported at close.
///
/// With [`RouterConfig::close_pubsubs`](tidemill::router::RouterConfig::close_pubsubs)`(false)`
/// the router closes no subscriber: the projections are still told to stop when the handler
/// ends, but the close does not wait for them.
///
/// ```
/// use std::sync::Arc;
/// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionOptions, ProjectionTx, RecordedEvent, RoutedProjections};
///
/// struct Noop;
/// #[async_trait::async_trait]
/// impl Projection for Noop {
///     fn name(&self) -> &str { "noop" }
///     async fn apply(&self, _tx: &mut ProjectionTx<'_>, _e: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let router = tidemill::Router::new();
/// RoutedProjections::new(Arc::new(MemoryEventStore::new()))
///     .add(Arc::new(Noop), ProjectionOptions::new())
///     .register(&router, "read-models")?;
/// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
/// router.running().await;
/// router.close().await?; // the projections have stopped
/// run.await??;
/// # Ok(()) }
/// ```
pub struct RoutedProjections {
    store: Arc<dyn EventStore>,
    projections: Vec<Entry>,
}

impl RoutedProjections {
    /// Projections reading `store`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, RoutedProjections};
    /// let projections = RoutedProjections::new(Arc::new(MemoryEventStore::new()));
    /// # drop(projections);
    /// ```
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            projections: Vec::new(),
        }
    }

    /// Adds a projection, started with the router.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionOptions, ProjectionTx, RecordedEvent, RoutedProjections};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// let projections = RoutedProjections::new(Arc::new(MemoryEventStore::new()))
    ///     .add(Arc::new(Count), ProjectionOptions::new().batch_size(100));
    /// # drop(projections);
    /// ```
    pub fn add(mut self, projection: Arc<dyn Projection>, options: ProjectionOptions) -> Self {
        self.projections.push((projection, options));
        self
    }

    /// Registers the group on `router` as a handler named `name` (names are unique within a
    /// router). Registered while the router runs, the projections start at once.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tidemill_eventsourcing::{MemoryEventStore, Projection, ProjectionOptions, ProjectionTx, RecordedEvent, RoutedProjections};
    /// # struct Count;
    /// # #[async_trait::async_trait]
    /// # impl Projection for Count {
    /// #     fn name(&self) -> &str { "count" }
    /// #     async fn apply(&self, _: &mut ProjectionTx<'_>, _: &RecordedEvent) -> Result<(), tidemill::BoxError> { Ok(()) }
    /// # }
    /// let router = tidemill::Router::new();
    /// RoutedProjections::new(Arc::new(MemoryEventStore::new()))
    ///     .add(Arc::new(Count), ProjectionOptions::new())
    ///     .register(&router, "read-models")
    ///     .unwrap();
    /// ```
    pub fn register(self, router: &Router, name: impl Into<String>) -> Result<()> {
        let lifecycle = Lifecycle {
            store: self.store,
            pending: Mutex::new(Some(self.projections)),
            group: tokio::sync::Mutex::new(None),
            router: Mutex::new(Some(router.clone())),
            closing: CancellationToken::new(),
        };
        let name = name.into();
        router
            .handler(name.clone())
            .subscribe(name, lifecycle)
            // Never called: the subscription yields no messages.
            .handle(|_: Message| async { HandlerResult::Ok(()) })
            .map_err(|e| Error::Config(format!("registering projections on the router: {e}")))
    }
}

/// The group as the router sees it: a subscriber whose subscribe starts it and whose close
/// stops it.
struct Lifecycle {
    store: Arc<dyn EventStore>,
    pending: Mutex<Option<Vec<Entry>>>,
    group: tokio::sync::Mutex<Option<ProjectionGroup>>,
    /// Taken at close, so the router and this subscriber do not keep each other alive.
    router: Mutex<Option<Router>>,
    /// Cancelled when the router closes us (as opposed to a failure stopping the group).
    closing: CancellationToken,
}

#[async_trait]
impl Subscriber for Lifecycle {
    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        let projections = self
            .pending
            .lock()
            .take()
            .ok_or_else(|| tidemill::Error::Config("the projections already started".into()))?;
        let mut group = ProjectionGroup::new(self.store.clone());
        for (projection, options) in projections {
            group.spawn(projection, options);
        }
        let stop = group.stop_token();
        *self.group.lock().await = Some(group);
        // A group stopped by an `OnError::Fail` failure closes the router.
        let router = self.router.lock().clone();
        let closing = self.closing.clone();
        let failed = stop.clone();
        tokio::spawn(async move {
            failed.cancelled().await;
            if let (false, Some(router)) = (closing.is_cancelled(), router) {
                tracing::error!("a projection failed and stopped its group; closing the router");
                let _ = router.close().await;
            }
        });
        // No messages; ends when the group stops. Dropping it (the handler ended) stops the
        // group even if the router closes no subscriber.
        let guard = stop.clone().drop_guard();
        let stream = futures::stream::once(async move {
            stop.cancelled().await;
            drop(guard);
        })
        .filter_map(|()| async { None::<tidemill::Result<tidemill::Delivery>> });
        Ok(Subscription::new(topic.to_owned(), stream))
    }

    async fn close(&self) -> tidemill::Result<()> {
        self.closing.cancel();
        self.router.lock().take();
        let Some(group) = self.group.lock().await.take() else {
            return Ok(());
        };
        let failures: Vec<(String, Error)> = group
            .stop()
            .await
            .into_iter()
            .filter_map(|(name, ended)| match ended {
                Ended::Stopped => None,
                Ended::Failed(e) => Some((name, e)),
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(tidemill::Error::Other(Box::new(Error::ProjectionsFailed {
                failures,
            })))
        }
    }
}
