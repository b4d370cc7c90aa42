//! The pub/sub's registry: its topics, and for each the subscriptions' and groups' queues a
//! publish fans out to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::config::InProcessConfig;
use super::queue::{Entry, Queue};
use crate::message::Message;

pub(super) struct Shared {
    pub(super) config: InProcessConfig,
    /// Looked up on every publish: a fast hasher (topic names are the application's own).
    pub(super) topics: Mutex<HashMap<Arc<str>, Topic, foldhash::fast::RandomState>>,
    pub(super) closed: AtomicBool,
}

impl Shared {
    /// The queue a new subscription reads: its own, or its group's.
    pub(super) fn queue_for(&self, topic: &str, group: Option<&Arc<str>>) -> Arc<Queue> {
        let mut topics = self.topics.lock();
        let t = topics.entry(topic.into()).or_default();
        let queue = match group {
            Some(group) => t.group(group, &self.config),
            None => {
                let queue = Arc::new(Queue::new(self.config.buffer_size));
                queue
                    .state
                    .lock()
                    .items
                    .extend(t.history.iter().cloned().map(Entry::plain));
                t.subscriptions.push(queue.clone());
                t.rebuild_targets();
                queue
            }
        };
        queue.members.fetch_add(1, Ordering::Relaxed);
        queue
    }

    pub(super) fn unsubscribe(&self, topic: &str, queue: &Arc<Queue>, grouped: bool) {
        if queue.members.fetch_sub(1, Ordering::Relaxed) > 1 || grouped {
            return;
        }
        if let Some(t) = self.topics.lock().get_mut(topic) {
            t.subscriptions.retain(|q| !Arc::ptr_eq(q, queue));
            t.rebuild_targets();
        }
        queue.close();
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let topics = std::mem::take(&mut *self.topics.lock());
        for topic in topics.values() {
            for queue in topic.targets.iter() {
                queue.close();
            }
        }
    }
}

#[derive(Default)]
pub(super) struct Topic {
    pub(super) subscriptions: Vec<Arc<Queue>>,
    pub(super) groups: HashMap<Arc<str>, Arc<Queue>>,
    /// Every subscription and group queue: what a publish fans out to.
    pub(super) targets: Arc<[Arc<Queue>]>,
    pub(super) history: Vec<Message>,
}

impl Topic {
    pub(super) fn group(&mut self, group: &Arc<str>, config: &InProcessConfig) -> Arc<Queue> {
        if let Some(queue) = self.groups.get(group) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::new(config.buffer_size));
        queue
            .state
            .lock()
            .items
            .extend(self.history.iter().cloned().map(Entry::plain));
        self.groups.insert(group.clone(), queue.clone());
        self.rebuild_targets();
        queue
    }

    pub(super) fn rebuild_targets(&mut self) {
        self.targets = self
            .subscriptions
            .iter()
            .chain(self.groups.values())
            .cloned()
            .collect();
    }
}
