//! [`RouterEvent`]: what the router tells observers (metrics, alerts) about handlers that died,
//! restarted, or whose messages were dead-lettered, beside its log lines.

use std::sync::Arc;
use std::time::Duration;

/// Something the router did that an operator should be able to count. Observers are added with
/// [`Router::on_event`](super::Router::on_event); `tidemill-otel` turns them into metrics.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use tidemill::router::RouterEvent;
///
/// let deaths = Arc::new(AtomicUsize::new(0));
/// let router = tidemill::Router::new();
/// router.on_event({
///     let deaths = deaths.clone();
///     move |event: &RouterEvent<'_>| {
///         if let RouterEvent::HandlerDied { .. } = event {
///             deaths.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// });
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum RouterEvent<'a> {
    /// A handler's loop ended while the router was running: it panicked, its subscription ended,
    /// or its service failed for good. Its unsettled deliveries were nacked.
    HandlerDied {
        /// The handler.
        handler: &'a str,
        /// What happened.
        reason: &'a str,
        /// When it is restarted, or `None` when the restart policy gave up (the router then
        /// closes and `run` returns [`RouterError::HandlerFailed`](super::RouterError::HandlerFailed)).
        restart_in: Option<Duration>,
    },
    /// A handler that died subscribed again and runs.
    HandlerRestarted {
        /// The handler.
        handler: &'a str,
        /// Restarts so far.
        restarts: u32,
    },
    /// A message rejected for good (a [`Reject`](super::Disposition::Reject) that no poison
    /// queue took, or outputs that can never be published) was sent to a dead-letter topic and
    /// acked.
    DeadLettered {
        /// The handler.
        handler: &'a str,
        /// The topic it came from.
        topic: &'a str,
        /// The message id.
        message_id: &'a str,
        /// The dead-letter topic.
        dead_letter_topic: &'a str,
        /// Why it was rejected.
        reason: &'a str,
    },
    /// A message was rejected for good but could not be dead-lettered (no destination, or the
    /// destination refused it): it is nacked with a long delay, never lost and never spun.
    RejectNotDeadLettered {
        /// The handler.
        handler: &'a str,
        /// The topic it came from.
        topic: &'a str,
        /// The message id.
        message_id: &'a str,
        /// Why it was rejected, and why it could not be dead-lettered.
        reason: &'a str,
    },
    /// Publishing a handler's outputs failed.
    OutputPublishFailed {
        /// The handler.
        handler: &'a str,
        /// The output topic.
        output_topic: &'a str,
        /// Whether the failure can never go away (the input is then rejected).
        permanent: bool,
    },
}

pub(crate) type EventHook = Arc<dyn Fn(&RouterEvent<'_>) + Send + Sync>;

/// The observers a handler's loop reports to.
#[derive(Clone, Default)]
pub(crate) struct Events(pub(crate) Arc<[EventHook]>);

impl Events {
    pub(crate) fn emit(&self, event: RouterEvent<'_>) {
        for hook in self.0.iter() {
            hook(&event);
        }
    }
}
