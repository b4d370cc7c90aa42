//! Settling one delivery: an ack marks its offset committable, a nack schedules it again.

use std::sync::Arc;

use tidemill::{Acker, Delivery, Message, Settle, Settlement};
use tokio::time::Instant;

use super::shared::{Redelivery, Shared};

struct KafkaSettle {
    shared: Arc<Shared>,
    message: Message,
    partition: i32,
    offset: i64,
    generation: u64,
}

impl Settle for KafkaSettle {
    fn settle(self: Box<Self>, settlement: Settlement) {
        match settlement {
            Settlement::Ack => {
                self.shared
                    .offsets
                    .lock()
                    .acked(self.generation, self.partition, self.offset);
            }
            Settlement::Nack { delay } => {
                if !self
                    .shared
                    .offsets
                    .lock()
                    .owns(self.generation, self.partition)
                {
                    return;
                }
                let due = Instant::now() + delay.unwrap_or(self.shared.nack_delay);
                self.shared.redeliveries.lock().push_back(Redelivery {
                    due,
                    message: self.message,
                    partition: self.partition,
                    offset: self.offset,
                    generation: self.generation,
                });
                self.shared.wake.notify_one();
            }
        }
    }
}

pub(super) fn delivery(
    shared: &Arc<Shared>,
    message: Message,
    partition: i32,
    offset: i64,
    generation: u64,
) -> Delivery {
    let settle = KafkaSettle {
        shared: shared.clone(),
        message: message.clone(),
        partition,
        offset,
        generation,
    };
    Delivery::new(message, Acker::new(settle))
}
