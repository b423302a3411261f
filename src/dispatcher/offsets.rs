//! Which offsets may be committed, and who owns a partition right now.
//!
//! Records finish out of order, so a partition's commit position is its
//! lowest record still in flight. When a partition is revoked, its lease is
//! cancelled: work not yet started is abandoned (the next owner reads it
//! again) and the revocation waits for requests under way, so that two
//! dispatchers never send for one subscription at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<(String, i32), Partition>>,
    generations: AtomicU64,
}

struct Partition {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset begun.
    next: i64,
    committed: i64,
    lease: Arc<Lease>,
}

/// The ownership of one partition by this consumer, until revoked.
#[derive(Default)]
pub struct Lease {
    revoked: CancellationToken,
    active: AtomicUsize,
}

/// Keeps a revocation waiting while held.
pub struct Active(Arc<Lease>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One record in flight. Completing a ticket of a revoked assignment is a
/// no-op, so a record another consumer may now own is never committed here.
pub struct Ticket {
    topic: String,
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
        let entry = partitions.entry((topic.to_owned(), partition)).or_insert_with(|| Partition {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            in_flight: BTreeSet::new(),
            next: offset,
            committed: offset,
            lease: Arc::default(),
        });
        entry.in_flight.insert(offset);
        entry.next = entry.next.max(offset + 1);
        Ticket {
            topic: topic.to_owned(),
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

    /// Forgets partitions this consumer no longer owns, and waits up to
    /// `wait` for their requests under way.
    pub fn revoke(&self, revoked: &[(String, i32)], wait: Duration) {
        let leases: Vec<Arc<Lease>> = {
            let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            revoked.iter().filter_map(|key| partitions.remove(key)).map(|p| p.lease).collect()
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
}
