//! Liveness of the dispatcher's stages (guarantee 8). Each read loop leaves
//! a `Heartbeat` (atomics it never waits on); its stage's watchdog reads it,
//! with the consumer's positions, and finds the stage stuck when
//!
//! - the loop has not come back to `recv()` for the bound (a handler's
//!   `begin` that does not return), or
//! - an assigned partition that is not paused has records the consumer has
//!   not handed out (high watermark above its `position()`), and that
//!   position has not moved for the bound (the loop or the consumer wedged).
//!
//! - its group coordinator has not answered (a committed-offsets fetch) for
//!   twice the bound while the partitions' leaders do. librdkafka does not
//!   always reconnect a coordinator after a broker restart: its requests
//!   wait in the out-queue ("GroupCoordinator: Timed out … 1 out-queue")
//!   while the group's session expires and its partitions are taken away, so
//!   the stage has nothing left that could look stalled. A brand-new client
//!   connects; while the brokers themselves are away, a restart would not
//!   help and the clock does not run.
//!
//! A paused partition waits for room by design and is not judged. Neither is
//! the age of the oldest record in flight, exported only: the retry stage
//! holds records until they are due (hours), an ordered lane waits in place
//! through its retries, and work waits for the database while it is away;
//! what does wedge there pins the committed offset, which the lag shows.
//!
//! A stuck stage ends the process (exit code 1) rather than being rebuilt in
//! place: a loop stuck in a handler cannot be taken back from outside (the
//! future may hold a runtime thread), a second consumer would share the
//! first one's tracker and handler state, and at-least-once makes a restart
//! lose nothing. Until the process is gone, `/healthz` answers 503 naming the
//! stage (`health::Liveness`). A fatal Kafka error ends it the same way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long unread records may wait, or the loop be away from `recv()`,
/// before a stage counts as stuck. Well above what a handler's `begin` takes
/// (a database refresh gives up after 5 s) and below librdkafka's
/// `max.poll.interval.ms` (300 s), after which the group drops the consumer.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// What a read loop leaves for its watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds since `epoch` when `recv()` last returned.
    last_read: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the loop left `recv()`;
    /// zero while it waits there.
    busy_since: AtomicU64,
    paused: Mutex<HashSet<(String, i32)>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_read: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            paused: Mutex::default(),
        }
    }
}

impl Heartbeat {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `recv()` returned: the loop is busy with what it got.
    pub fn read(&self) {
        let now = self.now_ms();
        self.last_read.store(now, Ordering::Relaxed);
        self.busy_since.store(now + 1, Ordering::Relaxed);
    }

    /// The loop is back, waiting for records (or for room).
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// The partitions the loop holds paused now.
    pub fn set_paused<'a>(&self, partitions: impl Iterator<Item = &'a (String, i32)>) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = partitions.cloned().collect();
    }

    pub fn is_paused(&self, partition: &(String, i32)) -> bool {
        self.paused.lock().unwrap_or_else(|e| e.into_inner()).contains(partition)
    }

    /// Since `recv()` last returned (since the start, before the first).
    pub fn since_read(&self) -> Duration {
        let last = self.last_read.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// How long the loop has been away from `recv()`, if it is.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since - 1))),
        }
    }
}

/// One assigned partition as measured: where the consumer is, and the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    /// The next offset the consumer hands out.
    pub position: i64,
    pub high_watermark: i64,
}

/// Partitions with unread records whose position does not move.
#[derive(Debug, Default)]
pub struct Stalls {
    /// Position last seen, and since when unread records wait at it.
    waiting: HashMap<(String, i32), (i64, Instant)>,
}

impl Stalls {
    /// Takes a measurement; answers the partitions that have had unread
    /// records, not paused, at an unmoved position for `bound` or more.
    pub fn update(
        &mut self,
        measured: &[Position],
        is_paused: impl Fn(&(String, i32)) -> bool,
        now: Instant,
        bound: Duration,
    ) -> Vec<(String, i32)> {
        let mut waiting = HashMap::with_capacity(measured.len());
        let mut stalled = Vec::new();
        for p in measured {
            let key = (p.topic.clone(), p.partition);
            if p.high_watermark <= p.position || is_paused(&key) {
                continue;
            }
            let since = match self.waiting.get(&key) {
                Some(&(position, since)) if position == p.position => since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= bound {
                stalled.push(key.clone());
            }
            waiting.insert(key, (p.position, since));
        }
        // Partitions revoked, caught up, paused or moving start afresh.
        self.waiting = waiting;
        stalled
    }
}

/// What the group coordinator did when last asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorAnswer {
    Answered,
    /// The request failed or timed out while a partition leader answered.
    Silent,
    /// Not asked (nothing to ask about yet), or the brokers did not answer
    /// either.
    Unknown,
}

