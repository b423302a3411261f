//! At least once under failure: 10,000 events while the dispatcher is killed
//! (SIGKILL) and restarted, then while the broker restarts; and 6,000 events
//! while the broker restarts three times. For every subscription, every
//! event is delivered or dead-lettered; duplicates are counted and printed.
//! After the first kill the dispatcher runs supervised, as deployed: its
//! watchdog may end it when a stage is stuck after the broker came back,
//! and the restarts are printed too.
//!
//! A test binary of its own: cargo runs test binaries one after another, so
//! restarting the shared broker disturbs no other test (and the tests here
//! take turns).

// A test that cannot go on fails with the expectation it names; the
// harness's items are this binary's own, whatever their visibility.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

#[allow(dead_code)]
#[path = "it/harness/mod.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hookgate::config::{DispatcherConfig, RetrySchedule};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use harness::kafka::headers_of;
use harness::process::DispatcherProcess;
use harness::ForTests;
use harness::{eventually, Reply, TestApp, TestReceiver};
use rdkafka::consumer::{Consumer, StreamConsumer};

const EVENTS: usize = 10_000;
/// Events whose deliveries to the picky receiver always fail.
const REFUSED_EVERY: usize = 500;
const DEADLINE: Duration = Duration::from_secs(300);

fn event_id(n: usize) -> String {
    format!("chaos-{n}")
}

async fn restart_broker() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-env");
    let status = tokio::process::Command::new(script)
        .arg("restart-kafka")
        .status()
        .await
        .expect("run test-env");
    assert!(status.success(), "scripts/test-env restart-kafka failed");
}

/// The dispatcher process's settings: quick retries, the default budgets.
fn dispatcher_config() -> DispatcherConfig {
    DispatcherConfig {
        retry_schedule: RetrySchedule(vec![Duration::from_millis(200), Duration::from_millis(400)]),
        ..DispatcherConfig::for_tests()
    }
}

/// A plain idempotent producer that rides out broker restarts.
fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// Writes the events numbered `range` (CloudEvents binary mode, 64 keys).
async fn publish(producer: &FutureProducer, topic: &str, range: std::ops::Range<usize>) {
    let sends = range.map(|n| {
        let id = event_id(n);
        async move {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "ce_specversion", value: Some("1.0") })
                .insert(Header { key: "ce_id", value: Some(id.as_str()) })
                .insert(Header { key: "ce_type", value: Some("chaos.tick") })
                .insert(Header { key: "ce_source", value: Some("chaos") })
                .insert(Header { key: "content-type", value: Some("application/json") });
            let payload = json!({"n": n}).to_string();
            let key = format!("k{}", n % 64);
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload).headers(headers),
                    Duration::from_secs(60),
                )
                .await
                .expect("event written");
        }
    });
    futures::future::join_all(sends).await;
}

/// Deliveries per event id that `receiver` answered 204.
fn delivered(receiver: &TestReceiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.received().iter().filter(|r| r.status == 204) {
        let n = request.json()["data"]["n"].as_u64().unwrap_or(u64::MAX) as usize;
        *counts.entry(event_id(n)).or_insert(0) += 1;
    }
    counts
}

/// A dispatcher process run as a deployment runs it: one that exits (its
/// watchdog found a stage stuck after the broker came back, and exited so
/// as to be restarted) is started again, and the restarts are counted.
struct Supervised {
    stop: tokio_util::sync::CancellationToken,
    supervisor: tokio::task::JoinHandle<usize>,
}

impl Supervised {
    fn start(app: &TestApp, settings: &DispatcherConfig) -> Self {
        let (config, settings) = (app.config.clone(), settings.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let supervisor = tokio::spawn(async move {
            let mut dispatcher = DispatcherProcess::start(&config, &settings);
            let mut restarts = 0;
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => {
                        dispatcher.kill().await;
                        return restarts;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if dispatcher.restart_if_exited(&config, &settings) {
                    restarts += 1;
                }
            }
        });
        Self { stop, supervisor }
    }

    /// Kills the dispatcher; answers how often it was restarted.
    async fn stop(self) -> usize {
        self.stop.cancel();
        self.supervisor.await.expect("supervisor")
    }
}

/// The tests here restart the one broker: one at a time.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_delivered_or_dead_lettered_through_kills_and_broker_restarts() {
    let _broker = BROKER.lock().await;
    let dispatcher_config = dispatcher_config();
    let app = TestApp::spawn_with("chaos", |config| config.dispatcher = None).await;
    let healthy = TestReceiver::start().await;
    let picky = TestReceiver::answering(|_, body| {
        let n = body["data"]["n"].as_u64().unwrap_or(0) as usize;
        Reply::status(if n % REFUSED_EVERY == 0 { 500 } else { 204 })
    })
    .await;
    let healthy_id =
        app.subscribe(json!({"url": healthy.url, "event_types": ["chaos.*"]})).await["id"].clone();
    let picky_id =
        app.subscribe(json!({"url": picky.url, "event_types": ["chaos.*"]})).await["id"].clone();

