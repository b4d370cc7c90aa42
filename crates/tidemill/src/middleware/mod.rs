//! Middleware: tower layers that wrap handlers.
//!
//! Each is a [`tower::Layer`], added router-wide with [`Router::layer`](crate::Router::layer) or
//! to one handler with [`HandlerBuilder::layer`](crate::router::HandlerBuilder::layer); the first
//! added is the outermost. A typical router-wide set, outermost first:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tidemill::middleware::*;
//! use tidemill::{InProcessPubSub, Publisher};
//!
//! let pubsub = InProcessPubSub::new();
//! let router = tidemill::Router::new();
//! router
//!     .layer(CorrelationIdLayer::new())
//!     .layer(PoisonQueueLayer::new(pubsub.clone(), "poison"))
//!     .layer(ThrottleLayer::new(100, Duration::from_secs(1)))
//!     .layer(RetryLayer::new().max_retries(5))
//!     .layer(TimeoutLayer::new(Duration::from_secs(10)))
//!     .layer(RecovererLayer::new());
//! router.decorate_publishers(|p| Arc::new(CorrelationIdPublisher::new(p)) as Arc<dyn Publisher>);
//! ```
//!
//! With retry outside timeout, the timeout applies to each attempt; with retry inside the poison
//! queue, a message is retried first and poisoned after the last retry failed; the recoverer
//! innermost turns a panic into an error the other layers see.
//!
//! | layer | what it does |
//! | --- | --- |
//! | [`RetryLayer`] | retries in place with exponential backoff |
//! | [`TimeoutLayer`] | cancels a handling at a deadline |
//! | [`ThrottleLayer`] | at most N messages per period |
//! | [`CircuitBreakerLayer`] | fails fast while a dependency keeps failing |
//! | [`PoisonQueueLayer`] | sends messages that failed for good to a poison topic |
//! | [`RecovererLayer`] | turns panics into errors |
//! | [`CorrelationIdLayer`] | carries a correlation id to what the handler produces |
//! | [`DeduplicatorLayer`] | drops messages seen within a window |
//! | [`DelayOnErrorLayer`] | nacks failures with a growing delay |
//! | [`InstantAckLayer`] | acks as the handling starts |
//! | [`IgnoreErrorsLayer`] | counts listed errors as success |
//! | [`DuplicatorLayer`] | handles every message twice |
//! | [`RandomFailLayer`], [`RandomPanicLayer`] | chaos testing |

mod chaos;
mod circuit_breaker;
mod correlation;
mod dedup;
mod delay_on_error;
mod duplicator;
mod ignore_errors;
mod instant_ack;
pub(crate) mod poison;
mod recoverer;
mod retry;
mod throttle;
mod timeout;

pub use chaos::{RandomFail, RandomFailLayer, RandomFailure, RandomPanic, RandomPanicLayer};
pub use circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen, CircuitState};
pub use correlation::{
    correlation_id, current_correlation_id, set_correlation_id, with_correlation_id, CorrelationId,
    CorrelationIdLayer, CorrelationIdPublisher, CORRELATION_ID_KEY,
};
pub use dedup::{
    DedupKey, DeduplicationStore, DeduplicationStoreError, Deduplicator, DeduplicatorLayer,
    InMemoryDeduplicationStore, KeyFn,
};
pub use delay_on_error::{DelayOnError, DelayOnErrorLayer};
pub use duplicator::{Duplicator, DuplicatorLayer};
pub use ignore_errors::{IgnoreErrors, IgnoreErrorsLayer};
pub use instant_ack::{InstantAck, InstantAckLayer};
pub use poison::{
    PoisonPublishFailed, PoisonQueue, PoisonQueueLayer, POISON_HANDLER_KEY, POISON_REASON_KEY,
    POISON_SUBSCRIBER_KEY, POISON_TOPIC_KEY,
};
pub use recoverer::{PanicError, Recoverer, RecovererLayer};
pub use retry::{Retry, RetryLayer};
pub use throttle::{Throttle, ThrottleLayer};
pub use timeout::{Timeout, TimeoutElapsed, TimeoutLayer};