/// Since when the group coordinator has been silent while the brokers answer.
#[derive(Debug, Default)]
pub struct CoordinatorSilence {
    since: Option<Instant>,
}

impl CoordinatorSilence {
    /// Takes an answer; answers how long the coordinator has been silent
    /// once that is `bound` or more.
    pub fn update(
        &mut self,
        answer: CoordinatorAnswer,
        now: Instant,
        bound: Duration,
    ) -> Option<Duration> {
        if answer != CoordinatorAnswer::Silent {
            self.since = None;
            return None;
        }
        let silent = now.saturating_duration_since(*self.since.get_or_insert(now));
        (silent >= bound).then_some(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64, high_watermark: i64) -> Vec<Position> {
        vec![Position { topic: "t".to_owned(), partition: 0, position, high_watermark }]
    }

    #[test]
    fn unread_records_at_an_unmoved_position_stall_after_the_bound() {
        let bound = Duration::from_secs(30);
        let start = Instant::now();
        let mut stalls = Stalls::default();
        let never = |_: &(String, i32)| false;
        assert!(stalls.update(&at(5, 9), never, start, bound).is_empty());
        assert!(stalls.update(&at(5, 9), never, start + bound / 2, bound).is_empty());
        assert_eq!(stalls.update(&at(5, 9), never, start + bound, bound), [("t".to_owned(), 0)]);
    }

    #[test]
    fn moving_caught_up_or_paused_partitions_are_not_stalled() {
        let bound = Duration::from_secs(30);
        let start = Instant::now();
        let mut stalls = Stalls::default();
        let never = |_: &(String, i32)| false;
        stalls.update(&at(5, 9), never, start, bound);
        // It moved: the clock starts again.
        assert!(stalls.update(&at(6, 9), never, start + bound, bound).is_empty());
        assert!(stalls.update(&at(6, 9), never, start + bound + bound / 2, bound).is_empty());
        // Nothing unread: an idle partition is fine however long.
        let mut idle = Stalls::default();
        idle.update(&at(9, 9), never, start, bound);
        assert!(idle.update(&at(9, 9), never, start + bound * 10, bound).is_empty());
        // Paused for room: waiting is its job.
        let mut paused = Stalls::default();
        let always = |_: &(String, i32)| true;
        paused.update(&at(5, 9), always, start, bound);
        assert!(paused.update(&at(5, 9), always, start + bound * 10, bound).is_empty());
        // Resumed: judged from then on, not from before the pause.
        assert!(paused.update(&at(5, 9), never, start + bound * 10, bound).is_empty());
    }

    #[test]
    fn a_coordinator_silent_while_the_brokers_answer_is_stuck_after_the_bound() {
        use CoordinatorAnswer::{Answered, Silent, Unknown};
        let bound = Duration::from_secs(60);
        let start = Instant::now();
        let mut silence = CoordinatorSilence::default();
        assert_eq!(silence.update(Silent, start, bound), None);
        assert_eq!(silence.update(Silent, start + bound / 2, bound), None);
        assert_eq!(silence.update(Silent, start + bound, bound), Some(bound));
        // One answer starts the clock again.
        assert_eq!(silence.update(Answered, start + bound, bound), None);
        assert_eq!(silence.update(Silent, start + bound * 2 - Duration::from_secs(1), bound), None);
        // Brokers away: a restart would not help, and the clock stops.
        let mut away = CoordinatorSilence::default();
        away.update(Silent, start, bound);
        assert_eq!(away.update(Unknown, start + bound, bound), None);
        assert_eq!(away.update(Silent, start + bound, bound), None);
        assert_eq!(away.update(Silent, start + bound * 2, bound), Some(bound));
    }

    #[test]
    fn the_heartbeat_tells_a_loop_away_from_recv() {
        let heartbeat = Heartbeat::default();
        assert_eq!(heartbeat.busy_for(), None);
        heartbeat.read();
        assert!(heartbeat.busy_for().is_some());
        assert!(heartbeat.since_read() < Duration::from_secs(1));
        heartbeat.idle();
        assert_eq!(heartbeat.busy_for(), None);
        let partition = ("t".to_owned(), 3);
        heartbeat.set_paused([partition.clone()].iter());
        assert!(heartbeat.is_paused(&partition));
        heartbeat.set_paused([].iter());
        assert!(!heartbeat.is_paused(&partition));
    }
}
