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
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::offsets::{OffsetTracker, Ticket};
use crate::kafka::KafkaConfig;
use crate::metrics::Metrics;

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

/// How long the final commit and the consumer's close may take together.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(1_500);

/// How a stage's shutdown went.
#[derive(Debug)]
pub struct Drained {
    pub stage: &'static str,
    /// Records not done when the drain deadline passed (given up on, or
    /// still running); zero when the drain ended in time.
    pub unfinished: usize,
    /// Whether the final commit went through.
    pub committed: bool,
}

impl Drained {
    /// What the stage left undone, if anything.
    pub fn left(&self) -> Option<String> {
        match (self.unfinished, self.committed) {
            (0, true) => None,
            (0, false) => Some(format!("{}: final commit failed", self.stage)),
            (n, true) => Some(format!("{}: {n} records unfinished", self.stage)),
            (n, false) => {
                Some(format!("{}: {n} records unfinished, final commit failed", self.stage))
            }
        }
    }
}

/// How often consumer lag is measured, and how long the broker may take.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub metrics: Arc<Metrics>,
    /// Topics under this prefix are retry tiers: their lag is also reported
    /// as the tier's backlog.
    pub tier_prefix: Option<&'a str>,
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
    group: String,
    topics: Vec<String>,
    metrics: Arc<Metrics>,
    tier_prefix: Option<String>,
}

impl<H: Handler> Stage<H> {
    pub fn new(
        kafka: &KafkaConfig,
        options: StageOptions<'_>,
        handler: Arc<H>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let StageOptions {
            name,
            group_id,
            topics,
            max_in_flight,
            revoke_wait,
            drain_deadline,
            metrics,
            tier_prefix,
        } = options;
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
        Ok(Self {
            name,
            consumer,
            tracker,
            handler,
            max_in_flight,
            drain_deadline,
            group: group_id.to_owned(),
            topics: topics.to_vec(),
            metrics,
            tier_prefix: tier_prefix.map(str::to_owned),
        })
    }

    /// Reads until `shutdown`, then drains the work under way and commits.
    /// `abort` is cancelled when the drain deadline passes, for work that is
    /// still trying to hand records on. Ends within the drain deadline plus
    /// `ABORT_GRACE` and `CLOSE_TIMEOUT`, whatever the broker does.
    pub async fn run(self, shutdown: CancellationToken, abort: CancellationToken) -> Drained {
        let stage = Arc::new(self);
        let lag = tokio::spawn(Arc::clone(&stage).report_lag(shutdown.clone()));
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
        let mut drained = Drained { stage: stage.name, unfinished: 0, committed: false };
        if tokio::time::timeout(stage.drain_deadline, tasks.wait()).await.is_err() {
            tracing::warn!(
                stage = stage.name,
                in_flight = stage.tracker.in_flight(),
                "drain deadline passed; unfinished records will be read again"
            );
            abort.cancel();
            let _ = tokio::time::timeout(ABORT_GRACE, tasks.wait()).await;
            // Given up on, or still running: not committed.
            drained.unfinished = stage.tracker.in_flight();
        }
        lag.abort();
        drained.committed = stage.close().await;
        drained
    }

    /// Commits what is done and closes the consumer (it leaves the group),
    /// off the runtime and bounded: against a broker that is gone,
    /// librdkafka's synchronous commit and its close wait for minutes.
    /// Answers whether the commit went through.
    async fn close(self: Arc<Self>) -> bool {
        let name = self.name;
        let (committed_tx, committed_rx) = tokio::sync::oneshot::channel();
        let closing = tokio::task::spawn_blocking(move || {
            let committed = match self.consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => true,
                // Nothing stored since the last commit.
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
                Err(error) => {
                    tracing::warn!(stage = name, %error, "final offset commit failed; work done since the last commit is redone after a restart");
                    false
                }
            };
            let _ = committed_tx.send(committed);
            // The last reference, unless work was left running: the
            // consumer closes here.
            drop(self);
        });
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        let Ok(Ok(committed)) = tokio::time::timeout_at(deadline, committed_rx).await else {
            tracing::warn!(stage = name, timeout = ?CLOSE_TIMEOUT, "final offset commit did not finish; work done since the last commit is redone after a restart");
            return false;
        };
        if tokio::time::timeout_at(deadline, closing).await.is_err() {
            tracing::warn!(stage = name, timeout = ?CLOSE_TIMEOUT, "consumer close did not finish; the group rebalances once its session times out");
        }
        committed
    }

    /// Measures the group's lag on each assigned partition now and then, off
    /// the read loop (the broker calls block).
    async fn report_lag(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(LAG_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Vec<(String, i32)> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let stage = Arc::clone(&self);
            let Ok(measured) = tokio::task::spawn_blocking(move || stage.partition_lags()).await
            else {
                return;
            };
            match measured {
                Ok(lags) => reported = self.publish_lag(lags, &reported),
                Err(error) => {
                    tracing::debug!(stage = self.name, %error, "consumer lag not measured")
                }
            }
        }
    }

    /// (topic, partition, lag) of every assigned partition: the high
    /// watermark less the committed offset (the low watermark when the
    /// group has committed nothing there yet).
    fn partition_lags(&self) -> KafkaResult<Vec<(String, i32, i64)>> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = self.consumer.committed_offsets(assignment, LAG_TIMEOUT)?;
        let mut lags = Vec::with_capacity(committed.count());
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let (low, high) = self.consumer.fetch_watermarks(topic, partition, LAG_TIMEOUT)?;
            let position = match element.offset() {
                Offset::Offset(offset) => offset.max(low),
                _ => low,
            };
            lags.push((topic.to_owned(), partition, (high - position).max(0)));
        }
        Ok(lags)
    }

    /// Sets the gauges; forgets partitions no longer assigned. Answers the
    /// partitions reported.
    fn publish_lag(
        &self,
        lags: Vec<(String, i32, i64)>,
        previously: &[(String, i32)],
    ) -> Vec<(String, i32)> {
        let metrics = &self.metrics;
        let mut backlog: Vec<(&str, i64)> = self
            .topics
            .iter()
            .filter_map(|topic| self.tier_prefix.as_deref().and_then(|p| topic.strip_prefix(p)))
            .map(|tier| (tier, 0))
            .collect();
        let mut reported = Vec::with_capacity(lags.len());
        for (topic, partition, lag) in lags {
            let labels = [self.group.as_str(), topic.as_str(), &partition.to_string()];
            metrics.consumer_lag.with_label_values(&labels).set(lag);
            let tier = self.tier_prefix.as_deref().and_then(|p| topic.strip_prefix(p));
            if let Some(entry) = backlog.iter_mut().find(|(t, _)| Some(*t) == tier) {
                entry.1 += lag;
            }
            reported.push((topic, partition));
        }
        for (topic, partition) in previously.iter().filter(|p| !reported.contains(p)) {
            let labels = [self.group.as_str(), topic.as_str(), &partition.to_string()];
            let _ = metrics.consumer_lag.remove_label_values(&labels);
        }
        for (tier, waiting) in backlog {
            metrics.retry_backlog.with_label_values(&[tier]).set(waiting);
        }
        reported
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
