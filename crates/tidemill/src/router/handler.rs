//! What a handler is: a [`tower::Service`] from a [`Message`] to the messages it produces, and
//! [`HandlerError`], which says what to do with a message that failed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use crate::error::BoxError;
use crate::message::Message;

/// What a handler returns.
pub type HandlerResult<T = Vec<Message>> = Result<T, HandlerError>;

/// A message handler: a [`tower::Service`] that takes a [`Message`] and returns the messages to
/// publish to the handler's output topic (none for consumer-only handlers).
///
/// Handlers are `Clone`, as tower services usually are, so that middleware such as retry can call
/// them again.
///
/// Every such service is a `Handler`, so tower's layers (timeout, concurrency limit, rate limit,
/// load shed) wrap handlers directly; [`handler_fn`] turns an async function or closure into one.
pub trait Handler:
    Service<Message, Response = Vec<Message>, Error = HandlerError, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Handler for S where
    S: Service<Message, Response = Vec<Message>, Error = HandlerError, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// A handler of batches: takes the messages of one batch, returns the messages to publish. The
/// batch is settled as one: all acked or all nacked.
pub trait BatchHandler:
    Service<Vec<Message>, Response = Vec<Message>, Error = HandlerError, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> BatchHandler for S where
    S: Service<Vec<Message>, Response = Vec<Message>, Error = HandlerError, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// A layer's service that can wrap a handler: a service of messages whose error converts into a
/// [`BoxError`], as tower's own layers' do (a [`HandlerError`] inside comes back out whole).
pub trait LayeredHandler:
    Service<Message, Response = Vec<Message>, Error: Into<BoxError>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> LayeredHandler for S where
    S: Service<Message, Response = Vec<Message>, Error: Into<BoxError>, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// Boxes a layer's service as a handler, converting its error.
pub(crate) fn box_layered<S: LayeredHandler>(svc: S) -> BoxHandler {
    BoxHandler::new(tower::util::MapErr::new(svc, HandlerError::new))
}

/// A type-erased handler, the form router-wide middleware sees.
pub type BoxHandler = tower::util::BoxCloneService<Message, Vec<Message>, HandlerError>;

/// What a handler function may return on success: nothing, one message, an optional message, or
/// a list of messages.
pub trait HandlerOutput: Send + 'static {
    /// The messages to publish.
    fn into_messages(self) -> Vec<Message>;
}

impl HandlerOutput for () {
    fn into_messages(self) -> Vec<Message> {
        Vec::new()
    }
}

impl HandlerOutput for Vec<Message> {
    fn into_messages(self) -> Vec<Message> {
        self
    }
}

impl HandlerOutput for Message {
    fn into_messages(self) -> Vec<Message> {
        vec![self]
    }
}

impl HandlerOutput for Option<Message> {
    fn into_messages(self) -> Vec<Message> {
        self.into_iter().collect()
    }
}

/// Turns an async function of a message (or of a batch) into a handler.
///
/// ```
/// use tidemill::router::{handler_fn, HandlerResult};
/// use tidemill::Message;
///
/// async fn greet(msg: Message) -> HandlerResult<Message> {
///     let name = String::from_utf8_lossy(msg.payload()).into_owned();
///     Ok(Message::new(format!("hello, {name}")))
/// }
///
/// let handler = handler_fn(greet);
/// # drop(handler);
/// ```
pub fn handler_fn<F>(f: F) -> HandlerFn<F> {
    HandlerFn { f }
}

/// A handler made of an async function; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

impl<F, Req, Fut, O> Service<Req> for HandlerFn<F>
where
    F: Fn(Req) -> Fut,
    Fut: Future<Output = HandlerResult<O>> + Send + 'static,
    O: HandlerOutput,
{
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = MapOutput<Fut>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        MapOutput {
            inner: (self.f)(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`HandlerFn`]: the function's future, its output turned into messages.
    pub struct MapOutput<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut, O> Future for MapOutput<Fut>
where
    Fut: Future<Output = HandlerResult<O>>,
    O: HandlerOutput,
{
    type Output = HandlerResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HandlerResult> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.map(HandlerOutput::into_messages))
    }
}

/// Which handler a message is being handled by, put in the message's
/// [extensions](Message::extensions) by the router when the handler has middleware, so layers
/// such as the poison queue can say where a message came from.
///
/// ```
/// use tidemill::router::HandlerContext;
/// let msg = tidemill::Message::new("");
/// assert!(HandlerContext::of(&msg).is_none()); // set by the router only
/// ```
#[derive(Clone, Debug)]
pub struct HandlerContext {
    pub(crate) handler: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) subscriber: &'static str,
    /// The message's acker, for middleware that acks before the handler is done.
    pub(crate) acker: Option<AckSlot>,
}

/// The acker of a message being handled with middleware, shared with its [`HandlerContext`].
pub(crate) type AckSlot = Arc<parking_lot::Mutex<Option<crate::pubsub::Acker>>>;

impl HandlerContext {
    /// The context of the handling of `msg`, if the router set one.
    pub fn of(msg: &Message) -> Option<&HandlerContext> {
        msg.extensions().get::<HandlerContext>()
    }

    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The topic the message was received from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The type of the subscriber that received the message.
    pub fn subscriber(&self) -> &str {
        self.subscriber
    }

