//! [`KvDeduplicationStore`]: remembers which keys (message ids) were seen, in a JetStream
//! key-value bucket, for a deduplicating middleware shared by many processes. It implements
//! [`DeduplicationStore`], so it plugs into [`tidemill::middleware::DeduplicatorLayer`].

use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::Client;
use async_trait::async_trait;
use bytes::Bytes;
use tidemill::middleware::DeduplicationStore;
use tidemill::{BoxError, Error, Result};

use crate::config::NatsConfig;
use crate::connection::{connect, jetstream};
use crate::error::NatsError;
use crate::topology::encode_name;

/// A set of keys with a time window, kept in the JetStream key-value bucket `bucket`.
///
/// [`check_and_set`](Self::check_and_set) is an atomic set-if-absent (`create` on the bucket):
/// exactly one caller, in any process, gets `true` for a key within the window; the bucket's
/// maximum age is the window, after which the key may be seen as new again.
///
/// The bucket is created with the stream settings a key-value bucket has (`KV_<bucket>`,
/// subjects `$KV.<bucket>.>`, one message per subject, rollups allowed, deletes denied, direct
/// get), because creating it through the client's key-value API fails against server 2.9.
/// An existing bucket is used as it is, with the window it was created with: that window is
/// what [`window`](Self::window) reports, and a warning is logged when it differs from the one
/// asked for.
///
/// # As a [`DeduplicationStore`]
///
/// The bucket's maximum age is the only window there is (the server keeps no expiry per key),
/// so the `ttl` a [`DeduplicatorLayer`](tidemill::middleware::DeduplicatorLayer) passes must
/// equal [`window`](Self::window): give the layer the same duration. A different `ttl` is
/// refused with an error naming both durations (the layer then nacks the message), never
/// silently replaced by the bucket's. [`remove`](Self::remove) deletes the key (a delete
/// marker), so a message whose handling failed is new again; if two processes re-create a
/// removed key at the same instant, the loser gets an error instead of `false`, and its
/// message is nacked and comes back as a duplicate.
///
/// ```
/// use std::time::Duration;
/// use tidemill_nats::{KvDeduplicationStore, NatsConfig};
///
/// # #[tokio::main] async fn main() -> tidemill::Result<()> {
/// let store = KvDeduplicationStore::connect(
///     &NatsConfig::new("nats://127.0.0.1:4222"),
///     "doc-dedup",
///     Duration::from_secs(60),
/// )
/// .await?;
/// let key = tidemill::new_uuid();
/// assert!(store.check_and_set(&key).await?); // first time: process it
/// assert!(!store.check_and_set(&key).await?); // a duplicate
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KvDeduplicationStore {
    store: Store,
    bucket: String,
    window: Duration,
}

impl std::fmt::Debug for KvDeduplicationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvDeduplicationStore")
            .field("bucket", &self.bucket)
            .field("window", &self.window)
            .finish()
    }
}

impl KvDeduplicationStore {
    /// Connects and opens (or creates) bucket `bucket` remembering keys for `window`.
    pub async fn connect(config: &NatsConfig, bucket: &str, window: Duration) -> Result<Self> {
        let client = connect(config).await?;
        Self::open(client, config, bucket, window).await
    }

    /// Opens (or creates) bucket `bucket` on an existing connection.
    pub async fn open(
        client: Client,
        config: &NatsConfig,
        bucket: &str,
        window: Duration,
    ) -> Result<Self> {
        let bad =
            |reason: String| Error::Config(format!("deduplication bucket {bucket:?}: {reason}"));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("a bucket name is letters, digits, '-' and '_'".into()));
        }
        if window.is_zero() {
            return Err(bad("the window must be longer than zero".into()));
        }
        let js = jetstream(client, config);
        let stream_name = format!("KV_{bucket}");
        let existing = js.get_stream(&stream_name).await;
        if existing.is_err() {
            let created = js
                .create_stream(stream::Config {
                    name: stream_name.clone(),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age: window,
                    // The server wants the duplicate window within the maximum age.
                    duplicate_window: window.min(Duration::from_secs(120)),
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: DiscardPolicy::New,
                    storage: StorageType::File,
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await;
            // Another process may have created it meanwhile; opening it below tells.
            if let Err(err) = created {
                tracing::debug!(error = %err, bucket, "creating the deduplication bucket failed");
            }
        }
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|err| bad(err.to_string()))?;
        let actual = match existing {
            Ok(stream) => stream.cached_info().config.max_age,
            Err(_) => window,
        };
        if actual != window {
            tracing::warn!(
                bucket,
                asked = ?window,
                window = ?actual,
                "the deduplication bucket exists with another window; its own window applies"
            );
        }
        Ok(Self {
            store,
            bucket: bucket.to_owned(),
            window: actual,
        })
    }

    /// Records `key` and returns `true` if it was not recorded within the window, `false` if it
    /// was (a duplicate). Any string is a valid key: characters a key-value key cannot hold are
    /// escaped.
    pub async fn check_and_set(&self, key: &str) -> Result<bool> {
        match self.store.create(encode_name(key), Bytes::new()).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(Error::Other(
                NatsError::Client(format!("deduplication bucket {:?}: {err}", self.bucket)).into(),
            )),
        }
    }

    /// Forgets `key` (a delete marker in the bucket), so it is new again. Forgetting a key that
    /// is not there is no error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tidemill_nats::{KvDeduplicationStore, NatsConfig};
    ///
    /// # #[tokio::main] async fn main() -> tidemill::Result<()> {
    /// let config = NatsConfig::new("nats://127.0.0.1:4222");
    /// let store = KvDeduplicationStore::connect(&config, "doc-dedup", Duration::from_secs(60)).await?;
    /// let key = tidemill::new_uuid();
    /// assert!(store.check_and_set(&key).await?);
    /// store.remove(&key).await?;
    /// assert!(store.check_and_set(&key).await?); // new again
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.store.delete(encode_name(key)).await.map_err(|err| {
            Error::Other(
                NatsError::Client(format!("deduplication bucket {:?}: {err}", self.bucket)).into(),
            )
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// How long a key is remembered: the bucket's maximum age (an existing bucket keeps the one
    /// it was created with).
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[async_trait]
impl DeduplicationStore for KvDeduplicationStore {
    /// Refuses a `ttl` other than the bucket's [`window`](KvDeduplicationStore::window).
    async fn check_and_set(&self, key: &str, ttl: Duration) -> std::result::Result<bool, BoxError> {
        if ttl != self.window {
            return Err(Error::Config(format!(
                "deduplication bucket {:?} remembers keys for {:?} (its maximum age), the \
                 deduplicator asked for {ttl:?}: give both the same window",
                self.bucket, self.window
            ))
            .into());
        }
        Ok(KvDeduplicationStore::check_and_set(self, key).await?)
    }

    async fn remove(&self, key: &str) -> std::result::Result<(), BoxError> {
        Ok(KvDeduplicationStore::remove(self, key).await?)
    }
}
