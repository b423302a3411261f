//! The retry tier topics hold deliveries until their next attempt is due. A
//! tier consumer is a delay line: it waits until a record is due and puts it
//! back on the deliveries topic, where the subscription's owner makes the
//! attempt (so its limits still hold). The retry stage reads every topic
//! under the tier prefix, so a changed schedule strands nothing in the
//! tiers it no longer has; each tier has a budget of its own, so a full long
//! tier never holds up a short one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::consume::{Begun, Handler};
use super::dlq::DeadLetters;
use super::lanes::Lanes;
use super::offsets::Ticket;
use crate::domain::SubscriptionId;
use crate::kafka::delivery::Delivery;
use crate::kafka::envelope::RecordPosition;
use crate::kafka::Producer;

/// A retry tier consumer.
#[derive(Debug)]
pub struct DelayLine {
    pub producer: Producer,
    pub deliveries_topic: String,
    pub dead_letters: DeadLetters,
    pub shutdown: CancellationToken,
    /// Deliveries of parked `ordered` lanes go back in the order they came,
    /// per partition and subscription, so that their heads come first.
    pub lanes: Lanes<(String, i32, SubscriptionId)>,
}

/// The regex subscription of every tier topic under `prefix`.
pub fn tier_pattern(prefix: &str) -> String {
    let mut pattern = String::from("^");
    for c in prefix.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(".+");
    pattern
}

impl Handler for DelayLine {
    async fn begin(self: &Arc<Self>, message: &BorrowedMessage<'_>, ticket: &Ticket) -> Begun {
        let position = RecordPosition::of(message);
        let line = Arc::clone(self);
        let delivery = match Delivery::decode(message.headers(), message.payload(), &position) {
            Ok(delivery) => delivery,
            Err(error) => {
                let reason = error.to_string();
                let message = message.detach();
                return Some(Box::pin(
                    async move { line.dead_letters.poison(&message, &reason).await },
                ) as _)
                .into();
            }
        };
        let lease = ticket.lease();
        let mut turn = delivery.lane.map(|_| {
            let partition = (message.topic().to_owned(), message.partition());
            self.lanes.queue((partition.0, partition.1, delivery.subscription_id.clone()))
        });
        Some(Box::pin(async move {
            let wait_ms = delivery.due_ms.unwrap_or(0) - Utc::now().timestamp_millis();
            if wait_ms > 0 {
                tokio::select! {
                    // Not committed: read again after the restart, or by
                    // the partition's new owner.
                    _ = line.shutdown.cancelled() => return false,
                    _ = lease.revoked().cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                }
            }
            let Some(mut turn) = turn.take() else {
                return line.dead_letters.hand_on(&line.deliveries_topic, &delivery).await;
            };
            tokio::select! {
                _ = line.shutdown.cancelled() => return false,
                _ = lease.revoked().cancelled() => return false,
                _ = turn.wait() => {}
            }
            let acknowledged = line.dead_letters.queue_on(&line.deliveries_topic, &delivery).await;
            drop(turn);
            acknowledged.await
        }) as _)
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_pattern_matches_the_prefix_literally() {
        assert_eq!(tier_pattern("hookgate.retry."), r"^hookgate\.retry\..+");
        assert_eq!(tier_pattern("test-a_b.retry."), r"^test-a_b\.retry\..+");
    }
}
