//! The dead-letter indexer: a consumer group on the dead-letter topic that
//! writes each record into the store with why it died, so that admins can
//! filter, inspect and replay. A record's topic position is unique in the
//! store, so reading the topic again (a reset group, a second indexer)
//! inserts nothing twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::consume::{Begun, Handler, Job};
use super::offsets::Ticket;
use crate::delivery::webhook_id;
use crate::domain::operational::{is_operational, Kind, Operational};
use crate::domain::{DeadLetterId, DeadReason, NewDeadLetter, RecordHeader, TenantId};
use crate::error::{storable, MAX_STORED_ID, MAX_STORED_TEXT};
use crate::kafka::delivery::Delivery;
use crate::kafka::envelope::{self, RecordPosition};
use crate::kafka::headers::{
    ATTEMPTS, CE_ID, CE_TENANT_ID, CE_TYPE, ERROR, FIRST_ATTEMPT_AT, LAST_ATTEMPT_AT, LAST_STATUS,
    REASON,
};
use crate::kafka::operational::OperationalEvents;
use crate::store::Store;

/// How long to wait before writing again to a database that failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Inserts under way at once: a burst of dead letters must leave the
/// connection pool to the API and the attempt log.
const WRITERS: usize = 4;

#[derive(Debug)]
pub struct DlqIndexer {
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    writers: Semaphore,
    /// Records older than this are not indexed: retention purged them, and
    /// a group reading the topic from the start must not bring them back.
    retention: chrono::Duration,
    /// Tells the tenant of each delivery that gave up (`hookgate.delivery.exhausted`).
    operational: OperationalEvents,
}

impl Handler for DlqIndexer {
    async fn begin(self: &Arc<Self>, message: &BorrowedMessage<'_>, _ticket: &Ticket) -> Begun {
        self.start(message).await.into()
    }
}

impl DlqIndexer {
    async fn start(self: &Arc<Self>, message: &BorrowedMessage<'_>) -> Option<Job> {
        let entry = entry_of(message);
        if Utc::now()
            .checked_sub_signed(self.retention)
            .is_some_and(|cutoff| entry.dead_at < cutoff)
        {
            return None;
        }
        let indexer = Arc::clone(self);
        Some(Box::pin(async move { indexer.insert(entry).await }))
    }
}

impl DlqIndexer {
    pub fn new(
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
        retention: Duration,
        operational: OperationalEvents,
    ) -> Self {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        Self { store, shutdown, writers: Semaphore::new(WRITERS), retention, operational }
    }

    /// A delivery's first dead letter (not one read again): its tenant
    /// hears of it, with the id to replay it by. Operational events' own
    /// deliveries raise none (see `lifecycle`).
    fn exhausted(&self, entry: &NewDeadLetter) {
        let (Some(tenant), Some(subscription), Some(event_type)) =
            (&entry.tenant_id, &entry.subscription_id, &entry.event_type)
        else {
            return;
        };
        if is_operational(event_type) {
            return;
        }
        let event = Operational::new(
            Kind::DeliveryExhausted,
            tenant.clone(),
            subscription.clone(),
            entry.dead_at,
        )
        .with("event_id", entry.event_id.as_deref().unwrap_or_default())
        .with("event_type", event_type)
        .with("webhook_id", entry.webhook_id.as_ref().map(|w| w.as_str()).unwrap_or_default())
        .with("attempts", entry.attempts.max(1))
        .with("last_status", entry.last_status)
        .with("last_error", &entry.error)
        .with("dead_letter_id", entry.id.as_str())
        .with("reason", entry.reason.as_str());
        self.operational.emit(event);
    }

    /// Answers whether the record is done with: stored, or unstorable.
    async fn insert(&self, entry: NewDeadLetter) -> bool {
        let Ok(_writer) = self.writers.acquire().await else { return false };
        loop {
            match self.store.insert_dead_letter(&entry).await {
                Ok(new) => {
                    if new {
                        self.exhausted(&entry);
                    }
                    return true;
                }
                // Still on the topic; a record the database refuses must not
                // stop the partition.
                Err(error) if error.is_refused_row() => {
                    tracing::error!(topic = %entry.dlq_topic, partition = entry.dlq_partition, offset = entry.dlq_offset, %error, "dead letter cannot be indexed; left on the topic only");
                    return true;
                }
                Err(error) => tracing::warn!(%error, "indexing a dead letter failed; retrying"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
}

/// What the store keeps of a dead-letter record. Anything may be on the
/// topic (other producers, poison records), so every field is optional but
/// the reason (`Unknown` when it names none hookgate gives), and text is
/// cut to what the store takes.
pub fn entry_of(message: &impl Message) -> NewDeadLetter {
    let position = RecordPosition::of(message);
    let pairs = message.headers().and_then(envelope::header_list).unwrap_or_default();
    // The last one: `dlq::poison` appends its headers after the record's own.
    let find = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| *value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let text = |name: &str, max: usize| find(name).map(|v| storable(v, max));
    let time = |name: &str| {
        find(name).and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.with_timezone(&Utc))
    };
    let delivery = Delivery::decode(message.headers(), message.payload(), &position).ok();
    let (tenant_id, subscription_id, event_id, event_type, replay_of) = match &delivery {
        Some(d) => (
            Some(d.tenant_id.clone()),
            Some(d.subscription_id.clone()),
            Some(d.event.id.as_str().to_owned()),
            Some(d.event.event_type.clone()),
            d.replay.as_ref().and_then(|r| DeadLetterId::parse(&r.dead_letter)),
        ),
        // Not a delivery: its headers are whatever a producer wrote. Only the
        // tenant a tenant key published under is believed, and no
        // subscription, so that a forged record shows nobody another's data.
        None => (
            find(CE_TENANT_ID).and_then(TenantId::parse),
            None,
            find(CE_ID).map(str::to_owned),
            find(CE_TYPE).map(str::to_owned),
            None,
        ),
    };
    let webhook_id = match (&event_id, &subscription_id) {
        (Some(event), Some(subscription)) => Some(webhook_id(event, subscription)),
        _ => None,
    };
    let now = Utc::now();
    NewDeadLetter {
        id: DeadLetterId::generate(),
        dlq_topic: message.topic().to_owned(),
        dlq_partition: message.partition(),
        dlq_offset: message.offset(),
        tenant_id,
        subscription_id,
        event_id: event_id.map(|id| storable(&id, MAX_STORED_ID)),
        event_type: event_type.map(|t| storable(&t, MAX_STORED_ID)),
        webhook_id,
        reason: find(REASON).and_then(|v| v.parse().ok()).unwrap_or(DeadReason::Unknown),
        error: text(ERROR, MAX_STORED_TEXT),
        last_status: find(LAST_STATUS).and_then(|v| v.parse().ok()),
        attempts: find(ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0),
        first_attempt_at: time(FIRST_ATTEMPT_AT),
        last_attempt_at: time(LAST_ATTEMPT_AT),
        dead_at: position.timestamp_ms.and_then(DateTime::from_timestamp_millis).unwrap_or(now),
        replay_of,
        headers: pairs.iter().map(|(name, value)| RecordHeader::new(name, *value)).collect(),
        payload: message.payload().map(<[u8]>::to_vec),
        created_at: now,
    }
}
