//! Per-subscription admission: the rate limit (governor) and the in-flight
//! cap a delivery waits for, the lanes that keep an `ordered` subscription's
//! events of one key in order, and what the subscription holds in the
//! deliver stage in every state (waiting on a lane or the gate, in flight),
//! with how healthy its endpoint looks. One dispatcher owns a subscription
//! at a time (its deliveries are keyed by subscription id), so limits kept
//! here hold across replicas.
//!
//! A subscription whose endpoint is stalled, struggling or rate bound, or
//! that asked for a pause (`Retry-After`), has its backlog parked in a retry
//! tier (see `deliver`): what it holds here stays small, so it can never
//! take the stage's budget whole.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::budget::Pressure;
use super::circuit::{Admission, Circuit, CircuitPolicy, Transition};
use super::lanes::{Lanes, Turn};
use super::parked_lanes::ParkedLanes;
use crate::domain::{
    ParkReason, RateLimit, Subscription, SubscriptionId, SubscriptionStatus, TenantId,
};

/// Requests under way per subscription when it sets no `max_in_flight`: a
/// hanging endpoint then ties up this many connections, not thousands.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

/// An attempt this slow counts against the endpoint. Fast failures do not:
/// they hold no capacity (their retries go to a tier at once).
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);
/// Each attempt's weight in the share of slow attempts, in thousandths:
/// about the last 10 attempts count. One slow answer from a loaded but
/// healthy endpoint must not park its whole backlog.
const BAD_WEIGHT: u32 = 100;
/// The share of slow attempts (thousandths) from which an endpoint struggles.
const STRUGGLING_FROM: u32 = 500;
/// Requests under way and none answered for this long: the endpoint stalls
/// (it just started hanging; no attempt has failed yet). As long as a slow
/// attempt: on a saturated machine a healthy endpoint's answers can be a
/// few hundred milliseconds apart.
const STALL_AFTER: Duration = SLOW_ATTEMPT;
/// The longest a rate limit may hold a subscription's backlog in memory.
const MAX_GATE_WAIT: Duration = Duration::from_secs(10);
/// An unhealthy subscription keeps at most this many deliveries (or its
/// in-flight cap, when larger) waiting besides those in flight; the rest is
/// parked.
const PARK_BACKLOG: usize = 64;
/// The least a subscription may hold: its budget is four rounds of its
/// in-flight cap, and at least this.
const MIN_SUBSCRIPTION_BUDGET: usize = 256;

/// Limits of what tenants and subscriptions hold in the deliver stage.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    /// Records one tenant's subscriptions may hold together.
    pub tenant: usize,
    /// The highest in-flight cap a subscription gets, whatever it asks.
    pub max_in_flight: u32,
    /// Records the whole stage may hold: tenants' shares apply once it
    /// holds half of it (while it has room, a busy tenant may use it).
    pub stage: usize,
}

#[derive(Debug, Default)]
pub struct Gates {
    /// When each subscription's circuit opens.
    circuit: CircuitPolicy,
    gates: Mutex<HashMap<SubscriptionId, Arc<Gate>>>,
    /// Open circuits closed because their subscription was made active
    /// again, not yet told to the metrics (`take_reset_circuits`).
    reset_open: AtomicUsize,
    tenants: Mutex<HashMap<TenantId, Arc<TenantLoad>>>,
    /// What every tenant holds together.
    stage: Arc<AtomicUsize>,
}

/// What one tenant's subscriptions hold.
#[derive(Debug)]
pub struct TenantLoad {
    held: AtomicUsize,
    budget: usize,
    /// What the stage holds, and from how much on tenants are held to
    /// their shares.
    stage: Arc<AtomicUsize>,
    contended_from: usize,
}

impl TenantLoad {
    /// Over its share while the stage is contended: work-conserving, so a
    /// lone busy tenant is not paused while the stage has room.
    pub fn is_over(&self) -> bool {
        self.held.load(Ordering::Acquire) >= self.budget
            && self.stage.load(Ordering::Acquire) >= self.contended_from
    }
}

