//! Per-subscription admission: the rate limit (governor) and the in-flight
//! cap that a delivery waits for, and the lanes that keep an `ordered`
//! subscription's events of one key in order. One dispatcher owns a
//! subscription at a time (its deliveries are keyed by subscription id), so
//! limits kept here hold across replicas.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::domain::{RateLimit, Subscription, SubscriptionId};

const LANE_SWEEP_AT: usize = 1024;
/// Requests under way per subscription when it sets no `max_in_flight`: a
/// hanging endpoint then ties up this many connections, not thousands.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

/// Deliveries of one subscription that may wait for its gate before a
/// struggling subscription's backlog is parked in a retry tier.
const MAX_WAITING: usize = 512;
/// An attempt this slow counts against the endpoint.
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);
/// Each attempt's weight in the share of bad (failed or slow) attempts, in
/// thousandths: about the last 10 attempts count. One slow answer from a
/// loaded but healthy endpoint must not park its whole backlog.
const BAD_WEIGHT: u32 = 100;
/// The share of bad attempts (thousandths) from which an endpoint struggles.
const STRUGGLING_FROM: u32 = 500;
/// The longest a rate limit may hold a subscription's backlog in memory.
const MAX_GATE_WAIT: Duration = Duration::from_secs(10);

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn scopeguard(counter: &AtomicUsize) -> WaitingGuard<'_> {
    WaitingGuard(counter)
}

#[derive(Default)]
pub struct Gates {
    gates: Mutex<HashMap<SubscriptionId, Arc<Gate>>>,
}

pub struct Gate {
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<u32>,
    limiter: Option<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Recent attempts' share that failed or were slow, in thousandths
    /// (an exponentially weighted average).
    bad_share: AtomicU32,
    /// The last job queued per key: the next one waits for it.
    lanes: Mutex<HashMap<Vec<u8>, oneshot::Receiver<()>>>,
}

/// Admission to send one request; dropping it frees the in-flight slot.
pub struct Pass {
    _permit: Option<OwnedSemaphorePermit>,
    /// The rate limit made this request wait.
    pub rate_limited: bool,
}

/// A place in a key's lane: `wait` until the job ahead is done; dropping the
/// turn lets the next job go.
pub struct Turn {
    ahead: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    pub async fn wait(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            // An error means the job ahead was dropped: it is done too.
            let _ = ahead.await;
        }
    }
}

impl Gates {
    /// The gate of a subscription, rebuilt when its limits changed.
    pub fn of(&self, subscription: &Subscription) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&subscription.id) {
            if gate.rate_limit == subscription.rate_limit
                && gate.max_in_flight == subscription.max_in_flight
            {
                return Arc::clone(gate);
            }
        }
        let gate = Arc::new(Gate::new(subscription.rate_limit, subscription.max_in_flight));
        gates.insert(subscription.id.clone(), Arc::clone(&gate));
        gate
    }
}

impl Gate {
    fn new(rate_limit: Option<RateLimit>, max_in_flight: Option<u32>) -> Self {
        let limiter = rate_limit.and_then(|limit| {
            let per_second = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst.max(1))?;
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        let cap = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) as usize;
        let in_flight = Arc::new(Semaphore::new(cap));
        Self {
            rate_limit,
            max_in_flight,
            limiter,
            in_flight,
            waiting: AtomicUsize::new(0),
            bad_share: AtomicU32::new(0),
            lanes: Mutex::default(),
        }
    }

    /// Waits for an in-flight slot, then for the rate limit.
    pub async fn admit(&self) -> Pass {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, also when it is dropped.
        let _waiting = scopeguard(&self.waiting);
        let permit = Arc::clone(&self.in_flight).acquire_owned().await.ok();
        let mut rate_limited = false;
        if let Some(limiter) = &self.limiter {
            // A passing check takes its cell; only a refused one waits.
            if limiter.check().is_err() {
                rate_limited = true;
                limiter.until_ready().await;
            }
        }
        Pass { _permit: permit, rate_limited }
    }

