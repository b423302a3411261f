//! Which offsets may be committed, and who owns a partition right now.
//!
//! Records finish out of order, so a partition's commit position is its
//! lowest record still in flight. When a partition is revoked, its lease is
//! cancelled: work not yet started is abandoned (the next owner reads it
//! again) and the revocation waits for requests under way, so that two
//! dispatchers never send for one subscription at once. What finished by
//! then is answered, for the revocation to commit before the partition goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// By topic, then partition: a record's lookups then borrow its topic
    /// name instead of allocating a key (twice a record, in every stage).
    partitions: Mutex<HashMap<Arc<str>, HashMap<i32, Partition>>>,
    generations: AtomicU64,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    /// Offset → when the loop began it. Records begin in offset order, so
    /// the first is also the oldest.
    in_flight: BTreeMap<i64, Instant>,
    /// One past the highest offset begun.
    next: i64,
    /// The first offset begun: the position when this consumer took it.
    first: i64,
    committed: i64,
    lease: Arc<Lease>,
}

/// The ownership of one partition by this consumer, until revoked.
#[derive(Debug, Default)]
pub struct Lease {
    revoked: CancellationToken,
    active: AtomicUsize,
}

/// Keeps a revocation waiting while held.
#[derive(Debug)]
pub struct Active(Arc<Lease>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One record in flight. Completing a ticket of a revoked assignment is a
/// no-op, so a record another consumer may now own is never committed here.
#[derive(Debug)]
pub struct Ticket {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    generation: u64,
    lease: Arc<Lease>,
}

impl Ticket {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn lease(&self) -> Arc<Lease> {
        Arc::clone(&self.lease)
    }
}

impl Lease {
    /// Cancelled when this consumer loses the partition.
    pub fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }

    /// Marks work that a revocation must wait for (an HTTP request under
    /// way); `None` once the partition is revoked.
    pub fn activate(self: &Arc<Self>) -> Option<Active> {
        // Count first, then check: a revocation that cancels after our check
        // sees the count and waits.
        self.active.fetch_add(1, Ordering::SeqCst);
        let active = Active(Arc::clone(self));
        (!self.revoked.is_cancelled()).then_some(active)
    }
}

