//! The delivery stage: for each delivery record, take a place in what its
//! subscription holds, wait for its gate (ordered lane, in-flight cap, rate
//! limit), make the attempt, and carry out the policy's verdict: done, a
//! retry tier, the dead-letter topic, or (410) disable the subscription.
//!
//! Nothing long-lived stays here: a subscription that cannot take its
//! backlog now (stalled, struggling, rate bound, asked for a pause, over its
//! budget) has it parked in a retry tier, so that the partition's committed
//! offset moves on and the stage's budget stays with the healthy ones.
//! What waits here looks again when its subscription changes (paused,
//! deleted) or turns unhealthy.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::budget::Pressure;
use super::cache::{Freshness, Lookup, SubscriptionCache, STALE_RETRY};
use super::circuit::Transition;
use super::consume::{Begun, Handler};
use super::dlq::DeadLetters;
use super::gate::{Gate, Gates, Hold, Shares};
use super::lanes::{Lanes, Turn};
use super::offsets::{Lease, Ticket};
use super::parked_lanes::{Place, Slot};
use super::policy::{self, Clock, RetryPolicy, Verdict};
use super::replay::ReplayLimits;
use super::webhook::Webhooks;
use crate::delivery::Target;
use crate::domain::operational::{DisabledBecause, Kind, Operational};
use crate::domain::{CircuitRecord, DeadReason, ParkReason, SubscriptionId, SubscriptionStatus};
use crate::kafka::delivery::{Delivery, LaneSeq};
use crate::kafka::envelope::RecordPosition;
use crate::kafka::operational::OperationalEvents;
use crate::kafka::Producer;
use crate::metrics::{InFlight, Metrics};
use crate::store::Store;
use crate::trace::TraceHeaders;

/// How often gates are looked at for changed or unhealthy subscriptions.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Deliver {
    pub cache: Arc<SubscriptionCache>,
    pub store: Arc<dyn Store>,
    pub gates: Gates,
    pub shares: Shares,
    pub webhooks: Webhooks,
    pub producer: Producer,
    pub policy: RetryPolicy,
    pub dead_letters: DeadLetters,
    /// Tells the tenant of circuits opened and closed, and of a 410 disable.
    pub operational: OperationalEvents,
    /// Rates of bulk replays, per job and subscription.
    pub replay_limits: ReplayLimits,
    /// Deliveries whose subscription the copy does not know yet, per
    /// subscription in read order (later ones queue behind).
    pub unknown: Lanes<SubscriptionId>,
    /// Cancelled at shutdown: work that has not started is handed on.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// How a delivery left the stage.
enum Outcome {
    /// Done with (delivered, dead-lettered or dropped); whether its record
    /// may be committed.
    Finished(bool),
    /// Still to come (parked, retried, or left to be read again), or
    /// nothing more for its lane; whether its record may be committed.
    Left(bool),
}

impl Outcome {
    fn committed(&self) -> bool {
        match self {
            Self::Finished(committed) | Self::Left(committed) => *committed,
        }
    }
}

/// How a wait ended before the attempt.
enum Interrupted {
    /// The partition went to another dispatcher.
    Revoked,
    /// Shutdown began.
    Shutdown,
}

impl Interrupted {
    fn outcome(self, ordered: bool) -> policy::Outcome<'static> {
        match self {
            Self::Revoked => policy::Outcome::Revoked,
            Self::Shutdown => policy::Outcome::ShuttingDown { ordered },
        }
    }
}

/// What a delivery holds where a verdict is carried out: its subscription
/// as last seen, its gate, and for an `ordered` one its parked lane and its
/// turn in the lane.
struct Holding<'a> {
    target: &'a Target,
    gate: &'a Gate,
    lane: Option<Slot>,
    turn: &'a mut Option<Turn>,
}

/// A wait that ended early.
enum Woken {
    Interrupted(Interrupted),
    /// The subscription changed or turned unhealthy: look again.
    Recheck,
}

