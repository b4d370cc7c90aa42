//! [`InstantAckLayer`]: acks a message as its handling starts.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerContext, HandlerError};

/// Acks each message as soon as its handling starts, so the subscriber may deliver the next one
/// at once (useful for pub/subs that deliver one message at a time). The handler's outputs are
/// still published; a failure can no longer bring the message back and is only logged: trade
/// delivery guarantees for throughput only where losing a message is acceptable.
///
/// Needs the router's [`HandlerContext`]; without one (a service called directly) it does
/// nothing.
///
/// ```
/// tidemill::Router::new().layer(tidemill::middleware::InstantAckLayer::new());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct InstantAckLayer;

impl InstantAckLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for InstantAckLayer {
    type Service = InstantAck<S>;

    fn layer(&self, inner: S) -> InstantAck<S> {
        InstantAck { inner }
    }
}

/// The service of [`InstantAckLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::InstantAck<_> = tidemill::middleware::InstantAckLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct InstantAck<S> {
    inner: S,
}

impl<S: Handler> Service<Message> for InstantAck<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        if let Some(context) = HandlerContext::of(&msg) {
            context.ack_now();
        }
        self.inner.call(msg)
    }
}
