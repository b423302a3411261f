//! The dead-letter topic: deliveries that will not succeed, and records that
//! cannot be understood, with headers that say why.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::domain::DeadReason;
use crate::kafka::delivery::Delivery;
use crate::kafka::headers::{
    ERROR, REASON, REFUSED_BY_KAFKA, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC,
};
use crate::kafka::Producer;
use crate::metrics::Metrics;

const RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub producer: Producer,
    pub topic: String,
    /// Cancelled when shutdown gives up on handing work on.
    pub abort: CancellationToken,
    pub metrics: Arc<Metrics>,
}

impl DeadLetters {
    /// Dead-letters a delivery; answers whether it is durably on the topic.
    pub async fn delivery(
        &self,
        delivery: &Delivery,
        reason: DeadReason,
        last_attempt_ms: Option<i64>,
    ) -> bool {
        tracing::info!(subscription_id = %delivery.subscription_id, event_id = %delivery.event.id, reason = reason.as_str(), "delivery dead-lettered");
        let headers = delivery.dead_letter_headers(reason, last_attempt_ms);
        self.counted(reason, self.send(delivery.key(), headers, delivery.payload()).await)
    }

    fn counted(&self, reason: DeadReason, sent: bool) -> bool {
        if sent {
            self.metrics.dead_letter(reason);
        }
        sent
    }

    /// Dead-letters a record that could not be read, as it was.
    pub async fn poison(&self, message: &OwnedMessage, reason: &str) -> bool {
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "poison record dead-lettered"
        );
        let mut headers = OwnedHeaders::new();
        // Unreadable header names (see `header_list`) are left behind.
        let original = message.headers().and_then(|h| crate::kafka::envelope::header_list(h));
        for (key, value) in original.unwrap_or_default() {
            headers = headers.insert(Header { key, value });
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            (REASON, DeadReason::Poison.as_str()),
            (ERROR, reason),
            (SOURCE_TOPIC, message.topic()),
            (SOURCE_PARTITION, partition.as_str()),
            (SOURCE_OFFSET, offset.as_str()),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let sent = self
            .send(message.key().unwrap_or_default(), headers, message.payload().unwrap_or_default())
            .await;
        self.counted(DeadReason::Poison, sent)
    }

    /// Puts a delivery on `topic` (a retry tier, the deliveries topic);
    /// answers whether it got there. One Kafka refuses for good (too large)
    /// is dead-lettered without its payload, so it never stops a partition.
    pub async fn hand_on(&self, topic: &str, delivery: &Delivery) -> bool {
        let sent = send_until_acknowledged(
            &self.producer,
            topic,
            delivery.key(),
            delivery.headers(),
            delivery.payload(),
            &self.abort,
        )
        .await;
        match sent {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(subscription_id = %delivery.subscription_id, event_id = %delivery.event.id, %error, "Kafka refuses the delivery record; dead-lettering it without its payload");
                let mut headers = delivery.dead_letter_headers(DeadReason::Refused, None);
                headers = headers.insert(Header {
                    key: REFUSED_BY_KAFKA,
                    value: Some(error.to_string().as_str()),
                });
                let sent = self.send(delivery.key(), headers, &[]).await;
                self.counted(DeadReason::Refused, sent)
            }
        }
    }

    /// Like `hand_on`, but the record is queued before this returns, so
    /// records queued one after another keep their order; the future
    /// answered waits for it to get there. Queueing waits while the local
    /// queue is full, or until `abort`.
    pub async fn queue_on(
        &self,
        topic: &str,
        delivery: &Delivery,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let queued = tokio::select! {
            _ = self.abort.cancelled() => None,
            queued = self.producer.enqueue_delivery(topic, delivery) => queued.ok(),
        };
        let (this, topic, delivery) = (self.clone(), topic.to_owned(), delivery.clone());
        async move {
            if let Some(acknowledgement) = queued {
                if matches!(acknowledgement.await, Ok(Ok(_))) {
                    return true;
                }
            }
            // Not queued, or not acknowledged: sent again, out of order at
            // worst (a parked lane orders its deliveries by number).
            this.hand_on(&topic, &delivery).await
        }
    }

    /// Sends to the dead-letter topic; a record Kafka refuses for good goes
    /// without its payload, and failing that is dropped with an error, so
    /// that no record stops a partition.
    async fn send(&self, key: &[u8], headers: OwnedHeaders, payload: &[u8]) -> bool {
        let refused = match send_until_acknowledged(
            &self.producer,
            &self.topic,
            key,
            headers.clone(),
            payload,
            &self.abort,
        )
        .await
        {
            Ok(done) => return done,
            Err(error) => error,
        };
        tracing::error!(topic = %self.topic, error = %refused, "Kafka refuses the dead letter; sending it without its payload");
        match send_until_acknowledged(&self.producer, &self.topic, key, headers, &[], &self.abort)
            .await
        {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(topic = %self.topic, %error, "Kafka refuses the dead letter; record dropped");
                true
            }
        }
    }
}

/// Sends until the broker acknowledges (`Ok(true)`) or `abort` (`Ok(false)`);
/// an error retrying cannot fix (the record is too large) comes back as is.
pub async fn send_until_acknowledged(
    producer: &Producer,
    topic: &str,
    key: &[u8],
    headers: OwnedHeaders,
    payload: &[u8],
    abort: &CancellationToken,
) -> Result<bool, KafkaError> {
    loop {
        // A send waits up to the producer's message timeout for a broker
        // that is away: `abort` cuts it short too. The record may still get
        // there; its source is not committed, so it comes again at most.
        let sent = tokio::select! {
            _ = abort.cancelled() => return Ok(false),
            sent = producer.send(topic, Some(key), headers.clone(), payload) => sent,
        };
        match sent {
            Ok(()) => return Ok(true),
            Err(error) if is_permanent(&error) => return Err(error),
            Err(error) => tracing::warn!(topic, %error, "write failed; retrying"),
        }
        tokio::select! {
            _ = abort.cancelled() => return Ok(false),
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
}

fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}
