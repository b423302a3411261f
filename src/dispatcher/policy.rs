//! What follows an attempt, or a delivery that cannot be attempted now:
//! one pure function, `RetryPolicy::verdict`, of what the deliver stage
//! found (`Outcome`), the delivery, the policy and the clock (jitter passed
//! in), so that every rule is one match arm, and one row of the table test
//! below. `deliver` only carries the verdict out.

use std::time::Duration;

use crate::config::{RetrySchedule, Topics};
use crate::delivery::DeliveryError;
use crate::domain::{DeadReason, ParkReason, SubscriptionStatus};
use crate::kafka::delivery::Delivery;

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Delays vary by up to this fraction, so that failed deliveries do not all
/// come back at the same instant.
const JITTER: f64 = 0.1;
/// How much shorter than a tier's delay a delay may be and still go to it.
const TIER_SLACK: f64 = 0.1;

#[derive(Debug)]
pub struct RetryPolicy {
    pub schedule: RetrySchedule,
    pub max_age: Duration,
    pub topics: Topics,
}

/// When a verdict is given: Unix milliseconds, and the jitter (-1..=1)
/// that varies a retry's delay.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now_ms: i64,
    pub jitter: f64,
}

/// What the deliver stage found, for the policy to judge.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Its turn came, before the attempt: its subscription's status as it
    /// is now, and whether a replay's override URL is one deliveries may
    /// not go to.
    Due { status: SubscriptionStatus, destination_refused: bool },
    /// Its subscription cannot take it now; `not_before_ms`: a pause in
    /// force (a `Retry-After`, an open circuit).
    Held { reason: ParkReason, not_before_ms: Option<i64> },
    /// Read again behind the head of its `ordered` lane, which waits in the
    /// retry tier `tier` until `due_ms`.
    BehindLane { tier: Duration, due_ms: i64 },
    /// Its partition went to another dispatcher while it waited.
    Revoked,
    /// Shutdown began while it waited; `ordered`: it keeps its key's order.
    ShuttingDown { ordered: bool },
    /// The attempt was made. `redirected`: it went to a replay's override
    /// URL, whose answers say nothing about the subscription.
    Attempted { result: &'a Result<(), DeliveryError>, redirected: bool },
}

/// The next step for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing holds it back: make the attempt.
    Attempt,
    Delivered,
    /// Try again after `delay`, through the retry tier `tier`.
    Retry {
        delay: Duration,
        tier: Duration,
    },
    /// Leave without an attempt for the retry tier `tier`, due after
    /// `delay`; each park of a delivery waits longer.
    Park {
        reason: ParkReason,
        delay: Duration,
        tier: Duration,
    },
    /// Follow its lane's head into `tier`, due at `due_ms`, in lane order.
    FollowLane {
        tier: Duration,
        due_ms: i64,
    },
    /// Leave its record uncommitted for the partition's next owner to read
    /// again: through a retry tier it could come after later events of its
    /// key.
    ReadAgain,
    DeadLetter(DeadReason),
    /// 410 Gone: disable the subscription and dead-letter the delivery.
    Disable,
}

