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
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::budget::Pressure;
use super::cache::{Freshness, Lookup, SubscriptionCache, Target, STALE_RETRY};
use super::circuit::Transition;
use super::consume::{Begun, Handler};
use super::dlq::DeadLetters;
use super::gate::{Gate, Gates, Hold, Shares};
use super::lanes::{Lanes, Turn};
use super::offsets::{Lease, Ticket};
use super::policy::{ParkReason, RetryPolicy, Verdict, MAX_RETRY_AFTER};
use super::replay::ReplayLimits;
use super::webhook::Webhooks;
use crate::domain::{SubscriptionId, SubscriptionStatus};
use crate::kafka::delivery::{DeadReason, Delivery};
use crate::kafka::envelope::RecordPosition;
use crate::kafka::Producer;
use crate::metrics::{InFlight, Metrics};
use crate::store::Store;
use crate::trace::TraceHeaders;

/// How long an ordered delivery waits before it looks at a half-open
/// circuit again (while another delivery probes).
const PROBE_WAIT: Duration = Duration::from_millis(100);

/// How often gates are looked at for changed or unhealthy subscriptions.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

pub struct Deliver {
    pub cache: Arc<SubscriptionCache>,
    pub store: Arc<dyn Store>,
    pub gates: Gates,
    pub shares: Shares,
    pub webhooks: Webhooks,
    pub producer: Producer,
    pub policy: RetryPolicy,
    pub dead_letters: DeadLetters,
    /// Rates of bulk replays, per job and subscription.
    pub replay_limits: ReplayLimits,
    /// Deliveries whose subscription the copy does not know yet, per
    /// subscription in read order (later ones queue behind).
    pub unknown: Lanes<SubscriptionId>,
    /// Cancelled at shutdown: work that has not started is handed on.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// How a wait ended before the attempt.
enum Interrupted {
    /// The partition went to another dispatcher: leave the record to it.
    Revoked,
    /// Shutting down: hand the delivery to a retry tier.
    Shutdown,
}

/// A wait that ended early.
enum Woken {
    Interrupted(Interrupted),
    /// The subscription changed or turned unhealthy: look again.
    Recheck,
}

impl Handler for Deliver {
    async fn begin(self: &Arc<Self>, message: OwnedMessage, ticket: &Ticket) -> Begun {
        let position = RecordPosition::of(&message);
        let stage = Arc::clone(self);
        let delivery = match Delivery::decode(message.headers(), message.payload(), &position) {
            Ok(delivery) => delivery,
            Err(error) => {
                let reason = error.to_string();
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
                        stage.park(&mut delivery, &gate, ParkReason::OverBudget, hold).await
                    }) as _)
                    .into();
                }
                // Healthy (or ordered): the partition waits until it drains.
                _ if gate.is_over_budget() => pressure = Some(Arc::clone(&gate) as _),
                _ => pressure = Some(Arc::clone(gate.tenant()) as _),
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
        mut target: Arc<Target>,
        gate: Arc<Gate>,
        hold: Hold,
        mut turn: Option<Turn>,
        lease: Arc<Lease>,
    ) -> bool {
        let ordered = turn.is_some();
        if let Some(turn) = &mut turn {
            loop {
                match self.wake_on_change(&lease, &gate, turn.wait()).await {
                    Ok(()) => break,
                    Err(Woken::Interrupted(why)) => {
                        return self.interrupted(&delivery, why, ordered).await
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
        loop {
            // The subscription as it is now: paused, changed or deleted meanwhile?
            match self.cache.peek(&delivery.subscription_id) {
                Lookup::Found(now) => target = now,
                Lookup::Deleted => return true,
                // Known before; the copy forgets nothing without a tombstone.
                Lookup::Unknown => {}
            }
            let mut sending_to = Arc::clone(&target);
            // A replay may send to where the receiver moved.
            if let Some(url) = delivery.replay.as_ref().and_then(|r| r.url.as_deref()) {
                match target.redirected(url) {
                    Some(redirected) => sending_to = Arc::new(redirected),
                    None => return self.dead(&delivery, DeadReason::Forbidden, None).await,
                }
            }
            match target.subscription.status {
                SubscriptionStatus::Active => {}
                SubscriptionStatus::Paused => {
                    return self.dead(&delivery, DeadReason::Paused, None).await
                }
                SubscriptionStatus::Disabled => {
                    return self.dead(&delivery, DeadReason::Disabled, None).await
                }
            }
            let now_ms = Utc::now().timestamp_millis();
            if self.policy.is_expired(&delivery, now_ms) {
                return self.dead(&delivery, DeadReason::Expired, None).await;
            }
            if !ordered {
                if let Some(reason) = gate.should_park(now_ms) {
                    return self.park(&mut delivery, &gate, reason, hold).await;
                }
            } else if let Some(at) = gate.not_before(now_ms) {
                // An ordered lane waits in place: through a retry tier, this
                // delivery could come after later ones of its key.
                let pause = Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0));
                match self.wake_on_change(&lease, &gate, tokio::time::sleep(pause)).await {
                    Ok(()) | Err(Woken::Recheck) => continue,
                    Err(Woken::Interrupted(why)) => {
                        return self.interrupted(&delivery, why, ordered).await
                    }
                }
            }
            if let Some(limiter) = self.replay_limits.of(&delivery) {
                if let Err(why) = self.interruptible(&lease, limiter.until_ready()).await {
                    return self.interrupted(&delivery, why, ordered).await;
                }
            }
            let pass = match self.wake_on_change(&lease, &gate, gate.admit()).await {
                Ok(pass) => pass,
                Err(Woken::Recheck) => continue,
                Err(Woken::Interrupted(why)) => {
                    return self.interrupted(&delivery, why, ordered).await
                }
            };
            // Another receiver's answers say nothing about the subscription's.
            let redirected = delivery.replay.as_ref().is_some_and(|r| r.url.is_some());
            if !redirected && !gate.circuit.try_send(Utc::now().timestamp_millis()) {
                drop(pass);
                if ordered {
                    // Its lane waits for the circuit in place: until it
                    // opens or closes after its probe.
                    let wait = tokio::time::sleep(PROBE_WAIT);
                    match self.wake_on_change(&lease, &gate, wait).await {
                        Ok(()) | Err(Woken::Recheck) => continue,
                        Err(Woken::Interrupted(why)) => {
                            return self.interrupted(&delivery, why, ordered).await
                        }
                    }
                }
                return self.park(&mut delivery, &gate, ParkReason::CircuitOpen, hold).await;
            }
            if pass.rate_limited {
                self.metrics.deliveries.rate_limited.inc();
            }
            let Some(_active) = lease.activate() else {
                gate.circuit.release_probe();
                return false;
            };
            let attempt = delivery.attempt;
            let span = tracing::info_span!("deliver", otel.kind = "client", subscription_id = %delivery.subscription_id,
                event_id = %delivery.event.id, event_type = %delivery.event.event_type, attempt,
                http.response.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty);
            TraceHeaders::adopt(delivery.trace.as_ref(), &span);
            let in_flight = InFlight::enter(&self.metrics.in_flight);
            let started = std::time::Instant::now();
            let result = self
                .webhooks
                .attempt(&delivery.event, &sending_to, attempt)
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
                    self.circuit_changed(&delivery.subscription_id, transition);
                }
            }
            drop(pass);
            let now_ms = Utc::now().timestamp_millis();
            let jitter = rand::thread_rng().gen_range(-1.0..=1.0);
            let verdict = self.policy.after_attempt(&result, &delivery, redirected, now_ms, jitter);
            delivery.first_attempt_ms.get_or_insert(now_ms);
            let error = match result {
                Ok(()) => {
                    self.metrics.deliveries.success.inc();
                    // A producer's clock ahead of ours counts as no lag.
                    let lag = (Utc::now() - delivery.event.time).to_std().unwrap_or_default();
                    self.metrics.delivery_lag.observe(lag.as_secs_f64());
                    return true;
                }
                Err(error) => error,
            };
            self.metrics.deliveries.failed.inc();
            span.record("otel.status_code", "ERROR");
            if let Some(status) = error.status() {
                span.record("http.response.status_code", status);
            }
            delivery.attempt += 1;
            delivery.last_status = error.status();
            delivery.last_error = Some(error.to_string());
            // A pause the endpoint asked for holds the whole subscription.
            if let (Some(asked), false) = (error.retry_after(), redirected) {
                let asked = i64::try_from(asked.min(MAX_RETRY_AFTER).as_millis()).unwrap_or(0);
                gate.hold_off(now_ms + asked);
            }
            match verdict {
                Verdict::Delivered => return true,
                Verdict::Disable => {
                    self.disable(&target).await;
                    return self.dead(&delivery, DeadReason::Gone, Some(now_ms)).await;
                }
                Verdict::DeadLetter(reason) => {
                    return self.dead(&delivery, reason, Some(now_ms)).await
                }
                Verdict::Retry { delay, tier } if !ordered => {
                    return self.retry_later(&mut delivery, delay, tier).await
                }
                Verdict::Retry { delay, .. } => {
                    // An ordered subscription retries in place: later events
                    // of this key wait behind this one, other keys go on.
                    let wait = tokio::time::sleep(delay);
                    if let Err(Woken::Interrupted(why)) =
                        self.wake_on_change(&lease, &gate, wait).await
                    {
                        return self.interrupted(&delivery, why, ordered).await;
                    }
                }
            }
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

    async fn interrupted(&self, delivery: &Delivery, why: Interrupted, ordered: bool) -> bool {
        match why {
            // An ordered delivery is left for the next owner to read again
            // in order: through a retry tier it could come after later events.
            Interrupted::Revoked => false,
            Interrupted::Shutdown if ordered => false,
            Interrupted::Shutdown => {
                let mut delivery = delivery.clone();
                match self.policy.hand_back(&delivery, Utc::now().timestamp_millis()) {
                    Verdict::Retry { delay, tier } => {
                        self.retry_later(&mut delivery, delay, tier).await
                    }
                    Verdict::DeadLetter(reason) => self.dead(&delivery, reason, None).await,
                    Verdict::Delivered | Verdict::Disable => true,
                }
            }
        }
    }

    /// Moves a delivery that will not go soon to a retry tier, without an
    /// attempt; its hold is given back once it is there.
    async fn park(
        &self,
        delivery: &mut Delivery,
        gate: &Gate,
        reason: ParkReason,
        hold: Hold,
    ) -> bool {
        let now_ms = Utc::now().timestamp_millis();
        let verdict = self.policy.park(delivery, gate.not_before(now_ms), now_ms);
        if gate.parked() {
            tracing::info!(subscription_id = %delivery.subscription_id, reason = reason.as_str(), "parking the subscription's backlog in a retry tier");
        }
        let done = match verdict {
            Verdict::Retry { delay, tier } => {
                delivery.parked = delivery.parked.saturating_add(1);
                let handed = self.hand_to_tier(delivery, delay, tier).await;
                if handed {
                    self.metrics.parked(reason);
                }
                handed
            }
            Verdict::DeadLetter(reason) => self.dead(delivery, reason, None).await,
            Verdict::Delivered | Verdict::Disable => true,
        };
        drop(hold);
        done
    }

    /// Hands a failed delivery to the retry tier `tier`, due after `delay`.
    async fn retry_later(&self, delivery: &mut Delivery, delay: Duration, tier: Duration) -> bool {
        let handed = self.hand_to_tier(delivery, delay, tier).await;
        if handed {
            self.metrics.deliveries.retried.inc();
        }
        handed
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

    /// 410 Gone: the receiver asks us to stop.
    async fn disable(&self, target: &Target) {
        let reason = format!("the endpoint answered 410 Gone at {}", Utc::now().to_rfc3339());
        let id = &target.subscription.id;
        match self
            .store
            .set_subscription_status(id, SubscriptionStatus::Disabled, Some(&reason))
            .await
        {
            Ok(()) => {
                tracing::warn!(subscription_id = %id, "subscription disabled: the endpoint answered 410 Gone")
            }
            Err(error) => {
                tracing::error!(subscription_id = %id, %error, "could not disable subscription after 410")
            }
        }
        if let Err(error) = self.cache.refresh().await {
            tracing::warn!(%error, "subscription refresh after disabling failed");
        }
    }

    fn circuit_changed(&self, id: &SubscriptionId, transition: Transition) {
        match transition {
            Transition::Opened { until_ms } | Transition::Reopened { until_ms } => {
                let until = chrono::DateTime::from_timestamp_millis(until_ms).unwrap_or_default();
                let again = matches!(transition, Transition::Reopened { .. });
                tracing::warn!(subscription_id = %id, until = %until.to_rfc3339(), again, "circuit opened: deliveries wait in a retry tier");
                self.metrics.circuit_opened(again);
            }
            Transition::Closed => {
                tracing::info!(subscription_id = %id, "circuit closed: the probe succeeded");
                self.metrics.circuit_closed();
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