impl Handler for Deliver {
    async fn begin(self: &Arc<Self>, message: &BorrowedMessage<'_>, ticket: &Ticket) -> Begun {
        let position = RecordPosition::of(message);
        let stage = Arc::clone(self);
        let delivery = match Delivery::decode(message.headers(), message.payload(), &position) {
            Ok(delivery) => delivery,
            Err(error) => {
                let reason = error.to_string();
                let message = message.detach();
                return Some(Box::pin(
                    async move { stage.dead_letters.poison(&message, &reason).await },
                ) as _)
                .into();
            }
        };
        let lease = ticket.lease();
        let id = &delivery.subscription_id;
        let lookup = match self.unknown.is_busy(id) {
            // Behind others of its subscription that wait for the database.
            true => Lookup::Unknown,
            false => self.cache.peek(id),
        };
        match lookup {
            Lookup::Found(target) => self.start(delivery, target, lease),
            Lookup::Deleted => {
                tracing::debug!(subscription_id = %id, "delivery for a deleted subscription dropped");
                None.into()
            }
            Lookup::Unknown => {
                let turn = self.unknown.queue(id.clone());
                Some(Box::pin(stage.when_known(delivery, lease, turn)) as _).into()
            }
        }
    }
}

impl Deliver {
    /// Takes the delivery's place (in read order: lanes, what is held) and
    /// decides whether it may wait here at all.
    fn start(
        self: &Arc<Self>,
        delivery: Delivery,
        target: Arc<Target>,
        lease: Arc<Lease>,
    ) -> Begun {
        let gate = self.gates.of(&target.subscription, self.shares);
        let hold = gate.hold();
        let turn = match (&target.subscription.ordered, &delivery.event.key) {
            (true, Some(key)) => Some(gate.queue(key)),
            _ => None,
        };
        let mut pressure: Option<Arc<dyn Pressure>> = None;
        let over = gate.is_over_budget() || gate.tenant().is_over();
        if over {
            match (turn.is_some(), gate.unhealthy(Utc::now().timestamp_millis())) {
                // It will not go soon, and nothing needs it here: off it goes.
                (false, Some(_)) => {
                    let stage = Arc::clone(self);
                    return Some(Box::pin(async move {
                        let mut delivery = delivery;
                        let at =
                            Holding { target: &target, gate: &gate, lane: None, turn: &mut None };
                        let parked = stage.park(&mut delivery, at, ParkReason::OverBudget, hold);
                        parked.await.committed()
                    }) as _)
                    .into();
                }
                // Healthy (or ordered) and its tenant holds all it may: the
                // partition waits until the tenant's backlog drains.
                _ if gate.tenant().is_over() => pressure = Some(Arc::clone(gate.tenant()) as _),
                // A healthy subscription over its own budget, within its
                // tenant's share, goes on: pausing its partition each time
                // costs a refetch (librdkafka drops what it prefetched for a
                // paused partition), and a fast endpoint then starves.
                _ => {}
            }
        }
        let stage = Arc::clone(self);
        let job = Box::pin(stage.work(delivery, target, gate, hold, turn, lease));
        Begun { job: Some(job), pressure }
    }

    /// A delivery whose subscription the copy does not know: wait for a
    /// refresh that succeeds, rather than take it for deleted.
    async fn when_known(
        self: Arc<Self>,
        delivery: Delivery,
        lease: Arc<Lease>,
        mut turn: Turn,
    ) -> bool {
        if self.interruptible(&lease, turn.wait()).await.is_err() {
            return false;
        }
        let target = loop {
            match self.cache.lookup(&delivery.subscription_id).await {
                (Lookup::Found(target), _) => break target,
                (Lookup::Deleted, _) => return true,
                (Lookup::Unknown, Freshness::Fresh) => {
                    tracing::warn!(subscription_id = %delivery.subscription_id, "delivery for a subscription that does not exist dropped");
                    return true;
                }
                (Lookup::Unknown, Freshness::Stale) => {
                    // Not committed: read again after a restart.
                    let wait = tokio::time::sleep(STALE_RETRY);
                    if self.interruptible(&lease, wait).await.is_err() {
                        return false;
                    }
                }
            }
        };
        let gate = self.gates.of(&target.subscription, self.shares);
        let hold = gate.hold();
        let lane = match (&target.subscription.ordered, &delivery.event.key) {
            (true, Some(key)) => Some(gate.queue(key)),
            _ => None,
        };
        // Its lane place is taken: later ones of its subscription may go.
        drop(turn);
        self.work(delivery, target, gate, hold, lane, lease).await
    }

