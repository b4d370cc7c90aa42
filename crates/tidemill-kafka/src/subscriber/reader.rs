//! The reader task of one subscription: assigns partitions, reads, redelivers and commits.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tidemill::{Delivery, Error, Result};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::config::StartFrom;
use crate::error::KafkaAdapterError;

use super::rebalance::{commit, Context};
use super::settle::delivery;
use super::shared::Shared;

/// Assigns every partition of `topic`, starting where `start` says.
pub(super) async fn assign_all(
    consumer: &Arc<StreamConsumer<Context>>,
    topic: &str,
    start: StartFrom,
) -> Result<()> {
    let c = consumer.clone();
    let t = topic.to_owned();
    let tpl = tokio::task::spawn_blocking(move || -> Result<TopicPartitionList> {
        let timeout = Duration::from_secs(10);
        let metadata = c
            .fetch_metadata(Some(&t), timeout)
            .map_err(|e| Error::subscribe(&t, KafkaAdapterError::from(e)))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|m| m.name() == t)
            .flat_map(|m| m.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::subscribe(
                &t,
                KafkaAdapterError::Broker("the topic has no partitions".into()),
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let offset = match start {
                StartFrom::Beginning => Offset::Beginning,
                StartFrom::End => Offset::End,
                StartFrom::Timestamp(ms) => Offset::Offset(ms),
            };
            tpl.add_partition_offset(&t, p, offset)
                .map_err(|e| Error::subscribe(&t, KafkaAdapterError::from(e)))?;
        }
        if let StartFrom::Timestamp(_) = start {
            tpl = c.offsets_for_times(tpl, timeout).map_err(|e| {
                Error::subscribe(
                    &t,
                    KafkaAdapterError::Broker(format!("finding offsets for a time: {e}")),
                )
            })?;
        }
        Ok(tpl)
    })
    .await
    .map_err(|e| Error::subscribe(topic, e))??;
    consumer
        .assign(&tpl)
        .map_err(|e| Error::subscribe(topic, KafkaAdapterError::from(e)))
}

/// Reads the consumer into the subscription's channel, delivers nacked messages again when due,
/// and commits acked offsets.
pub(super) async fn read(
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Delivery>>,
    cancel: CancellationToken,
    commit_interval: Duration,
    commits: bool,
) {
    let mut tick = tokio::time::interval(commit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    'outer: loop {
        // Take room in the channel first, so a slow consumer holds back fetching, not commits.
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                commit(&consumer, &shared, commits, CommitMode::Async);
                continue;
            }
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        loop {
            let due = shared.redeliveries.lock().front().map(|r| r.due);
            if let Some(due) = due.filter(|d| *d <= Instant::now()) {
                let _ = due;
                let r = shared.redeliveries.lock().pop_front();
                if let Some(r) = r {
                    if shared.offsets.lock().owns(r.generation, r.partition) {
                        permit.send(Ok(delivery(
                            &shared,
                            r.message,
                            r.partition,
                            r.offset,
                            r.generation,
                        )));
                        continue 'outer;
                    }
                }
                continue;
            }
            let wake = shared.wake.notified();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'outer,
                _ = tick.tick() => commit(&consumer, &shared, commits, CommitMode::Async),
                _ = wake => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(far_future)), if due.is_some() => {}
                record = consumer.recv() => match record {
                    Ok(record) => {
                        backoff = Duration::from_millis(100);
                        let message = codec::decode(&record);
                        let (partition, offset) = (record.partition(), record.offset());
                        let generation = {
                            let mut offsets = shared.offsets.lock();
                            offsets.received(partition, offset);
                            offsets.generation()
                        };
                        permit.send(Ok(delivery(&shared, message, partition, offset, generation)));
                        continue 'outer;
                    }
                    Err(error) => {
                        // librdkafka reconnects by itself; report and slow down.
                        tracing::warn!(topic = %shared.topic, %error, "Kafka consumer error");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }
    commit(&consumer, &shared, commits, CommitMode::Sync);
    // Closing a consumer leaves its group, which blocks: keep it off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
