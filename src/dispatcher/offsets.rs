//! Which offsets may be committed: records finish out of order, so a
//! partition's commit position is its lowest record still in flight.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

#[derive(Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<(String, i32), Partition>>,
    generations: std::sync::atomic::AtomicU64,
}

struct Partition {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset begun.
    next: i64,
    committed: i64,
}

/// One record in flight. Completing a ticket of a revoked assignment is a
/// no-op, so a record that another consumer may now own is never committed here.
#[derive(Debug)]
pub struct Ticket {
    topic: String,
    partition: i32,
    offset: i64,
    generation: u64,
}

impl Ticket {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }
}

impl OffsetTracker {
    pub fn begin(&self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = partitions.entry((topic.to_owned(), partition)).or_insert_with(|| Partition {
            generation: self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            in_flight: BTreeSet::new(),
            next: offset,
            committed: offset,
        });
        entry.in_flight.insert(offset);
        entry.next = entry.next.max(offset + 1);
        Ticket { topic: topic.to_owned(), partition, offset, generation: entry.generation }
    }

    /// Marks the record done; answers the new commit position (the next
    /// offset to read) when it moved.
    pub fn complete(&self, ticket: &Ticket) -> Option<i64> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = partitions.get_mut(&(ticket.topic.clone(), ticket.partition))?;
        if entry.generation != ticket.generation || !entry.in_flight.remove(&ticket.offset) {
            return None;
        }
        let position = entry.in_flight.first().copied().unwrap_or(entry.next);
        (position > entry.committed).then(|| {
            entry.committed = position;
            position
        })
    }

    /// Forgets partitions this consumer no longer owns.
    pub fn revoke(&self, revoked: &[(String, i32)]) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        for key in revoked {
            partitions.remove(key);
        }
    }

    pub fn in_flight(&self) -> usize {
        let partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_below_the_lowest_record_in_flight() {
        let tracker = OffsetTracker::default();
        let t10 = tracker.begin("t", 0, 10);
        let t11 = tracker.begin("t", 0, 11);
        let t12 = tracker.begin("t", 0, 12);
        assert_eq!(tracker.complete(&t11), None, "10 is still in flight");
        assert_eq!(tracker.complete(&t10), Some(12));
        assert_eq!(tracker.complete(&t12), Some(13));
    }

    #[test]
    fn partitions_are_independent() {
        let tracker = OffsetTracker::default();
        let a = tracker.begin("t", 0, 5);
        let b = tracker.begin("t", 1, 7);
        assert_eq!(tracker.complete(&b), Some(8));
        assert_eq!(tracker.complete(&a), Some(6));
    }

    #[test]
    fn revoked_tickets_commit_nothing() {
        let tracker = OffsetTracker::default();
        let old = tracker.begin("t", 0, 3);
        tracker.revoke(&[("t".to_owned(), 0)]);
        let new = tracker.begin("t", 0, 3);
        assert_eq!(tracker.complete(&old), None);
        assert_eq!(tracker.in_flight(), 1);
        assert_eq!(tracker.complete(&new), Some(4));
    }
}
