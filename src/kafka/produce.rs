//! The producer: idempotent, `acks=all`, and every send awaited until the
//! broker acknowledged it, so a 202 always means the event is on the topic.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};
use tokio_util::sync::CancellationToken;

use super::delivery::Delivery;
use super::envelope::encode_headers;
use super::{Error, KafkaConfig};
use crate::domain::Event;
use crate::trace::TraceHeaders;

/// How long a record may wait for the broker before the send fails; bounds
/// how long a publish request can hang while the broker is away.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The same bound for the API's producer (`Producer::for_publishing`): how
/// long `POST /v1/events` waits while the broker is away before answering 503.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);
/// How long a record waits for others to share its request; an operator's
/// `HOOKGATE_KAFKA_LINGER_MS` overrides it. Without linger (and one request
/// in flight) a webhook at 200 events/s took 1.9 ms instead of 6, but the
/// soak's worst-minute p99 at 2,000/s rose from 21–46 ms to 80–138 ms: every
/// record of a burst became a request of its own (README, "Performance").
const LINGER_MS: &str = "2";
/// What records waiting to be sent may hold, per producer (librdkafka's
/// default is 1 GiB): past it a send waits (`QUEUE_FULL_PAUSE`), so memory
/// stays bounded while the broker is slow. `HOOKGATE_KAFKA_QUEUE_BUFFERING_MAX_KBYTES`.
const QUEUE_KBYTES: &str = "65536";

/// The producer's settings: tuning defaults the operator may override,
/// then the guarantees (every replica acknowledges, no duplicates from
/// retries), which no property changes.
fn client_config(config: &KafkaConfig, timeout: Duration) -> ClientConfig {
    let defaults = [("linger.ms", LINGER_MS), ("queue.buffering.max.kbytes", QUEUE_KBYTES)];
    let mut client = config.client_config_over(&defaults);
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", timeout.as_millis().to_string());
    client
}

#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<Watched>,
    fatal: Arc<Fatal>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("fatal", &self.fatal).finish_non_exhaustive()
    }
}

/// The producer's context: it sees the errors librdkafka reports outside
/// any send, and keeps the first fatal one (see `super::is_fatal`).
#[derive(Debug)]
pub struct Watched {
    fatal: Arc<Fatal>,
}

#[derive(Debug, Default)]
struct Fatal {
    raised: CancellationToken,
    reason: OnceLock<String>,
}

impl ClientContext for Watched {
    fn error(&self, error: KafkaError, reason: &str) {
        if super::is_fatal(&error) {
            let _ = self.fatal.reason.set(format!("{error}: {reason}"));
            self.fatal.raised.cancel();
        } else {
            // As librdkafka's default context does.
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl Producer {
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        Self::with_timeout(config, DELIVERY_TIMEOUT)
    }

    /// The REST API's producer: it gives up sooner, so that a publish
    /// answers 503 within `PUBLISH_TIMEOUT` while the broker is away.
    pub fn for_publishing(config: &KafkaConfig) -> Result<Self, Error> {
        Self::with_timeout(config, PUBLISH_TIMEOUT)
    }

    fn with_timeout(config: &KafkaConfig, timeout: Duration) -> Result<Self, Error> {
        let fatal = Arc::<Fatal>::default();
        let inner = client_config(config, timeout)
            .create_with_context(Watched { fatal: Arc::clone(&fatal) })?;
        Ok(Self { inner, fatal })
    }

    /// Answers once the producer hit a fatal error, with what it was: every
    /// send fails from then on, so the process must end.
    pub async fn failed(&self) -> String {
        let fatal = &self.fatal;
        fatal.raised.cancelled().await;
        fatal.reason.get().cloned().unwrap_or_default()
    }

    /// Writes the event to `topic` in CloudEvents binary mode, with the
    /// current span's trace context (`traceparent`).
    pub async fn publish(&self, topic: &str, event: &Event) -> Result<(), KafkaError> {
        let mut headers = encode_headers(event);
        if let Some(trace) = TraceHeaders::current() {
            headers = trace.write(headers);
        }
        self.send(topic, event.key.as_deref(), headers, event.data.get().as_bytes()).await
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: OwnedHeaders,
        payload: &[u8],
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        // A full local queue fails at once rather than queueing the caller.
        self.inner
            .send(record, Timeout::After(Duration::ZERO))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }

    /// Queues one record and answers the future of its acknowledgement; waits
    /// while the local queue is full. Records queued in order stay in order.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: &[u8],
        headers: OwnedHeaders,
        payload: &[u8],
    ) -> Result<DeliveryFuture, KafkaError> {
        // A refused record comes back whole: its headers are built once,
        // not copied for each try (a copy is a librdkafka allocation a header).
        let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
        loop {
            match self.inner.send_result(record) {
                Ok(acknowledgement) => return Ok(acknowledgement),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), refused)) => {
                    record = refused;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Queues a delivery record (see `enqueue`).
    pub async fn enqueue_delivery(
        &self,
        topic: &str,
        delivery: &Delivery,
    ) -> Result<DeliveryFuture, KafkaError> {
        self.enqueue(topic, delivery.key(), delivery.headers(), delivery.payload()).await
    }

    /// Asks the cluster for metadata; the readiness check.
    pub async fn check_connection(&self, timeout: Duration) -> Result<(), KafkaError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.client().fetch_metadata(None, Timeout::After(timeout)).map(|_| ())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits for queued records before exit.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.inner.flush(Timeout::After(timeout)) {
            tracing::warn!(%error, "producer flush at shutdown did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_is_the_operators_and_the_guarantees_are_not() {
        let kafka = |properties: &[(&str, &str)]| KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            properties: properties.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        };
        let plain = client_config(&kafka(&[]), DELIVERY_TIMEOUT);
        assert_eq!(plain.get("queue.buffering.max.kbytes"), Some(QUEUE_KBYTES), "bounded");
        assert_eq!(plain.get("linger.ms"), Some(LINGER_MS));
        let weakened = [("acks", "1"), ("enable.idempotence", "false"), ("linger.ms", "5")];
        let tuned = client_config(&kafka(&weakened), DELIVERY_TIMEOUT);
        assert_eq!(tuned.get("linger.ms"), Some("5"), "tuning is the operator's");
        assert_eq!(tuned.get("acks"), Some("all"), "every replica acknowledges");
        assert_eq!(tuned.get("enable.idempotence"), Some("true"));
        assert_eq!(tuned.get("message.timeout.ms"), Some("10000"));
    }
}
