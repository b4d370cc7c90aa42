//! Which offsets may be committed: only up to the lowest offset not yet acked, per partition, so
//! a later ack never commits past an earlier unacked message.

use std::collections::{BTreeSet, HashMap};

/// The state of the partitions a consumer owns.
#[derive(Default)]
pub(crate) struct Offsets {
    partitions: HashMap<i32, Partition>,
    /// Bumped on every revocation, so settlements of messages from before it are ignored.
    generation: u64,
}

#[derive(Default)]
struct Partition {
    /// Delivered and not acked (nacked ones stay here until acked).
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next: i64,
    /// What was last committed.
    committed: i64,
}

impl Offsets {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn received(&mut self, partition: i32, offset: i64) {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition {
                committed: offset,
                next: offset,
                ..Partition::default()
            });
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    pub(crate) fn acked(&mut self, generation: u64, partition: i32, offset: i64) {
        if generation != self.generation {
            return;
        }
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.pending.remove(&offset);
        }
    }

    /// Whether a message from `generation` of `partition` still belongs to this consumer.
    pub(crate) fn owns(&self, generation: u64, partition: i32) -> bool {
        generation == self.generation && self.partitions.contains_key(&partition)
    }

    /// The offsets to commit now (the next offset to read, per partition), marked as committed.
    pub(crate) fn take_committable(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.partitions {
            let upto = p.pending.first().copied().unwrap_or(p.next);
            if upto > p.committed {
                p.committed = upto;
                out.push((partition, upto));
            }
        }
        out
    }

    /// Forgets partitions taken away by a rebalance.
    pub(crate) fn revoke(&mut self, partitions: &[i32]) {
        self.generation += 1;
        for partition in partitions {
            self.partitions.remove(partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_ack_never_commits_past_an_earlier_unacked_message() {
        let mut o = Offsets::default();
        for off in 10..15 {
            o.received(0, off);
        }
        let g = o.generation();
        o.acked(g, 0, 11);
        o.acked(g, 0, 12);
        assert!(o.take_committable().is_empty(), "10 is not acked");
        o.acked(g, 0, 10);
        assert_eq!(o.take_committable(), vec![(0, 13)]);
        o.acked(g, 0, 14);
        assert!(o.take_committable().is_empty(), "13 is not acked");
        o.acked(g, 0, 13);
        assert_eq!(o.take_committable(), vec![(0, 15)]);
    }

    #[test]
    fn settlements_from_before_a_revocation_are_ignored() {
        let mut o = Offsets::default();
        o.received(0, 1);
        let g = o.generation();
        o.revoke(&[0]);
        o.acked(g, 0, 1);
        assert!(!o.owns(g, 0));
        assert!(o.take_committable().is_empty());
    }
}
