//! The consumer loop every dispatcher stage shares: read records in order,
//! let the stage's `Handler` start each one in that order, run the rest of
//! its work concurrently (bounded), and store a record's offset only once
//! that work says it is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientContext, Message};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::offsets::{OffsetTracker, Ticket};
use crate::kafka::KafkaConfig;

/// The concurrent rest of a record's work; answers `true` when the record is
/// done (delivered, or durably handed on) and its offset may be committed.
pub type Job = Pin<Box<dyn Future<Output = bool> + Send + 'static>>;

pub trait Handler: Send + Sync + 'static {
    /// Runs in the order records are read; `None` when nothing is left to do.
    fn begin(
        self: &Arc<Self>,
        message: OwnedMessage,
        ticket: &Ticket,
    ) -> impl Future<Output = Option<Job>> + Send;
}

pub struct StageContext {
    tracker: Arc<OffsetTracker>,
    revoke_wait: Duration,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let revoked: Vec<(String, i32)> =
            list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        tracing::info!(partitions = revoked.len(), "partitions revoked");
        // Waiting blocks the thread that polls the consumer; on a
        // multi-threaded runtime, hand its other tasks to another thread first.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.tracker.revoke(&revoked, self.revoke_wait));
        } else {
            self.tracker.revoke(&revoked, Duration::ZERO);
        }
    }
}

pub type StageConsumer = StreamConsumer<StageContext>;

/// How long the loop waits after a consumer error before reading again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// After an abort, how long the last hand-offs get to give up.
const ABORT_GRACE: Duration = Duration::from_secs(2);

pub struct StageOptions<'a> {
    pub name: &'static str,
    pub group_id: &'a str,
    pub topics: &'a [String],
    /// Records whose work may be under way at once.
    pub max_in_flight: usize,
    /// How long losing a partition waits for requests under way.
    pub revoke_wait: Duration,
    /// How long shutdown waits for the work under way.
    pub drain_deadline: Duration,
}

/// One stage: a consumer group on some topics and what to do with a record.
pub struct Stage<H> {
    pub name: &'static str,
    pub consumer: StageConsumer,
    pub tracker: Arc<OffsetTracker>,
    pub handler: Arc<H>,
    pub max_in_flight: usize,
    /// How long shutdown waits for the work under way.
    pub drain_deadline: Duration,
}

impl<H: Handler> Stage<H> {
    pub fn new(
        kafka: &KafkaConfig,
        options: StageOptions<'_>,
        handler: Arc<H>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let StageOptions { name, group_id, topics, max_in_flight, revoke_wait, drain_deadline } =
            options;
        let tracker = Arc::new(OffsetTracker::default());
        let consumer: StageConsumer = kafka
            .client_config()
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            // Often: what is done but not committed is redone after a crash.
            .set("auto.commit.interval.ms", "250")
            // Offsets are stored by hand once a record's work is done.
            .set("enable.auto.offset.store", "false")
            // A new group starts at the beginning: nothing published is skipped.
            .set("auto.offset.reset", "earliest")
            // Co-partitioned topics (deliveries and retries are keyed alike)
            // then land on the same consumer.
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            .create_with_context(StageContext { tracker: Arc::clone(&tracker), revoke_wait })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(Self { name, consumer, tracker, handler, max_in_flight, drain_deadline })
    }

    /// Reads until `shutdown`, then drains the work under way and commits.
    /// `abort` is cancelled when the drain deadline passes, for work that is
    /// still trying to hand records on.
    pub async fn run(self, shutdown: CancellationToken, abort: CancellationToken) {
        let stage = Arc::new(self);
        let permits = Arc::new(Semaphore::new(stage.max_in_flight));
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
                message = stage.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(error) => {
                    // Errors repeat while the broker is away: pause, and say it once a pause.
                    tracing::warn!(stage = stage.name, %error, "kafka consumer error");
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            let ticket =
                stage.tracker.begin(message.topic(), message.partition(), message.offset());
            match stage.handler.begin(message, &ticket).await {
                None => stage.commit(&ticket),
                Some(job) => {
                    let stage = Arc::clone(&stage);
                    tasks.spawn(async move {
                        if job.await {
                            stage.commit(&ticket);
                        }
                        drop(permit);
                    });
                }
            }
        }
        tasks.close();
        if tokio::time::timeout(stage.drain_deadline, tasks.wait()).await.is_err() {
            tracing::warn!(
                stage = stage.name,
                in_flight = stage.tracker.in_flight(),
                "drain deadline passed; unfinished records will be read again"
            );
            abort.cancel();
            let _ = tokio::time::timeout(ABORT_GRACE, tasks.wait()).await;
        }
        if let Err(error) = stage.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is the usual case.
            tracing::debug!(stage = stage.name, %error, "final offset commit");
        }
    }

    fn commit(&self, ticket: &Ticket) {
        if let Some(position) = self.tracker.complete(ticket) {
            // librdkafka stores `offset + 1`: pass the last record done.
            if let Err(error) =
                self.consumer.store_offset(ticket.topic(), ticket.partition(), position - 1)
            {
                tracing::debug!(stage = self.name, %error, "offset store refused (partition revoked?)");
            }
        }
    }
}
