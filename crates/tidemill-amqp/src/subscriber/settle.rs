//! Settlement at the broker, one task per channel: acks, nacks held for their delay, and
//! moves to the delay or dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::Acker as LapinAcker;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use tidemill::{Error, Settle, Settlement};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::config::AmqpConfig;
use crate::declare::declare_delay_queue;
use crate::error::AmqpError;

use super::plan::Plan;

/// A delivery waiting to be settled at the broker.
pub(super) struct Pending {
    pub(super) acker: LapinAcker,
    pub(super) id: Arc<str>,
    pub(super) properties: BasicProperties,
    pub(super) payload: Bytes,
}

pub(super) enum SettleCmd {
    Settle(Pending, Settlement),
    /// A held nack whose delay has passed.
    Requeue(Pending),
}

pub(super) struct AmqpSettle {
    pub(super) tx: mpsc::UnboundedSender<SettleCmd>,
    pub(super) pending: Option<Pending>,
}

impl Settle for AmqpSettle {
    fn settle(mut self: Box<Self>, settlement: Settlement) {
        if let Some(pending) = self.pending.take() {
            // The settle task lives as long as a sender does; a failed send means the
            // subscriber was force-closed, and the broker requeues the message anyway.
            let _ = self.tx.send(SettleCmd::Settle(pending, settlement));
        }
    }
}

pub(super) struct SettleCtx {
    pub(super) plan: Arc<Plan>,
    pub(super) config: AmqpConfig,
    pub(super) shutdown: CancellationToken,
    pub(super) requeue: mpsc::WeakUnboundedSender<SettleCmd>,
}

/// Settles one channel's deliveries in the order they were settled, then closes the channel
/// once every delivery of it is settled and its consumer is gone.
pub(super) async fn settle_loop(
    ctx: Arc<SettleCtx>,
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<SettleCmd>,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            SettleCmd::Settle(pending, Settlement::Ack) => {
                let result = pending.acker.ack(BasicAckOptions::default()).await;
                report(&ctx, &pending, "ack", result.map(drop));
            }
            SettleCmd::Settle(pending, Settlement::Nack { delay }) => {
                nack(
                    &ctx,
                    &channel,
                    pending,
                    delay.unwrap_or(ctx.config.nack_delay),
                )
                .await;
            }
            SettleCmd::Requeue(pending) => requeue(&ctx, &pending).await,
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, "subscription closed".into()).await;
    }
}

async fn requeue(ctx: &SettleCtx, pending: &Pending) {
    let result = pending
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await;
    report(ctx, pending, "nack", result.map(drop));
}

async fn nack(ctx: &Arc<SettleCtx>, channel: &Channel, pending: Pending, delay: Duration) {
    let count = codec::deliveries(&pending.properties).saturating_add(1);
    let plan = &ctx.plan;
    if let (Some(max), Some(dlq)) = (ctx.config.max_deliveries, &plan.dead_letter) {
        if count >= max {
            tracing::info!(topic = &*plan.topic, message_id = &*pending.id, queue = %dlq.name, "moving message to the dead-letter queue");
            move_to(ctx, channel, pending, &dlq.name.clone(), count).await;
            return;
        }
        if delay.is_zero() {
            move_to(ctx, channel, pending, &plan.queue.name.clone(), count).await;
            return;
        }
    } else if delay.is_zero() {
        requeue(ctx, &pending).await;
        return;
    } else if delay <= ctx.config.max_held_nack_delay {
        // Held here, the message keeps its prefetch slot and so its place in the order.
        let Some(requeue_tx) = ctx.requeue.upgrade() else {
            requeue(ctx, &pending).await;
            return;
        };
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {}
            }
            let _ = requeue_tx.send(SettleCmd::Requeue(pending));
        });
        return;
    }
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let durable = plan.queue.durable;
    match declare_delay_queue(channel, &plan.queue.name, durable, delay_ms).await {
        Ok(delay_queue) => move_to(ctx, channel, pending, &delay_queue, count).await,
        Err(e) => {
            tracing::warn!(topic = &*plan.topic, message_id = &*pending.id, error = %e, "declaring the delay queue failed; requeueing at once");
            requeue(ctx, &pending).await;
        }
    }
}

/// Publishes a copy of the message to `queue` (through the default exchange), and acks the
/// original once the broker confirmed the copy; requeues the original if that fails.
async fn move_to(ctx: &SettleCtx, channel: &Channel, pending: Pending, queue: &str, count: u32) {
    let props = codec::with_deliveries(&pending.properties, count);
    let published = async {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &pending.payload,
                props,
            )
            .await?
            .await?;
        Ok::<_, lapin::Error>(confirm)
    }
    .await;
    match published {
        Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {
            let result = pending.acker.ack(BasicAckOptions::default()).await;
            report(ctx, &pending, "ack", result.map(drop));
        }
        Ok(Confirmation::Nack(_)) => {
            tracing::warn!(
                topic = &*ctx.plan.topic,
                message_id = &*pending.id,
                queue,
                "the broker refused the moved copy; requeueing"
            );
            requeue(ctx, &pending).await;
        }
        Err(e) => {
            tracing::warn!(topic = &*ctx.plan.topic, message_id = &*pending.id, queue, error = %e, "moving the message failed; requeueing");
            requeue(ctx, &pending).await;
        }
    }
}

fn report(ctx: &SettleCtx, pending: &Pending, what: &str, result: lapin::Result<()>) {
    if let Err(e) = result {
        // The channel is gone: the broker has requeued the message already and delivers it
        // again, which at-least-once allows.
        let err = Error::Settle {
            topic: ctx.plan.topic.to_string(),
            message_id: pending.id.to_string(),
            source: Box::new(AmqpError::Client(e)),
        };
        tracing::debug!(error = %err, what, "settling failed; the message will be redelivered");
    }
}
