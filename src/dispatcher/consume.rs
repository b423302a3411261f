//! The consumer loop every dispatcher stage shares: read records in order,
//! let the stage's `Handler` start each one in that order, run the rest of
//! its work concurrently, and store a record's offset only once that work
//! says it is done.
//!
//! The loop never stops reading for lack of room (a consumer that does not
//! poll is evicted from its group): when a budget is full, the partition the
//! record came from is paused, and resumed once the budget has room again.
//! A watchdog beside it (`watchdog`) ends the process when the loop or its
//! consumer stops making progress, and so does a fatal Kafka error.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::budget::{Budget, Load, Pressure};
use super::offsets::{OffsetTracker, Ticket};
use super::watchdog::{CoordinatorAnswer, CoordinatorSilence, Heartbeat, Position, Stalls};
use crate::health::{Liveness, Unhealthy};
use crate::kafka::KafkaConfig;
use crate::metrics::Metrics;

/// The concurrent rest of a record's work; answers `true` when the record is
/// done (delivered, or durably handed on) and its offset may be committed.
pub type Job = Pin<Box<dyn Future<Output = bool> + Send + 'static>>;

/// What `Handler::begin` made of a record.
pub struct Begun {
    /// The rest of the work; `None` when nothing is left to do.
    pub job: Option<Job>,
    /// Set when the record's partition should wait (say, its subscription
    /// holds all it may): the loop pauses it until this is relieved.
    pub pressure: Option<Arc<dyn Pressure>>,
}

impl std::fmt::Debug for Begun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Begun")
            .field("job", &self.job.is_some())
            .field("pressure", &self.pressure.is_some())
            .finish()
    }
}

impl From<Option<Job>> for Begun {
    fn from(job: Option<Job>) -> Self {
        Self { job, pressure: None }
    }
}

pub trait Handler: Send + Sync + 'static {
    /// Runs in the order records are read. The record is librdkafka's,
    /// not a copy: what outlives `begin` is decoded from it, or detached
    /// (`BorrowedMessage::detach`) where the whole record goes on.
    fn begin(
        self: &Arc<Self>,
        message: &BorrowedMessage<'_>,
        ticket: &Ticket,
    ) -> impl Future<Output = Begun> + Send;
}

#[derive(Debug)]
pub struct StageContext {
    tracker: Arc<OffsetTracker>,
    revoke_wait: Duration,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let list = match rebalance {
            Rebalance::Revoke(list) => list,
            Rebalance::Assign(_) => return,
            Rebalance::Error(error) => {
                // librdkafka unassigns after this: none of it is ours now.
                tracing::warn!(%error, "rebalance failed; work under way is not committed here");
                self.tracker.revoke_all();
                return;
            }
        };
        // Cooperative rebalancing revokes only the partitions that move.
        let revoked: Vec<(String, i32)> =
            list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let lost = consumer.assignment_lost();
        tracing::info!(partitions = revoked.len(), lost, "partitions revoked");
        let give_up = |wait: Duration| {
            let done = self.tracker.revoke(&revoked, wait);
            // What finished, also while we waited, is committed before the
            // partitions go: their next owner would send it again. A lost
            // assignment's commit is refused anyway.
            if lost || done.is_empty() {
                return;
            }
            let mut offsets = TopicPartitionList::new();
            for (topic, partition, position) in &done {
                let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*position));
            }
            if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(%error, "offsets of revoked partitions not committed; their next owner redoes that work");
            }
        };
        // Waiting blocks the thread that polls the consumer; on a
        // multi-threaded runtime, hand its other tasks to another thread first.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| give_up(self.revoke_wait));
        } else {
            give_up(Duration::ZERO);
        }
    }
}

pub type StageConsumer = StreamConsumer<StageContext>;

/// How long the loop waits after a consumer error before reading again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// How often paused partitions are looked at, besides when work finishes
/// (some pressure, a subscription turning unhealthy, is not work finishing).
const PAUSE_CHECK: Duration = Duration::from_millis(20);

/// librdkafka's prefetch bounds, per consumer (its defaults are 64 MiB and
/// 100,000 records): memory is bounded in bytes; the record count stays
/// above what one fetch brings (a fetch past it waits `FETCH_BACKOFF`).
const QUEUED_KBYTES: &str = "16384";
const QUEUED_MESSAGES: &str = "20000";
/// How long librdkafka waits to fetch again once a prefetch bound is
/// reached (its default, a second, leaves a fast stage idle: deliveries/s
/// fell fivefold with a 2,000-record bound).
const FETCH_BACKOFF: &str = "10";

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