    let mut dispatcher = DispatcherProcess::start(&app.config, &dispatcher_config);
    let producer = producer(&app.kafka.brokers);
    let publish = |range| publish(&producer, &app.topics.publish, range);

    // A third, then SIGKILL mid-stream and a restart.
    publish(0..EVENTS / 3).await;
    healthy.wait_for(EVENTS / 10, DEADLINE).await;
    dispatcher.kill().await;
    publish(EVENTS / 3..2 * EVENTS / 3).await;
    // From here on it runs supervised, as deployed.
    let supervised = Supervised::start(&app, &dispatcher_config);
    // Another third, then the broker restarts mid-stream.
    healthy.wait_for(EVENTS / 2, DEADLINE).await;
    let (_, ()) = tokio::join!(publish(2 * EVENTS / 3..EVENTS), restart_broker());

    let refused = (0..EVENTS).filter(|n| n % REFUSED_EVERY == 0).count();
    // Dead letters per subscription; a killed dispatcher may write one twice.
    let dead_ids: HashMap<String, HashSet<String>> = {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &app.kafka.brokers)
            .set("group.id", harness::unique("dlq-reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[app.topics.dlq.as_str()]).expect("subscribe");
        let mut dead_ids: HashMap<String, HashSet<String>> = HashMap::new();
        let picky = picky_id.as_str().expect("id").to_owned();
        let read = async {
            while dead_ids.get(&picky).map_or(0, HashSet::len) < refused {
                let Ok(record) = consumer.recv().await else { continue };
                let record = record.detach();
                let headers = headers_of(&record);
                dead_ids
                    .entry(headers["hookgate_subscription"].clone())
                    .or_default()
                    .insert(headers["ce_id"].clone());
            }
        };
        tokio::time::timeout(DEADLINE, read).await.expect("every refused event dead-lettered");
        dead_ids
    };
    for (name, receiver, id) in [("healthy", &healthy, &healthy_id), ("picky", &picky, &picky_id)] {
        let id = id.as_str().expect("id").to_owned();
        let counts = eventually(
            &format!("every event delivered or dead-lettered for {name}"),
            DEADLINE,
            || async {
                let counts = delivered(receiver);
                let dead = dead_ids.get(&id).cloned().unwrap_or_default();
                let missing = (0..EVENTS)
                    .filter(|n| {
                        !counts.contains_key(&event_id(*n)) && !dead.contains(&event_id(*n))
                    })
                    .count();
                (missing == 0).then_some(counts)
            },
        )
        .await;
        let duplicates: usize = counts.values().map(|c| c - 1).sum();
        println!(
            "{name}: {} delivered, {} dead-lettered, {duplicates} duplicate deliveries",
            counts.len(),
            dead_ids.get(&id).map_or(0, HashSet::len)
        );
    }
    assert_eq!(dead_ids.get(picky_id.as_str().expect("id")).map_or(0, HashSet::len), refused);
    let restarts = supervised.stop().await;
    println!("dispatcher restarted by its supervisor {restarts} time(s) after the broker restart");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_broker_restarts_while_publishing_lose_nothing() {
    let _broker = BROKER.lock().await;
    const EVENTS: usize = 6_000;
    let dispatcher_config = dispatcher_config();
    let app = TestApp::spawn_with("chaos-restarts", |config| config.dispatcher = None).await;
    let receiver = TestReceiver::start().await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["chaos.*"]})).await;
    let supervised = Supervised::start(&app, &dispatcher_config);
    let producer = producer(&app.kafka.brokers);
    let chunk = EVENTS / 4;
    publish(&producer, &app.topics.publish, 0..chunk).await;
    for round in 1..4 {
        // Each restart lands while a quarter of the events is being written.
        let range = round * chunk..(round + 1) * chunk;
        let (_, ()) =
            tokio::join!(publish(&producer, &app.topics.publish, range), restart_broker());
    }
    let counts =
        eventually("every event delivered after three broker restarts", DEADLINE, || async {
            let counts = delivered(&receiver);
            (counts.len() == EVENTS).then_some(counts)
        })
        .await;
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let restarts = supervised.stop().await;
    println!(
        "three broker restarts: {EVENTS} events delivered, {duplicates} duplicate deliveries, \
         dispatcher restarted {restarts} time(s)"
    );
    app.stop().await;
}