impl OffsetTracker {
    pub fn begin(&self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let topic = match partitions.get_key_value(topic) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(topic),
        };
        let entry =
            partitions.entry(Arc::clone(&topic)).or_default().entry(partition).or_insert_with(
                || Partition {
                    generation: self.generations.fetch_add(1, Ordering::Relaxed),
                    in_flight: BTreeMap::new(),
                    next: offset,
                    first: offset,
                    committed: offset,
                    lease: Arc::default(),
                },
            );
        entry.in_flight.insert(offset, Instant::now());
        entry.next = entry.next.max(offset + 1);
        Ticket {
            topic,
            partition,
            offset,
            generation: entry.generation,
            lease: Arc::clone(&entry.lease),
        }
    }

    /// Marks the record done; answers the new commit position (the next
    /// offset to read) when it moved.
    pub fn complete(&self, ticket: &Ticket) -> Option<i64> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = partitions.get_mut(&*ticket.topic)?.get_mut(&ticket.partition)?;
        if entry.generation != ticket.generation || entry.in_flight.remove(&ticket.offset).is_none()
        {
            return None;
        }
        let position = entry.in_flight.keys().next().copied().unwrap_or(entry.next);
        (position > entry.committed).then(|| {
            entry.committed = position;
            position
        })
    }

    /// Gives up partitions this consumer no longer owns: cancels their
    /// leases, waits up to `wait` for their requests under way (which may
    /// still complete meanwhile), then forgets them. Answers the commit
    /// position of each that moved while it was ours, to commit before it
    /// goes; completions after this are fenced off.
    pub fn revoke(&self, revoked: &[(String, i32)], wait: Duration) -> Vec<(String, i32, i64)> {
        let leases: Vec<Arc<Lease>> = {
            let partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            revoked
                .iter()
                .filter_map(|(topic, partition)| partitions.get(topic.as_str())?.get(partition))
                .map(|p| Arc::clone(&p.lease))
                .collect()
        };
        for lease in &leases {
            lease.revoked.cancel();
        }
        let deadline = Instant::now() + wait;
        while leases.iter().any(|l| l.active.load(Ordering::SeqCst) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let positions = revoked
            .iter()
            .filter_map(|(topic, partition)| {
                let p = partitions.get_mut(topic.as_str())?.remove(partition)?;
                (p.committed > p.first).then(|| (topic.clone(), *partition, p.committed))
            })
            .collect();
        partitions.retain(|_, by_number| !by_number.is_empty());
        positions
    }

    /// Forgets every partition (an assignment lost or a failed rebalance):
    /// nothing of it is committed here any more.
    pub fn revoke_all(&self) {
        let leases: Vec<Arc<Lease>> = {
            let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            partitions
                .drain()
                .flat_map(|(_, by_number)| by_number.into_values())
                .map(|p| p.lease)
                .collect()
        };
        for lease in &leases {
            lease.revoked.cancel();
        }
    }

    /// When the oldest record still in flight was begun.
    pub fn oldest_in_flight(&self) -> Option<Instant> {
        let partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions
            .values()
            .flat_map(HashMap::values)
            .filter_map(|p| p.in_flight.values().next().copied())
            .min()
    }

    pub fn in_flight(&self) -> usize {
        let partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions.values().flat_map(HashMap::values).map(|p| p.in_flight.len()).sum()
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
    fn revoked_tickets_commit_nothing_and_cannot_start_work() {
        let tracker = OffsetTracker::default();
        let old = tracker.begin("t", 0, 3);
        assert!(old.lease().activate().is_some());
        tracker.revoke(&[("t".to_owned(), 0)], Duration::ZERO);
        assert!(old.lease().revoked().is_cancelled());
        assert!(old.lease().activate().is_none());
        let new = tracker.begin("t", 0, 3);
        assert_eq!(tracker.complete(&old), None);
        assert_eq!(tracker.in_flight(), 1);
        assert_eq!(tracker.complete(&new), Some(4));
    }

    #[test]
    fn revocation_waits_for_requests_under_way() {
        let tracker = OffsetTracker::default();
        let ticket = tracker.begin("t", 0, 1);
        let active = ticket.lease().activate().expect("owned");
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let request = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
            drop(active);
        });
        tracker.revoke(&[("t".to_owned(), 0)], Duration::from_secs(5));
        assert!(finished.load(Ordering::SeqCst), "revoke returned before the request ended");
        request.join().expect("thread");
    }

    #[test]
    fn work_finished_during_a_revocation_is_answered_for_commit() {
        let tracker = Arc::new(OffsetTracker::default());
        let done = tracker.begin("t", 0, 4);
        let running = tracker.begin("t", 0, 5);
        let waiting = tracker.begin("t", 0, 6);
        let active = running.lease().activate().expect("owned");
        assert_eq!(tracker.complete(&done), Some(5));
        let finishing = {
            let tracker = Arc::clone(&tracker);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let moved = tracker.complete(&running);
                drop(active);
                moved
            })
        };
        let positions = tracker.revoke(&[("t".to_owned(), 0)], Duration::from_secs(5));
        assert_eq!(finishing.join().expect("thread"), Some(6));
        assert_eq!(positions, vec![("t".to_owned(), 0, 6)], "up to the record still waiting");
        assert_eq!(tracker.complete(&waiting), None, "fenced off once revoked");
    }

    #[test]
    fn nothing_done_means_nothing_to_commit_and_the_oldest_record_is_known() {
        let tracker = OffsetTracker::default();
        assert!(tracker.oldest_in_flight().is_none());
        let before = Instant::now();
        let _first = tracker.begin("t", 1, 9);
        let _later = tracker.begin("t", 1, 10);
        let oldest = tracker.oldest_in_flight().expect("in flight");
        assert!(oldest >= before && oldest <= Instant::now());
        assert!(tracker.revoke(&[("t".to_owned(), 1)], Duration::ZERO).is_empty());
        assert_eq!(tracker.in_flight(), 0);
        let _again = tracker.begin("t", 2, 0);
        tracker.revoke_all();
        assert_eq!(tracker.in_flight(), 0);
    }
}