/// One look at a stage's consumer (`Stage::measure`).
#[derive(Debug)]
struct Measured {
    /// (topic, partition, lag) of every assigned partition; `None` when it
    /// was not measured (the gauges keep their last values).
    lags: Option<Vec<(String, i32, i64)>>,
    positions: Vec<Position>,
    coordinator: CoordinatorAnswer,
}

/// How often consumer lag is measured, and how long the broker may take.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct StageOptions<'a> {
    pub name: &'static str,
    pub group_id: &'a str,
    pub topics: &'a [String],
    /// What the stage may hold at once; beyond it, partitions pause.
    pub budget: Budget,
    /// One budget per topic (retry tiers: a full long tier must not hold
    /// up a short one) rather than one for the stage.
    pub budget_per_topic: bool,
    /// How long losing a partition waits for requests under way.
    pub revoke_wait: Duration,
    /// How long shutdown waits for the work under way.
    pub drain_deadline: Duration,
    pub metrics: Arc<Metrics>,
    /// Topics under this prefix are retry tiers: their lag is also reported
    /// as the tier's backlog.
    pub tier_prefix: Option<&'a str>,
    /// Where the stage reports itself stuck or failed.
    pub liveness: Arc<Liveness>,
    /// How long the loop may be away from `recv()`, or unread records wait
    /// unread, before the stage is stuck (`watchdog::STALL_AFTER`; at least
    /// twice `revoke_wait`, which a revocation spends inside `recv()`).
    pub stall_after: Duration,
}

/// One stage: a consumer group on some topics and what to do with a record.
pub struct Stage<H> {
    pub name: &'static str,
    pub consumer: StageConsumer,
    pub tracker: Arc<OffsetTracker>,
    pub handler: Arc<H>,
    budget: Budget,
    budget_per_topic: bool,
    /// How long shutdown waits for the work under way.
    pub drain_deadline: Duration,
    group: String,
    metrics: Arc<Metrics>,
    tier_prefix: Option<String>,
    heartbeat: Arc<Heartbeat>,
    liveness: Arc<Liveness>,
    stall_after: Duration,
}

