//! Parked lanes of an `ordered` subscription: when the head of a key's lane
//! cannot go now (its endpoint fails, hangs, or asked for a pause), it is
//! parked in a retry tier, and every later delivery of that lane follows it
//! there instead of waiting in the deliver stage, so the partition's
//! committed offset moves on while order is kept.
//!
//! Each delivery that leaves takes a sequence number in its lane; only the
//! lane's head (its lowest number not yet done) is attempted when it comes
//! back, and the others go back behind it, whatever order the tiers return
//! them in. The numbers carry an epoch, so that what another dispatcher (or
//! this one before a restart) parked is never taken for a duplicate.
//!
//! Lanes are slots of the key's hash: keys sharing a slot are kept in order
//! together, which bounds what a subscription with many keys holds here.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::kafka::delivery::LaneSeq;

/// Lanes a subscription's keys are parked in.
const SLOTS: u64 = 1_024;
/// A delivery behind a head that is due (on its way back, or under way)
/// waits this long before it looks again, so as not to race it.
pub const BEHIND_WAIT: Duration = Duration::from_secs(1);
/// Behind a head that waits in a tier, a delivery comes back this long
/// after it: the tier hands the head back first, and a lane drains at the
/// pace of its endpoint rather than of `BEHIND_WAIT`.
const AFTER_HEAD: Duration = Duration::from_millis(50);
/// A head that has not come back this long after it was due is taken for
/// lost (its hand-on failed and it is read again later, or its tier is
/// gone): the lane goes on without it, and it is let through when it comes.
const HEAD_GRACE: Duration = Duration::from_secs(60);

/// Which lane a key is parked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot(u64);

impl Slot {
    pub fn of(key: &[u8]) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Self(hasher.finish() % SLOTS)
    }
}

/// Where a delivery of an ordered lane goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Attempt it: its lane is not parked, or it is the lane's head.
    Go,
    /// Park it behind the lane's head: in `tier`, due at `due_ms`, as `seq`.
    Behind { seq: LaneSeq, tier: Duration, due_ms: i64 },
    /// Already done here (a copy read again): drop it.
    Done,
}

#[derive(Debug)]
struct Lane {
    epoch: u64,
    /// The lowest number not yet done.
    head: u64,
    /// The number the next delivery to join takes.
    next: u64,
    /// Numbers above the head that are done already.
    done: BTreeSet<u64>,
    /// Numbers the lane went on without; let through when they come back.
    skipped: BTreeSet<u64>,
    /// Where the head waits, and until when.
    tier: Duration,
    due_ms: i64,
}

impl Lane {
    fn advance(&mut self) {
        while self.done.remove(&self.head) {
            self.head += 1;
        }
    }

    /// Nothing left out: numbers skipped and still to come are then
    /// another epoch's, and queue behind like any.
    fn is_empty(&self) -> bool {
        self.head >= self.next
    }
}

#[derive(Debug, Default)]
pub struct ParkedLanes {
    lanes: Mutex<HashMap<Slot, Lane>>,
}

impl ParkedLanes {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any lane is parked.
    pub fn any(&self) -> bool {
        !self.lanes().is_empty()
    }

    /// Where a delivery with lane place `seq` (`None`: it never left) goes,
    /// at `now_ms`. Call while holding the key's turn. A delivery answered
    /// `Behind` is counted in its lane: hand it on, or `abandon` it.
    pub fn place(&self, slot: Slot, seq: Option<LaneSeq>, now_ms: i64) -> Place {
        let mut lanes = self.lanes();
        let Some(lane) = lanes.get_mut(&slot) else {
            // Not parked here; a number from elsewhere is the head of what
            // that dispatcher parked.
            return Place::Go;
        };
        let due_ms = if lane.due_ms > now_ms {
            lane.due_ms.saturating_add(ms(AFTER_HEAD))
        } else {
            now_ms.saturating_add(ms(BEHIND_WAIT))
        };
        let behind = |lane: &mut Lane, seq: LaneSeq| Place::Behind { seq, tier: lane.tier, due_ms };
        match seq {
            Some(seq) if seq.epoch == lane.epoch => {
                if lane.skipped.remove(&seq.seq) {
                    return Place::Go;
                }
                if seq.seq < lane.head || lane.done.contains(&seq.seq) {
                    return Place::Done;
                }
                if seq.seq > lane.head && now_ms > lane.due_ms.saturating_add(ms(HEAD_GRACE)) {
                    tracing::warn!(
                        missing = seq.seq - lane.head,
                        "parked lane: its head did not come back; going on without it"
                    );
                    let missing: Vec<u64> =
                        (lane.head..seq.seq).filter(|n| !lane.done.contains(n)).collect();
                    lane.skipped.extend(missing);
                    lane.done.retain(|n| *n > seq.seq);
                    lane.head = seq.seq;
                }
                if seq.seq == lane.head {
                    Place::Go
                } else {
                    behind(lane, seq)
                }
            }
            // Fresh, or parked by another epoch before this one began:
            // either way after what this lane holds.
            _ => {
                let seq = LaneSeq { epoch: lane.epoch, seq: lane.next };
                lane.next += 1;
                behind(lane, seq)
            }
        }
    }

