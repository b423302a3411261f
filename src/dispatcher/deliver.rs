//! The delivery stage: for each delivery record, wait for the subscription's
//! gate (ordered lane, in-flight cap, rate limit), make the attempt, and then
//! take the next step: done, a retry tier, the dead-letter topic, or (410)
//! disable the subscription.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::cache::{SubscriptionCache, Target};
use super::consume::{Handler, Job};
use super::dlq::DeadLetters;
use super::gate::{Gates, Turn};
use super::offsets::{Lease, Ticket};
use super::replay::ReplayLimits;
use super::retry::{Next, RetryPolicy};
use super::webhook::{DeliveryError, Webhooks};
use crate::domain::SubscriptionStatus;
use crate::kafka::delivery::{DeadReason, Delivery};
use crate::kafka::envelope::RecordPosition;
use crate::kafka::Producer;
use crate::metrics::{InFlight, Metrics};
use crate::store::Store;
use crate::trace::TraceHeaders;

pub struct Deliver {
    pub cache: Arc<SubscriptionCache>,
    pub store: Arc<dyn Store>,
    pub gates: Gates,
    pub webhooks: Webhooks,
    pub producer: Producer,
    pub policy: RetryPolicy,
    pub dead_letters: DeadLetters,
    /// Rates of bulk replays, per job and subscription.
    pub replay_limits: ReplayLimits,
    /// Cancelled at shutdown: work that has not started is handed on.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// How a job ended before its attempt.
enum Interrupted {
    /// The partition went to another dispatcher: leave the record to it.
    Revoked,
    /// Shutting down: hand the delivery to a retry tier.
    Shutdown,
}

impl Handler for Deliver {
    async fn begin(self: &Arc<Self>, message: OwnedMessage, ticket: &Ticket) -> Option<Job> {
        let position = RecordPosition::of(&message);
        let stage = Arc::clone(self);
        let delivery = match Delivery::decode(message.headers(), message.payload(), &position) {
            Ok(delivery) => delivery,
            Err(error) => {
                let reason = error.to_string();
                return Some(Box::pin(async move {
                    stage.dead_letters.poison(&message, &reason).await
                }));
            }
        };
        let Some(target) = self.cache.get(&delivery.subscription_id).await else {
            // Deleted since fan-out: nobody to deliver to.
            tracing::debug!(subscription_id = %delivery.subscription_id, "delivery for a deleted subscription dropped");
            return None;
        };
        // The lane place is taken here, in read order.
        let turn = match (&target.subscription.ordered, &delivery.event.key) {
            (true, Some(key)) => Some(self.gates.of(&target.subscription).queue(key)),
            _ => None,
        };
        Some(Box::pin(stage.work(delivery, turn, ticket.lease())))
    }
}

impl Deliver {
    async fn work(
        self: Arc<Self>,
        mut delivery: Delivery,
        mut turn: Option<Turn>,
        lease: Arc<Lease>,
    ) -> bool {
        let ordered = turn.is_some();
        if let Some(turn) = &mut turn {
            if let Err(why) = self.interruptible(&lease, turn.wait()).await {
                return self.interrupted(&delivery, why, ordered).await;
            }
        }
        loop {
            // The subscription as it is now: paused, changed or deleted meanwhile?
            let Some(mut target) = self.cache.get(&delivery.subscription_id).await else {
                return true;
            };
            // A replay may send to where the receiver moved.
            if let Some(url) = delivery.replay.as_ref().and_then(|r| r.url.as_deref()) {
                match target.redirected(url) {
                    Some(redirected) => target = Arc::new(redirected),
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
            if self.policy.is_expired(&delivery) {
                return self.dead(&delivery, DeadReason::Expired, None).await;
            }
            let gate = self.gates.of(&target.subscription);
            // A subscription that cannot keep up (slow, hanging, rate-limited)
            // parks its backlog in a retry tier rather than fill this
            // dispatcher's in-flight budget, which the others need.
            if let (false, true, Some(tier)) =
                (ordered, gate.is_behind(), self.policy.schedule.tiers().first().copied())
            {
                return self.retry_later(&mut delivery, tier).await;
            }
            if let Some(limiter) = self.replay_limits.of(&delivery) {
                if let Err(why) = self.interruptible(&lease, limiter.until_ready()).await {
                    return self.interrupted(&delivery, why, ordered).await;
                }
            }
            let pass = match self.interruptible(&lease, gate.admit()).await {
                Ok(pass) => pass,
                Err(why) => return self.interrupted(&delivery, why, ordered).await,
            };
            if pass.rate_limited {
                self.metrics.deliveries.rate_limited.inc();
            }
            let Some(_active) = lease.activate() else { return false };
            let attempt = delivery.attempt;
            let span = tracing::info_span!("deliver", otel.kind = "client", subscription_id = %delivery.subscription_id,
                event_id = %delivery.event.id, event_type = %delivery.event.event_type, attempt,
                http.response.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty);
            TraceHeaders::adopt(delivery.trace.as_ref(), &span);
            let in_flight = InFlight::enter(&self.metrics.in_flight);
            let started = std::time::Instant::now();
            let result = self
                .webhooks
                .attempt(&delivery.event, &target, attempt)
                .instrument(span.clone())
                .await;
            let took = started.elapsed();
            drop(in_flight);
            self.metrics.attempt_duration.observe(took.as_secs_f64());
            // Another receiver's answers say nothing about the subscription's.
            let redirected = delivery.replay.as_ref().is_some_and(|r| r.url.is_some());
            if !redirected {
                gate.record(result.is_ok(), took);
            }
            drop(pass);
            let now_ms = Utc::now().timestamp_millis();
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
            if error.status() == Some(410) {
                if !redirected {
                    self.disable(&target).await;
                }
                return self.dead(&delivery, DeadReason::Gone, Some(now_ms)).await;
            }
            if !error.is_retryable() {
                let reason = match error {
                    DeliveryError::Forbidden(_) => DeadReason::Forbidden,
                    _ => DeadReason::NotRetryable,
                };
                return self.dead(&delivery, reason, Some(now_ms)).await;
            }
            let retry_after = match &error {
                DeliveryError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = match self.policy.next(&delivery, attempt, retry_after) {
                Next::Retry(delay) => delay,
                Next::Exhausted => {
                    return self.dead(&delivery, DeadReason::Exhausted, Some(now_ms)).await
                }
                Next::Expired => {
                    return self.dead(&delivery, DeadReason::Expired, Some(now_ms)).await
                }
            };
            if !ordered {
                return self.retry_later(&mut delivery, delay).await;
            }
            // An ordered subscription retries in place: later events of this
            // key wait behind this one, other keys go on.
            if let Err(why) = self.interruptible(&lease, tokio::time::sleep(delay)).await {
                return self.interrupted(&delivery, why, ordered).await;
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

    async fn interrupted(&self, delivery: &Delivery, why: Interrupted, ordered: bool) -> bool {
        match why {
            // An ordered delivery is left for the next owner to read again
            // in order: through a retry tier it could come after later events.
            Interrupted::Revoked => false,
            Interrupted::Shutdown if ordered => false,
            Interrupted::Shutdown => {
                let mut delivery = delivery.clone();
                self.retry_later(&mut delivery, Duration::ZERO).await
            }
        }
    }

    /// Hands the delivery to the retry tier for `delay`.
    async fn retry_later(&self, delivery: &mut Delivery, delay: Duration) -> bool {
        delivery.due_ms = Some(Utc::now().timestamp_millis() + delay.as_millis() as i64);
        let topic = self.policy.tier_topic(delay);
        let handed = self.dead_letters.hand_on(&topic, delivery).await;
        if handed {
            self.metrics.deliveries.retried.inc();
        }
        handed
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
}
