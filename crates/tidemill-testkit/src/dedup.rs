//! Checks for a [`DeduplicationStore`] shared by several processes, run through the
//! [`DeduplicatorLayer`] as a router runs it: each "process" is its own store instance (its own
//! connection) with its own layer around its own handler, and they share only the backend.
//!
//! ```no_run
//! use std::time::Duration;
//! use tidemill::middleware::InMemoryDeduplicationStore;
//!
//! # #[tokio::main] async fn main() {
//! // An in-memory store is shared by cloning; a real adapter's test connects twice instead.
//! let store = InMemoryDeduplicationStore::new();
//! tidemill_testkit::dedup::handled_once_across_processes(
//!     store.clone(),
//!     store.clone(),
//!     Duration::from_secs(60),
//! )
//! .await;
//! tidemill_testkit::dedup::failed_handling_is_handled_again(store.clone(), store, Duration::from_secs(60))
//!     .await;
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tidemill::middleware::{DeduplicationStore, DeduplicatorLayer};
use tidemill::router::{handler_fn, Handler};
use tidemill::{HandlerError, HandlerResult, Message};
use tower::{Layer, ServiceExt};

/// One "process": a handler that counts its calls (and fails the first `fail_first` of them),
/// behind its own deduplicator.
struct Process<S> {
    service: S,
    calls: Arc<AtomicUsize>,
}

fn process(
    store: impl DeduplicationStore,
    window: Duration,
    prefix: &str,
    fail_first: usize,
) -> Process<impl Handler> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let handler = handler_fn(move |_msg: Message| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < fail_first {
                Err(HandlerError::new("the handler failed on purpose"))
            } else {
                HandlerResult::Ok(())
            }
        }
    });
    let layer = DeduplicatorLayer::new(store, window).prefix(prefix.to_owned());
    Process {
        service: layer.layer(handler),
        calls,
    }
}

impl<S: Handler> Process<S> {
    /// Delivers `msg` as a subscriber would; true when the handler succeeded or the message was
    /// dropped as a duplicate (both are acked), false when it is to be nacked.
    async fn deliver(&self, msg: Message) -> bool {
        self.service.clone().oneshot(msg).await.is_ok()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn fresh_prefix() -> String {
    format!("testkit-dedup-{}:", uuid::Uuid::new_v4().simple())
}

/// The same message id delivered twice to one process, and concurrently to two processes
/// (`a` and `b`, separate store instances on the same backend), is handled exactly once; a
/// message with another id is handled too.
pub async fn handled_once_across_processes(
    a: impl DeduplicationStore,
    b: impl DeduplicationStore,
    window: Duration,
) {
    let prefix = fresh_prefix();
    let pa = process(a, window, &prefix, 0);
    let pb = process(b, window, &prefix, 0);
    let id = tidemill::new_uuid();

    // Redelivered to the same process.
    assert!(pa.deliver(Message::with_id(id.clone(), "once")).await);
    assert!(pa.deliver(Message::with_id(id.clone(), "once")).await);
    assert_eq!(
        pa.calls(),
        1,
        "a redelivery to the same process was handled again"
    );
    // Delivered to the other process.
    assert!(pb.deliver(Message::with_id(id.clone(), "once")).await);
    assert_eq!(
        pb.calls(),
        0,
        "the other process handled a message already handled"
    );

    // A fresh id delivered to both at the same moment: one of them handles it.
    let id = tidemill::new_uuid();
    let msg = || Message::with_id(id.clone(), "race");
    let acked = tokio::join!(
        pa.deliver(msg()),
        pb.deliver(msg()),
        pa.deliver(msg()),
        pb.deliver(msg())
    );
    assert_eq!(acked, (true, true, true, true));
    assert_eq!(
        pa.calls() + pb.calls(),
        2,
        "a concurrent duplicate was handled twice"
    );

    // Another id is not a duplicate.
    assert!(
        pb.deliver(Message::with_id(tidemill::new_uuid(), "other"))
            .await
    );
    assert_eq!(pb.calls() + pa.calls(), 3);
}

/// A message whose handling failed in process `a` is forgotten by the store, so its redelivery
/// (to process `b`) is handled; after that success it is a duplicate everywhere.
pub async fn failed_handling_is_handled_again(
    a: impl DeduplicationStore,
    b: impl DeduplicationStore,
    window: Duration,
) {
    let prefix = fresh_prefix();
    let pa = process(a, window, &prefix, 1);
    let pb = process(b, window, &prefix, 0);
    let id = tidemill::new_uuid();

    assert!(
        !pa.deliver(Message::with_id(id.clone(), "x")).await,
        "a failed handling must be nacked"
    );
    assert_eq!(pa.calls(), 1);
    assert!(pb.deliver(Message::with_id(id.clone(), "x")).await);
    assert_eq!(
        pb.calls(),
        1,
        "the redelivery of a failed message was dropped as a duplicate"
    );
    assert!(pa.deliver(Message::with_id(id.clone(), "x")).await);
    assert!(pb.deliver(Message::with_id(id, "x")).await);
    assert_eq!(
        (pa.calls(), pb.calls()),
        (1, 1),
        "a handled message was handled again"
    );
}