impl RetryPolicy {
    /// What follows `outcome` for `delivery` (its attempt `delivery.attempt`
    /// being the one just made, for an `Attempted`). The first arm that
    /// matches decides.
    pub fn verdict(&self, outcome: &Outcome<'_>, delivery: &Delivery, clock: Clock) -> Verdict {
        use Outcome::{Attempted, BehindLane, Due, Held, Revoked, ShuttingDown};
        let now_ms = clock.now_ms;
        match *outcome {
            Due { destination_refused: true, .. } => Verdict::DeadLetter(DeadReason::Forbidden),
            Due { status: SubscriptionStatus::Paused, .. } => {
                Verdict::DeadLetter(DeadReason::Paused)
            }
            Due {
                status: SubscriptionStatus::Disabled | SubscriptionStatus::Suspended, ..
            } => Verdict::DeadLetter(DeadReason::Disabled),
            Due { .. } | BehindLane { .. } if self.is_expired(delivery, now_ms) => {
                Verdict::DeadLetter(DeadReason::Expired)
            }
            Due { status: SubscriptionStatus::Active, .. } => Verdict::Attempt,
            Held { reason, not_before_ms } => self.park(delivery, reason, not_before_ms, now_ms),
            BehindLane { tier, due_ms } => Verdict::FollowLane { tier, due_ms },
            Revoked | ShuttingDown { ordered: true } => Verdict::ReadAgain,
            // Handed on at once: the shortest tier, no wait.
            ShuttingDown { ordered: false } => {
                let tier = self.schedule.tiers().first().copied().unwrap_or_default();
                self.retry(delivery, Duration::ZERO, tier, now_ms)
            }
            Attempted { result: Ok(()), .. } => Verdict::Delivered,
            Attempted { result: Err(error), redirected: true } if error.status() == Some(410) => {
                Verdict::DeadLetter(DeadReason::Gone)
            }
            Attempted { result: Err(error), .. } if error.status() == Some(410) => Verdict::Disable,
            Attempted { result: Err(DeliveryError::Forbidden(_)), .. } => {
                Verdict::DeadLetter(DeadReason::Forbidden)
            }
            Attempted { result: Err(error), .. } if !error.is_retryable() => {
                Verdict::DeadLetter(DeadReason::NotRetryable)
            }
            Attempted { result: Err(error), .. } => self.after_failure(error, delivery, clock),
        }
    }

    /// A retryable failure: the schedule's next delay (jittered), or as
    /// long as the endpoint asked; none left, it is exhausted.
    fn after_failure(&self, error: &DeliveryError, delivery: &Delivery, clock: Clock) -> Verdict {
        let Some(planned) = self.schedule.delay_after(delivery.attempt) else {
            return Verdict::DeadLetter(DeadReason::Exhausted);
        };
        let mut delay = planned.mul_f64(1.0 + JITTER * clock.jitter.clamp(-1.0, 1.0));
        if let Some(asked) = error.retry_after() {
            delay = delay.max(asked.min(MAX_RETRY_AFTER));
        }
        // The planned delay picks the tier, so jitter never moves a retry
        // to a longer one.
        self.retry(delivery, delay, delay.max(planned), clock.now_ms)
    }

    /// Parked: the n-th time it is parked it waits the n-th tier's delay,
    /// and not before `not_before_ms` (a pause of its subscription).
    fn park(
        &self,
        delivery: &Delivery,
        reason: ParkReason,
        not_before_ms: Option<i64>,
        now_ms: i64,
    ) -> Verdict {
        let tiers = self.schedule.tiers();
        let last = tiers.len().saturating_sub(1);
        let index = usize::try_from(delivery.parked).unwrap_or(usize::MAX).min(last);
        let mut delay = tiers.get(index).copied().unwrap_or(Duration::from_secs(5));
        if let Some(at) = not_before_ms {
            let asked = Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0));
            delay = delay.max(asked.min(MAX_RETRY_AFTER));
        }
        match self.retry(delivery, delay, delay, now_ms) {
            Verdict::Retry { delay, tier } => Verdict::Park { reason, delay, tier },
            other => other,
        }
    }

    /// A retry after `delay` in the tier `by` picks, unless the delivery
    /// would be past its maximum age by then.
    fn retry(&self, delivery: &Delivery, delay: Duration, by: Duration, now_ms: i64) -> Verdict {
        let due_ms = now_ms.saturating_add(duration_ms(delay));
        if due_ms > delivery.created_ms.saturating_add(duration_ms(self.max_age)) {
            return Verdict::DeadLetter(DeadReason::Expired);
        }
        Verdict::Retry { delay, tier: self.tier_for(by) }
    }

    pub fn is_expired(&self, delivery: &Delivery, now_ms: i64) -> bool {
        now_ms > delivery.created_ms.saturating_add(duration_ms(self.max_age))
    }

    /// The longest tier not longer than `delay` (the shortest when all
    /// are), give or take `TIER_SLACK`: records of one tier are due in about
    /// the order they were written, and none is held back by one due much
    /// later. The slack keeps a delay a little short of a tier (a 30 s
    /// `Retry-After` counted from when it was answered) in that tier, not
    /// sitting for its whole wait in a short one.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        let tiers = self.schedule.tiers();
        let slack = delay.mul_f64(1.0 + TIER_SLACK);
        tiers.iter().rev().find(|t| **t <= slack).or(tiers.first()).copied().unwrap_or(delay)
    }

    pub fn tier_topic(&self, tier: Duration) -> String {
        self.topics.retry_topic(tier)
    }
}

