//! The failure lifecycle, from each batch of attempts the attempt log
//! writes: a delivery failing for the configured number of attempts, a
//! subscription recovering after a run of failures, and one that failed
//! every attempt for the configured span disabled. Each is told to the
//! subscription's tenant as an operational event.
//!
//! Deliveries of operational events raise no delivery events themselves:
//! two dead endpoints of one tenant subscribed to `hookgate.*` would
//! otherwise tell each other of their failures without end.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use super::cache::{Lookup, SubscriptionCache};
use crate::config::LifecyclePolicy;
use crate::domain::health::HealthChange;
use crate::domain::operational::{is_operational, DisabledBecause, Kind, Operational};
use crate::domain::{Attempt, Outcome, SubscriptionStatus};
use crate::kafka::operational::OperationalEvents;
use crate::store::{AfterWrite, Store};

#[derive(Debug)]
pub struct Lifecycle {
    pub store: Arc<dyn Store>,
    pub cache: Arc<SubscriptionCache>,
    pub operational: OperationalEvents,
    pub policy: LifecyclePolicy,
}

fn time(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[async_trait::async_trait]
impl AfterWrite for Lifecycle {
    async fn written(&self, attempts: &[Attempt], changes: Vec<HealthChange>) {
        for a in attempts {
            if a.outcome == Outcome::Failed
                && a.attempt == self.policy.failing_after
                && !is_operational(&a.event_type)
            {
                let event = Operational::new(
                    Kind::DeliveryFailing,
                    a.tenant_id.clone(),
                    a.subscription_id.clone(),
                    a.created_at,
                )
                .with("event_id", &a.event_id)
                .with("event_type", &a.event_type)
                .with("webhook_id", a.webhook_id.as_str())
                .with("attempts", a.attempt)
                .with("last_status", a.status_code)
                .with("last_error", &a.error);
                self.operational.emit(event);
            }
        }
        for change in changes {
            let Some(last) =
                attempts.iter().rev().find(|a| a.subscription_id == change.subscription_id)
            else {
                continue;
            };
            let (before, after) = (&change.before, &change.after);
            if after.consecutive_failures == 0
                && before.consecutive_failures >= u64::from(self.policy.failing_after)
            {
                let event = Operational::new(
                    Kind::SubscriptionRecovered,
                    last.tenant_id.clone(),
                    change.subscription_id.clone(),
                    last.created_at,
                )
                .with("failed_attempts", before.consecutive_failures)
                .with("failing_since", time(before.failing_since_ms));
                self.operational.emit(event);
            }
            self.disable_if_failing_for_good(&change, last).await;
        }
    }
}

impl Lifecycle {
    /// Every attempt failed for the span (and at least the minimum of them):
    /// the subscription is disabled, so that a dead endpoint stops costing
    /// retries; what is still pending is dead-lettered as it comes due
    /// (`subscription_disabled`, replayable once it is active again).
    async fn disable_if_failing_for_good(&self, change: &HealthChange, last: &Attempt) {
        let Some(span) = self.policy.disable_after else { return };
        let record = &change.after;
        let Some(since_ms) = record.failing_since_ms else { return };
        let now = Utc::now();
        let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        if record.consecutive_failures < self.policy.disable_min_failures
            || now.timestamp_millis().saturating_sub(since_ms) < span_ms
        {
            return;
        }
        let id = &change.subscription_id;
        let url = match self.cache.peek(id) {
            Lookup::Found(target) if target.subscription.status == SubscriptionStatus::Active => {
                target.subscription.url.clone()
            }
            _ => return,
        };
        let since = time(Some(since_ms)).unwrap_or_default();
        let reason = format!(
            "every attempt failed since {since} ({} in a row): disabled at {}",
            record.consecutive_failures,
            now.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        match self.store.disable_gone(id, &url, &reason, now).await {
            Ok(true) => {
                tracing::warn!(subscription_id = %id, failures = record.consecutive_failures, %since, "subscription disabled: every attempt failed for the configured span");
                let event = Operational::new(
                    Kind::SubscriptionDisabled,
                    last.tenant_id.clone(),
                    id.clone(),
                    now,
                )
                .with("reason", DisabledBecause::SustainedFailure)
                .with("detail", &reason)
                .with("consecutive_failures", record.consecutive_failures)
                .with("failing_since", Some(since));
                self.operational.emit(event);
                if let Err(error) = self.cache.refresh().await {
                    tracing::warn!(%error, "subscription refresh after disabling failed");
                }
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(subscription_id = %id, %error, "could not disable a failing subscription")
            }
        }
    }
}