    /// The delivery at `seq` (`None`: it never left) goes to `tier`, due at
    /// `due_ms`, without being done: answers the place it takes. A lane that
    /// is not parked yet is parked now, with it at its head.
    pub fn leave(&self, slot: Slot, seq: Option<LaneSeq>, tier: Duration, due_ms: i64) -> LaneSeq {
        let mut lanes = self.lanes();
        let lane = lanes.entry(slot).or_insert_with(|| Lane {
            epoch: rand::random(),
            head: 0,
            next: 0,
            done: BTreeSet::new(),
            skipped: BTreeSet::new(),
            tier,
            due_ms,
        });
        match seq {
            Some(seq) if seq.epoch == lane.epoch && seq.seq == lane.head => {
                // The head goes back to wait: the lane waits where it waits.
                lane.tier = tier;
                lane.due_ms = due_ms;
                seq
            }
            _ => {
                let seq = LaneSeq { epoch: lane.epoch, seq: lane.next };
                lane.next += 1;
                if seq.seq == lane.head {
                    lane.tier = tier;
                    lane.due_ms = due_ms;
                }
                seq
            }
        }
    }

    /// The delivery at `seq` is done (delivered, dead-lettered or dropped)
    /// at `now_ms`: the one behind it is the head now.
    pub fn finished(&self, slot: Slot, seq: Option<LaneSeq>, now_ms: i64) {
        let Some(seq) = seq else { return };
        let mut lanes = self.lanes();
        let Some(lane) = lanes.get_mut(&slot) else { return };
        if seq.epoch != lane.epoch {
            return;
        }
        if seq.seq >= lane.head {
            let head = lane.head;
            lane.done.insert(seq.seq);
            lane.advance();
            if lane.head != head {
                // A new head, on its way back: its grace counts from now.
                lane.due_ms = lane.due_ms.max(now_ms);
            }
        }
        if lane.is_empty() {
            lanes.remove(&slot);
        }
    }