impl Outcome<'_> {
    /// Until when the whole subscription waits, whatever becomes of this
    /// delivery: its endpoint asked for a pause (`Retry-After`, capped).
    /// Another receiver's answer (a replay's URL) asks nothing of it.
    pub fn pause_until(&self, now_ms: i64) -> Option<i64> {
        match *self {
            Outcome::Attempted { result: Err(error), redirected: false } => {
                error.retry_after().map(|asked| now_ms + duration_ms(asked.min(MAX_RETRY_AFTER)))
            }
            _ => None,
        }
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, SubscriptionId, TenantId};
    use serde_json::value::RawValue;

    const NOW: i64 = 1_700_000_000_000;

    fn policy(schedule: &[u64], max_age: u64) -> RetryPolicy {
        RetryPolicy {
            schedule: RetrySchedule(schedule.iter().map(|s| Duration::from_secs(*s)).collect()),
            max_age: Duration::from_secs(max_age),
            topics: Topics::under_prefix("t", 1, 1),
        }
    }

    fn delivery(attempt: u32) -> Delivery {
        let event = Event {
            id: "evt_1".into(),
            event_type: "a.b".into(),
            source: "s".into(),
            time: chrono::Utc::now(),
            key: None,
            data: RawValue::from_string("{}".into()).expect("json").into(),
            audience: crate::domain::Audience::Tenant(TenantId::default_tenant()),
        };
        let mut delivery =
            Delivery::new(event, SubscriptionId::generate(), TenantId::default_tenant());
        delivery.created_ms = NOW;
        delivery.attempt = attempt;
        delivery
    }

    fn status(status: u16) -> Result<(), DeliveryError> {
        Err(DeliveryError::Status { status, retry_after: None })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(now_ms: i64) -> Clock {
        Clock { now_ms, jitter: 0.0 }
    }

    /// The verdict after the attempt `d.attempt` to the subscription's URL.
    fn after(
        p: &RetryPolicy,
        result: &Result<(), DeliveryError>,
        d: &Delivery,
        jitter: f64,
    ) -> Verdict {
        let outcome = Outcome::Attempted { result, redirected: false };
        p.verdict(&outcome, d, Clock { now_ms: NOW, jitter })
    }

    fn park(p: &RetryPolicy, d: &Delivery, not_before_ms: Option<i64>) -> Verdict {
        p.verdict(&Outcome::Held { reason: ParkReason::Stalled, not_before_ms }, d, at(NOW))
    }

    /// Every rule, one row each: what the stage found → what follows.
    #[test]
    fn each_outcome_has_one_verdict() {
        use SubscriptionStatus::{Active, Disabled, Paused, Suspended};
        let p = policy(&[5, 300, 1800], 86_400);
        let d = delivery(1);
        let last = delivery(4);
        let mut old = delivery(1);
        old.created_ms = NOW - 86_400_001;
        let (ok, gone, not_found, not_implemented) =
            (Ok(()), status(410), status(404), status(501));
        let (unavailable, request_timeout) = (status(503), status(408));
        let timeout = Err(DeliveryError::Timeout(secs(15)));
        let forbidden = Err(DeliveryError::Forbidden("internal".into()));
        let asked = Err(DeliveryError::Status { status: 429, retry_after: Some(secs(120)) });
        let to_own = |result| Outcome::Attempted { result, redirected: false };
        let due = |status| Outcome::Due { status, destination_refused: false };
        let held = |reason, not_before_ms| Outcome::Held { reason, not_before_ms };
        let behind = Outcome::BehindLane { tier: secs(300), due_ms: NOW + 1_000 };
        let retry_5s = Verdict::Retry { delay: secs(5), tier: secs(5) };
        let dead = Verdict::DeadLetter;
        let rows: Vec<(&str, Outcome<'_>, &Delivery, Verdict)> = vec![
            ("due", due(Active), &d, Verdict::Attempt),
            ("due, paused", due(Paused), &d, dead(DeadReason::Paused)),
            ("due, disabled", due(Disabled), &d, dead(DeadReason::Disabled)),
            ("due, suspended", due(Suspended), &d, dead(DeadReason::Disabled)),
            (
                "due, to a replay's refused URL",
                Outcome::Due { status: Active, destination_refused: true },
                &d,
                dead(DeadReason::Forbidden),
            ),
            ("due, past its maximum age", due(Active), &old, dead(DeadReason::Expired)),
            (
                "held: stalled",
                held(ParkReason::Stalled, None),
                &d,
                Verdict::Park { reason: ParkReason::Stalled, delay: secs(5), tier: secs(5) },
            ),
            (
                "held: Retry-After for a minute",
                held(ParkReason::RetryAfter, Some(NOW + 60_000)),
                &d,
                Verdict::Park { reason: ParkReason::RetryAfter, delay: secs(60), tier: secs(5) },
            ),
            (
                "held, past its maximum age",
                held(ParkReason::CircuitOpen, None),
                &old,
                dead(DeadReason::Expired),
            ),
            (
                "behind its lane's parked head",
                behind,
                &d,
                Verdict::FollowLane { tier: secs(300), due_ms: NOW + 1_000 },
            ),
            ("behind its lane, past its maximum age", behind, &old, dead(DeadReason::Expired)),
            ("revoked", Outcome::Revoked, &d, Verdict::ReadAgain),
            ("shutdown, ordered", Outcome::ShuttingDown { ordered: true }, &d, Verdict::ReadAgain),
            (
                "shutdown",
                Outcome::ShuttingDown { ordered: false },
                &d,
                Verdict::Retry { delay: Duration::ZERO, tier: secs(5) },
            ),
            (
                "shutdown, past its maximum age",
                Outcome::ShuttingDown { ordered: false },
                &old,
                dead(DeadReason::Expired),
            ),
            ("2xx", to_own(&ok), &d, Verdict::Delivered),
            ("410", to_own(&gone), &d, Verdict::Disable),
            (
                "410 at a replay's URL",
                Outcome::Attempted { result: &gone, redirected: true },
                &d,
                dead(DeadReason::Gone),
            ),
            ("404", to_own(&not_found), &d, dead(DeadReason::NotRetryable)),
            ("501", to_own(&not_implemented), &d, dead(DeadReason::NotRetryable)),
            ("refused address", to_own(&forbidden), &d, dead(DeadReason::Forbidden)),
            ("503", to_own(&unavailable), &d, retry_5s.clone()),
            ("408", to_own(&request_timeout), &d, retry_5s.clone()),
            ("timeout", to_own(&timeout), &d, retry_5s),
            (
                "429 with Retry-After",
                to_own(&asked),
                &d,
                Verdict::Retry { delay: secs(120), tier: secs(5) },
            ),
            ("503, the schedule used up", to_own(&unavailable), &last, dead(DeadReason::Exhausted)),
        ];
        for (what, outcome, delivery, expected) in rows {
            assert_eq!(p.verdict(&outcome, delivery, at(NOW)), expected, "{what}");
        }
    }

    #[test]
    fn a_retry_after_pauses_the_whole_subscription_whatever_follows() {
        let asked = |s| Err(DeliveryError::Status { status: 429, retry_after: Some(secs(s)) });
        let (minute, day) = (asked(60), asked(86_400));
        let own = |result| Outcome::Attempted { result, redirected: false };
        assert_eq!(own(&minute).pause_until(NOW), Some(NOW + 60_000));
        assert_eq!(own(&day).pause_until(NOW), Some(NOW + 3_600_000), "capped");
        let elsewhere = Outcome::Attempted { result: &minute, redirected: true };
        assert_eq!(elsewhere.pause_until(NOW), None, "a replay's URL asks nothing of it");
        let (failed, delivered) = (status(500), Ok(()));
        assert_eq!(own(&failed).pause_until(NOW), None);
        assert_eq!(own(&delivered).pause_until(NOW), None);
    }

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let p = policy(&[5, 300], 86_400);
        let second = after(&p, &status(500), &delivery(2), 0.0);
        assert_eq!(second, Verdict::Retry { delay: secs(300), tier: secs(300) });
        let third = after(&p, &status(500), &delivery(3), 0.0);
        assert_eq!(third, Verdict::DeadLetter(DeadReason::Exhausted));
    }

    #[test]
    fn jitter_varies_the_delay_but_never_the_tier() {
        let p = policy(&[5, 300], 86_400);
        for (jitter, millis) in [(-1.0, 4_500), (1.0, 5_500), (0.5, 5_250)] {
            let verdict = after(&p, &status(500), &delivery(1), jitter);
            assert_eq!(
                verdict,
                Verdict::Retry { delay: Duration::from_millis(millis), tier: secs(5) },
                "jitter {jitter}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_cap_in_the_tier_it_fits() {
        let p = policy(&[5, 300, 7200], 86_400);
        let asked = |s| Err(DeliveryError::Status { status: 429, retry_after: Some(secs(s)) });
        let verdict = after(&p, &asked(120), &delivery(1), 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: secs(120), tier: secs(5) });
        let verdict = after(&p, &asked(86_000), &delivery(1), 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: MAX_RETRY_AFTER, tier: secs(300) });
        let verdict = after(&p, &asked(1), &delivery(1), 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: secs(5), tier: secs(5) }, "never sooner");
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_be_too_old() {
        let p = policy(&[3600], 60);
        let verdict = after(&p, &status(500), &delivery(1), 0.0);
        assert_eq!(verdict, Verdict::DeadLetter(DeadReason::Expired));
        assert!(!p.is_expired(&delivery(1), NOW + 60_000));
        assert!(p.is_expired(&delivery(1), NOW + 60_001));
    }

    #[test]
    fn parking_climbs_the_tiers_and_waits_for_retry_after() {
        let p = policy(&[5, 300, 1800, 1800], 86_400);
        let mut d = delivery(1);
        let mut delays = Vec::new();
        for parked in 0..5 {
            d.parked = parked;
            match park(&p, &d, None) {
                Verdict::Park { delay, tier, .. } => {
                    assert_eq!(delay, tier, "a park waits exactly its tier");
                    delays.push(delay.as_secs());
                }
                other => panic!("parked, not {other:?}"),
            }
        }
        assert_eq!(delays, [5, 300, 1800, 1800, 1800]);
        d.parked = 0;
        let verdict = park(&p, &d, Some(NOW + 60_000));
        let stalled = |delay, tier| Verdict::Park { reason: ParkReason::Stalled, delay, tier };
        assert_eq!(verdict, stalled(secs(60), secs(5)));
        // A pause asked a moment ago: the tier of its length, not a short
        // one it would sit in for the whole wait.
        let p = policy(&[1, 30], 86_400);
        let verdict = park(&p, &d, Some(NOW + 29_990));
        assert_eq!(verdict, stalled(Duration::from_millis(29_990), secs(30)));
        let old = policy(&[5], 3);
        assert_eq!(park(&old, &d, None), Verdict::DeadLetter(DeadReason::Expired));
    }

    #[test]
    fn picks_the_longest_tier_not_longer_than_the_delay() {
        let p = policy(&[5, 300, 7200], 86_400);
        assert_eq!(p.tier_for(Duration::from_secs(4)), secs(5), "shorter than all: the first");
        assert_eq!(p.tier_for(Duration::from_secs(6)), secs(5));
        assert_eq!(p.tier_for(Duration::from_secs(280)), secs(300), "a little short of it");
        assert_eq!(p.tier_for(Duration::from_secs(250)), secs(5));
        assert_eq!(p.tier_for(Duration::from_secs(300)), secs(300));
        assert_eq!(p.tier_for(Duration::from_secs(90_000)), secs(7200));
        assert_eq!(p.tier_topic(secs(300)), "t.retry.5m");
    }
}
