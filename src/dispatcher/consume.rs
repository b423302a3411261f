//! The consumer loop: read source records, hand each to a task that delivers
//! it to every matching subscription (or dead-letters a poison record), and
//! store its offset only once that task is done.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::{ClientContext, Message};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cache::SubscriptionCache;
use super::deliver::Deliverer;
use super::offsets::{OffsetTracker, Ticket};
use super::Error;
use crate::kafka::envelope::{self, Poison, RecordPosition};
use crate::kafka::{KafkaConfig, Producer};

/// Records being processed at once per dispatcher; bounds memory.
const MAX_RECORDS_IN_FLIGHT: usize = 1024;
/// How long shutdown waits for deliveries under way.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
const DLQ_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct DispatchContext {
    tracker: Arc<OffsetTracker>,
}

impl ClientContext for DispatchContext {}

impl ConsumerContext for DispatchContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<(String, i32)> =
                list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            tracing::info!(partitions = revoked.len(), "partitions revoked");
            self.tracker.revoke(&revoked);
        }
    }
}

pub type DispatchConsumer = StreamConsumer<DispatchContext>;

pub fn create_consumer(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: &[String],
) -> Result<(Arc<DispatchConsumer>, Arc<OffsetTracker>), Error> {
    let tracker = Arc::new(OffsetTracker::default());
    let consumer: DispatchConsumer = kafka
        .client_config()
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand once a record's deliveries are done.
        .set("enable.auto.offset.store", "false")
        // A new group starts at the beginning: nothing published is skipped.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(DispatchContext { tracker: Arc::clone(&tracker) })?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok((Arc::new(consumer), tracker))
}

pub struct Pipeline {
    pub consumer: Arc<DispatchConsumer>,
    pub tracker: Arc<OffsetTracker>,
    pub cache: Arc<SubscriptionCache>,
    pub deliverer: Arc<Deliverer>,
    pub producer: Producer,
    pub dlq_topic: String,
}

impl Pipeline {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(MAX_RECORDS_IN_FLIGHT));
        let tasks = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error");
                    continue;
                }
            };
            let ticket = self.tracker.begin(message.topic(), message.partition(), message.offset());
            let work = self.read(&message);
            let pipeline = Arc::clone(&self);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let done = match work {
                    Work::Deliver(event) => {
                        pipeline.fan_out(event).await;
                        true
                    }
                    Work::DeadLetter(record) => pipeline.dead_letter(record, &shutdown).await,
                };
                if done {
                    pipeline.commit(&ticket);
                }
                drop(permit);
            });
        }
        tasks.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tasks.wait()).await.is_err() {
            tracing::warn!(
                in_flight = self.tracker.in_flight(),
                "drain deadline passed; unfinished records will be read again"
            );
        }
        if let Err(error) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            // Nothing stored since the last commit is the usual case.
            tracing::debug!(%error, "final offset commit");
        }
    }

    fn read(&self, message: &BorrowedMessage<'_>) -> Work {
        let position = RecordPosition {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        match envelope::decode(message.headers(), message.key(), message.payload(), &position) {
            Ok(event) => Work::Deliver(event),
            Err(reason) => {
                tracing::warn!(topic = position.topic, partition = position.partition, offset = position.offset, %reason, "poison record");
                Work::DeadLetter(PoisonRecord::new(message, reason))
            }
        }
    }

    async fn fan_out(&self, event: crate::domain::Event) {
        self.cache.ensure_fresh(event.time).await;
        let targets = self.cache.matching(&event);
        if targets.is_empty() {
            return;
        }
        let body = Bytes::from(event.webhook_body());
        join_all(targets.iter().map(|target| self.deliverer.deliver(&event, &body, target, 1)))
            .await;
    }

    /// Hands a poison record to the dead-letter topic; answers whether it got
    /// there (only then may its offset be committed).
    async fn dead_letter(&self, record: PoisonRecord, shutdown: &CancellationToken) -> bool {
        loop {
            let sent = self
                .producer
                .send(
                    &self.dlq_topic,
                    record.key.as_deref(),
                    record.headers.clone(),
                    &record.payload,
                )
                .await;
            match sent {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, "dead-letter write failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(DLQ_RETRY_DELAY) => {}
            }
        }
    }

    fn commit(&self, ticket: &Ticket) {
        if let Some(position) = self.tracker.complete(ticket) {
            // librdkafka stores `offset + 1`: pass the last record done.
            if let Err(error) =
                self.consumer.store_offset(ticket.topic(), ticket.partition(), position - 1)
            {
                tracing::debug!(%error, "offset store refused (partition revoked?)");
            }
        }
    }
}

enum Work {
    Deliver(crate::domain::Event),
    DeadLetter(PoisonRecord),
}

/// A record that cannot be delivered, with headers saying why and whence.
struct PoisonRecord {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

impl PoisonRecord {
    fn new(message: &BorrowedMessage<'_>, reason: Poison) -> Self {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let reason = reason.to_string();
        for (key, value) in [
            ("hookgate_reason", "poison"),
            ("hookgate_error", reason.as_str()),
            ("hookgate_source_topic", message.topic()),
            ("hookgate_source_partition", partition.as_str()),
            ("hookgate_source_offset", offset.as_str()),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        Self {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}
