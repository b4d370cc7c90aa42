//! [`LazySubscriber`]: a subscriber that connects on its first subscription, for subscriber
//! constructors whose subscriber can only be made asynchronously.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tidemill::{Subscriber, Subscription};
use tokio::sync::OnceCell;

type Connect =
    Box<dyn Fn() -> BoxFuture<'static, tidemill::Result<Arc<dyn Subscriber>>> + Send + Sync>;

/// A subscriber made by an async function the first time something subscribes through it.
///
/// Processors build subscribers synchronously, when a handler is registered; adapters that
/// connect asynchronously (`RedisSubscriber::connect(config).await`) are wrapped in this, and
/// connect when the router subscribes. A failure to connect is then the router's
/// [`RouterError::Subscribe`](tidemill::router::RouterError::Subscribe), and the next
/// subscription tries again.
///
/// ```
/// use tidemill::{InProcessPubSub, Subscriber};
/// use tidemill_cqrs::LazySubscriber;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidemill::Result<()> {
/// let pubsub = InProcessPubSub::new();
/// let lazy = LazySubscriber::new(move || {
///     let pubsub = pubsub.clone();
///     async move { Ok(pubsub.with_group("billing")) } // e.g. connecting to a broker
/// });
/// let subscription = lazy.subscribe("orders").await?;
/// # drop(subscription);
/// lazy.close().await?;
/// # Ok(()) }
/// ```
pub struct LazySubscriber {
    connect: Connect,
    inner: OnceCell<Arc<dyn Subscriber>>,
}

impl LazySubscriber {
    /// A subscriber that `connect` makes on the first subscription.
    ///
    /// ```
    /// let lazy = tidemill_cqrs::LazySubscriber::new(|| async { Ok(tidemill::InProcessPubSub::new()) });
    /// # drop(lazy);
    /// ```
    pub fn new<F, Fut, S>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = tidemill::Result<S>> + Send + 'static,
        S: Subscriber,
    {
        Self {
            connect: Box::new(move || {
                let fut = connect();
                Box::pin(async move { fut.await.map(|s| Arc::new(s) as Arc<dyn Subscriber>) })
            }),
            inner: OnceCell::new(),
        }
    }
}

impl fmt::Debug for LazySubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazySubscriber")
            .field("connected", &self.inner.initialized())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscriber for LazySubscriber {
    fn max_in_flight(&self) -> Option<usize> {
        self.inner.get().and_then(|s| s.max_in_flight())
    }

    fn group(&self) -> Option<&str> {
        self.inner.get().and_then(|s| s.group())
    }

    fn dead_letter_publisher(&self) -> Option<Arc<dyn tidemill::Publisher>> {
        self.inner.get().and_then(|s| s.dead_letter_publisher())
    }

    async fn subscribe(&self, topic: &str) -> tidemill::Result<Subscription> {
        let inner = self.inner.get_or_try_init(|| (self.connect)()).await?;
        inner.subscribe(topic).await
    }

    async fn close(&self) -> tidemill::Result<()> {
        match self.inner.get() {
            Some(inner) => inner.close().await,
            None => Ok(()),
        }
    }
}
