//! [`RequestReply`]: send a command and await its handler's replies, over any pub/sub.
//!
//! A request is a command carrying two metadata entries: [`REPLY_TO_KEY`] (the topic this
//! requester listens on) and [`REQUEST_ID_KEY`]. The [`CommandProcessor`](crate::CommandProcessor)
//! answers on that topic with the same request id: its handler's result, or its final error.
//! Replies nobody waits for any more (after a timeout) are acked and dropped.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use parking_lot::Mutex;
use tidemill::{Message, Metadata, Subscriber};
use tokio::sync::{mpsc, OnceCell};
use tokio::time::Instant;

use crate::bus::CommandBus;
use crate::error::{Error, Result};
use crate::marshal::{JsonMarshaler, Marshaler};
use crate::name::Named;
use crate::{REPLY_FINAL_KEY, REPLY_STATUS_KEY, REPLY_TO_KEY, REPLY_VALUE_KEY, REQUEST_ID_KEY};

/// Options of a [`RequestReply`].
///
/// ```
/// use std::time::Duration;
/// use tidemill_cqrs::RequestReplyConfig;
///
/// let config = RequestReplyConfig::default()
///     .reply_topic("replies.api-1")
///     .timeout(Duration::from_secs(5));
/// # drop(config);
/// ```
#[derive(Clone, Debug)]
pub struct RequestReplyConfig {
    reply_topic: Option<String>,
    timeout: Duration,
}

