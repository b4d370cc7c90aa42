//! Typed errors of buses, processors and request-reply.

use std::time::Duration;

use tidemill::router::RouterError;
use tidemill::BoxError;

/// What went wrong.
///
/// Inside a handler these travel as the cause of a [`HandlerError`](tidemill::HandlerError):
/// decoding failures and unknown names are rejected
/// ([`Disposition::Reject`](tidemill::router::Disposition::Reject)), so a poison queue takes
/// them, unless the processor acks unknown names.
///
/// ```
/// let err = tidemill_cqrs::Error::UnknownName {
///     name: "OrderShipped".into(),
///     message_id: "m-1".into(),
/// };
/// assert_eq!(err.to_string(), "no handler for \"OrderShipped\" (message m-1)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value could not be encoded; nothing was sent.
    #[error("encoding {name:?} failed: {source}")]
    Marshal {
        /// The name of the value's type.
        name: String,
        /// The marshaler's error.
        #[source]
        source: BoxError,
    },
    /// A payload could not be decoded as the type its name says.
    #[error("decoding message {message_id} as {name:?} failed: {source}")]
    Unmarshal {
        /// The name in the message.
        name: String,
        /// The message id.
        message_id: String,
        /// The marshaler's error.
        #[source]
        source: BoxError,
    },
    /// The message carries no name in its metadata.
    #[error("message {message_id} has no {key:?} metadata")]
    MissingName {
        /// The message id.
        message_id: String,
        /// The metadata key looked for.
        key: &'static str,
    },
    /// No handler of the processor handles this name.
    #[error("no handler for {name:?} (message {message_id})")]
    UnknownName {
        /// The name in the message.
        name: String,
        /// The message id.
        message_id: String,
    },
    /// A command already has a handler.
    #[error("command {name:?} already has a handler, {existing:?}")]
    DuplicateCommandHandler {
        /// The command's name.
        name: String,
        /// The handler registered first.
        existing: String,
    },
    /// An event group has two handlers of one event.
    #[error("group {group:?} has two handlers of event {name:?}")]
    DuplicateGroupHandler {
        /// The group.
        group: String,
        /// The event's name.
        name: String,
    },
    /// The subscriber the constructor gave reads in another consumer group than the one it was
    /// asked for (a shared, already configured subscriber): the handler would not get its own
    /// copy of the messages.
    #[error(
        "the subscriber for {expected:?} reads in consumer group {actual:?}: the subscriber \
         constructor must make a subscriber in the group it is given"
    )]
    GroupMismatch {
        /// The group asked for (the handler's or group's name).
        expected: String,
        /// The group of the subscriber returned.
        actual: String,
    },
    /// The subscriber constructor returned the same subscriber for two groups.
    #[error(
        "the subscriber constructor returned one subscriber for {first:?} and {second:?}: \
         each handler needs a subscriber in its own consumer group"
    )]
    SharedSubscriber {
        /// The first group.
        first: String,
        /// The second group.
        second: String,
    },
    /// The subscriber constructor failed.
    #[error("creating the subscriber for {group:?} failed: {source}")]
    Subscriber {
        /// The consumer group (handler or group name) it was called with.
        group: String,
        /// The cause.
        #[source]
        source: tidemill::Error,
    },
    /// Publishing or subscribing failed.
    #[error(transparent)]
    PubSub(#[from] tidemill::Error),
    /// Registering a handler on the router failed.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// No (final) reply came within the timeout.
    #[error("no reply to {name:?} within {timeout:?}")]
    Timeout {
        /// The command's name.
        name: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The handler of a request failed; `message` is its error as text.
    #[error("the handler of {name:?} failed: {message}")]
    Remote {
        /// The command's name.
        name: String,
        /// The handler's error, as it displayed.
        message: String,
    },
    /// The replies stopped coming: their subscription ended.
    #[error("the replies subscription ended")]
    RepliesClosed,
}

/// The result of this crate's operations.
///
/// ```
/// fn check(ok: bool) -> tidemill_cqrs::Result<()> {
///     if ok { Ok(()) } else { Err(tidemill_cqrs::Error::RepliesClosed) }
/// }
/// assert!(check(false).is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