    /// A delivery answered `Behind` could not be handed on (it is read
    /// again later): its lane must not wait for it.
    pub fn abandon(&self, slot: Slot, seq: LaneSeq, now_ms: i64) {
        self.finished(slot, Some(seq), now_ms);
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const TIER: Duration = Duration::from_secs(5);

    fn slot() -> Slot {
        Slot::of(b"customer-7")
    }

    fn behind(place: Place) -> LaneSeq {
        match place {
            Place::Behind { seq, .. } => seq,
            other => panic!("behind, not {other:?}"),
        }
    }

    #[test]
    fn a_lane_not_parked_goes() {
        let lanes = ParkedLanes::default();
        assert_eq!(lanes.place(slot(), None, NOW), Place::Go);
        let foreign = LaneSeq { epoch: 7, seq: 3 };
        assert_eq!(lanes.place(slot(), Some(foreign), NOW), Place::Go, "parked elsewhere");
        assert!(!lanes.any());
    }

    #[test]
    fn later_deliveries_follow_the_head_and_go_in_order_whatever_order_they_come_back_in() {
        let lanes = ParkedLanes::default();
        let head = lanes.leave(slot(), None, TIER, NOW + 5_000);
        let second = behind(lanes.place(slot(), None, NOW));
        let third = behind(lanes.place(slot(), None, NOW));
        assert!(head.seq < second.seq && second.seq < third.seq);
        assert_eq!(
            lanes.place(slot(), None, NOW),
            Place::Behind {
                seq: LaneSeq { epoch: head.epoch, seq: third.seq + 1 },
                tier: TIER,
                due_ms: NOW + 5_000 + ms(AFTER_HEAD)
            },
            "they wait where the head waits, and come back just after it"
        );
        lanes.abandon(slot(), LaneSeq { epoch: head.epoch, seq: third.seq + 1 }, NOW);
        // The third comes back first: it waits behind the head again.
        assert_eq!(behind(lanes.place(slot(), Some(third), NOW + 5_000)), third);
        assert_eq!(lanes.place(slot(), Some(head), NOW + 5_000), Place::Go);
        // The head fails again and waits longer: the lane waits with it.
        assert_eq!(lanes.leave(slot(), Some(head), TIER * 2, NOW + 20_000), head);
        match lanes.place(slot(), Some(second), NOW + 6_000) {
            Place::Behind { due_ms, tier, .. } => {
                assert_eq!((tier, due_ms), (TIER * 2, NOW + 20_000 + ms(AFTER_HEAD)))
            }
            other => panic!("behind, not {other:?}"),
        }
        assert_eq!(lanes.place(slot(), Some(head), NOW + 20_000), Place::Go);
        lanes.finished(slot(), Some(head), NOW);
        assert_eq!(lanes.place(slot(), Some(head), NOW + 20_000), Place::Done, "a copy read again");
        assert_eq!(lanes.place(slot(), Some(second), NOW + 20_000), Place::Go);
        lanes.finished(slot(), Some(second), NOW);
        // The abandoned one does not hold the lane: the third is the head.
        assert_eq!(lanes.place(slot(), Some(third), NOW + 21_000), Place::Go);
        lanes.finished(slot(), Some(third), NOW);
        assert!(!lanes.any(), "an empty lane is forgotten");
        assert_eq!(lanes.place(slot(), None, NOW + 21_000), Place::Go);
    }

    #[test]
    fn what_another_epoch_parked_queues_behind_this_lane_and_a_lost_head_is_gone_around() {
        let lanes = ParkedLanes::default();
        let head = lanes.leave(slot(), None, TIER, NOW);
        let second = behind(lanes.place(slot(), None, NOW));
        let foreign = LaneSeq { epoch: head.epoch.wrapping_add(1), seq: 0 };
        let requeued = behind(lanes.place(slot(), Some(foreign), NOW));
        assert_eq!((requeued.epoch, requeued.seq), (head.epoch, second.seq + 1));
        // The head never comes back: after the grace, the lane goes on.
        let late = NOW + ms(HEAD_GRACE) + 1;
        assert_eq!(lanes.place(slot(), Some(second), late), Place::Go);
        lanes.finished(slot(), Some(second), NOW);
        assert_eq!(lanes.place(slot(), Some(head), late), Place::Go, "let through, not dropped");
        lanes.finished(slot(), Some(head), NOW);
        assert_eq!(lanes.place(slot(), Some(requeued), late), Place::Go);
        lanes.finished(slot(), Some(requeued), NOW);
        assert!(!lanes.any());
    }

    #[test]
    fn a_lane_draining_long_after_its_first_head_was_due_skips_nothing() {
        let lanes = ParkedLanes::default();
        let head = lanes.leave(slot(), None, TIER, NOW);
        let second = behind(lanes.place(slot(), None, NOW));
        let third = behind(lanes.place(slot(), None, NOW));
        let later = NOW + 10 * ms(HEAD_GRACE);
        assert_eq!(lanes.place(slot(), Some(head), later), Place::Go);
        lanes.finished(slot(), Some(head), later);
        // The second is on its way back: the third waits for it.
        let soon = later + ms(HEAD_GRACE) / 2;
        assert_eq!(behind(lanes.place(slot(), Some(third), soon)), third);
        assert_eq!(lanes.place(slot(), Some(second), soon), Place::Go);
    }

    #[test]
    fn behind_a_head_in_a_short_tier_a_delivery_comes_back_just_after_it() {
        let lanes = ParkedLanes::default();
        lanes.leave(slot(), None, TIER, NOW + 300);
        match lanes.place(slot(), None, NOW) {
            Place::Behind { due_ms, .. } => assert_eq!(due_ms, NOW + 300 + ms(AFTER_HEAD)),
            other => panic!("behind, not {other:?}"),
        }
        // The head is due (on its way back): do not race it.
        match lanes.place(slot(), None, NOW + 300) {
            Place::Behind { due_ms, .. } => assert_eq!(due_ms, NOW + 300 + ms(BEHIND_WAIT)),
            other => panic!("behind, not {other:?}"),
        }
    }

    #[test]
    fn a_delivery_that_never_left_and_fails_joins_at_the_back() {
        let lanes = ParkedLanes::default();
        let head = lanes.leave(slot(), None, TIER, NOW);
        // Under way before the lane parked; it fails too.
        let late = lanes.leave(slot(), None, TIER * 4, NOW + 20_000);
        assert_eq!(late.seq, head.seq + 1);
        assert_eq!(behind(lanes.place(slot(), Some(late), NOW + 5_000)), late, "behind the head");
        // Done while not in a lane: changes nothing.
        lanes.finished(slot(), None, NOW);
        assert!(lanes.any());
    }
}