impl Default for RequestReplyConfig {
    fn default() -> Self {
        Self {
            reply_topic: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RequestReplyConfig {
    /// The topic replies come to. It must reach this requester alone: every reply on it is read
    /// here. Default `replies.{uuid}`, new for each requester.
    ///
    /// ```
    /// let config = tidemill_cqrs::RequestReplyConfig::default().reply_topic("replies.web-1");
    /// # drop(config);
    /// ```
    pub fn reply_topic(mut self, topic: impl Into<String>) -> Self {
        self.reply_topic = Some(topic.into());
        self
    }

    /// How long to wait for the final reply. Default 30 s.
    ///
    /// ```
    /// let config = tidemill_cqrs::RequestReplyConfig::default().timeout(std::time::Duration::from_secs(2));
    /// # drop(config);
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

type Pending = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

/// Sends commands and awaits their replies. Cloning gives another handle on the same requester.
///
/// The replies subscription is made on the first request and lives as long as the requester.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidemill::{HandlerError, HandlerResult, InProcessPubSub, Router};
/// use tidemill_cqrs::{CommandBus, CommandProcessor, Error, Named, ProcessorConfig, RequestReply};
///
/// #[derive(Serialize, Deserialize)]
/// struct Divide { a: i64, b: i64 }
/// impl Named for Divide {}
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pubsub = InProcessPubSub::new();
/// let router = Router::new();
/// let processor = CommandProcessor::with_config(
///     &router,
///     { let pubsub = pubsub.clone(); move |group: &str| Ok(pubsub.with_group(group)) },
///     ProcessorConfig::default().reply_publisher(pubsub.clone()),
/// );
/// processor.handle_with_result("divide", |c: Divide| async move {
///     if c.b == 0 {
///         // Final: the requester gets this error, and the command is not retried.
///         return Err(HandlerError::drop_message("division by zero"));
///     }
///     HandlerResult::Ok(c.a / c.b)
/// })?;
/// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
/// router.running().await;
///
/// let requests = RequestReply::new(CommandBus::new(pubsub.clone()), pubsub.clone());
/// let quotient: i64 = requests.request(&Divide { a: 7, b: 2 }).await?;
/// assert_eq!(quotient, 3);
/// let failed = requests.request::<_, i64>(&Divide { a: 1, b: 0 }).await;
/// assert!(matches!(failed, Err(Error::Remote { .. })));
/// router.close().await?;
/// run.await??;
/// # Ok(()) }
/// ```
pub struct RequestReply<M = JsonMarshaler> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for RequestReply<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<M> fmt::Debug for RequestReply<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestReply")
            .field("reply_topic", &self.inner.reply_topic)
            .field("timeout", &self.inner.timeout)
            .field("waiting", &self.inner.pending.lock().len())
            .finish_non_exhaustive()
    }
}

struct Inner<M> {
    bus: CommandBus<M>,
    subscriber: Arc<dyn Subscriber>,
    reply_topic: String,
    timeout: Duration,
    pending: Pending,
    listener: OnceCell<tokio::task::AbortHandle>,
}

impl<M> Drop for Inner<M> {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

/// Stops waiting for a request's replies when the caller stops.
struct Waiting {
    pending: Pending,
    id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// The replies of one request; see [`RequestReply::request_many`].
///
/// ```
/// use futures::StreamExt;
///
/// async fn all(replies: tidemill_cqrs::reply::Replies<u32>) -> Vec<u32> {
///     replies.filter_map(|r| async move { r.ok() }).collect().await
/// }
/// # let _ = all;
/// ```
pub type Replies<R> = BoxStream<'static, Result<R>>;

impl RequestReply<JsonMarshaler> {
    /// A requester with the default options, sending through `bus` and reading replies with
    /// `subscriber`.
    ///
    /// ```
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let requests = tidemill_cqrs::RequestReply::new(tidemill_cqrs::CommandBus::new(pubsub.clone()), pubsub);
    /// assert!(requests.reply_topic().starts_with("replies."));
    /// ```
    pub fn new(bus: CommandBus<JsonMarshaler>, subscriber: impl Subscriber) -> Self {
        Self::with_config(bus, subscriber, RequestReplyConfig::default())
    }
}

impl<M: Send + Sync + 'static> RequestReply<M> {
    /// A requester with the given options.
    ///
    /// ```
    /// use tidemill_cqrs::{CommandBus, RequestReply, RequestReplyConfig};
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let requests = RequestReply::with_config(
    ///     CommandBus::new(pubsub.clone()),
    ///     pubsub,
    ///     RequestReplyConfig::default().reply_topic("replies.api"),
    /// );
    /// assert_eq!(requests.reply_topic(), "replies.api");
    /// ```
    pub fn with_config(
        bus: CommandBus<M>,
        subscriber: impl Subscriber,
        config: RequestReplyConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                subscriber: Arc::new(subscriber),
                reply_topic: config
                    .reply_topic
                    .unwrap_or_else(|| format!("replies.{}", tidemill::new_uuid())),
                timeout: config.timeout,
                pending: Arc::default(),
                listener: OnceCell::new(),
            }),
        }
    }

    /// The topic replies come to.
    ///
    /// ```
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let requests = tidemill_cqrs::RequestReply::new(tidemill_cqrs::CommandBus::new(pubsub.clone()), pubsub);
    /// println!("replies come to {}", requests.reply_topic());
    /// ```
    pub fn reply_topic(&self) -> &str {
        &self.inner.reply_topic
    }

    /// Sends `command` and waits until its handler succeeded (or failed for good). For handlers
    /// without results, though it works with every handler.
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ping;
    /// impl tidemill_cqrs::Named for Ping {}
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// tidemill_cqrs::CommandProcessor::with_config(
    ///     &router,
    ///     { let pubsub = pubsub.clone(); move |g: &str| Ok(pubsub.with_group(g)) },
    ///     tidemill_cqrs::ProcessorConfig::default().reply_publisher(pubsub.clone()),
    /// )
    /// .handle("ping", |_: Ping| async { tidemill::HandlerResult::Ok(()) })?;
    /// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
    /// router.running().await;
    /// let requests = tidemill_cqrs::RequestReply::new(tidemill_cqrs::CommandBus::new(pubsub.clone()), pubsub);
    /// requests.send_and_wait(&Ping).await?;
    /// router.close().await?;
    /// run.await??;
    /// # Ok(()) }
    /// ```
    pub async fn send_and_wait<C>(&self, command: &C) -> Result<()>
    where
        C: Named + Send + Sync + 'static,
        M: Marshaler<C>,
    {
        let (mut rx, waiting) = self.send_request(command).await?;
        let deadline = Instant::now() + self.inner.timeout;
        loop {
            let reply = self.next_reply::<C>(&mut rx, deadline).await?;
            if is_final(&reply) {
                drop(waiting);
                return check_status::<C>(&reply);
            }
        }
    }

    /// Sends `command` and returns its handler's result (registered with
    /// [`CommandProcessor::handle_with_result`](crate::CommandProcessor::handle_with_result)).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Double(u32);
    /// impl tidemill_cqrs::Named for Double {}
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// tidemill_cqrs::CommandProcessor::with_config(
    ///     &router,
    ///     { let pubsub = pubsub.clone(); move |g: &str| Ok(pubsub.with_group(g)) },
    ///     tidemill_cqrs::ProcessorConfig::default().reply_publisher(pubsub.clone()),
    /// )
    /// .handle_with_result("double", |c: Double| async move { tidemill::HandlerResult::Ok(c.0 * 2) })?;
    /// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
    /// router.running().await;
    /// let requests = tidemill_cqrs::RequestReply::new(tidemill_cqrs::CommandBus::new(pubsub.clone()), pubsub);
    /// let doubled: u32 = requests.request(&Double(21)).await?;
    /// assert_eq!(doubled, 42);
    /// router.close().await?;
    /// run.await??;
    /// # Ok(()) }
    /// ```
    pub async fn request<C, R>(&self, command: &C) -> Result<R>
    where
        C: Named + Send + Sync + 'static,
        M: Marshaler<C> + Marshaler<R>,
    {
        let (mut rx, waiting) = self.send_request(command).await?;
        let deadline = Instant::now() + self.inner.timeout;
        loop {
            let reply = self.next_reply::<C>(&mut rx, deadline).await?;
            if is_final(&reply) {
                drop(waiting);
                check_status::<C>(&reply)?;
                return self.decode::<C, R>(&reply);
            }
        }
    }

    /// Sends `command` and streams every value its handler replies with: those it sends with
    /// [`Context::reply`](crate::Context::reply), then its result, if it has one. The stream
    /// ends after the final reply; a failure or the timeout (for the whole stream) is its last
    /// item.
    ///
    /// ```
    /// use futures::StreamExt;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct CountTo(u32);
    /// impl tidemill_cqrs::Named for CountTo {}
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pubsub = tidemill::InProcessPubSub::new();
    /// let router = tidemill::Router::new();
    /// tidemill_cqrs::CommandProcessor::with_config(
    ///     &router,
    ///     { let pubsub = pubsub.clone(); move |g: &str| Ok(pubsub.with_group(g)) },
    ///     tidemill_cqrs::ProcessorConfig::default().reply_publisher(pubsub.clone()),
    /// )
    /// .handle("count", |c: CountTo, ctx: tidemill_cqrs::Context| async move {
    ///     for n in 1..=c.0 {
    ///         ctx.reply(&n).await.map_err(tidemill::HandlerError::new)?;
    ///     }
    ///     tidemill::HandlerResult::Ok(())
    /// })?;
    /// let run = tokio::spawn({ let router = router.clone(); async move { router.run().await } });
    /// router.running().await;
    /// let requests = tidemill_cqrs::RequestReply::new(tidemill_cqrs::CommandBus::new(pubsub.clone()), pubsub);
    /// let counted: Vec<u32> = requests
    ///     .request_many::<_, u32>(&CountTo(3))
    ///     .await?
    ///     .map(|n| n.unwrap())
    ///     .collect()
    ///     .await;
    /// assert_eq!(counted, [1, 2, 3]);
    /// router.close().await?;
    /// run.await??;
    /// # Ok(()) }
    /// ```
    pub async fn request_many<C, R>(&self, command: &C) -> Result<Replies<R>>
    where
        C: Named + Send + Sync + 'static,
        M: Marshaler<C> + Marshaler<R>,
        R: Send + 'static,
    {
        let (rx, waiting) = self.send_request(command).await?;
        let deadline = Instant::now() + self.inner.timeout;
        let this = self.clone();
        let stream = futures::stream::unfold(Some((rx, waiting, this)), move |state| async move {
            let (mut rx, waiting, this) = state?;
            loop {
                let reply = match this.next_reply::<C>(&mut rx, deadline).await {
                    Ok(reply) => reply,
                    Err(err) => return Some((Err(err), None)),
                };
                let last = is_final(&reply);
                if let Err(err) = check_status::<C>(&reply) {
                    return Some((Err(err), None));
                }
                if reply.metadata().get(REPLY_VALUE_KEY) == Some("true") {
                    let item = this.decode::<C, R>(&reply);
                    return Some((item, (!last).then_some((rx, waiting, this))));
                }
                if last {
                    return None;
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn send_request<C>(
        &self,
        command: &C,
    ) -> Result<(mpsc::UnboundedReceiver<Message>, Waiting)>
    where
        C: Named + Send + Sync + 'static,
        M: Marshaler<C>,
    {
        self.listen().await?;
        let id = tidemill::new_uuid().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.pending.lock().insert(id.clone(), tx);
        let waiting = Waiting {
            pending: self.inner.pending.clone(),
            id: id.clone(),
        };
        let metadata = Metadata::from_iter([
            (REPLY_TO_KEY, self.inner.reply_topic.as_str()),
            (REQUEST_ID_KEY, id.as_str()),
        ]);
        self.inner.bus.core().send(command, Some(&metadata)).await?;
        Ok((rx, waiting))
    }

    /// Subscribes to the replies topic once, before the first request goes out, so that no
    /// reply can come before anyone listens.
    async fn listen(&self) -> Result<()> {
        self.inner
            .listener
            .get_or_try_init(|| async {
                let mut subscription = self
                    .inner
                    .subscriber
                    .subscribe(&self.inner.reply_topic)
                    .await?;
                let pending = self.inner.pending.clone();
                let task = tokio::spawn(async move {
                    while let Some(item) = subscription.next().await {
                        match item {
                            Ok(delivery) => {
                                let msg = delivery.message().clone();
                                delivery.ack();
                                let Some(id) = msg.metadata().get(REQUEST_ID_KEY) else {
                                    continue;
                                };
                                if let Some(tx) = pending.lock().get(id) {
                                    tx.send(msg.clone()).ok();
                                }
                            }
                            Err(err) => tracing::warn!(error = %err, "replies subscription"),
                        }
                    }
                    // No reply can come any more: waiting requests fail now, not at their timeout.
                    pending.lock().clear();
                });
                Ok::<_, Error>(task.abort_handle())
            })
            .await?;
        Ok(())
    }

    async fn next_reply<C: Named>(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Message>,
        deadline: Instant,
    ) -> Result<Message> {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(Error::RepliesClosed),
            Err(_) => Err(Error::Timeout {
                name: C::name().into_owned(),
                timeout: self.inner.timeout,
            }),
        }
    }

    fn decode<C: Named, R>(&self, reply: &Message) -> Result<R>
    where
        M: Marshaler<R>,
    {
        self.inner
            .bus
            .marshaler()
            .unmarshal(reply.payload())
            .map_err(|source| Error::Unmarshal {
                name: format!("reply to {}", C::name()),
                message_id: reply.id().to_owned(),
                source,
            })
    }
}

fn is_final(reply: &Message) -> bool {
    reply.metadata().get(REPLY_FINAL_KEY) != Some("false")
}

fn check_status<C: Named>(reply: &Message) -> Result<()> {
    if reply.metadata().get(REPLY_STATUS_KEY) == Some("error") {
        return Err(Error::Remote {
            name: C::name().into_owned(),
            message: String::from_utf8_lossy(reply.payload()).into_owned(),
        });
    }
    Ok(())
}
