//! The dispatcher, in three stages, each a consumer group:
//!
//! source topics → `fan_out` (match via `cache`) → deliveries topic, keyed by
//! subscription → `deliver` (`gate`: lane, in-flight cap, rate limit;
//! `webhook`: the signed POST through `crate::delivery`, the attempt logged)
//! → done, or a retry tier topic → `retry` delay line → deliveries topic
//! again, or → `dlq`.
//!
//! The dead-letter topic → `dlq_index` → the store, where admins filter it;
//! `replay` sends dead letters again (bulk jobs run here, by lease) and
//! `store::retention` purges what is older than the retention period.
//!
//! Each batch the attempt log writes moves the subscriptions' health on;
//! `lifecycle` turns what changed into operational events (failing,
//! recovered) and disables a subscription that fails for good. Operational
//! events (`crate::kafka::operational`) come back through `fan_out` from
//! their own topic, to the tenant's `hookgate.*` subscriptions.
//!
//! `consume` is the loop the stages share: offsets are stored only below the
//! lowest record still in flight (`offsets`), so nothing is committed before
//! it is delivered or durably handed on. A `watchdog` per stage ends the
//! process when a stage stops making progress (reported to
//! `health::Liveness`).

pub mod budget;
pub mod cache;
pub mod circuit;
pub mod consume;
pub mod deliver;
pub mod dlq;
pub mod dlq_index;
pub mod fan_out;
pub mod gate;
pub mod lanes;
pub mod lifecycle;
pub mod offsets;
pub mod parked_lanes;
pub mod policy;
pub mod replay;
pub mod retry;
pub mod watchdog;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{DispatcherConfig, SubscriptionLimits, Topics};
use crate::delivery::{self, EgressRules};
use crate::health::{Liveness, Unhealthy};
use crate::kafka::operational::OperationalEvents;
use crate::kafka::{KafkaConfig, Producer};
use crate::metrics::Metrics;
use crate::store::{retention, AttemptLog, Store};
use budget::Budget;
use cache::SubscriptionCache;
use consume::{Stage, StageOptions};
use deliver::Deliver;
use dlq::DeadLetters;
use dlq_index::DlqIndexer;
use fan_out::FanOut;
use gate::Shares;
use lanes::Lanes;
use lifecycle::Lifecycle;
use policy::RetryPolicy;
use replay::ReplayLimits;
use replay::ReplayRunner;
use retry::{tier_pattern, DelayLine};
use watchdog::STALL_AFTER;
use webhook::Webhooks;

/// Source records being fanned out at once.
const FAN_OUT_BUDGET: Budget = Budget::new(1_024, 64 << 20);
/// Dead letters being written to the store at once.
const INDEX_BUDGET: Budget = Budget::new(256, 32 << 20);
/// Bytes one retry tier holds while its records wait.
const RETRY_TIER_BYTES: usize = 64 << 20;
/// After the stages: how long the attempt log writer and the background
/// tasks get to finish (see `shutdown::GRACE`).
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("a dispatcher stage failed")]
    StageFailed,
    /// A stage was stuck or hit a fatal Kafka error (see `watchdog`).
    #[error("{0}")]
    Unhealthy(Unhealthy),
    /// Shutdown gave up on some work; it is read again after a restart.
    #[error("shutdown left work unfinished (read again after a restart): {0}")]
    Unfinished(String),
}

