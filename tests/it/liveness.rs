//! Liveness (guarantee 8): a stage that stops making progress is found stuck
//! within its bound and ends the process (its shutdown is cancelled, the
//! dispatcher answers an error), `/healthz` names it meanwhile; a stage that
//! only waits for room is not stuck; a fatal Kafka error ends it too; and a
//! rebalance neither loses a delivery nor sends one again.
//!
//! The stage tests run `consume::Stage` itself against the real broker, with
//! handlers that behave like the bugs and slow endpoints they stand for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookgate::dispatcher::budget::Budget;
use hookgate::dispatcher::consume::{Begun, Handler, Stage, StageOptions};
use hookgate::dispatcher::offsets::Ticket;
use hookgate::health::Liveness;
use hookgate::kafka::topics::{ensure_topics, TopicSpec};
use hookgate::kafka::{KafkaConfig, Producer};
use hookgate::metrics::Metrics;
use hookgate::ops::{self, Ops};
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use rdkafka::Message;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::harness::kafka::{delete_topics, wait_for_group};
use crate::harness::process::DispatcherProcess;
use crate::harness::{
    eventually, kafka_brokers, process_dispatcher, unique, Reply, TestApp, TestDb, TestReceiver,
};

/// The stages' stall bound in these tests (production: `watchdog::STALL_AFTER`).
const STALL_AFTER: Duration = Duration::from_secs(2);
/// Found within the bound, plus a few measurements and a loaded machine.
const DETECTION: Duration = Duration::from_secs(15);
const DEADLINE: Duration = Duration::from_secs(60);

/// A handler whose `begin` never returns for offset 0: the bug of a
/// handler future that never completes. The other records are done at once.
struct Wedged;

impl Handler for Wedged {
    async fn begin(self: &Arc<Self>, message: &BorrowedMessage<'_>, _ticket: &Ticket) -> Begun {
        if message.offset() == 0 {
            std::future::pending::<()>().await;
        }
        None.into()
    }
}

/// A slow endpoint behind a stage that holds one record at a time: each
/// record takes longer than the stall bound, and the partition stays paused
/// while it runs.
struct Slow {
    done: Arc<AtomicUsize>,
}

impl Handler for Slow {
    async fn begin(self: &Arc<Self>, _message: &BorrowedMessage<'_>, _ticket: &Ticket) -> Begun {
        let done = Arc::clone(&self.done);
        Some(Box::pin(async move {
            tokio::time::sleep(STALL_AFTER + Duration::from_millis(500)).await;
            done.fetch_add(1, Ordering::SeqCst);
            true
        }) as hookgate::dispatcher::consume::Job)
        .into()
    }
}

