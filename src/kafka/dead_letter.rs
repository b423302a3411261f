//! A dead letter read back from the store as the record the dead-letter
//! topic held: the delivery in it, made fresh for a replay. Both the API
//! (one replay) and the dispatcher's replay runner (bulk jobs) use it.

use rdkafka::message::{Header, OwnedHeaders};

use super::delivery::{Delivery, ReplayOrigin};
use super::envelope::RecordPosition;
use crate::domain::{DeadLetter, SubscriptionId};

/// Why a dead letter cannot be sent again.
#[derive(Debug, thiserror::Error)]
pub enum NotReplayable {
    /// Its reason left no delivery to send (`DeadReason::why_not_replayable`).
    #[error("{0}")]
    Reason(&'static str),
    #[error("the record is not a delivery: {0}")]
    Invalid(String),
    #[error("subscription {0} is deleted")]
    SubscriptionDeleted(SubscriptionId),
}

/// The delivery a dead letter holds, made fresh for a replay.
pub fn delivery_of(
    dead_letter: &DeadLetter,
    origin: ReplayOrigin,
) -> Result<Delivery, NotReplayable> {
    let record = &dead_letter.record;
    if let Some(why) = record.reason.why_not_replayable() {
        return Err(NotReplayable::Reason(why));
    }
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for header in &record.headers {
        let value = header.bytes();
        headers = headers.insert(Header { key: header.name.as_str(), value: value.as_deref() });
    }
    let position = RecordPosition {
        topic: &record.dlq_topic,
        partition: record.dlq_partition,
        offset: record.dlq_offset,
        timestamp_ms: Some(record.dead_at.timestamp_millis()),
    };
    Delivery::decode(Some(&headers), record.payload.as_deref(), &position)
        .map(|delivery| delivery.replayed(origin))
        .map_err(|error| NotReplayable::Invalid(error.to_string()))
}