impl Pressure for TenantLoad {
    /// At half its share, or once the stage is no longer contended: a
    /// paused partition refetches on resume, so what is left must keep the
    /// tenant's endpoints busy meanwhile.
    fn relieved(&self) -> bool {
        self.held.load(Ordering::Acquire) <= self.budget / 2
            || self.stage.load(Ordering::Acquire) < self.contended_from / 2
    }
}

/// The limits a gate applies, replaced whole when the subscription's change.
#[derive(Debug)]
struct Limits {
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<u32>,
    cap: usize,
    limiter: Option<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
}

impl Limits {
    fn new(rate_limit: Option<RateLimit>, max_in_flight: Option<u32>, ceiling: u32) -> Self {
        let limiter = rate_limit.and_then(|limit| {
            let per_second = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst.max(1))?;
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        let cap = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).clamp(1, ceiling.max(1)) as usize;
        Self { rate_limit, max_in_flight, cap, limiter, in_flight: Arc::new(Semaphore::new(cap)) }
    }
}

#[derive(Debug)]
pub struct Gate {
    limits: RwLock<Arc<Limits>>,
    tenant: Arc<TenantLoad>,
    /// Deliveries held in the stage in any state.
    held: AtomicUsize,
    /// Waiting for an in-flight slot or the rate limit.
    waiting: AtomicUsize,
    /// Requests under way.
    active: AtomicUsize,
    /// Recent attempts' share that were slow, in thousandths
    /// (an exponentially weighted average).
    bad_share: AtomicU32,
    /// When a request last came back, or went out while none was under way
    /// (milliseconds on the gate's clock).
    last_progress_ms: AtomicI64,
    /// No request before this time (Unix milliseconds): the endpoint asked
    /// for a pause with `Retry-After`.
    not_before_ms: AtomicI64,
    /// Woken when what waits here must look again (the subscription
    /// changed, or turned unhealthy).
    recheck: Notify,
    /// The subscription's `updated_at` the gate last saw, in microseconds.
    seen_version: AtomicI64,
    /// Whether the last delivery that left was parked (to log the change once).
    parking: AtomicBool,
    /// Whether the subscription was active when the gate last looked: made
    /// active again, its circuit starts closed.
    seen_active: AtomicBool,
    lanes: Lanes<Vec<u8>>,
    /// The ordered lanes whose backlog waits in a retry tier.
    pub parked_lanes: ParkedLanes,
    pub circuit: Circuit,
    clock: Instant,
}

/// Admission to send one request; dropping it frees the in-flight slot.
#[derive(Debug)]
pub struct Pass<'a> {
    _permit: Option<OwnedSemaphorePermit>,
    gate: &'a Gate,
    /// The rate limit made this request wait.
    pub rate_limited: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A delivery's share of what its subscription and tenant hold.
