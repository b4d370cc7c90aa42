//! Consuming one channel: broker deliveries become tidemill deliveries in the buffer.

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::BasicCancelOptions;
use lapin::{Channel, Consumer};
use tidemill::{Acker, Delivery, Result};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec;

use super::plan::Plan;
use super::settle::{AmqpSettle, Pending, SettleCmd};

pub(super) enum Outcome {
    Stop,
    /// The channel or connection went away (with the error, unless the broker cancelled the
    /// consumer).
    Lost(Option<lapin::Error>),
}

pub(super) async fn consume(
    plan: &Plan,
    channel: &Channel,
    mut consumer: Consumer,
    tx: &mpsc::Sender<Result<Delivery>>,
    settle_tx: &mpsc::UnboundedSender<SettleCmd>,
    cancel: &CancellationToken,
) -> Outcome {
    let stop = |consumer: Consumer| async move {
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        Outcome::Stop
    };
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return stop(consumer).await,
            _ = tx.closed() => return stop(consumer).await,
            item = consumer.next() => item,
        };
        match item {
            Some(Ok(delivery)) => {
                let delivery = into_delivery(delivery, settle_tx.clone());
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return stop(consumer).await,
                    sent = tx.send(Ok(delivery)) => if sent.is_err() {
                        return stop(consumer).await;
                    },
                }
            }
            Some(Err(e)) => {
                tracing::warn!(topic = &*plan.topic, error = %e, "subscription lost its connection; reconnecting");
                return Outcome::Lost(Some(e));
            }
            None => {
                tracing::warn!(
                    topic = &*plan.topic,
                    "the broker cancelled the consumer; resubscribing"
                );
                return Outcome::Lost(None);
            }
        }
    }
}

fn into_delivery(
    delivery: lapin::message::Delivery,
    settle_tx: mpsc::UnboundedSender<SettleCmd>,
) -> Delivery {
    let lapin::message::Delivery {
        properties,
        data,
        acker,
        ..
    } = delivery;
    let payload = Bytes::from(data);
    let message = codec::decode(&properties, payload.clone());
    let pending = Pending {
        acker,
        id: message.shared_id(),
        properties,
        payload,
    };
    Delivery::new(
        message,
        Acker::new(AmqpSettle {
            tx: settle_tx,
            pending: Some(pending),
        }),
    )
}
