//! Errors particular to AMQP, carried as the `source` of tidemill's [`Error`](tidemill::Error).

/// Why the broker or the adapter refused an operation.
///
/// These travel inside [`tidemill::Error`] (as the source of `Publish`, `Subscribe`, `Settle` or
/// `Connect`), which names the topic and the message id; match on them through
/// [`std::error::Error::source`] and `downcast_ref`.
///
/// ```
/// use tidemill_amqp::AmqpError;
///
/// let err = tidemill::Error::publish("orders", "m-1", AmqpError::Unroutable {
///     exchange: "orders".into(),
///     routing_key: String::new(),
/// });
/// let source = std::error::Error::source(&err).unwrap();
/// assert!(matches!(source.downcast_ref::<AmqpError>(), Some(AmqpError::Unroutable { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// The message was published as mandatory and no queue is bound to take it.
    #[error("no queue is bound to exchange {exchange:?} for routing key {routing_key:?}")]
    Unroutable {
        /// The exchange published to (empty for the default exchange).
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// The broker refused the message (a negative publisher confirm).
    #[error("the broker refused the message (negative publisher confirm)")]
    Nacked,
    /// The connection or channel went away before the broker confirmed.
    #[error("the connection to the broker was lost: {0}")]
    ConnectionLost(#[source] lapin::Error),
    /// The broker or the client library reported an error.
    #[error(transparent)]
    Client(#[from] lapin::Error),
    /// A value does not fit the AMQP wire format (e.g. a header name over 255 bytes).
    #[error("{0}")]
    Encode(String),
    /// A publish did not get through before the configured publish timeout.
    #[error("gave up after {attempts} attempts within the publish timeout; last error: {last}")]
    GaveUp {
        /// How many times the publish was tried.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
}

/// Whether retrying on a new connection or channel can help: the connection or channel went away,
/// or the broker closed it (a resource was deleted under us), rather than refusing the request.
pub(crate) fn is_transient(err: &lapin::Error) -> bool {
    use lapin::ErrorKind;
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => {
            // 403 access refused, 406 precondition failed and 405 resource locked are answers
            // that a retry gets again; anything else (connection forced, 404 of a deleted
            // exchange, 320) goes away with a fresh connection or declaration.
            !matches!(amqp.get_id(), 403 | 405 | 406 | 530 | 540)
        }
        ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::AuthProviderError(_)
        | ErrorKind::NoDefaultRuntime
        | ErrorKind::SerialisationError(_) => false,
        _ => true,
    }
}
