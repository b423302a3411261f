//! What a stage may hold at once, in records and in bytes, and the guards
//! that count what it holds. A full budget never stops the read loop: the
//! loop pauses the partition it read from and resumes it once there is room
//! again (see `consume`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Limits of what is held at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub records: usize,
    pub bytes: usize,
}

impl Budget {
    pub const fn new(records: usize, bytes: usize) -> Self {
        Self { records, bytes }
    }
}

/// Something a paused partition waits on; the read loop resumes the
/// partition once it is relieved.
pub trait Pressure: Send + Sync {
    fn relieved(&self) -> bool;
}

/// What is held against one budget now.
#[derive(Debug)]
pub struct Load {
    budget: Budget,
    records: AtomicUsize,
    bytes: AtomicUsize,
    /// Told whenever something is let go, so that the read loop looks at its
    /// paused partitions without waiting for its next tick.
    freed: Arc<Notify>,
}

/// One record's share of a `Load`, given back when dropped.
#[derive(Debug)]
pub struct Held {
    load: Arc<Load>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.load.records.fetch_sub(1, Ordering::AcqRel);
        self.load.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.load.freed.notify_one();
    }
}

impl Load {
    pub fn new(budget: Budget, freed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self { budget, records: AtomicUsize::new(0), bytes: AtomicUsize::new(0), freed })
    }

    /// Counts a record of `bytes` as held, whether or not there is room: a
    /// record already read is always taken; the caller pauses when full.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Held {
        self.records.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Held { load: Arc::clone(self), bytes }
    }

    pub fn records(&self) -> usize {
        self.records.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.records() >= self.budget.records
            || self.bytes.load(Ordering::Acquire) >= self.budget.bytes
    }
}

impl Pressure for Load {
    /// Resumes at three quarters, so that a full stage does not pause and
    /// resume its partitions on every record.
    fn relieved(&self) -> bool {
        self.records() <= self.budget.records / 4 * 3
            && self.bytes.load(Ordering::Acquire) <= self.budget.bytes / 4 * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_either_limit_and_relieved_at_three_quarters() {
        let load = Load::new(Budget::new(4, 1_000), Arc::default());
        let held: Vec<Held> = (0..4).map(|_| load.take(10)).collect();
        assert!(load.is_full(), "four records fill a budget of four");
        assert!(!load.relieved());
        drop(held);
        assert!(!load.is_full() && load.relieved());

        let big = load.take(1_000);
        assert!(load.is_full(), "one record can fill the bytes");
        drop(big);
        assert_eq!(load.records(), 0);
        assert!(load.relieved());
    }
}
