//! A circuit breaker per subscription: after consecutive failures, or a
//! failure ratio over recent attempts, the circuit opens and its deliveries
//! wait in a retry tier (they take no delivery capacity) until a cool-down
//! passes; then one probe goes, and its answer closes the circuit or opens
//! it again for twice as long. Pure: the clock is passed in.

use std::sync::Mutex;
use std::time::Duration;

pub use crate::config::CircuitPolicy;

/// What the circuit lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// Nothing goes before this time (Unix milliseconds).
    Open {
        until_ms: i64,
    },
    /// The cool-down passed: one probe may go.
    HalfOpen,
}

/// A change of state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Open from `at_ms` (the clock the failure was recorded at, so that the
    /// cool-down shown is exactly `until_ms - at_ms`) to `until_ms`.
    Opened {
        at_ms: i64,
        until_ms: i64,
    },
    /// Its probe failed: open again, for longer.
    Reopened {
        at_ms: i64,
        until_ms: i64,
    },
    Closed,
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    attempts: u32,
    /// Failure share, thousandths.
    share: u32,
    /// `None` while closed.
    open_until_ms: Option<i64>,
    open_for_ms: i64,
    probe_out: bool,
}

#[derive(Debug, Default)]
pub struct Circuit {
    policy: CircuitPolicy,
    state: Mutex<State>,
}

