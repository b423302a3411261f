//! Retries: when the next attempt is due, and the retry tier topics that hold
//! deliveries until then. A tier consumer is a delay line: it waits until a
//! record is due and puts it back on the deliveries topic, where the
//! subscription's owner makes the attempt (so its limits still hold).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::consume::{Handler, Job};
use super::dlq::DeadLetters;
use super::offsets::Ticket;
use crate::config::{RetrySchedule, Topics};
use crate::kafka::delivery::Delivery;
use crate::kafka::envelope::RecordPosition;
use crate::kafka::Producer;

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Delays vary by up to this fraction, so that failed deliveries do not all
/// come back at the same instant.
const JITTER: f64 = 0.1;

pub struct RetryPolicy {
    pub schedule: RetrySchedule,
    pub max_age: Duration,
    pub topics: Topics,
}

/// What happens after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    Retry(Duration),
    /// The schedule is used up.
    Exhausted,
    /// The next attempt would come after the maximum age.
    Expired,
}

impl RetryPolicy {
    /// After attempt `attempt` failed (asking, maybe, for `retry_after`).
    pub fn next(&self, delivery: &Delivery, attempt: u32, retry_after: Option<Duration>) -> Next {
        let Some(planned) = self.schedule.delay_after(attempt) else {
            return Next::Exhausted;
        };
        let jitter = 1.0 + rand::thread_rng().gen_range(-JITTER..=JITTER);
        let mut delay = planned.mul_f64(jitter);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(MAX_RETRY_AFTER));
        }
        let due_ms = Utc::now().timestamp_millis() + delay.as_millis() as i64;
        if due_ms > delivery.created_ms + self.max_age.as_millis() as i64 {
            return Next::Expired;
        }
        Next::Retry(delay)
    }

    pub fn is_expired(&self, delivery: &Delivery) -> bool {
        Utc::now().timestamp_millis() > delivery.created_ms + self.max_age.as_millis() as i64
    }

    /// The tier topic for a delay: the shortest tier not shorter than it.
    pub fn tier_topic(&self, delay: Duration) -> String {
        let tiers = self.schedule.tiers();
        let tier = tiers.iter().find(|t| **t >= delay).or(tiers.last()).copied().unwrap_or(delay);
        self.topics.retry_topic(tier)
    }
}

/// A retry tier consumer.
pub struct DelayLine {
    pub producer: Producer,
    pub deliveries_topic: String,
    pub dead_letters: DeadLetters,
    pub shutdown: CancellationToken,
}

impl Handler for DelayLine {
    async fn begin(self: &Arc<Self>, message: OwnedMessage, _ticket: &Ticket) -> Option<Job> {
        let position = RecordPosition::of(&message);
        let line = Arc::clone(self);
        let delivery = match Delivery::decode(message.headers(), message.payload(), &position) {
            Ok(delivery) => delivery,
            Err(error) => {
                let reason = error.to_string();
                return Some(Box::pin(
                    async move { line.dead_letters.poison(&message, &reason).await },
                ));
            }
        };
        Some(Box::pin(async move {
            let wait_ms = delivery.due_ms.unwrap_or(0) - Utc::now().timestamp_millis();
            if wait_ms > 0 {
                tokio::select! {
                    // Not committed: read again after the restart.
                    _ = line.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                }
            }
            line.dead_letters.hand_on(&line.deliveries_topic, &delivery).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, SubscriptionId, TenantId};
    use serde_json::value::RawValue;

    fn policy(schedule: &[u64], max_age: u64) -> RetryPolicy {
        RetryPolicy {
            schedule: RetrySchedule(schedule.iter().map(|s| Duration::from_secs(*s)).collect()),
            max_age: Duration::from_secs(max_age),
            topics: Topics {
                source: vec![],
                publish: "e".into(),
                deliveries: "d".into(),
                retry_prefix: "r.".into(),
                dlq: "dlq".into(),
                partitions: 1,
                replication: 1,
                group_id: "g".into(),
            },
        }
    }

    fn delivery() -> Delivery {
        let event = Event {
            id: "evt_1".into(),
            event_type: "a.b".into(),
            source: "s".into(),
            time: Utc::now(),
            key: None,
            data: RawValue::from_string("{}".into()).expect("json"),
            tenant_id: None,
        };
        Delivery::new(event, SubscriptionId::generate(), TenantId::default_tenant())
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_gives_up() {
        let policy = policy(&[10, 300], 86_400);
        let d = delivery();
        let Next::Retry(first) = policy.next(&d, 1, None) else { panic!("retries") };
        assert!(first >= Duration::from_secs(9) && first <= Duration::from_secs(11), "{first:?}");
        let Next::Retry(second) = policy.next(&d, 2, None) else { panic!("retries") };
        assert!(second >= Duration::from_secs(270) && second <= Duration::from_secs(330));
        assert_eq!(policy.next(&d, 3, None), Next::Exhausted);
    }

    #[test]
    fn honours_retry_after_up_to_a_cap() {
        let policy = policy(&[1], 86_400);
        let d = delivery();
        assert_eq!(
            policy.next(&d, 1, Some(Duration::from_secs(120))),
            Next::Retry(Duration::from_secs(120))
        );
        assert_eq!(
            policy.next(&d, 1, Some(Duration::from_secs(86_000))),
            Next::Retry(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn gives_up_when_the_next_attempt_would_be_too_old() {
        let policy = policy(&[3600], 60);
        assert_eq!(policy.next(&delivery(), 1, None), Next::Expired);
    }

    #[test]
    fn picks_the_shortest_tier_that_is_long_enough() {
        let policy = policy(&[5, 300, 7200], 86_400);
        assert_eq!(policy.tier_topic(Duration::from_secs(4)), "r.5s");
        assert_eq!(policy.tier_topic(Duration::from_secs(6)), "r.5m");
        assert_eq!(policy.tier_topic(Duration::from_secs(90_000)), "r.2h");
    }
}
