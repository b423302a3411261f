//! A subscription's health: its failure record (failed attempts in a row,
//! the last success and failure) and its attempts rolled up per minute and
//! latency bin, from which `stats` answers counts and percentiles.

use super::{Attempt, Outcome, SubscriptionId};

/// Upper bounds of the latency bins, in milliseconds; one more bin holds
/// what is slower than the last. A percentile is answered as the bound of
/// its bin: within about a third of the true value.
pub const LATENCY_BOUNDS_MS: [u32; 24] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000,
    3_000, 5_000, 10_000, 30_000,
];
pub const LATENCY_BINS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The bin of a latency: the first whose bound it does not exceed.
pub fn latency_bin(ms: u32) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms)
}

/// The upper bound of a bin (`None`: slower than the last bound).
pub fn bin_bound(bin: usize) -> Option<u32> {
    LATENCY_BOUNDS_MS.get(bin).copied()
}

/// A subscription's record of failure, as the attempt log writer keeps it.
/// Times are Unix milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureRecord {
    pub consecutive_failures: u64,
    /// The first failure of the current run of failures.
    pub failing_since_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_failure_ms: Option<i64>,
    pub last_failure_status: Option<u16>,
    pub last_failure_error: Option<String>,
}

impl FailureRecord {
    /// Takes one more attempt, in the order they were made.
    pub fn apply(&mut self, attempt: &Attempt) {
        let at = attempt.created_at.timestamp_millis();
        match attempt.outcome {
            Outcome::Success => {
                self.consecutive_failures = 0;
                self.failing_since_ms = None;
                self.last_success_ms = Some(at);
            }
            Outcome::Failed => {
                self.consecutive_failures += 1;
                self.failing_since_ms.get_or_insert(at);
                self.last_failure_ms = Some(at);
                self.last_failure_status = attempt.status_code;
                self.last_failure_error.clone_from(&attempt.error);
            }
        }
    }
}

/// A subscription's failure record before and after a batch of attempts.
#[derive(Debug, Clone)]
pub struct HealthChange {
    pub subscription_id: SubscriptionId,
    pub before: FailureRecord,
    pub after: FailureRecord,
}

/// Attempts of one subscription in one minute and latency bin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub subscription_id: SubscriptionId,
    /// Unix minutes.
    pub minute: i64,
    pub latency_bin: usize,
    pub attempts: u64,
    pub successes: u64,
}

/// The rollup rows of a batch, one per subscription, minute and bin.
pub fn rollups(attempts: &[Attempt]) -> Vec<Rollup> {
    let mut rows: std::collections::BTreeMap<(SubscriptionId, i64, usize), (u64, u64)> =
        std::collections::BTreeMap::new();
    for a in attempts {
        let key = (
            a.subscription_id.clone(),
            a.created_at.timestamp().div_euclid(60),
            latency_bin(a.latency_ms),
        );
        let counts = rows.entry(key).or_default();
        counts.0 += 1;
        counts.1 += u64::from(a.outcome == Outcome::Success);
    }
    rows.into_iter()
        .map(|((subscription_id, minute, latency_bin), (attempts, successes))| Rollup {
            subscription_id,
            minute,
            latency_bin,
            attempts,
            successes,
        })
        .collect()
}

/// Attempts over a window, summed per latency bin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub attempts: u64,
    pub successes: u64,
    pub per_bin: [u64; LATENCY_BINS],
}

impl Totals {
    pub fn add(&mut self, bin: usize, attempts: u64, successes: u64) {
        self.attempts += attempts;
        self.successes += successes;
        if let Some(slot) = self.per_bin.get_mut(bin.min(LATENCY_BINS - 1)) {
            *slot += attempts;
        }
    }

    /// The latency below which `q` (0–1) of the attempts came back, as the
    /// upper bound of its bin: `Some(None)` when it is past the last bound,
    /// `None` without attempts.
    pub fn percentile(&self, q: f64) -> Option<Option<u32>> {
        if self.attempts == 0 {
            return None;
        }
        // The rank of the attempt that makes `q` of them: at least the first.
        let rank = ((q * self.attempts as f64).ceil() as u64).clamp(1, self.attempts);
        let mut seen = 0;
        for (bin, count) in self.per_bin.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bin_bound(bin));
            }
        }
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::{AttemptId, TenantId, WebhookId};

    fn attempt(sub: &str, ok: bool, latency_ms: u32, at_s: i64) -> Attempt {
        Attempt {
            id: AttemptId::generate(),
            event_id: "evt_1".into(),
            webhook_id: WebhookId::from_trusted("msg_1".into()),
            subscription_id: SubscriptionId::from_trusted(sub.into()),
            tenant_id: TenantId::default_tenant(),
            event_type: "a.b".into(),
            attempt: 1,
            outcome: if ok { Outcome::Success } else { Outcome::Failed },
            status_code: Some(if ok { 200 } else { 503 }),
            latency_ms,
            error: (!ok).then(|| "503".to_owned()),
            response_excerpt: None,
            created_at: DateTime::<Utc>::from_timestamp(at_s, 0).expect("time"),
        }
    }

    #[test]
    fn bins_hold_what_does_not_exceed_their_bound() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(1), 0);
        assert_eq!(latency_bin(2), 1);
        assert_eq!(latency_bin(4), 3);
        assert_eq!(latency_bin(30_000), LATENCY_BOUNDS_MS.len() - 1);
        assert_eq!(latency_bin(30_001), LATENCY_BOUNDS_MS.len());
        assert_eq!(bin_bound(latency_bin(120)), Some(150));
        assert_eq!(bin_bound(LATENCY_BOUNDS_MS.len()), None);
    }

    #[test]
    fn the_record_counts_failures_in_a_row_and_a_success_resets_them() {
        let mut record = FailureRecord::default();
        record.apply(&attempt("sub_1", false, 5, 100));
        record.apply(&attempt("sub_1", false, 5, 160));
        assert_eq!(record.consecutive_failures, 2);
        assert_eq!(record.failing_since_ms, Some(100_000), "from the first of the run");
        assert_eq!(record.last_failure_ms, Some(160_000));
        assert_eq!(record.last_failure_status, Some(503));
        record.apply(&attempt("sub_1", true, 5, 200));
        assert_eq!(record.consecutive_failures, 0);
        assert_eq!(record.failing_since_ms, None);
        assert_eq!(record.last_success_ms, Some(200_000));
        assert_eq!(record.last_failure_ms, Some(160_000), "the last failure stays known");
    }

    #[test]
    fn rollups_group_by_subscription_minute_and_bin_and_percentiles_read_them() {
        let batch = [
            attempt("sub_1", true, 4, 60),
            attempt("sub_1", false, 4, 119),
            attempt("sub_1", true, 120, 120),
            attempt("sub_2", true, 4, 60),
        ];
        let rows = rollups(&batch);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!((rows[0].minute, rows[0].attempts, rows[0].successes), (1, 2, 1));
        let mut totals = Totals::default();
        for row in rows.iter().filter(|r| r.subscription_id.as_str() == "sub_1") {
            totals.add(row.latency_bin, row.attempts, row.successes);
        }
        assert_eq!((totals.attempts, totals.successes), (3, 2));
        assert_eq!(totals.percentile(0.5), Some(Some(5)));
        assert_eq!(totals.percentile(0.99), Some(Some(150)));
        assert_eq!(Totals::default().percentile(0.5), None);
    }
}
