//! Fan-out: each source event becomes one delivery record per matching
//! subscription on the deliveries topic. Records are queued in the order
//! events are read (so an ordered subscription's events stay in order) and
//! the source offset is committed once every one of them is acknowledged.
//! While the database is away, events wait (in order) for a fresh copy of
//! the subscriptions rather than being matched against a stale one.

use std::sync::Arc;

use futures::future::join_all;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use tokio_util::sync::CancellationToken;

use super::cache::{Freshness, SubscriptionCache, STALE_RETRY};
use super::consume::{Begun, Handler, Job};
use super::dlq::DeadLetters;
use super::lanes::Lanes;
use super::offsets::Ticket;
use crate::domain::operational::is_operational;
use crate::domain::{Event, SubscriptionId};
use crate::kafka::delivery::Delivery;
use crate::kafka::envelope::{self, RecordPosition};
use crate::kafka::headers::CE_SUBJECT;
use crate::kafka::Producer;
use crate::trace::TraceHeaders;

#[derive(Debug)]
pub struct FanOut {
    pub cache: Arc<SubscriptionCache>,
    pub producer: Producer,
    pub deliveries_topic: String,
    /// Where operational events come from: the only topic whose records may
    /// carry `hookgate.*` types.
    pub operational_topic: String,
    pub dead_letters: DeadLetters,
    /// Records waiting for a fresh copy of the subscriptions, in read order;
    /// later records queue behind them.
    pub deferred: Lanes<()>,
    pub shutdown: CancellationToken,
}

impl Handler for FanOut {
    async fn begin(self: &Arc<Self>, message: &BorrowedMessage<'_>, _ticket: &Ticket) -> Begun {
        self.start(message).await.into()
    }
}

impl FanOut {
    async fn start(self: &Arc<Self>, message: &BorrowedMessage<'_>) -> Option<Job> {
        let position = RecordPosition::of(message);
        let operational = message.topic() == self.operational_topic;
        // The headers listed once, for the event and its trace context.
        let decoded = envelope::listed(message.headers()).map_err(|p| p.to_string()).and_then(|pairs| {
            let event = envelope::decode_pairs(&pairs, message.key(), message.payload(), &position)
                .map_err(|p| p.to_string())?;
            if is_operational(&event.event_type) != operational {
                return Err(match operational {
                    true => format!("{} is not an operational event type (hookgate.…)", event.event_type),
                    false => format!("{} is hookgate's own: operational event types (hookgate.…) come only from the operational topic", event.event_type),
                });
            }
            // An operational event never goes to the subscription it is about:
            // a failing endpoint's own failures would loop back to it.
            let about = operational.then(|| subject(&pairs)).flatten();
            Ok((event, TraceHeaders::from_pairs(&pairs), about))
        });
        let (event, trace, about) = match decoded {
            Ok(decoded) => decoded,
            Err(reason) => {
                let dead_letters = self.dead_letters.clone();
                let message = message.detach();
                return Some(Box::pin(async move { dead_letters.poison(&message, &reason).await }));
            }
        };
        // When the record was written, not what `ce_time` claims: a
        // subscription made before the write must see the event.
        let written = message
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(chrono::Utc::now);
        let fresh = self.cache.ensure_fresh(written).await;
        if fresh == Freshness::Stale || self.deferred.is_busy(&()) {
            // Matching on a stale copy could miss new subscriptions: wait
            // for the database, off the read loop, in read order.
            let mut turn = self.deferred.queue(());
            let fan_out = Arc::clone(self);
            return Some(Box::pin(async move {
                turn.wait().await;
                while fan_out.cache.ensure_fresh(written).await == Freshness::Stale {
                    tokio::select! {
                        // Not committed: read again after the restart.
                        _ = fan_out.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(STALE_RETRY) => {}
                    }
                }
                let acknowledged = fan_out.enqueue(&event, trace, about.as_ref()).await;
                drop(turn);
                fan_out.acknowledged(acknowledged).await
            }));
        }
        let queued = self.enqueue(&event, trace, about.as_ref()).await;
        if queued.is_empty() {
            return None;
        }
        let fan_out = Arc::clone(self);
        Some(Box::pin(async move { fan_out.acknowledged(queued).await }))
    }

    /// Queues one delivery record per matching subscription, in order;
    /// never to `about`, the subscription an operational event is about.
    async fn enqueue(
        &self,
        event: &Event,
        trace: Option<TraceHeaders>,
        about: Option<&SubscriptionId>,
    ) -> Queued {
        let mut targets = self.cache.matching(event);
        if let Some(about) = about {
            targets.retain(|t| &t.subscription.id != about);
        }
        if targets.is_empty() {
            return Vec::new();
        }
        // A child of the publisher's span (a new trace when the record has
        // none); every delivery record carries it on to its attempts.
        let span = tracing::debug_span!("fan-out", otel.kind = "consumer", event_id = %event.id,
            event_type = %event.event_type, subscriptions = targets.len());
        TraceHeaders::adopt(trace.as_ref(), &span);
        let trace = Some(TraceHeaders::onward(trace.as_ref(), &span));
        let mut queued = Vec::with_capacity(targets.len());
        for target in &targets {
            let subscription = &target.subscription;
            let mut delivery = Delivery::new(
                event.clone(),
                subscription.id.clone(),
                subscription.tenant_id.clone(),
            );
            delivery.trace = trace.clone();
            let acknowledgement =
                self.producer.enqueue_delivery(&self.deliveries_topic, &delivery).await;
            queued.push((delivery, acknowledgement));
        }
        queued
    }

    /// Whether every queued record reached the broker (or was sent again).
    async fn acknowledged(self: Arc<Self>, queued: Queued) -> bool {
        let results = join_all(queued.into_iter().map(|(delivery, acknowledgement)| {
            let fan_out = Arc::clone(&self);
            async move {
                let acknowledged = match acknowledgement {
                    Ok(future) => matches!(future.await, Ok(Ok(_))),
                    Err(_) => false,
                };
                // Rare (the broker was away longer than the producer's
                // timeout): send again, which may reorder this one record.
                acknowledged || fan_out.resend(&delivery).await
            }
        }))
        .await;
        results.into_iter().all(|done| done)
    }
}

/// `ce_subject`: the subscription an operational event is about.
fn subject(pairs: &[envelope::HeaderPair<'_>]) -> Option<SubscriptionId> {
    let (_, value) = pairs.iter().rev().find(|(key, _)| *key == CE_SUBJECT)?;
    let text = std::str::from_utf8((*value)?).ok()?;
    SubscriptionId::parse(text)
}

type Queued = Vec<(Delivery, Result<DeliveryFuture, KafkaError>)>;

impl FanOut {
    async fn resend(&self, delivery: &Delivery) -> bool {
        self.dead_letters.hand_on(&self.deliveries_topic, delivery).await
    }
}