    async fn work(
        self: Arc<Self>,
        mut delivery: Delivery,
        target: Arc<Target>,
        gate: Arc<Gate>,
        hold: Hold,
        mut turn: Option<Turn>,
        lease: Arc<Lease>,
    ) -> bool {
        let lane = match (&turn, &delivery.event.key) {
            (Some(_), Some(key)) => Some(Slot::of(key)),
            _ => None,
        };
        if let Some(turn) = &mut turn {
            loop {
                match self.wake_on_change(&lease, &gate, turn.wait()).await {
                    Ok(()) => break,
                    Err(Woken::Interrupted(why)) => {
                        let outcome = why.outcome(true);
                        let verdict = self.policy.verdict(&outcome, &delivery, read_clock());
                        let at = Holding { target: &target, gate: &gate, lane, turn: &mut None };
                        let left = self.carry_out(verdict, &mut delivery, at, None).await;
                        return left.committed();
                    }
                    // Paused or deleted while it waited in its lane?
                    Err(Woken::Recheck) => match self.cache.peek(&delivery.subscription_id) {
                        Lookup::Deleted => return true,
                        Lookup::Found(now)
                            if now.subscription.status != SubscriptionStatus::Active =>
                        {
                            break
                        }
                        _ => {}
                    },
                }
            }
        }
        let outcome =
            self.attempts(&mut delivery, target, &gate, hold, &mut turn, &lease, lane).await;
        match outcome {
            Outcome::Finished(committed) => {
                // Before its turn ends: the next of its key finds it done.
                if let Some(slot) = lane {
                    gate.parked_lanes.finished(slot, delivery.lane, Utc::now().timestamp_millis());
                }
                committed
            }
            Outcome::Left(committed) => committed,
        }
    }