impl<H> std::fmt::Debug for Stage<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("name", &self.name).finish_non_exhaustive()
    }
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
            budget,
            budget_per_topic,
            revoke_wait,
            drain_deadline,
            metrics,
            tier_prefix,
            liveness,
            stall_after,
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
            // A rebalance moves only the partitions that change owner; the
            // others keep delivering. No stage needs co-partitioning: each
            // is its own group, and a subscription's owner is whoever owns
            // its deliveries partition (retries go back through that topic).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "100")
            // What librdkafka prefetches is memory too: bound it explicitly
            // (per consumer), beside the stage's own budget.
            .set("queued.max.messages.kbytes", QUEUED_KBYTES)
            .set("queued.min.messages", QUEUED_MESSAGES)
            .set("fetch.queue.backoff.ms", FETCH_BACKOFF)
            // A regex subscription (the retry tiers) sees new topics soon.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .create_with_context(StageContext { tracker: Arc::clone(&tracker), revoke_wait })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(Self {
            name,
            consumer,
            tracker,
            handler,
            budget,
            budget_per_topic,
            drain_deadline,
            group: group_id.to_owned(),
            metrics,
            tier_prefix: tier_prefix.map(str::to_owned),
            heartbeat: Arc::default(),
            liveness,
            stall_after: stall_after.max(revoke_wait * 2),
        })
    }

    /// Reads until `shutdown`, then drains the work under way and commits.
    /// `abort` is cancelled when the drain deadline passes, for work that is
    /// still trying to hand records on. Ends within the drain deadline plus
    /// `ABORT_GRACE` and `CLOSE_TIMEOUT`, whatever the broker does.
    pub async fn run(self, shutdown: CancellationToken, abort: CancellationToken) -> Drained {
        let stage = Arc::new(self);
        let lag = tokio::spawn(Arc::clone(&stage).report_lag(shutdown.clone()));
        let watch = tokio::spawn(Arc::clone(&stage).watch(shutdown.clone()));
        let tasks = TaskTracker::new();
        let freed = Arc::new(Notify::new());
        let whole_stage = Load::new(stage.budget, Arc::clone(&freed));
        let mut per_topic: HashMap<String, Arc<Load>> = HashMap::new();
        let mut paused = Paused {
            partitions: HashMap::new(),
            gauge: stage.metrics.paused_partitions.with_label_values(&[stage.name]),
            heartbeat: Arc::clone(&stage.heartbeat),
        };
        let mut tick = tokio::time::interval(PAUSE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            stage.heartbeat.idle();
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = freed.notified(), if !paused.is_empty() => {
                    paused.resume_relieved(&stage.consumer);
                    continue;
                }
                _ = tick.tick(), if !paused.is_empty() => {
                    paused.resume_relieved(&stage.consumer);
                    continue;
                }
                message = stage.consumer.recv() => message,
            };
            stage.heartbeat.read();
            let message = match message {
                Ok(message) => message,
                Err(error) if crate::kafka::is_fatal(&error) => {
                    // Retrying cannot fix it: the process ends (exit code 1),
                    // and its supervisor sees why.
                    stage.unhealthy(&format!("failed: fatal Kafka error: {error}"), &shutdown);
                    break;
                }
                Err(error) => {
                    // Errors repeat while the broker is away: pause, and say it once a pause.
                    tracing::warn!(stage = stage.name, %error, "kafka consumer error");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            let load = if stage.budget_per_topic {
                per_topic
                    .entry(message.topic().to_owned())
                    .or_insert_with(|| Load::new(stage.budget, Arc::clone(&freed)))
            } else {
                &whole_stage
            };
            let held = load.take(record_size(&message));
            let ticket =
                stage.tracker.begin(message.topic(), message.partition(), message.offset());
            let partition = || (message.topic().to_owned(), message.partition());
            if load.is_full() {
                paused.pause(&stage.consumer, stage.name, partition(), Arc::clone(load) as _);
            }
            let begun = stage.handler.begin(&message, &ticket).await;
            if let Some(pressure) = begun.pressure {
                paused.pause(&stage.consumer, stage.name, partition(), pressure);
            }
            match begun.job {
                None => {
                    stage.commit(&ticket);
                    drop(held);
                }
                Some(job) => {
                    let stage = Arc::clone(&stage);
                    tasks.spawn(async move {
                        // Until its outcome is stored: a revocation waiting
                        // for work under way then commits this too.
                        let finishing = ticket.lease().activate();
                        if job.await {
                            stage.commit(&ticket);
                        }
                        drop(finishing);
                        drop(held);
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
        watch.abort();
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

    /// Reports the stage unhealthy, once: the process shuts down and exits
    /// non-zero (see `watchdog` for why it is not rebuilt in place).
    fn unhealthy(&self, reason: &str, shutdown: &CancellationToken) {
        if self.liveness.report(Unhealthy { stage: self.name, reason: reason.to_owned() }) {
            tracing::error!(stage = self.name, %reason, "dispatcher stage unhealthy; exiting so that it is restarted (unfinished work is read again)");
            shutdown.cancel();
        }
    }

    /// The watchdog's quick part: the loop's heartbeat and the work in
    /// flight, from memory, so that a broker that hangs cannot hold it.
    async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let every =
            (self.stall_after / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = &self.metrics;
        let last_read = metrics.stage_last_read.with_label_values(&[self.name]);
        let oldest = metrics.stage_oldest_in_flight.with_label_values(&[self.name]);
        let stuck = metrics.stage_stuck.with_label_values(&[self.name]);
        stuck.set(0);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            last_read.set(self.heartbeat.since_read().as_secs_f64());
            let age = self.tracker.oldest_in_flight().map_or(Duration::ZERO, |t| t.elapsed());
            oldest.set(age.as_secs_f64());
            if let Some(busy) = self.heartbeat.busy_for().filter(|b| *b >= self.stall_after) {
                stuck.set(1);
                self.unhealthy(
                    &format!("is stuck: its read loop has not come back for a record for {}s (a handler does not return)", busy.as_secs()),
                    &shutdown,
                );
            }
        }
    }

    /// Measures the group's lag on each assigned partition now and then, off
    /// the read loop (the broker calls block), and finds partitions whose
    /// unread records are not read, and a group coordinator that stopped
    /// answering.
    async fn report_lag(self: Arc<Self>, shutdown: CancellationToken) {
        let every = LAG_INTERVAL.min(self.stall_after / 3);
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Vec<(String, i32)> = Vec::new();
        let mut stalls = Stalls::default();
        let mut silence = CoordinatorSilence::default();
        // A partition to ask the coordinator about once none is assigned.
        let mut probe: Option<(String, i32)> = None;
        let stalled_gauge = self.metrics.stalled_partitions.with_label_values(&[self.name]);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let stage = Arc::clone(&self);
            let asked = probe.clone();
            let Ok(measured) =
                tokio::task::spawn_blocking(move || stage.measure(asked.as_ref())).await
            else {
                return;
            };
            if let Some(first) = measured.positions.first() {
                probe = Some((first.topic.clone(), first.partition));
            }
            if let Some(lags) = measured.lags {
                reported = self.publish_lag(lags, &reported);
            }
            let now = Instant::now();
            let heartbeat = &self.heartbeat;
            let stalled = stalls.update(
                &measured.positions,
                |p| heartbeat.is_paused(p),
                now,
                self.stall_after,
            );
            stalled_gauge.set(stalled.len() as i64);
            if let Some((topic, partition)) = stalled.first() {
                self.metrics.stage_stuck.with_label_values(&[self.name]).set(1);
                let reason = format!(
                    "is stuck: {} partition(s) have unread records and nothing was read from them for {}s (first: {topic}/{partition})",
                    stalled.len(),
                    self.stall_after.as_secs()
                );
                self.unhealthy(&reason, &shutdown);
            }
            if let Some(silent) = silence.update(measured.coordinator, now, self.stall_after * 2) {
                self.metrics.stage_stuck.with_label_values(&[self.name]).set(1);
                let reason = format!(
                    "is stuck: its group coordinator has not answered for {}s while the partition leaders do (a new client connects afresh)",
                    silent.as_secs()
                );
                self.unhealthy(&reason, &shutdown);
            }
        }
    }

    /// Where the consumer is on each assigned partition and how far the end
    /// is (asking the partitions' leaders); the group's lag on each (asking
    /// its coordinator for the committed offsets: the high watermark less
    /// the committed offset, the low watermark when nothing is committed);
    /// and whether the coordinator answered. With nothing assigned, the
    /// coordinator is asked about `probe`, a partition assigned before.
    fn measure(&self, probe: Option<&(String, i32)>) -> Measured {
        let unknown =
            Measured { lags: None, positions: Vec::new(), coordinator: CoordinatorAnswer::Unknown };
        let Ok(assignment) = self.consumer.assignment() else { return unknown };
        if assignment.count() == 0 {
            // Nothing assigned: no lag of ours to report.
            let idle = Measured { lags: Some(Vec::new()), ..unknown };
            let Some((topic, partition)) = probe else { return idle };
            if self.consumer.fetch_watermarks(topic, *partition, LAG_TIMEOUT).is_err() {
                return idle;
            }
            let mut list = TopicPartitionList::new();
            list.add_partition(topic, *partition);
            let coordinator = match self.consumer.committed_offsets(list, LAG_TIMEOUT) {
                Ok(_) => CoordinatorAnswer::Answered,
                Err(_) => CoordinatorAnswer::Silent,
            };
            return Measured { lags: Some(Vec::new()), positions: Vec::new(), coordinator };
        }
        let Ok(positions) = self.consumer.position() else { return unknown };
        let mut watermarks = Vec::with_capacity(assignment.count());
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            match self.consumer.fetch_watermarks(topic, partition, LAG_TIMEOUT) {
                Ok(ends) => watermarks.push((topic.to_owned(), partition, ends)),
                Err(error) => {
                    tracing::debug!(stage = self.name, %error, "consumer lag not measured");
                    return unknown;
                }
            }
        }
        let committed = self.consumer.committed_offsets(assignment, LAG_TIMEOUT);
        let coordinator = match &committed {
            Ok(_) => CoordinatorAnswer::Answered,
            Err(error) => {
                tracing::debug!(stage = self.name, %error, "committed offsets not fetched");
                CoordinatorAnswer::Silent
            }
        };
        let answered = coordinator == CoordinatorAnswer::Answered;
        let committed_at = |topic: &str, partition: i32| match &committed {
            Ok(list) => list.find_partition(topic, partition).and_then(|p| match p.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            }),
            Err(_) => None,
        };
        let mut lags = Vec::with_capacity(watermarks.len());
        let mut at = Vec::with_capacity(watermarks.len());
        for (topic, partition, (low, high)) in watermarks {
            let committed = committed_at(&topic, partition).map_or(low, |c| c.max(low));
            if answered {
                lags.push((topic.clone(), partition, (high - committed).max(0)));
            }
            let position = match positions.find_partition(&topic, partition).map(|p| p.offset()) {
                Some(Offset::Offset(offset)) => offset.max(low),
                // Nothing handed out since it was assigned.
                _ if answered => committed,
                // Unknown: not judged.
                _ => continue,
            };
            at.push(Position { topic, partition, position, high_watermark: high });
        }
        let lags = answered.then_some(lags);
        Measured { lags, positions: at, coordinator }
    }

    /// Sets the gauges; forgets partitions no longer assigned. Answers the
    /// partitions reported.
    fn publish_lag(
        &self,
        lags: Vec<(String, i32, i64)>,
        previously: &[(String, i32)],
    ) -> Vec<(String, i32)> {
        let metrics = &self.metrics;
        let tier_of = |topic: &str| -> Option<String> {
            self.tier_prefix.as_deref().and_then(|p| topic.strip_prefix(p)).map(str::to_owned)
        };
        // Every tier assigned now or before (then at zero), whatever the
        // schedule: the stage reads every tier under the prefix.
        let mut backlog: Vec<(String, i64)> = Vec::new();
        for topic in
            previously.iter().map(|(t, _)| t.as_str()).chain(lags.iter().map(|l| l.0.as_str()))
        {
            if let Some(tier) = tier_of(topic) {
                if !backlog.iter().any(|(t, _)| *t == tier) {
                    backlog.push((tier, 0));
                }
            }
        }
        let mut reported = Vec::with_capacity(lags.len());
        for (topic, partition, lag) in lags {
            let labels = [self.group.as_str(), topic.as_str(), &partition.to_string()];
            metrics.consumer_lag.with_label_values(&labels).set(lag);
            if let Some(tier) = tier_of(&topic) {
                if let Some(entry) = backlog.iter_mut().find(|(t, _)| *t == tier) {
                    entry.1 += lag;
                }
            }
            reported.push((topic, partition));
        }
        for (topic, partition) in previously.iter().filter(|p| !reported.contains(p)) {
            let labels = [self.group.as_str(), topic.as_str(), &partition.to_string()];
            let _ = metrics.consumer_lag.remove_label_values(&labels);
        }
        for (tier, waiting) in backlog {
            metrics.retry_backlog.with_label_values(&[tier.as_str()]).set(waiting);
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

/// The partitions this loop paused, each with what it waits for.
struct Paused {
    partitions: HashMap<(String, i32), Arc<dyn Pressure>>,
    gauge: prometheus::IntGauge,
    /// Tells the watchdog which partitions wait by design.
    heartbeat: Arc<Heartbeat>,
}

impl Paused {
    fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    fn pause(
        &mut self,
        consumer: &StageConsumer,
        stage: &'static str,
        partition: (String, i32),
        pressure: Arc<dyn Pressure>,
    ) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&partition.0, partition.1);
        // librdkafka drops what it prefetched for a paused partition and
        // fetches again from the next record on resume: nothing is skipped.
        // Pausing again is harmless, and needed when the partition was
        // revoked and assigned back meanwhile (a new assignment is unpaused).
        if let Err(error) = consumer.pause(&list) {
            // Not assigned (revoked meanwhile): nothing to pause.
            tracing::debug!(stage, %error, "partition not paused");
            return;
        }
        tracing::debug!(stage, topic = %partition.0, partition = partition.1, "partition paused");
        let pressure = match self.partitions.remove(&partition) {
            // It now waits for the latest reason too.
            Some(waiting) => Arc::new(Both(waiting, pressure)),
            None => pressure,
        };
        self.partitions.insert(partition, pressure);
        self.gauge.set(self.partitions.len() as i64);
        self.heartbeat.set_paused(self.partitions.keys());
    }

    fn resume_relieved(&mut self, consumer: &StageConsumer) {
        let relieved: Vec<(String, i32)> = self
            .partitions
            .iter()
            .filter(|(_, pressure)| pressure.relieved())
            .map(|(partition, _)| partition.clone())
            .collect();
        if relieved.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for partition in &relieved {
            self.partitions.remove(partition);
            list.add_partition(&partition.0, partition.1);
        }
        self.gauge.set(self.partitions.len() as i64);
        self.heartbeat.set_paused(self.partitions.keys());
        // A partition revoked meanwhile is no longer ours to resume: fine.
        if let Err(error) = consumer.resume(&list) {
            tracing::debug!(%error, "partitions not resumed");
        }
    }
}

/// Relieved when both are.
struct Both(Arc<dyn Pressure>, Arc<dyn Pressure>);

impl Pressure for Both {
    fn relieved(&self) -> bool {
        self.0.relieved() && self.1.relieved()
    }
}

/// What a record takes in memory, near enough: payload, key and headers.
fn record_size(message: &impl Message) -> usize {
    let headers = message.headers().map_or(0, |headers| {
        headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum()
    });
    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len) + headers
}
