//! Deliveries handed out and not yet settled, kept alive while their handlers run.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::Subject;
use tokio::time::Instant;

use super::Inner;

pub(super) struct Outstanding {
    pub(super) reply: Subject,
    pub(super) since: Instant,
    pub(super) stream_sequence: u64,
}

/// Sends in-progress signals for deliveries unsettled for a third of the ack wait.
pub(super) async fn keepalive_task(inner: std::sync::Weak<Inner>, ack_wait: Duration) {
    let every = (ack_wait / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.cancel.is_cancelled() {
            return;
        }
        let now = Instant::now();
        let due: Vec<Subject> = inner
            .outstanding
            .lock()
            .values_mut()
            .filter(|o| now.duration_since(o.since) >= every)
            .map(|o| {
                o.since = now;
                o.reply.clone()
            })
            .collect();
        for reply in due {
            if let Err(err) = inner.client.publish(reply, AckKind::Progress.into()).await {
                tracing::debug!(error = %err, "sending an in-progress signal failed");
            }
        }
    }
}