    /// Attempts the delivery until it is done or leaves: `lane`, the parked
    /// lane of an `ordered` delivery, whose `turn` it holds. Each step asks
    /// the policy for a verdict and carries it out.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        delivery: &mut Delivery,
        mut target: Arc<Target>,
        gate: &Arc<Gate>,
        hold: Hold,
        turn: &mut Option<Turn>,
        lease: &Arc<Lease>,
        lane: Option<Slot>,
    ) -> Outcome {
        let ordered = turn.is_some();
        if let Some(slot) = lane {
            match gate.parked_lanes.place(slot, delivery.lane, Utc::now().timestamp_millis()) {
                Place::Go => {}
                Place::Done => {
                    tracing::debug!(subscription_id = %delivery.subscription_id, event_id = %delivery.event.id, "a parked delivery read again after it was done; dropped");
                    return Outcome::Left(true);
                }
                Place::Behind { seq, tier, due_ms } => {
                    delivery.lane = Some(seq);
                    let outcome = policy::Outcome::BehindLane { tier, due_ms };
                    let verdict = self.policy.verdict(&outcome, delivery, read_clock());
                    if !matches!(verdict, Verdict::FollowLane { .. }) {
                        // Its lane's head is out in a tier: the next of its
                        // key waits for nothing of this one.
                        turn.take();
                    }
                    let at = Holding { target: &target, gate, lane, turn };
                    return self.carry_out(verdict, delivery, at, None).await;
                }
            }
        }
        loop {
            // The subscription as it is now: paused, changed or deleted meanwhile?
            match self.cache.peek(&delivery.subscription_id) {
                Lookup::Found(now) => target = now,
                Lookup::Deleted => return Outcome::Finished(true),
                // Known before; the copy forgets nothing without a tombstone.
                Lookup::Unknown => {}
            }
            let mut sending_to = Arc::clone(&target);
            // A replay may send to where the receiver moved.
            let mut destination_refused = false;
            if let Some(url) = delivery.replay.as_ref().and_then(|r| r.url.as_deref()) {
                match target.redirected(url) {
                    Some(redirected) => sending_to = Arc::new(redirected),
                    None => destination_refused = true,
                }
            }
            let clock = read_clock();
            let due =
                policy::Outcome::Due { status: target.subscription.status, destination_refused };
            let verdict = self.policy.verdict(&due, delivery, clock);
            if verdict != Verdict::Attempt {
                let at = Holding { target: &target, gate, lane, turn };
                return self.carry_out(verdict, delivery, at, None).await;
            }
            if let Some(reason) = gate.should_park(clock.now_ms) {
                let at = Holding { target: &target, gate, lane, turn };
                return self.park(delivery, at, reason, hold).await;
            }
            if let Some(limiter) = self.replay_limits.of(delivery) {
                if let Err(why) = self.interruptible(lease, limiter.until_ready()).await {
                    let verdict = self.policy.verdict(&why.outcome(ordered), delivery, clock);
                    let at = Holding { target: &target, gate, lane, turn };
                    return self.carry_out(verdict, delivery, at, None).await;
                }
            }
            let pass = match self.wake_on_change(lease, gate, gate.admit()).await {
                Ok(pass) => pass,
                Err(Woken::Recheck) => continue,
                Err(Woken::Interrupted(why)) => {
                    let verdict =
                        self.policy.verdict(&why.outcome(ordered), delivery, read_clock());
                    let at = Holding { target: &target, gate, lane, turn };
                    return self.carry_out(verdict, delivery, at, None).await;
                }
            };
            // Another receiver's answers say nothing about the subscription's.
            let redirected = delivery.replay.as_ref().is_some_and(|r| r.url.is_some());
            if !redirected && !gate.circuit.try_send(Utc::now().timestamp_millis()) {
                drop(pass);
                let at = Holding { target: &target, gate, lane, turn };
                return self.park(delivery, at, ParkReason::CircuitOpen, hold).await;
            }
            if pass.rate_limited {
                self.metrics.deliveries.rate_limited.inc();
            }
            let Some(_active) = lease.activate() else {
                gate.circuit.release_probe();
                return Outcome::Left(false);
            };
            let attempt = delivery.attempt;
            let span = tracing::debug_span!("deliver", otel.kind = "client", subscription_id = %delivery.subscription_id,
                event_id = %delivery.event.id, event_type = %delivery.event.event_type, attempt,
                http.response.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty);
            TraceHeaders::adopt(delivery.trace.as_ref(), &span);
            let in_flight = InFlight::enter(&self.metrics.in_flight);
            let started = tokio::time::Instant::now();
            let trace = TraceHeaders::onward(delivery.trace.as_ref(), &span);
            let result = self
                .webhooks
                .attempt(&delivery.event, &sending_to, attempt, trace)
                .instrument(span.clone())
                .await;
            let took = started.elapsed();
            drop(in_flight);
            self.metrics.attempt_duration.observe(took.as_secs_f64());
            if !redirected {
                // A deliberate answer about this event (a 4xx) is no sign of
                // a broken endpoint: only what retrying may cure counts.
                let answered = result.as_ref().map_or_else(|e| !e.is_retryable(), |()| true);
                if let Some(transition) = gate.record(answered, attempt == 1, took) {
                    self.circuit_changed(&sending_to, transition);
                }
            }
            drop(pass);
            let clock = read_clock();
            let outcome = policy::Outcome::Attempted { result: &result, redirected };
            let verdict = self.policy.verdict(&outcome, delivery, clock);
            // A pause the endpoint asked for holds the whole subscription.
            if let Some(until_ms) = outcome.pause_until(clock.now_ms) {
                gate.hold_off(until_ms);
            }
            delivery.first_attempt_ms.get_or_insert(clock.now_ms);
            match &result {
                Ok(()) => {
                    self.metrics.deliveries.success.inc();
                    // A producer's clock ahead of ours counts as no lag.
                    let lag = (Utc::now() - delivery.event.time).to_std().unwrap_or_default();
                    self.metrics.delivery_lag.observe(lag.as_secs_f64());
                }
                Err(error) => {
                    self.metrics.deliveries.failed.inc();
                    span.record("otel.status_code", "ERROR");
                    if let Some(status) = error.status() {
                        span.record("http.response.status_code", status);
                    }
                    delivery.attempt += 1;
                    delivery.last_status = error.status();
                    delivery.last_error = Some(error.to_string());
                }
            }
            let at = Holding { target: &target, gate, lane, turn };
            return self.carry_out(verdict, delivery, at, Some(clock.now_ms)).await;
        }
    }

    /// Runs `work` unless the partition is revoked or shutdown starts first.
    async fn interruptible<T>(
        &self,
        lease: &Lease,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Interrupted> {
        tokio::select! {
            biased;
            _ = lease.revoked().cancelled() => Err(Interrupted::Revoked),
            _ = self.shutdown.cancelled() => Err(Interrupted::Shutdown),
            done = work => Ok(done),
        }
    }

    /// Like `interruptible`, and also ends when the gate asks its waiters
    /// to look again.
    async fn wake_on_change<T>(
        &self,
        lease: &Lease,
        gate: &Gate,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Woken> {
        tokio::select! {
            biased;
            _ = lease.revoked().cancelled() => Err(Woken::Interrupted(Interrupted::Revoked)),
            _ = self.shutdown.cancelled() => Err(Woken::Interrupted(Interrupted::Shutdown)),
            _ = gate.rechecked() => Err(Woken::Recheck),
            done = work => Ok(done),
        }
    }

    /// Moves a delivery that will not go soon to a retry tier, without an
    /// attempt; its hold is given back once it is there. An `ordered` one
    /// (`lane`) parks its lane: later ones of its key follow it.
    async fn park(
        &self,
        delivery: &mut Delivery,
        at: Holding<'_>,
        reason: ParkReason,
        hold: Hold,
    ) -> Outcome {
        let clock = read_clock();
        let outcome =
            policy::Outcome::Held { reason, not_before_ms: at.gate.not_before(clock.now_ms) };
        let verdict = self.policy.verdict(&outcome, delivery, clock);
        if at.gate.parked() {
            tracing::info!(subscription_id = %delivery.subscription_id, reason = reason.as_str(), "parking the subscription's backlog in a retry tier");
        }
        let left = self.carry_out(verdict, delivery, at, None).await;
        drop(hold);
        left
    }

    /// Carries out a verdict: the one place where a delivery is handed to a
    /// retry tier, dead-lettered, or its subscription disabled.
    /// `attempted_ms`: when the attempt judged ended, if one was made.
    async fn carry_out(
        &self,
        verdict: Verdict,
        delivery: &mut Delivery,
        at: Holding<'_>,
        attempted_ms: Option<i64>,
    ) -> Outcome {
        let gate = at.gate;
        match verdict {
            Verdict::ReadAgain => Outcome::Left(false),
            // Only ever answered before an attempt, which the stage then
            // makes itself; were it carried out, the record is read again.
            Verdict::Attempt => Outcome::Left(false),
            Verdict::Delivered => Outcome::Finished(true),
            Verdict::Retry { delay, tier } => {
                let seq = self.leave_lane(delivery, &at, delay, tier);
                let handed = self.hand_to_tier(delivery, delay, tier).await;
                if handed {
                    self.metrics.deliveries.retried.inc();
                } else if let Some((slot, seq)) = seq {
                    gate.parked_lanes.abandon(slot, seq, Utc::now().timestamp_millis());
                }
                Outcome::Left(handed)
            }
            Verdict::Park { reason, delay, tier } => {
                let seq = self.leave_lane(delivery, &at, delay, tier);
                delivery.parked = delivery.parked.saturating_add(1);
                let handed = self.hand_to_tier(delivery, delay, tier).await;
                if handed {
                    self.metrics.parked(reason);
                } else if let Some((slot, seq)) = seq {
                    gate.parked_lanes.abandon(slot, seq, Utc::now().timestamp_millis());
                }
                Outcome::Left(handed)
            }
            Verdict::FollowLane { tier, due_ms } => {
                delivery.parked = delivery.parked.saturating_add(1);
                delivery.due_ms = Some(due_ms);
                // Queued in its lane's order (they come back in about that
                // order); then the next of its key may go on.
                let topic = self.policy.tier_topic(tier);
                let acknowledged = self.dead_letters.queue_on(&topic, delivery).await;
                at.turn.take();
                let handed = acknowledged.await;
                if handed {
                    self.metrics.parked(ParkReason::LaneParked);
                } else if let (Some(slot), Some(seq)) = (at.lane, delivery.lane) {
                    gate.parked_lanes.abandon(slot, seq, Utc::now().timestamp_millis());
                }
                Outcome::Left(handed)
            }
            Verdict::DeadLetter(reason) => {
                Outcome::Finished(self.dead(delivery, reason, attempted_ms).await)
            }
            Verdict::Disable => {
                self.disable(at.target).await;
                Outcome::Finished(self.dead(delivery, DeadReason::Gone, attempted_ms).await)
            }
        }
    }

    /// An ordered delivery's lane waits in the tier with it: later events of
    /// its key follow it there, other keys go on. Answers its place, to be
    /// given up if it does not get there.
    fn leave_lane(
        &self,
        delivery: &mut Delivery,
        at: &Holding<'_>,
        delay: Duration,
        tier: Duration,
    ) -> Option<(Slot, LaneSeq)> {
        let seq = at.lane.map(|slot| {
            let due_ms = Utc::now().timestamp_millis().saturating_add(duration_ms(delay));
            (slot, at.gate.parked_lanes.leave(slot, delivery.lane, tier, due_ms))
        });
        delivery.lane = seq.map(|(_, seq)| seq);
        seq
    }

    async fn hand_to_tier(&self, delivery: &mut Delivery, delay: Duration, tier: Duration) -> bool {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        delivery.due_ms = Some(Utc::now().timestamp_millis().saturating_add(delay_ms));
        self.dead_letters.hand_on(&self.policy.tier_topic(tier), delivery).await
    }

    async fn dead(
        &self,
        delivery: &Delivery,
        reason: DeadReason,
        last_attempt_ms: Option<i64>,
    ) -> bool {
        let sent = self.dead_letters.delivery(delivery, reason, last_attempt_ms).await;
        if sent {
            self.metrics.deliveries.dead_lettered.inc();
        }
        sent
    }

    /// 410 Gone: the receiver asks us to stop. Only the status is written,
    /// and only while the subscription still points at the endpoint that
    /// answered, so a concurrent PATCH neither undoes it nor is undone.
    async fn disable(&self, target: &Target) {
        let now = Utc::now();
        let reason = format!("the endpoint answered 410 Gone at {}", now.to_rfc3339());
        let id = &target.subscription.id;
        match self.store.disable_gone(id, &target.subscription.url, &reason, now).await {
            Ok(true) => {
                tracing::warn!(subscription_id = %id, "subscription disabled: the endpoint answered 410 Gone");
                let event = Operational::new(
                    Kind::SubscriptionDisabled,
                    target.subscription.tenant_id.clone(),
                    id.clone(),
                    now,
                )
                .with("reason", DisabledBecause::Gone)
                .with("detail", &reason)
                .with("consecutive_failures", 0)
                .with("failing_since", Option::<String>::None);
                self.operational.emit(event);
            }
            Ok(false) => {
                tracing::info!(subscription_id = %id, "410 Gone from an endpoint no longer the subscription's, or disabled already")
            }
            Err(error) => {
                tracing::error!(subscription_id = %id, %error, "could not disable subscription after 410")
            }
        }
        if let Err(error) = self.cache.refresh().await {
            tracing::warn!(%error, "subscription refresh after disabling failed");
        }
    }

    fn circuit_changed(&self, target: &Target, transition: Transition) {
        let id = &target.subscription.id;
        let now_ms = Utc::now().timestamp_millis();
        let record = match transition {
            Transition::Opened { at_ms, until_ms } | Transition::Reopened { at_ms, until_ms } => {
                CircuitRecord {
                    open: true,
                    opened_ms: Some(at_ms),
                    until_ms: Some(until_ms),
                    changed_ms: at_ms,
                }
            }
            Transition::Closed => {
                CircuitRecord { open: false, opened_ms: None, until_ms: None, changed_ms: now_ms }
            }
        };
        // For the API to show; off the delivery's path (a change written
        // late or out of order is ignored by the store).
        let (store, id_owned) = (Arc::clone(&self.store), id.clone());
        tokio::spawn(async move {
            if let Err(error) = store.record_circuit(&id_owned, &record).await {
                tracing::warn!(subscription_id = %id_owned, %error, "circuit state not written");
            }
        });
        match transition {
            Transition::Opened { until_ms, .. } | Transition::Reopened { until_ms, .. } => {
                let until = chrono::DateTime::from_timestamp_millis(until_ms).unwrap_or_default();
                let again = matches!(transition, Transition::Reopened { .. });
                tracing::warn!(subscription_id = %id, until = %until.to_rfc3339(), again, "circuit opened: deliveries wait in a retry tier");
                self.metrics.circuit_opened(again);
                let tenant = target.subscription.tenant_id.clone();
                let event = Operational::new(Kind::CircuitOpened, tenant, id.clone(), Utc::now())
                    .with("until", until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .with("reopened", again);
                self.operational.emit(event);
            }
            Transition::Closed => {
                tracing::info!(subscription_id = %id, "circuit closed: the probe succeeded");
                self.metrics.circuit_closed();
                let tenant = target.subscription.tenant_id.clone();
                self.operational.emit(Operational::new(
                    Kind::CircuitClosed,
                    tenant,
                    id.clone(),
                    Utc::now(),
                ));
            }
        }
    }

    /// Now and then, tells the deliveries waiting on a gate to look again
    /// when their subscription changed (paused, deleted, new limits) or its
    /// backlog should be parked: what waits never goes stale.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(SWEEP_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen_generation = self.cache.generation();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let generation = self.cache.generation();
            let changed = generation != seen_generation;
            seen_generation = generation;
            if changed {
                let current = |id: &SubscriptionId| match self.cache.peek(id) {
                    Lookup::Found(target) => Some(target.subscription.clone()),
                    _ => None,
                };
                self.gates.follow_all(current, self.shares);
            }
            for _ in 0..self.gates.take_reset_circuits() {
                self.metrics.circuit_closed();
            }
            let now_ms = Utc::now().timestamp_millis();
            for (id, gate) in self.gates.busy() {
                let stale = changed
                    && match self.cache.peek(&id) {
                        Lookup::Found(target) => {
                            gate.changed(&target.subscription)
                                || target.subscription.status != SubscriptionStatus::Active
                        }
                        Lookup::Deleted => true,
                        Lookup::Unknown => false,
                    };
                if stale || gate.should_park(now_ms).is_some() {
                    gate.recheck();
                }
            }
        }
    }
}

/// Now, and a fresh jitter for a retry's delay.
fn read_clock() -> Clock {
    Clock {
        now_ms: Utc::now().timestamp_millis(),
        jitter: rand::thread_rng().gen_range(-1.0..=1.0),
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