    /// Acks the message now, before its handling is done (see
    /// [`InstantAckLayer`](crate::middleware::InstantAckLayer)). Whatever the handling ends in is
    /// then only logged. Returns whether this call acked it (false if it was already settled).
    ///
    /// ```
    /// use tidemill::router::HandlerContext;
    /// use tidemill::Message;
    ///
    /// // In a layer's `call`: ack as soon as the handling starts.
    /// fn start(msg: &Message) {
    ///     if let Some(context) = HandlerContext::of(msg) {
    ///         context.ack_now();
    ///     }
    /// }
    /// start(&Message::new(""));
    /// ```
    pub fn ack_now(&self) -> bool {
        match self.acker.as_ref().and_then(|slot| slot.lock().take()) {
            Some(acker) => {
                acker.ack();
                true
            }
            None => false,
        }
    }
}

/// What the router does with a message whose handler failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Nack: the message comes back after the subscriber's nack delay. Retry middleware may
    /// retry it first. The default.
    Retry,
    /// Nack with this delay: the message comes back no sooner.
    RetryAfter(Duration),
    /// The message can never succeed: retry middleware does not retry it, a poison queue takes it
    /// at once, and without a poison queue it is nacked. Errors wrapped in [`Permanent`] get it.
    Reject,
    /// Ack without processing: the message is dropped on purpose.
    Drop,
}

/// A handler's failure: the cause, and what should happen to the message.
///
/// Any error converts into a `HandlerError` with `?` (as [`Disposition::Retry`]); the
/// constructors say more.
///
/// ```
/// use std::time::Duration;
/// use tidemill::router::{Disposition, HandlerError};
///
/// let err = HandlerError::retry_after(Duration::from_secs(5), "the database is busy");
/// assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(5)));
///
/// let err = HandlerError::reject("payload is not JSON");
/// assert_eq!(err.disposition(), Disposition::Reject);
///
/// fn parse(input: &str) -> Result<u32, HandlerError> {
///     Ok(input.parse::<u32>()?)
/// }
/// assert_eq!(parse("x").unwrap_err().disposition(), Disposition::Retry);
/// ```
pub struct HandlerError {
    disposition: Disposition,
    source: BoxError,
}

impl HandlerError {
    /// A failure whose message is retried (nacked).
    ///
    /// A `HandlerError` that went through a [`BoxError`] (as it does inside tower's own layers)
    /// comes back out whole, disposition included.
    pub fn new(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        match source.downcast::<Boxed>() {
            Ok(boxed) => boxed.0,
            Err(source) => Self {
                disposition: if source.is::<Permanent>() {
                    Disposition::Reject
                } else {
                    Disposition::Retry
                },
                source,
            },
        }
    }

    /// A failure whose message comes back after `delay`.
    pub fn retry_after(delay: Duration, source: impl Into<BoxError>) -> Self {
        Self {
            disposition: Disposition::RetryAfter(delay),
            source: source.into(),
        }
    }

    /// A permanent failure: never retried, sent to the poison queue if there is one.
    pub fn reject(source: impl Into<BoxError>) -> Self {
        Self {
            disposition: Disposition::Reject,
            source: source.into(),
        }
    }

    /// Drop the message: ack it without processing, giving `reason`.
    pub fn drop_message(reason: impl Into<BoxError>) -> Self {
        Self {
            disposition: Disposition::Drop,
            source: reason.into(),
        }
    }

    /// What the router should do with the message.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// The same error with another disposition.
    ///
    /// ```
    /// use tidemill::router::{Disposition, HandlerError};
    /// let err = HandlerError::new("boom").with_disposition(Disposition::Drop);
    /// assert_eq!(err.disposition(), Disposition::Drop);
    /// ```
    pub fn with_disposition(mut self, disposition: Disposition) -> Self {
        self.disposition = disposition;
        self
    }

    /// The cause.
    pub fn source_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The cause, owned.
    pub fn into_source(self) -> BoxError {
        self.source
    }

    /// The cause downcast to `E`, if it is one.
    ///
    /// ```
    /// use tidemill::router::HandlerError;
    /// let err = HandlerError::new(std::io::Error::other("disk"));
    /// assert!(err.downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref()
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("disposition", &self.disposition)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

// Like anyhow::Error, HandlerError does not implement std::error::Error itself, so that every
// error converts into it with `?`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(source: E) -> Self {
        Self::new(source)
    }
}

/// Marks an error as permanent: converted into a [`HandlerError`] (with `?` or
/// [`HandlerError::new`]) it gets [`Disposition::Reject`], so retry middleware never retries it
/// and a poison queue takes the message at once.
///
/// ```
/// use tidemill::router::{Disposition, HandlerError, Permanent};
///
/// fn check(amount: i64) -> Result<(), HandlerError> {
///     if amount < 0 {
///         Err(Permanent::new("a negative amount can never be booked"))?;
///     }
///     Ok(())
/// }
/// assert_eq!(check(-1).unwrap_err().disposition(), Disposition::Reject);
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Permanent(pub BoxError);

impl Permanent {
    /// Marks `source` as permanent.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self(source.into())
    }
}

/// A `HandlerError` in a box, so tower layers that require `Into<BoxError>` can carry it and
/// `HandlerError::new` can take it out again.
struct Boxed(HandlerError);

impl fmt::Debug for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Boxed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0.source)
    }
}

impl From<HandlerError> for BoxError {
    fn from(err: HandlerError) -> Self {
        Box::new(Boxed(err))
    }
}