    /// Notes how the last attempt went.
    pub fn record(&self, succeeded: bool, took: Duration) {
        let bad = if !succeeded || took >= SLOW_ATTEMPT { 1000 } else { 0 };
        let _ = self.bad_share.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |share| {
            Some((share * (1000 - BAD_WEIGHT) + bad * BAD_WEIGHT) / 1000)
        });
    }

    fn is_struggling(&self) -> bool {
        self.bad_share.load(Ordering::Relaxed) >= STRUGGLING_FROM
    }

    /// Whether this subscription's backlog should leave the dispatcher's
    /// in-flight budget for a while: many deliveries wait, and they will not
    /// go soon (its endpoint is failing or slow, or its rate limit holds
    /// them back for longer than `MAX_GATE_WAIT`).
    pub fn is_behind(&self) -> bool {
        let waiting = self.waiting.load(Ordering::Relaxed);
        let rate_bound = self.rate_limit.is_some_and(|r| {
            waiting as f64 > f64::from(r.per_second) * MAX_GATE_WAIT.as_secs_f64()
        });
        waiting >= MAX_WAITING && (self.is_struggling() || rate_bound)
    }

    /// Takes the next place in the lane of `key`; call in the order the
    /// events were read.
    pub fn queue(&self, key: &[u8]) -> Turn {
        let (done, next) = oneshot::channel();
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        // Lanes whose last job finished are dropped now and then, so they do
        // not pile up; scanning on every call would cost O(keys).
        if lanes.len() >= LANE_SWEEP_AT {
            lanes.retain(|_, last| {
                matches!(last.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let ahead = lanes.insert(key.to_vec(), next);
        Turn { ahead, _done: done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lanes_release_in_queue_order() {
        let gate = Gate::new(None, None);
        let mut first = gate.queue(b"k");
        let mut second = gate.queue(b"k");
        let mut other_key = gate.queue(b"other");
        first.wait().await;
        other_key.wait().await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), second.wait()).await;
        assert!(waiting.is_err(), "the second job waits for the first");
        drop(first);
        second.wait().await;
    }

    #[test]
    fn only_a_struggling_or_rate_bound_backlog_is_behind() {
        let gate = Gate::new(None, None);
        gate.waiting.store(MAX_WAITING, Ordering::Relaxed);
        assert!(!gate.is_behind(), "a healthy endpoint works through its backlog");
        gate.record(true, SLOW_ATTEMPT);
        gate.record(false, Duration::from_millis(5));
        assert!(!gate.is_behind(), "a slow or failed attempt now and then is no trouble");
        for _ in 0..8 {
            gate.record(false, Duration::from_millis(5));
        }
        assert!(gate.is_behind(), "a failing endpoint's backlog is parked");
        for _ in 0..8 {
            gate.record(true, Duration::from_millis(5));
        }
        assert!(!gate.is_behind(), "recovered");
        for _ in 0..8 {
            gate.record(true, SLOW_ATTEMPT);
        }
        assert!(gate.is_behind(), "a slow endpoint's backlog is parked");

        let limited = Gate::new(Some(RateLimit { per_second: 10, burst: 10 }), None);
        limited.waiting.store(MAX_WAITING, Ordering::Relaxed);
        assert!(limited.is_behind(), "512 waiting at 10/s is over 10 s of backlog");
        limited.waiting.store(MAX_WAITING - 1, Ordering::Relaxed);
        assert!(!limited.is_behind());
    }

    #[tokio::test]
    async fn in_flight_cap_holds() {
        let gate = Gate::new(None, Some(2));
        let a = gate.admit().await;
        let _b = gate.admit().await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), gate.admit()).await;
        assert!(third.is_err(), "a third request waits");
        drop(a);
        let _c = gate.admit().await;
    }
}