#[derive(Debug)]
pub struct Hold {
    gate: Arc<Gate>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.gate.held.fetch_sub(1, Ordering::AcqRel);
        self.gate.tenant.held.fetch_sub(1, Ordering::AcqRel);
        self.gate.tenant.stage.fetch_sub(1, Ordering::AcqRel);
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gates {
    pub fn new(circuit: CircuitPolicy) -> Self {
        Self { circuit, ..Self::default() }
    }

    /// The gate of a subscription; its limits follow the subscription's.
    pub fn of(&self, subscription: &Subscription, shares: Shares) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&subscription.id) {
            if gate.follow(subscription, shares) {
                self.reset_open.fetch_add(1, Ordering::AcqRel);
            }
            return Arc::clone(gate);
        }
        let tenant = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            let load = tenants.entry(subscription.tenant_id.clone()).or_insert_with(|| {
                Arc::new(TenantLoad {
                    held: AtomicUsize::new(0),
                    budget: shares.tenant.max(1),
                    stage: Arc::clone(&self.stage),
                    contended_from: shares.stage / 2,
                })
            });
            Arc::clone(load)
        };
        let gate = Arc::new(Gate::new(subscription, shares, tenant, self.circuit));
        gates.insert(subscription.id.clone(), Arc::clone(&gate));
        gate
    }

    /// Lets every gate see its subscription as it is now (for a status
    /// change while nothing of it was held).
    pub fn follow_all(
        &self,
        current: impl Fn(&SubscriptionId) -> Option<Subscription>,
        shares: Shares,
    ) {
        let gates: Vec<(SubscriptionId, Arc<Gate>)> = {
            let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            gates.iter().map(|(id, gate)| (id.clone(), Arc::clone(gate))).collect()
        };
        for (id, gate) in gates {
            if current(&id).is_some_and(|subscription| gate.follow(&subscription, shares)) {
                self.reset_open.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// How many open circuits were closed by a re-enable since last asked.
    pub fn take_reset_circuits(&self) -> usize {
        self.reset_open.swap(0, Ordering::AcqRel)
    }

    /// Every gate with something held, for the sweep.
    pub fn busy(&self) -> Vec<(SubscriptionId, Arc<Gate>)> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // Gates holding nothing are forgotten now and then; a gate is made
        // again on the next delivery (its health starts afresh).
        if gates.len() > 4096 {
            // A gate with parked lanes keeps them: their order lives here.
            // One whose circuit is not closed keeps it: forgotten, its
            // endpoint would be sent the backlog at once (and the open
            // circuits gauge would never come down).
            gates.retain(|_, gate| {
                gate.held() > 0
                    || Arc::strong_count(gate) > 1
                    || gate.parked_lanes.any()
                    || !gate.circuit.is_closed()
            });
        }
        gates
            .iter()
            .filter(|(_, gate)| gate.held() > 0)
            .map(|(id, gate)| (id.clone(), Arc::clone(gate)))
            .collect()
    }
}

impl Gate {
    fn new(
        subscription: &Subscription,
        shares: Shares,
        tenant: Arc<TenantLoad>,
        circuit: CircuitPolicy,
    ) -> Self {
        let limits =
            Limits::new(subscription.rate_limit, subscription.max_in_flight, shares.max_in_flight);
        Self {
            limits: RwLock::new(Arc::new(limits)),
            tenant,
            held: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            bad_share: AtomicU32::new(0),
            last_progress_ms: AtomicI64::new(0),
            not_before_ms: AtomicI64::new(i64::MIN),
            recheck: Notify::new(),
            seen_version: AtomicI64::new(subscription.updated_at.timestamp_micros()),
            parking: AtomicBool::new(false),
            seen_active: AtomicBool::new(subscription.status == SubscriptionStatus::Active),
            lanes: Lanes::default(),
            parked_lanes: ParkedLanes::default(),
            circuit: Circuit::new(circuit),
            clock: Instant::now(),
        }
    }

    /// Takes the subscription's new limits, keeping what is counted (what
    /// is held, health, lanes): requests under way on the old cap finish.
    /// Made active again, its circuit is reset: answers whether that closed
    /// an open one.
    fn follow(&self, subscription: &Subscription, shares: Shares) -> bool {
        let active = subscription.status == SubscriptionStatus::Active;
        let mut closed = false;
        if active && !self.seen_active.swap(active, Ordering::AcqRel) {
            closed = self.circuit.reset();
        } else if !active {
            self.seen_active.store(false, Ordering::Release);
        }
        let current = self.limits();
        if current.rate_limit != subscription.rate_limit
            || current.max_in_flight != subscription.max_in_flight
        {
            let limits = Limits::new(
                subscription.rate_limit,
                subscription.max_in_flight,
                shares.max_in_flight,
            );
            if let Ok(mut slot) = self.limits.write() {
                *slot = Arc::new(limits);
            }
        }
        closed
    }

    fn limits(&self) -> Arc<Limits> {
        self.limits.read().map(|l| Arc::clone(&l)).unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Counts one more delivery held by this subscription and its tenant.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.held.fetch_add(1, Ordering::AcqRel);
        self.tenant.held.fetch_add(1, Ordering::AcqRel);
        self.tenant.stage.fetch_add(1, Ordering::AcqRel);
        Hold { gate: Arc::clone(self) }
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub fn tenant(&self) -> &Arc<TenantLoad> {
        &self.tenant
    }

    /// What this subscription may hold: four rounds of its in-flight cap,
    /// within its tenant's share.
    pub fn budget(&self) -> usize {
        (self.limits().cap * 4).max(MIN_SUBSCRIPTION_BUDGET).min(self.tenant.budget.max(1))
    }

    pub fn is_over_budget(&self) -> bool {
        self.held() > self.budget()
    }

    /// Waits for an in-flight slot, then for the rate limit. Cancel-safe.
    pub async fn admit(&self) -> Pass<'_> {
        let limits = self.limits();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = WaitingGuard(&self.waiting);
        let permit = Arc::clone(&limits.in_flight).acquire_owned().await.ok();
        let mut rate_limited = false;
        if let Some(limiter) = &limits.limiter {
            // A passing check takes its cell; only a refused one waits.
            if limiter.check().is_err() {
                rate_limited = true;
                limiter.until_ready().await;
            }
        }
        drop(waiting);
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            // Nothing was under way: a stall is counted from now.
            self.last_progress_ms.store(self.now_ms(), Ordering::Release);
        }
        Pass { _permit: permit, gate: self, rate_limited }
    }

    /// Notes how an attempt went (`succeeded`: the endpoint answered as a
    /// working one does); answers the circuit's change, if any.
    pub fn record(
        &self,
        succeeded: bool,
        first_attempt: bool,
        took: Duration,
    ) -> Option<Transition> {
        self.last_progress_ms.store(self.now_ms(), Ordering::Release);
        let bad = if took >= SLOW_ATTEMPT { 1000 } else { 0 };
        let _ = self.bad_share.fetch_update(Ordering::AcqRel, Ordering::Acquire, |share| {
            Some((share * (1000 - BAD_WEIGHT) + bad * BAD_WEIGHT) / 1000)
        });
        if succeeded && bad == 0 {
            self.parking.store(false, Ordering::Release);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let transition = self.circuit.record(succeeded, first_attempt, now_ms);
        if let Some(Transition::Opened { .. } | Transition::Reopened { .. }) = transition {
            // What waits here leaves for a retry tier.
            self.recheck.notify_waiters();
        }
        transition
    }

    /// The endpoint asked for a pause: nothing is sent before `until_ms`
    /// (Unix milliseconds), and what waits here looks again.
    pub fn hold_off(&self, until_ms: i64) {
        self.not_before_ms.fetch_max(until_ms, Ordering::AcqRel);
        self.recheck.notify_waiters();
    }

    /// `Retry-After`, or an open circuit, still in force at `now_ms`
    /// (Unix milliseconds): nothing is sent before the time answered.
    pub fn not_before(&self, now_ms: i64) -> Option<i64> {
        let mut at = self.not_before_ms.load(Ordering::Acquire);
        if let Admission::Open { until_ms } = self.circuit.admission(now_ms) {
            at = at.max(until_ms);
        }
        (at > now_ms).then_some(at)
    }

    /// Why this subscription's backlog should not wait here now, if it
    /// should not. `now_ms`: Unix milliseconds.
    pub fn unhealthy(&self, now_ms: i64) -> Option<ParkReason> {
        if self.not_before_ms.load(Ordering::Acquire) > now_ms {
            return Some(ParkReason::RetryAfter);
        }
        if self.circuit.holds_back(now_ms) {
            // Open, or half open with its probe under way or about to be.
            return Some(ParkReason::CircuitOpen);
        }
        let active = self.active.load(Ordering::Acquire);
        let since = self.now_ms() - self.last_progress_ms.load(Ordering::Acquire);
        if active > 0 && since >= STALL_AFTER.as_millis() as i64 {
            return Some(ParkReason::Stalled);
        }
        if self.bad_share.load(Ordering::Acquire) >= STRUGGLING_FROM {
            return Some(ParkReason::Struggling);
        }
        let waiting = self.waiting.load(Ordering::Acquire);
        let rate_bound = self.limits().rate_limit.is_some_and(|r| {
            waiting as f64 > f64::from(r.per_second) * MAX_GATE_WAIT.as_secs_f64()
        });
        rate_bound.then_some(ParkReason::RateBound)
    }

    /// Whether a delivery should leave now rather than wait here, and why:
    /// the endpoint asked for a pause, or it is unhealthy and more than a
    /// small backlog waits (more than one round of its in-flight cap).
    pub fn should_park(&self, now_ms: i64) -> Option<ParkReason> {
        let reason = self.unhealthy(now_ms)?;
        let backlog = self.held().saturating_sub(self.active.load(Ordering::Acquire));
        let allowed = self.limits().cap.max(PARK_BACKLOG);
        let always = matches!(reason, ParkReason::RetryAfter | ParkReason::CircuitOpen);
        (always || backlog > allowed).then_some(reason)
    }

    /// Marks a delivery parked; answers whether parking just began (to log
    /// it once, not per delivery).
    pub fn parked(&self) -> bool {
        !self.parking.swap(true, Ordering::AcqRel)
    }

    /// Wakes what waits here to look again.
    pub fn recheck(&self) {
        self.recheck.notify_waiters();
    }

    /// Completes when what waits here must look again.
    pub async fn rechecked(&self) {
        self.recheck.notified().await
    }

    /// Whether the subscription changed since the gate last looked.
    pub fn changed(&self, subscription: &Subscription) -> bool {
        let version = subscription.updated_at.timestamp_micros();
        self.seen_version.swap(version, Ordering::AcqRel) != version
    }

    /// Takes the next place in the lane of `key`; call in the order the
    /// events were read.
    pub fn queue(&self, key: &[u8]) -> Turn {
        self.lanes.queue(key.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARES: Shares = Shares { tenant: 2048, max_in_flight: 256, stage: 2048 };

    fn subscription(rate_limit: Option<RateLimit>, max_in_flight: Option<u32>) -> Subscription {
        let example = Subscription::example(TenantId::default_tenant(), "");
        Subscription { rate_limit, max_in_flight, ..example }
    }

    fn gate(rate_limit: Option<RateLimit>, max_in_flight: Option<u32>) -> Arc<Gate> {
        Gates::default().of(&subscription(rate_limit, max_in_flight), SHARES)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    #[test]
    fn idle_gates_are_forgotten_but_an_open_circuit_is_kept() {
        let gates = Gates::default();
        let open = subscription(None, None);
        let gate = gates.of(&open, SHARES);
        for _ in 0..5 {
            gate.record(false, true, Duration::from_millis(5));
        }
        assert_eq!(gate.should_park(now()), Some(ParkReason::CircuitOpen));
        drop(gate);
        let idle = subscription(None, None);
        drop(gates.of(&idle, SHARES));
        for _ in 0..4096 {
            drop(gates.of(&subscription(None, None), SHARES));
        }
        gates.busy();
        assert_eq!(gates.gates.lock().expect("gates").len(), 1, "the idle ones are forgotten");
        let gate = gates.of(&open, SHARES);
        assert_eq!(gate.should_park(now()), Some(ParkReason::CircuitOpen), "still open");
    }

    #[test]
    fn a_slow_endpoint_struggles_a_slow_answer_now_and_then_or_fast_failures_do_not() {
        let gate = gate(None, None);
        let _first: Vec<Hold> = (0..200).map(|_| gate.hold()).collect();
        assert_eq!(gate.should_park(now()), None, "a healthy endpoint works through its backlog");
        gate.record(true, true, SLOW_ATTEMPT);
        gate.record(true, true, Duration::from_millis(5));
        assert_eq!(gate.should_park(now()), None, "a slow attempt now and then is no trouble");
        for _ in 0..4 {
            gate.record(false, true, Duration::from_millis(5));
        }
        assert_eq!(gate.should_park(now()), None, "fast failures hold nothing up");
        gate.record(false, true, Duration::from_millis(5));
        assert_eq!(gate.should_park(now()), Some(ParkReason::CircuitOpen), "five open the circuit");
        let gate = self::gate(None, None);
        let holds: Vec<Hold> = (0..200).map(|_| gate.hold()).collect();
        for _ in 0..8 {
            gate.record(true, true, SLOW_ATTEMPT);
            gate.record(false, true, SLOW_ATTEMPT);
        }
        assert_eq!(gate.should_park(now()), Some(ParkReason::Struggling), "slow answers");
        for _ in 0..8 {
            gate.record(true, true, Duration::from_millis(5));
        }
        assert_eq!(gate.should_park(now()), None, "recovered");
        for _ in 0..8 {
            gate.record(true, true, SLOW_ATTEMPT);
        }
        assert_eq!(gate.should_park(now()), Some(ParkReason::Struggling), "slow successes");
        drop(holds);
        assert_eq!(gate.should_park(now()), None, "a small backlog waits even then");
        assert_eq!(gate.unhealthy(now()), Some(ParkReason::Struggling));
    }

    #[tokio::test]
    async fn requests_under_way_with_no_answer_stall() {
        let gate = gate(None, Some(1));
        let _holds: Vec<Hold> = (0..100).map(|_| gate.hold()).collect();
        let pass = gate.admit().await;
        assert_eq!(gate.unhealthy(now()), None, "just sent");
        std::thread::sleep(STALL_AFTER + Duration::from_millis(20));
        assert_eq!(gate.should_park(now()), Some(ParkReason::Stalled));
        gate.record(true, true, STALL_AFTER);
        assert_eq!(gate.unhealthy(now()), None, "an answer came back");
        drop(pass);
        std::thread::sleep(STALL_AFTER + Duration::from_millis(20));
        assert_eq!(gate.unhealthy(now()), None, "nothing under way is no stall");
    }

    #[test]
    fn a_rate_bound_backlog_and_retry_after_park() {
        let limited = gate(Some(RateLimit { per_second: 10, burst: 10 }), None);
        limited.waiting.store(101, Ordering::Relaxed);
        let _holds: Vec<Hold> = (0..200).map(|_| limited.hold()).collect();
        assert_eq!(limited.should_park(now()), Some(ParkReason::RateBound), "over 10 s of backlog");
        limited.waiting.store(100, Ordering::Relaxed);
        assert_eq!(limited.should_park(now()), None);

        let asked = gate(None, None);
        let _one = asked.hold();
        asked.hold_off(now() + 60_000);
        assert_eq!(asked.should_park(now()), Some(ParkReason::RetryAfter), "even one delivery");
        assert!(asked.not_before(now()).is_some());
        assert_eq!(asked.not_before(now() + 61_000), None);
    }

    #[test]
    fn budgets_count_every_delivery_held_and_the_tenants_share() {
        let gates = Gates::default();
        let a = gates.of(&subscription(None, Some(256)), SHARES);
        let b = gates.of(&subscription(None, Some(1)), SHARES);
        assert_eq!(a.budget(), 1024, "four rounds of its cap");
        assert_eq!(b.budget(), MIN_SUBSCRIPTION_BUDGET);
        let holds: Vec<Hold> = (0..1025).map(|_| a.hold()).collect();
        assert!(a.is_over_budget() && !b.is_over_budget());
        let more: Vec<Hold> = (0..1023).map(|_| b.hold()).collect();
        assert!(a.tenant().is_over(), "the tenant's share is shared by its subscriptions");
        assert!(!a.tenant().relieved());
        drop((holds, more));
        assert!(a.tenant().relieved() && !a.is_over_budget());
    }

    #[test]
    fn the_in_flight_cap_is_bounded_by_the_operators_ceiling() {
        let gate = gate(None, Some(10_000));
        assert_eq!(gate.limits().cap, 256);
    }

    #[tokio::test]
    async fn in_flight_cap_holds_and_follows_a_change() {
        let gates = Gates::default();
        let mut s = subscription(None, Some(2));
        let gate = gates.of(&s, SHARES);
        let a = gate.admit().await;
        let _b = gate.admit().await;
        let third = tokio::time::timeout(Duration::from_millis(20), gate.admit()).await;
        assert!(third.is_err(), "a third request waits");
        drop(a);
        let _c = gate.admit().await;
        s.max_in_flight = Some(3);
        let same = gates.of(&s, SHARES);
        assert!(Arc::ptr_eq(&gate, &same), "one gate per subscription, whatever its limits");
        let _d = tokio::time::timeout(Duration::from_millis(100), same.admit())
            .await
            .expect("the new cap applies");
    }
}
