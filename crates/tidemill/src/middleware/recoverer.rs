//! [`RecovererLayer`]: turns a panic in a handler into an error.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use tower::{Layer, Service};

use crate::message::Message;
use crate::router::{Handler, HandlerError};

/// A handler panicked; the message and where it happened.
///
/// ```
/// use tidemill::middleware::PanicError;
/// let err = PanicError { message: "index out of bounds".into(), backtrace: String::new() };
/// assert_eq!(err.to_string(), "the handler panicked: index out of bounds");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked: {message}")]
pub struct PanicError {
    /// The panic's message.
    pub message: String,
    /// The backtrace where the panic happened.
    pub backtrace: String,
}

thread_local! {
    static LAST_PANIC_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps the backtrace of each panic for the recoverer, then runs the previous hook.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Panics are rare and their backtrace is what makes them fixable: always capture it.
            let backtrace = Backtrace::force_capture().to_string();
            LAST_PANIC_BACKTRACE.with(|b| *b.borrow_mut() = Some(backtrace));
            previous(info);
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Catches a panic of the handler and turns it into a [`PanicError`], so the message is nacked
/// and the router and process keep running.
///
/// ```
/// tidemill::Router::new().layer(tidemill::middleware::RecovererLayer::new());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RecovererLayer;

impl RecovererLayer {
    /// The layer. Installs, once per process, a panic hook that records the backtrace of each
    /// panic (whatever `RUST_BACKTRACE` says) before calling the hook that was there.
    pub fn new() -> Self {
        install_panic_hook();
        Self
    }
}

impl<S> Layer<S> for RecovererLayer {
    type Service = Recoverer<S>;

    fn layer(&self, inner: S) -> Recoverer<S> {
        install_panic_hook();
        Recoverer { inner }
    }
}

/// The service of [`RecovererLayer`].
///
/// ```
/// use tower::Layer;
/// let handler = tidemill::router::handler_fn(|_: tidemill::Message| async { tidemill::HandlerResult::Ok(()) });
/// let svc: tidemill::middleware::Recoverer<_> = tidemill::middleware::RecovererLayer::new().layer(handler);
/// # drop(svc);
/// ```
#[derive(Clone, Debug)]
pub struct Recoverer<S> {
    inner: S,
}

impl<S: Handler> Service<Message> for Recoverer<S> {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        // A panic may also happen while creating the future, not only while polling it.
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(msg))) {
            Ok(fut) => fut,
            Err(payload) => return Box::pin(futures::future::ready(Err(to_error(payload)))),
        };
        Box::pin(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => Err(to_error(payload)),
            }
        })
    }
}

fn to_error(payload: Box<dyn Any + Send>) -> HandlerError {
    let backtrace = LAST_PANIC_BACKTRACE
        .with(|b| b.borrow_mut().take())
        .unwrap_or_default();
    HandlerError::new(PanicError {
        message: panic_message(&*payload),
        backtrace,
    })
}
