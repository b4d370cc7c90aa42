//! Helpers shared by the tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tidemill::router::{BoxHandler, Disposition, RouterError};
use tidemill::{HandlerError, InProcessPubSub, Message, Router};
use tidemill_cqrs::Named;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmployeeTransferred {
    pub employee: u64,
    pub to: String,
    pub version: u64,
}
impl Named for EmployeeTransferred {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmployeeLeft {
    pub employee: u64,
    pub version: u64,
}
impl Named for EmployeeLeft {}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OfficeOpened {
    pub city: String,
}
impl Named for OfficeOpened {}

/// Starts the router and waits until every handler subscribed.
pub async fn start(router: &Router) -> JoinHandle<Result<(), RouterError>> {
    let handle = tokio::spawn({
        let router = router.clone();
        async move { router.run().await }
    });
    router.running().await;
    handle
}

pub async fn stop(router: &Router, handle: JoinHandle<Result<(), RouterError>>) {
    router.close().await.unwrap();
    handle.await.unwrap().unwrap();
}

/// A subscriber constructor giving each handler its own consumer group.
pub fn groups(
    pubsub: &InProcessPubSub,
) -> impl Fn(&str) -> tidemill::Result<InProcessPubSub> + Clone + Send + Sync + 'static {
    let pubsub = pubsub.clone();
    move |group: &str| Ok(pubsub.with_group(group))
}

pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("nothing came within 5 s")
        .expect("channel closed")
}

/// Waits a little and asserts nothing came.
pub async fn nothing<T: std::fmt::Debug>(rx: &mut mpsc::UnboundedReceiver<T>) {
    if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("unexpected {v:?}");
    }
}

/// Router middleware that records every handler failure and acks the message, so tests can see
/// which disposition a failure had without the message coming back forever.
#[derive(Clone, Default)]
pub struct Failures {
    pub seen: Arc<Mutex<Vec<(Disposition, String)>>>,
}

impl Failures {
    pub fn take(&self) -> Vec<(Disposition, String)> {
        std::mem::take(&mut *self.seen.lock())
    }
}

impl Layer<BoxHandler> for Failures {
    type Service = Recording;

    fn layer(&self, inner: BoxHandler) -> Recording {
        Recording {
            inner,
            seen: self.seen.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Recording {
    inner: BoxHandler,
    seen: Arc<Mutex<Vec<(Disposition, String)>>>,
}

impl Service<Message> for Recording {
    type Response = Vec<Message>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<Vec<Message>, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let fut = self.inner.call(msg);
        let seen = self.seen.clone();
        Box::pin(async move {
            match fut.await {
                Ok(out) => Ok(out),
                Err(err) => {
                    seen.lock().push((err.disposition(), err.to_string()));
                    Ok(Vec::new())
                }
            }
        })
    }
}

/// Waits until `cond` holds, at most 10 s.
pub async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition not met in time");
}
