//! [`DeduplicatorLayer`]: drops a message seen within a window.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::error::BoxError;
use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// Remembers keys for a while. Adapter crates implement it on shared stores so that several
/// processes deduplicate together: `tidemill_redis::RedisDeduplicationStore` (the ttl is the
/// key's expiry), `tidemill_sql::SqlDedupStore` built with `on_pool` (the ttl is compared with
/// when the key was recorded) and `tidemill_nats::KvDeduplicationStore` (the bucket's maximum
/// age is the window; another ttl is refused). [`InMemoryDeduplicationStore`] serves one
/// process.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::{DeduplicationStore, InMemoryDeduplicationStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidemill::BoxError> {
/// let store = InMemoryDeduplicationStore::new();
/// assert!(store.check_and_set("k", Duration::from_secs(60)).await?);
/// assert!(!store.check_and_set("k", Duration::from_secs(60)).await?);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait DeduplicationStore: Send + Sync + 'static {
    /// Records `key` for `ttl`; returns true when the key was not seen before (or expired), that
    /// is when the message should be handled. Must be atomic: of concurrent calls with the same
    /// key, one returns true.
    async fn check_and_set(&self, key: &str, ttl: Duration) -> Result<bool, BoxError>;

    /// Forgets `key`, so a message whose handling failed is handled when it comes back. The
    /// default does nothing (the retry is then dropped as a duplicate until the key expires).
    async fn remove(&self, key: &str) -> Result<(), BoxError> {
        let _ = key;
        Ok(())
    }
}

/// A [`DeduplicationStore`] in memory, with expiring keys. Expired keys are swept out as new ones
/// arrive; with [`max_keys`](Self::max_keys) set, the oldest keys are forgotten first when full.
/// Time is tokio's, so a paused test clock drives expiry.
///
/// ```
/// use tidemill::middleware::InMemoryDeduplicationStore;
/// let store = InMemoryDeduplicationStore::new().max_keys(100_000);
/// # drop(store);
/// ```
#[derive(Clone, Default)]
pub struct InMemoryDeduplicationStore {
    inner: Arc<Mutex<MemoryState>>,
    max_keys: Option<usize>,
}

#[derive(Default)]
struct MemoryState {
    expiries: HashMap<String, Instant>,
    /// When the next sweep of expired keys is due.
    next_sweep: Option<Instant>,
}

impl fmt::Debug for InMemoryDeduplicationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryDeduplicationStore")
            .field("keys", &self.inner.lock().expiries.len())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl InMemoryDeduplicationStore {
    /// An empty store without a limit on the number of keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps at most `n` keys, forgetting those closest to expiry first.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = Some(n.max(1));
        self
    }

    /// How many keys are held (expired ones included until swept).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidemill::middleware::{DeduplicationStore, InMemoryDeduplicationStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tidemill::BoxError> {
    /// let store = InMemoryDeduplicationStore::new();
    /// assert!(store.is_empty());
    /// store.check_and_set("a", Duration::from_secs(1)).await?;
    /// assert_eq!(store.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.inner.lock().expiries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl DeduplicationStore for InMemoryDeduplicationStore {
    async fn check_and_set(&self, key: &str, ttl: Duration) -> Result<bool, BoxError> {
        let now = Instant::now();
        let mut st = self.inner.lock();
        if st.next_sweep.is_none_or(|at| at <= now) {
            st.expiries.retain(|_, exp| *exp > now);
            st.next_sweep = Some(now + ttl.max(Duration::from_millis(1)));
        }
        if st.expiries.get(key).is_some_and(|exp| *exp > now) {
            return Ok(false);
        }
        if let Some(max) = self.max_keys {
            if st.expiries.len() >= max && !st.expiries.contains_key(key) {
                st.expiries.retain(|_, exp| *exp > now);
                if st.expiries.len() >= max {
                    let oldest = st
                        .expiries
                        .iter()
                        .min_by_key(|(_, exp)| **exp)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        st.expiries.remove(&oldest);
                    }
                }
            }
        }
        st.expiries.insert(key.to_owned(), now + ttl);
        Ok(true)
    }

    async fn remove(&self, key: &str) -> Result<(), BoxError> {
        self.inner.lock().expiries.remove(key);
        Ok(())
    }
}

/// A function that gives a message's deduplication key.
///
/// ```
/// use std::sync::Arc;
/// use tidemill::middleware::{DedupKey, KeyFn};
/// let by_order: KeyFn = Arc::new(|msg| msg.metadata().get("order_id").map(|id| format!("order:{id}")));
/// let key = DedupKey::Custom(by_order);
/// # drop(key);
/// ```
pub type KeyFn = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;