/// Runs until `shutdown`, then drains what is under way and commits.
// Each argument is one piece of the process it runs in; a struct bundling
// them would only be unpacked here.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    kafka: &KafkaConfig,
    store: Arc<dyn Store>,
    producer: Producer,
    topics: &Topics,
    config: &DispatcherConfig,
    limits: SubscriptionLimits,
    egress: Arc<EgressRules>,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let cache = Arc::new(SubscriptionCache::new(Arc::clone(&store)));
    cache.refresh().await?;
    let poller = tokio::spawn(Arc::clone(&cache).poll(shutdown.clone()));
    let operational = OperationalEvents::new(producer.clone(), &topics.operational);
    let lifecycle = Arc::new(Lifecycle {
        store: Arc::clone(&store),
        cache: Arc::clone(&cache),
        operational: operational.clone(),
        policy: config.lifecycle,
    });
    let log_stop = CancellationToken::new();
    let (log, log_writer) =
        AttemptLog::spawn(Arc::clone(&store), Some(lifecycle as _), log_stop.clone());
    // Cancelled once the drain deadline passed: stop trying to hand work on.
    let abort = CancellationToken::new();
    let dead_letters = DeadLetters {
        producer: producer.clone(),
        topic: topics.dlq.clone(),
        abort: abort.clone(),
        metrics: Arc::clone(&metrics),
    };
    let drain = drain_deadline(config.request_timeout);
    let fan_out_topics = topics.fan_out_topics();

    let fan_out = Stage::new(
        kafka,
        StageOptions {
            name: "fan-out",
            group_id: &topics.group_id,
            topics: &fan_out_topics,
            budget: FAN_OUT_BUDGET,
            budget_per_topic: false,
            revoke_wait: Duration::ZERO,
            drain_deadline: drain,
            metrics: Arc::clone(&metrics),
            tier_prefix: None,
            liveness: Arc::clone(&liveness),
            stall_after: STALL_AFTER,
        },
        Arc::new(FanOut {
            cache: Arc::clone(&cache),
            producer: producer.clone(),
            deliveries_topic: topics.deliveries.clone(),
            operational_topic: topics.operational.clone(),
            dead_letters: dead_letters.clone(),
            deferred: Lanes::default(),
            shutdown: shutdown.clone(),
        }),
    )?;
    let budgets = config.budgets;
    let deliver_handler = Arc::new(Deliver {
        cache: Arc::clone(&cache),
        store: Arc::clone(&store),
        gates: gate::Gates::new(config.circuit),
        shares: Shares {
            tenant: budgets.tenant,
            max_in_flight: limits.max_in_flight,
            stage: budgets.stage,
        },
        webhooks: Webhooks::new(
            delivery::Client::new(egress, config.request_timeout, config.excerpts)?,
            log,
        ),
        producer: producer.clone(),
        policy: RetryPolicy {
            schedule: config.retry_schedule.clone(),
            max_age: config.max_delivery_age,
            topics: topics.clone(),
        },
        dead_letters: dead_letters.clone(),
        operational: operational.clone(),
        replay_limits: ReplayLimits::default(),
        unknown: Lanes::default(),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(&metrics),
    });
    let sweep = tokio::spawn(Arc::clone(&deliver_handler).sweep(shutdown.clone()));
    let deliver = Stage::new(
        kafka,
        StageOptions {
            name: "deliver",
            group_id: &format!("{}.deliveries", topics.group_id),
            topics: std::slice::from_ref(&topics.deliveries),
            budget: Budget::new(budgets.stage, budgets.stage_bytes),
            budget_per_topic: false,
            // Losing a partition waits for its requests under way, so that
            // two dispatchers never send for one subscription at once.
            revoke_wait: config.request_timeout + Duration::from_secs(1),
            drain_deadline: drain,
            metrics: Arc::clone(&metrics),
            tier_prefix: None,
            liveness: Arc::clone(&liveness),
            stall_after: STALL_AFTER,
        },
        deliver_handler,
    )?;
    // Every tier under the prefix, also those of an earlier schedule.
    let tier_topics = [tier_pattern(&topics.retry_prefix)];
    let retries = Stage::new(
        kafka,
        StageOptions {
            name: "retry",
            group_id: &format!("{}.retries", topics.group_id),
            topics: &tier_topics,
            budget: Budget::new(budgets.retry_tier, RETRY_TIER_BYTES),
            budget_per_topic: true,
            revoke_wait: Duration::ZERO,
            drain_deadline: drain,
            metrics: Arc::clone(&metrics),
            tier_prefix: Some(&topics.retry_prefix),
            liveness: Arc::clone(&liveness),
            stall_after: STALL_AFTER,
        },
        Arc::new(DelayLine {
            producer: producer.clone(),
            deliveries_topic: topics.deliveries.clone(),
            dead_letters,
            shutdown: shutdown.clone(),
            lanes: Lanes::default(),
        }),
    )?;
    let index = Stage::new(
        kafka,
        StageOptions {
            name: "dead-letter-index",
            group_id: &format!("{}.dlq-index", topics.group_id),
            topics: std::slice::from_ref(&topics.dlq),
            budget: INDEX_BUDGET,
            budget_per_topic: false,
            revoke_wait: Duration::ZERO,
            drain_deadline: drain,
            metrics,
            tier_prefix: None,
            liveness: Arc::clone(&liveness),
            stall_after: STALL_AFTER,
        },
        Arc::new(DlqIndexer::new(
            Arc::clone(&store),
            shutdown.clone(),
            config.retention,
            operational.clone(),
        )),
    )?;
    let replays = tokio::spawn(
        ReplayRunner {
            store: Arc::clone(&store),
            producer: producer.clone(),
            deliveries_topic: topics.deliveries.clone(),
            owner: format!("replay-runner-{}", ulid::Ulid::new()),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let retention = tokio::spawn(retention::run(
        Arc::clone(&store),
        config.retention,
        config.deleted_retention,
        shutdown.clone(),
    ));
    tracing::info!(topics = ?topics.source, group = %topics.group_id, "dispatcher started");

    let stages = [
        tokio::spawn(fan_out.run(shutdown.clone(), abort.clone())),
        tokio::spawn(deliver.run(shutdown.clone(), abort.clone())),
        tokio::spawn(retries.run(shutdown.clone(), abort.clone())),
        tokio::spawn(index.run(shutdown.clone(), abort.clone())),
    ];
    let stages = futures::future::join_all(stages.map(|stage| async {
        let drained = stage.await;
        if let Err(error) = &drained {
            // A stage that died stops the process, so that its supervisor
            // restarts it rather than leave partitions unread.
            tracing::error!(%error, "dispatcher stage failed; shutting down");
            shutdown.cancel();
        }
        drained
    }))
    .await;
    let mut left = Vec::new();
    let mut failed = false;
    for drained in stages {
        match drained {
            Ok(drained) => left.extend(drained.left()),
            Err(_) => failed = true,
        }
    }
    // The writer finishes its queue (work left running may still hold
    // senders). The others stopped at the signal; a database that is away
    // must not hold them.
    log_stop.cancel();
    let background = [
        ("attempt log writer", log_writer),
        ("subscription poller", poller),
        ("replay runner", replays),
        ("retention", retention),
        ("gate sweep", sweep),
    ];
    let end = tokio::time::Instant::now() + BACKGROUND_TIMEOUT;
    for (name, mut task) in background {
        if tokio::time::timeout_at(end, &mut task).await.is_err() {
            task.abort();
            left.push(format!("{name}: stopped unfinished"));
        }
    }
    // Before what shutdown left: that is what the stage's trouble caused.
    if let Some(unhealthy) = liveness.unhealthy() {
        return Err(Error::Unhealthy(unhealthy));
    }
    if failed {
        return Err(Error::StageFailed);
    }
    if !left.is_empty() {
        return Err(Error::Unfinished(left.join("; ")));
    }
    Ok(())
}

/// How long shutdown waits for the dispatcher's work under way: a request
/// ends within `request_timeout`, then its outcome is written.
pub fn drain_deadline(request_timeout: Duration) -> Duration {
    request_timeout + Duration::from_secs(10)
}
