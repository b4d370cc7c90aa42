//! librdkafka's callbacks, and committing acked offsets.

use std::sync::Arc;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::ClientContext;

use super::shared::Shared;

/// librdkafka's callbacks: commit what may be committed before partitions are taken away.
pub(super) struct Context {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        if let Some(tpl) = self.shared.committable() {
            if let Err(error) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(topic = %self.shared.topic, %error, "commit before a rebalance failed");
            }
        }
        let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        // In-flight messages of these partitions go to their new owner; their settlements here
        // are ignored (the generation changes).
        self.shared.offsets.lock().revoke(&partitions);
        self.shared
            .redeliveries
            .lock()
            .retain(|r| !partitions.contains(&r.partition));
    }
}

pub(super) fn commit(
    consumer: &StreamConsumer<Context>,
    shared: &Shared,
    commits: bool,
    mode: CommitMode,
) {
    if !commits {
        return;
    }
    if let Some(tpl) = shared.committable() {
        if let Err(error) = consumer.commit(&tpl, mode) {
            tracing::warn!(topic = %shared.topic, %error, "committing offsets failed");
        }
    }
}
