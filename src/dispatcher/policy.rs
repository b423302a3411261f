//! What follows an attempt, or a delivery that cannot be attempted now:
//! pure functions of the outcome, the delivery, the policy and the clock
//! (jitter passed in), so that every rule is in one place and table-tested.
//! `deliver` only carries the verdict out.

use std::time::Duration;

use crate::config::{RetrySchedule, Topics};
use crate::delivery::DeliveryError;
use crate::kafka::delivery::{DeadReason, Delivery};

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Delays vary by up to this fraction, so that failed deliveries do not all
/// come back at the same instant.
const JITTER: f64 = 0.1;
/// How much shorter than a tier's delay a delay may be and still go to it.
const TIER_SLACK: f64 = 0.1;

pub struct RetryPolicy {
    pub schedule: RetrySchedule,
    pub max_age: Duration,
    pub topics: Topics,
}

/// The next step for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after `delay`, through the retry tier `tier`.
    Retry {
        delay: Duration,
        tier: Duration,
    },
    DeadLetter(DeadReason),
    /// 410 Gone: disable the subscription and dead-letter the delivery.
    Disable,
}

impl RetryPolicy {
    /// After the attempt `delivery.attempt` ended in `result` (`jitter` in
    /// -1..=1). `redirected`: it went to a replay's override URL, whose
    /// answers say nothing about the subscription.
    pub fn after_attempt(
        &self,
        result: &Result<(), DeliveryError>,
        delivery: &Delivery,
        redirected: bool,
        now_ms: i64,
        jitter: f64,
    ) -> Verdict {
        let error = match result {
            Ok(()) => return Verdict::Delivered,
            Err(error) => error,
        };
        if error.status() == Some(410) {
            return if redirected {
                Verdict::DeadLetter(DeadReason::Gone)
            } else {
                Verdict::Disable
            };
        }
        if !error.is_retryable() {
            let reason = match error {
                DeliveryError::Forbidden(_) => DeadReason::Forbidden,
                _ => DeadReason::NotRetryable,
            };
            return Verdict::DeadLetter(reason);
        }
        let Some(planned) = self.schedule.delay_after(delivery.attempt) else {
            return Verdict::DeadLetter(DeadReason::Exhausted);
        };
        let mut delay = planned.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0));
        if let Some(asked) = error.retry_after() {
            delay = delay.max(asked.min(MAX_RETRY_AFTER));
        }
        // The planned delay picks the tier, so jitter never moves a retry
        // to a longer one.
        self.retry(delivery, delay, delay.max(planned), now_ms)
    }

    /// A delivery that leaves without an attempt (parked): the n-th time it
    /// is parked it waits the n-th tier's delay, and not before
    /// `not_before_ms` (a `Retry-After` of its subscription).
    pub fn park(&self, delivery: &Delivery, not_before_ms: Option<i64>, now_ms: i64) -> Verdict {
        let tiers = self.schedule.tiers();
        let last = tiers.len().saturating_sub(1);
        let index = usize::try_from(delivery.parked).unwrap_or(usize::MAX).min(last);
        let mut delay = tiers.get(index).copied().unwrap_or(Duration::from_secs(5));
        if let Some(at) = not_before_ms {
            let asked = Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0));
            delay = delay.max(asked.min(MAX_RETRY_AFTER));
        }
        self.retry(delivery, delay, delay, now_ms)
    }

    /// Hands on at once (shutdown): the shortest tier, no wait.
    pub fn hand_back(&self, delivery: &Delivery, now_ms: i64) -> Verdict {
        let tier = self.schedule.tiers().first().copied().unwrap_or_default();
        self.retry(delivery, Duration::ZERO, tier, now_ms)
    }

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
            data: RawValue::from_string("{}".into()).expect("json"),
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

    #[test]
    fn each_outcome_has_one_verdict() {
        let p = policy(&[5, 300, 1800], 86_400);
        let d = delivery(1);
        let timeout = Err(DeliveryError::Timeout(secs(15)));
        let forbidden = Err(DeliveryError::Forbidden("internal".into()));
        let retry_5s = Verdict::Retry { delay: secs(5), tier: secs(5) };
        let cases: Vec<(&str, Result<(), DeliveryError>, bool, Verdict)> = vec![
            ("2xx", Ok(()), false, Verdict::Delivered),
            ("410", status(410), false, Verdict::Disable),
            ("410 at a replay's URL", status(410), true, Verdict::DeadLetter(DeadReason::Gone)),
            ("404", status(404), false, Verdict::DeadLetter(DeadReason::NotRetryable)),
            ("501", status(501), false, Verdict::DeadLetter(DeadReason::NotRetryable)),
            ("refused address", forbidden, false, Verdict::DeadLetter(DeadReason::Forbidden)),
            ("503", status(503), false, retry_5s.clone()),
            ("408", status(408), false, retry_5s.clone()),
            ("timeout", timeout, false, retry_5s),
        ];
        for (what, result, redirected, expected) in cases {
            assert_eq!(p.after_attempt(&result, &d, redirected, NOW, 0.0), expected, "{what}");
        }
    }

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let p = policy(&[5, 300], 86_400);
        let second = p.after_attempt(&status(500), &delivery(2), false, NOW, 0.0);
        assert_eq!(second, Verdict::Retry { delay: secs(300), tier: secs(300) });
        let third = p.after_attempt(&status(500), &delivery(3), false, NOW, 0.0);
        assert_eq!(third, Verdict::DeadLetter(DeadReason::Exhausted));
    }

    #[test]
    fn jitter_varies_the_delay_but_never_the_tier() {
        let p = policy(&[5, 300], 86_400);
        for (jitter, millis) in [(-1.0, 4_500), (1.0, 5_500), (0.5, 5_250)] {
            let verdict = p.after_attempt(&status(500), &delivery(1), false, NOW, jitter);
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
        let verdict = p.after_attempt(&asked(120), &delivery(1), false, NOW, 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: secs(120), tier: secs(5) });
        let verdict = p.after_attempt(&asked(86_000), &delivery(1), false, NOW, 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: MAX_RETRY_AFTER, tier: secs(300) });
        let verdict = p.after_attempt(&asked(1), &delivery(1), false, NOW, 0.0);
        assert_eq!(verdict, Verdict::Retry { delay: secs(5), tier: secs(5) }, "never sooner");
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_be_too_old() {
        let p = policy(&[3600], 60);
        let verdict = p.after_attempt(&status(500), &delivery(1), false, NOW, 0.0);
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
            match p.park(&d, None, NOW) {
                Verdict::Retry { delay, tier } => {
                    assert_eq!(delay, tier, "a park waits exactly its tier");
                    delays.push(delay.as_secs());
                }
                other => panic!("parked, not {other:?}"),
            }
        }
        assert_eq!(delays, [5, 300, 1800, 1800, 1800]);
        d.parked = 0;
        let verdict = p.park(&d, Some(NOW + 60_000), NOW);
        assert_eq!(verdict, Verdict::Retry { delay: secs(60), tier: secs(5) });
        // A pause asked a moment ago: the tier of its length, not a short
        // one it would sit in for the whole wait.
        let p = policy(&[1, 30], 86_400);
        let verdict = p.park(&d, Some(NOW + 29_990), NOW);
        assert_eq!(
            verdict,
            Verdict::Retry { delay: Duration::from_millis(29_990), tier: secs(30) }
        );
        let old = policy(&[5], 3);
        assert_eq!(old.park(&d, None, NOW), Verdict::DeadLetter(DeadReason::Expired));
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