struct Harness {
    kafka: KafkaConfig,
    topic: String,
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Harness {
    /// A topic of one partition with `records` records on it.
    async fn with_records(name: &str, records: usize) -> Self {
        let kafka = KafkaConfig { brokers: kafka_brokers(), properties: Vec::new() };
        let topic = unique(name);
        ensure_topics(
            &kafka,
            std::slice::from_ref(&topic),
            &TopicSpec { partitions: 1, replication: 1 },
        )
        .await
        .expect("create topic");
        let producer = Producer::new(&kafka).expect("producer");
        for n in 0..records {
            producer
                .send(&topic, Some(b"k"), OwnedHeaders::new(), n.to_string().as_bytes())
                .await
                .expect("record written");
        }
        Self {
            kafka,
            topic,
            liveness: Liveness::new(),
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
        }
    }

    fn stage<H: Handler>(&self, kafka: &KafkaConfig, budget: Budget, handler: H) -> Stage<H> {
        Stage::new(
            kafka,
            StageOptions {
                name: "under-test",
                group_id: &unique("liveness-group"),
                topics: std::slice::from_ref(&self.topic),
                budget,
                budget_per_topic: false,
                revoke_wait: Duration::ZERO,
                drain_deadline: Duration::from_secs(1),
                metrics: Arc::clone(&self.metrics),
                tier_prefix: None,
                liveness: Arc::clone(&self.liveness),
                stall_after: STALL_AFTER,
            },
            Arc::new(handler),
        )
        .expect("stage")
    }

    /// The ops endpoint a dispatcher serves, on this stage's liveness.
    async fn serve_ops(&self) -> String {
        let db = TestDb::sqlite();
        let ops = Ops {
            store: db.store().await,
            producer: Producer::new(&self.kafka).expect("producer"),
            metrics: Arc::clone(&self.metrics),
            liveness: Arc::clone(&self.liveness),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Its own token: the stage under test cancels the process's.
        let shutdown = CancellationToken::new();
        tokio::spawn(async move {
            let _db = db;
            let _ = ops::serve(listener, ops, shutdown).await;
        });
        format!("http://{addr}")
    }

    async fn cleanup(self) {
        delete_topics(&self.kafka.brokers, &self.topic).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_whose_handler_never_returns_is_found_stuck_and_shuts_the_process_down() {
    let harness = Harness::with_records("wedged", 3).await;
    let base = harness.serve_ops().await;
    let client = reqwest::Client::new();
    let live = client.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(live.status(), 200, "healthy before the stage runs");

    let stage = harness.stage(&harness.kafka, Budget::new(100, 1 << 20), Wedged);
    let started = Instant::now();
    let run = tokio::spawn(stage.run(harness.shutdown.clone(), CancellationToken::new()));
    eventually("the wedged stage to shut the process down", DETECTION, || async {
        harness.shutdown.is_cancelled().then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(took >= STALL_AFTER, "found stuck after {took:?}, before its bound");
    let unhealthy = harness.liveness.unhealthy().expect("reported");
    assert_eq!(unhealthy.stage, "under-test");
    assert!(unhealthy.reason.contains("stuck"), "{unhealthy}");

    // What a probe sees (the process's own endpoint stops with it).
    let live = client.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(live.status(), 503);
    assert_eq!(live.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = live.json().await.expect("problem JSON");
    assert_eq!(problem["status"], 503);
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("under-test")), "{problem}");
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(text.contains("hookgate_stage_stuck{stage=\"under-test\"} 1"), "{text}");
    assert!(text.contains("hookgate_stage_last_read_seconds{stage=\"under-test\"}"), "{text}");
    // What never returns cannot drain: the process's own deadline ends it
    // (`Running::wait`, then `shutdown::watchdog`), with exit code 1.
    run.abort();
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_paused_behind_a_slow_endpoint_is_not_stuck() {
    const RECORDS: usize = 3;
    let harness = Harness::with_records("paused", RECORDS).await;
    let done = Arc::new(AtomicUsize::new(0));
    // One record at a time: the partition is paused while each runs, for
    // longer than the stall bound, with records waiting behind it.
    let stage =
        harness.stage(&harness.kafka, Budget::new(1, 1 << 20), Slow { done: Arc::clone(&done) });
    let run = tokio::spawn(stage.run(harness.shutdown.clone(), CancellationToken::new()));
    eventually("every slow record done", DEADLINE, || async {
        assert!(
            harness.liveness.unhealthy().is_none(),
            "a paused stage was reported: {:?}",
            harness.liveness.unhealthy()
        );
        (done.load(Ordering::SeqCst) == RECORDS).then_some(())
    })
    .await;
    assert!(!harness.shutdown.is_cancelled(), "the stage asked to shut down");
    let text = harness.metrics.render();
    assert!(text.contains("hookgate_stage_stuck{stage=\"under-test\"} 0"), "{text}");
    harness.shutdown.cancel();
    let drained = run.await.expect("stage ran");
    assert_eq!(drained.left(), None);
    harness.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_authentication_ends_the_stage_instead_of_retrying_forever() {
    let harness = Harness::with_records("auth", 1).await;
    // SASL against the broker's plaintext listener: authentication fails.
    let mut kafka = harness.kafka.clone();
    kafka.properties = [
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "nobody"),
        ("sasl.password", "wrong"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let stage = harness.stage(&kafka, Budget::new(100, 1 << 20), Wedged);
    let run = tokio::spawn(stage.run(harness.shutdown.clone(), CancellationToken::new()));
    let drained = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the stage ends on a fatal error")
        .expect("stage ran");
    assert!(harness.shutdown.is_cancelled(), "the process is told to stop");
    let unhealthy = harness.liveness.unhealthy().expect("reported");
    assert_eq!(unhealthy.stage, drained.stage);
    assert!(unhealthy.reason.contains("fatal Kafka error"), "{unhealthy}");
    harness.cleanup().await;
}

/// Deliveries take a while, so that some are under way when a second
/// dispatcher joins and partitions move: each still arrives exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_dispatcher_joining_the_group_loses_no_delivery_and_repeats_none() {
    const SUBSCRIPTIONS: usize = 12;
    let dispatcher = process_dispatcher(Duration::from_secs(10));
    let app = TestApp::spawn_with("rebalance", |config| config.dispatcher = None).await;
    let receiver = TestReceiver::answering(|_, _| Reply {
        status: 200,
        retry_after_secs: None,
        // Longer than the second dispatcher takes to start and join.
        delay: Duration::from_secs(6),
    })
    .await;
    // Spread over the deliveries topic's partitions (keyed by subscription).
    for n in 0..SUBSCRIPTIONS {
        app.subscribe(json!({"url": receiver.url, "event_types": ["*"],
            "headers": {"x-subscription": n.to_string()}}))
            .await;
    }
    let mut first = DispatcherProcess::start(&app.config, &dispatcher);
    let group = format!("{}.deliveries", app.topics.group_id);
    wait_for_group(&app.kafka.brokers, &group, 1, DEADLINE).await;
    app.publish(json!({"type": "a.b", "data": {"n": 0}})).await;
    // Every delivery under way at the receiver, then the group changes.
    receiver.wait_for(SUBSCRIPTIONS, DEADLINE).await;
    let mut second = DispatcherProcess::start(&app.config, &dispatcher);
    wait_for_group(&app.kafka.brokers, &group, 2, DEADLINE).await;
    app.publish(json!({"type": "a.b", "data": {"n": 1}})).await;

    let expected = SUBSCRIPTIONS * 2;
    receiver.wait_for(expected, DEADLINE).await;
    // Anything sent again would come within the redelivery of a partition.
    eventually("the deliveries group to commit everything", DEADLINE, || async {
        (app.uncommitted(&group, &app.topics.deliveries).await == 0).then_some(())
    })
    .await;
    let received = receiver.received();
    let mut ids: Vec<(&str, &str)> =
        received.iter().map(|r| (r.header("webhook-id"), r.header("x-subscription"))).collect();
    ids.sort_unstable();
    let total = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), expected, "every delivery arrived");
    assert_eq!(total, expected, "none arrived twice");
    first.kill().await;
    second.kill().await;
    app.stop().await;
}
