//! What a subscription's reader, its deliveries and the rebalance callbacks share.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::{Offset, TopicPartitionList};
use tidemill::Message;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::offsets::Offsets;

/// What a subscription's reader, its deliveries' ackers and the rebalance callbacks share.
pub(super) struct Shared {
    pub(super) topic: String,
    pub(super) offsets: Mutex<Offsets>,
    pub(super) redeliveries: Mutex<VecDeque<Redelivery>>,
    pub(super) wake: Notify,
    pub(super) nack_delay: Duration,
}

pub(super) struct Redelivery {
    pub(super) due: Instant,
    pub(super) message: Message,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) generation: u64,
}

impl Shared {
    /// The offsets to commit, as a list for librdkafka.
    pub(super) fn committable(&self) -> Option<TopicPartitionList> {
        let offsets = self.offsets.lock().take_committable();
        if offsets.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        Some(tpl)
    }
}
