//! The task of one subscription: consumes, and after a lost connection reopens everything.

use std::sync::Arc;

use lapin::{Channel, Consumer};
use tidemill::{Delivery, Error, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::reconnect_backoff;
use crate::error::AmqpError;

use super::consume::{consume, Outcome};
use super::plan::Plan;
use super::settle::{settle_loop, SettleCtx};
use super::stream::{drain, Buffer};
use super::Inner;

/// Runs one subscription: consumes, and after a lost connection reopens everything.
pub(super) async fn run(
    inner: Arc<Inner>,
    plan: Arc<Plan>,
    first: (Channel, Consumer),
    tx: mpsc::Sender<Result<Delivery>>,
    buffer: Buffer,
    cancel: CancellationToken,
) {
    run_until_stopped(&inner, &plan, first, &tx, &buffer, &cancel).await;
    // The buffered deliveries hold their channel's settle task open; dropping them nacks them
    // through it, and then it closes the channel.
    drain(&buffer);
}

async fn run_until_stopped(
    inner: &Arc<Inner>,
    plan: &Arc<Plan>,
    first: (Channel, Consumer),
    tx: &mpsc::Sender<Result<Delivery>>,
    buffer: &Buffer,
    cancel: &CancellationToken,
) {
    let mut backoff = reconnect_backoff(&inner.config);
    let mut current = Some(first);
    loop {
        let (channel, consumer) = match current.take() {
            Some(open) => open,
            None => loop {
                if cancel.is_cancelled() || tx.is_closed() {
                    return;
                }
                // Cancellable: closing must not wait for a reconnect in progress.
                let opened = tokio::select! {
                    opened = inner.open(plan) => opened,
                    _ = cancel.cancelled() => return,
                    _ = tx.closed() => return,
                };
                match opened {
                    Ok(open) => {
                        backoff.reset();
                        tracing::info!(topic = &*plan.topic, queue = %plan.queue.name, "subscription resumed");
                        break open;
                    }
                    Err(e) => {
                        tracing::debug!(topic = &*plan.topic, error = %e, "resubscribing failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                            _ = cancel.cancelled() => return,
                            _ = tx.closed() => return,
                        }
                    }
                }
            },
        };
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(SettleCtx {
            plan: plan.clone(),
            config: inner.config.clone(),
            shutdown: cancel.clone(),
            requeue: settle_tx.downgrade(),
        });
        inner
            .tracker
            .spawn(settle_loop(ctx, channel.clone(), settle_rx));
        let outcome = consume(plan, &channel, consumer, tx, &settle_tx, cancel).await;
        drop(settle_tx);
        match outcome {
            Outcome::Stop => return,
            Outcome::Lost(error) => {
                // Deliveries of the dead channel are back in their queue already; handing
                // them out would only process them twice.
                let mut rx = buffer.lock();
                while rx.try_recv().is_ok() {}
                drop(rx);
                if let Some(error) = error {
                    let _ = tx.try_send(Err(Error::subscribe(
                        &*plan.topic,
                        AmqpError::ConnectionLost(error),
                    )));
                }
            }
        }
    }
}