impl Circuit {
    pub fn new(policy: CircuitPolicy) -> Self {
        Self { policy, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admission(&self, now_ms: i64) -> Admission {
        match self.state().open_until_ms {
            None => Admission::Closed,
            Some(until_ms) if now_ms < until_ms => Admission::Open { until_ms },
            Some(_) => Admission::HalfOpen,
        }
    }

    /// Closed, with nothing to remember but its counts.
    pub fn is_closed(&self) -> bool {
        self.state().open_until_ms.is_none()
    }

    /// Whether deliveries must wait elsewhere now: open, or half open with
    /// its probe under way.
    pub fn holds_back(&self, now_ms: i64) -> bool {
        let state = self.state();
        state.open_until_ms.is_some_and(|until| now_ms < until || state.probe_out)
    }

    /// Whether this delivery may go now: always while closed; while half
    /// open, only the one probe.
    pub fn try_send(&self, now_ms: i64) -> bool {
        let mut state = self.state();
        match state.open_until_ms {
            None => true,
            Some(until) if now_ms < until => false,
            Some(_) if state.probe_out => false,
            Some(_) => {
                state.probe_out = true;
                true
            }
        }
    }

    /// Notes an attempt's outcome; answers the change it made, if any.
    /// A failed retry (`first_attempt` false) says more about its event than
    /// about the endpoint (a receiver may refuse one event, and its retries
    /// come back together): it counts for nothing, and gives its probe back.
    pub fn record(&self, succeeded: bool, first_attempt: bool, now_ms: i64) -> Option<Transition> {
        let policy = self.policy;
        let mut state = self.state();
        if !succeeded && !first_attempt {
            state.probe_out = false;
            return None;
        }
        let weight = 1000 / policy.window.max(1);
        let failed = if succeeded { 0 } else { 1000 };
        state.share = (state.share * (1000 - weight) + failed * weight) / 1000;
        state.attempts = state.attempts.saturating_add(1);
        if succeeded {
            state.consecutive = 0;
            if state.open_until_ms.is_some() {
                *state = State::default();
                return Some(Transition::Closed);
            }
            return None;
        }
        state.consecutive = state.consecutive.saturating_add(1);
        let was_open = state.open_until_ms.is_some();
        let open_for_ms = match state.open_until_ms {
            // The probe failed: twice as long.
            Some(_) if state.probe_out => (state.open_for_ms * 2).min(duration_ms(policy.max_open)),
            // Failures of requests sent before it opened change nothing.
            Some(_) => return None,
            None if state.consecutive >= policy.consecutive_failures
                || (state.attempts >= policy.window && state.share >= policy.failure_share) =>
            {
                duration_ms(policy.open_for)
            }
            None => return None,
        };
        state.open_for_ms = open_for_ms;
        state.probe_out = false;
        let until_ms = now_ms.saturating_add(open_for_ms);
        state.open_until_ms = Some(until_ms);
        Some(match was_open {
            true => Transition::Reopened { at_ms: now_ms, until_ms },
            false => Transition::Opened { at_ms: now_ms, until_ms },
        })
    }

    /// Forgets every failure: the subscription was made active again.
    /// Answers whether it was open.
    pub fn reset(&self) -> bool {
        let mut state = self.state();
        let was_open = state.open_until_ms.is_some();
        *state = State::default();
        was_open
    }

    /// A probe taken but not sent (its delivery went elsewhere): another may go.
    pub fn release_probe(&self) {
        self.state().probe_out = false;
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_000_000;

    fn circuit() -> Circuit {
        Circuit::new(CircuitPolicy::default())
    }

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let c = circuit();
        for _ in 0..4 {
            assert_eq!(c.record(false, true, T), None);
        }
        assert_eq!(c.admission(T), Admission::Closed);
        assert_eq!(
            c.record(false, true, T),
            Some(Transition::Opened { at_ms: T, until_ms: T + 5_000 })
        );
        assert_eq!(c.admission(T + 4_999), Admission::Open { until_ms: T + 5_000 });
        assert!(!c.try_send(T + 4_999), "nothing goes while open");
        assert!(c.holds_back(T + 4_999));
        assert!(!c.holds_back(T + 5_000), "half open: the next delivery probes");
        assert_eq!(c.record(false, true, T + 100), None, "a late failure changes nothing");
        assert_eq!(c.admission(T + 5_000), Admission::HalfOpen);
        assert!(c.try_send(T + 5_000), "one probe");
        assert!(!c.try_send(T + 5_001), "only one");
        assert!(c.holds_back(T + 5_001), "the others wait elsewhere");
        assert_eq!(c.record(true, true, T + 5_100), Some(Transition::Closed));
        assert_eq!(c.admission(T + 5_100), Admission::Closed);
        assert!(c.try_send(T + 5_100));
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long_up_to_the_maximum() {
        let c = circuit();
        for _ in 0..5 {
            c.record(false, true, T);
        }
        let mut now = T + 5_000;
        let mut expected = 10_000;
        for _ in 0..8 {
            assert!(c.try_send(now));
            let Some(Transition::Reopened { until_ms, .. }) = c.record(false, true, now) else {
                panic!("reopened")
            };
            assert_eq!(until_ms - now, expected.min(300_000));
            now = until_ms;
            expected *= 2;
        }
    }

    #[test]
    fn a_high_failure_ratio_opens_it_without_five_in_a_row() {
        let c = circuit();
        let mut opened = false;
        for i in 0..100 {
            // Four failures, then one success: never five in a row.
            if let Some(Transition::Opened { .. }) = c.record(i % 5 == 4, true, T) {
                opened = true;
                break;
            }
        }
        assert!(opened, "80 % failing opens the circuit");
        let healthy = circuit();
        for i in 0..100 {
            assert_eq!(healthy.record(i % 2 == 0, true, T), None, "half failing stays closed");
        }
    }

    #[test]
    fn failed_retries_neither_open_it_nor_keep_its_probe() {
        let c = circuit();
        for _ in 0..50 {
            assert_eq!(c.record(false, false, T), None, "a refused event's retries");
        }
        assert_eq!(c.admission(T), Admission::Closed);
        for _ in 0..5 {
            c.record(false, true, T);
        }
        assert!(c.try_send(T + 5_000), "the probe is a retry");
        assert_eq!(c.record(false, false, T + 5_001), None);
        assert!(c.try_send(T + 5_002), "its failure gave the probe back");
        assert_eq!(
            c.record(true, false, T + 5_003),
            Some(Transition::Closed),
            "any success closes"
        );
    }

    #[test]
    fn a_reset_closes_it_and_forgets_the_failures() {
        let c = circuit();
        for _ in 0..5 {
            c.record(false, true, T);
        }
        assert!(c.reset(), "it was open");
        assert_eq!(c.admission(T), Admission::Closed);
        for _ in 0..4 {
            assert_eq!(c.record(false, true, T), None, "counting starts again");
        }
        assert!(!c.reset(), "closed");
    }

    #[test]
    fn a_probe_given_back_lets_another_go() {
        let c = circuit();
        for _ in 0..5 {
            c.record(false, true, T);
        }
        assert!(c.try_send(T + 5_000));
        c.release_probe();
        assert!(c.try_send(T + 5_000));
    }
}