/// What identifies duplicates.
#[derive(Clone)]
pub enum DedupKey {
    /// The message id.
    Id,
    /// The value of a metadata entry; messages without it are not deduplicated.
    Metadata(String),
    /// The SHA-256 of the payload, in hex.
    PayloadHash,
    /// Any function of the message; `None` means do not deduplicate.
    Custom(KeyFn),
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id => f.write_str("Id"),
            Self::Metadata(k) => f.debug_tuple("Metadata").field(k).finish(),
            Self::PayloadHash => f.write_str("PayloadHash"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl DedupKey {
    /// The key of `msg`.
    ///
    /// ```
    /// use tidemill::middleware::DedupKey;
    /// let msg = tidemill::Message::with_id("1", "abc").with_metadata("order", "o-7");
    /// assert_eq!(DedupKey::Id.of(&msg).as_deref(), Some("1"));
    /// assert_eq!(DedupKey::Metadata("order".into()).of(&msg).as_deref(), Some("o-7"));
    /// assert_eq!(
    ///     DedupKey::PayloadHash.of(&msg).as_deref(),
    ///     Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    /// );
    /// ```
    pub fn of(&self, msg: &Message) -> Option<String> {
        match self {
            Self::Id => Some(msg.id().to_owned()),
            Self::Metadata(key) => msg.metadata().get(key).map(str::to_owned),
            Self::PayloadHash => {
                let digest = Sha256::digest(msg.payload());
                Some(digest.iter().map(|b| format!("{b:02x}")).collect())
            }
            Self::Custom(f) => f(msg),
        }
    }
}

/// Handles a message only if its key was not seen within the window; a duplicate is acked
/// without calling the handler. If the handling fails, the key is removed from the store again,
/// so the message is handled when it comes back. If the store fails, the message is nacked.
///
/// ```
/// use std::time::Duration;
/// use tidemill::middleware::{DedupKey, DeduplicatorLayer, InMemoryDeduplicationStore};
///
/// let dedup = DeduplicatorLayer::new(InMemoryDeduplicationStore::new(), Duration::from_secs(600))
///     .key(DedupKey::Metadata("idempotency_key".into()))
///     .prefix("payments:");
/// tidemill::Router::new().layer(dedup);
/// ```
#[derive(Clone)]
pub struct DeduplicatorLayer {
    store: Arc<dyn DeduplicationStore>,
    window: Duration,
    key: DedupKey,
    prefix: Arc<str>,
}

impl fmt::Debug for DeduplicatorLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeduplicatorLayer")
            .field("window", &self.window)
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl DeduplicatorLayer {
    /// Deduplicates by message id within `window`, remembering keys in `store`.
    pub fn new(store: impl DeduplicationStore, window: Duration) -> Self {
        Self {
            store: Arc::new(store),
            window,
            key: DedupKey::Id,
            prefix: "".into(),
        }
    }

    /// What identifies duplicates. Default [`DedupKey::Id`].
    pub fn key(mut self, key: DedupKey) -> Self {
        self.key = key;
        self
    }

    /// A prefix for the keys in the store, to keep handlers sharing a store apart.
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// The store failed; the message is nacked.
///
/// ```
/// use tidemill::middleware::DeduplicationStoreError;
/// let err = DeduplicationStoreError("connection refused".into());
/// assert!(err.to_string().contains("connection refused"));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the deduplication store failed: {0}")]
pub struct DeduplicationStoreError(#[source] pub BoxError);

impl<S> Layer<S> for DeduplicatorLayer {
    type Service = Deduplicator<S>;

    fn layer(&self, inner: S) -> Deduplicator<S> {
        Deduplicator {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// The service of [`DeduplicatorLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Deduplicator<_> = tidemill::middleware::DeduplicatorLayer::new(tidemill::middleware::InMemoryDeduplicationStore::new(), std::time::Duration::from_secs(60)).layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone)]
pub struct Deduplicator<S> {
    inner: S,
    config: Arc<DeduplicatorLayer>,
}

impl<S: fmt::Debug> fmt::Debug for Deduplicator<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deduplicator")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S: Handler> Service<Message> for Deduplicator<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let config = self.config.clone();
        let Some(key) = config.key.of(&msg) else {
            return Box::pin(self.inner.call(msg));
        };
        let key = format!("{}{key}", config.prefix);
        // The readiness reserved by poll_ready belongs to `self.inner`; the call happens after
        // the store answered, so take the ready service and leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let fresh = config
                .store
                .check_and_set(&key, config.window)
                .await
                .map_err(|e| HandlerError::new(DeduplicationStoreError(e)))?;
            if !fresh {
                tracing::debug!(message_id = msg.id(), %key, "duplicate message dropped");
                return Ok(Vec::new());
            }
            let result = inner.call(msg).await;
            if result.is_err() {
                if let Err(error) = config.store.remove(&key).await {
                    tracing::warn!(%key, %error, "could not forget the key of a failed message");
                }
            }
            result
        })
    }
}
