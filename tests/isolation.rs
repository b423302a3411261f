//! The delivery engine that no endpoint and no tenant can stall, against the
//! real broker: a tarpit tenant, an endpoint that starts hanging mid-stream,
//! a dead `ordered` endpoint with a busy key, a consumer starved of room, a
//! full long retry tier, a changed retry schedule, a database blip, and
//! subscriptions paused or deleted while their deliveries wait.
//!
//! A test binary of its own, whose tests take turns: they measure latency and
//! throughput against a baseline, and cargo runs test binaries one after
//! another, so no other test's load is in what they measure.

// A test that cannot go on fails with the expectation it names; the
// harness's items are this binary's own, whatever their visibility.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

#[allow(dead_code)]
#[path = "it/harness/mod.rs"]
mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookgate::config::{AppConfig, DeliveryBudgets, RetrySchedule};
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::process::DispatcherProcess;
use crate::harness::proxy::DbProxy;
use crate::harness::{eventually, Reply, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

/// One test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dispatcher(config: &mut AppConfig) -> &mut hookgate::config::DispatcherConfig {
    config.dispatcher.as_mut().expect("the app runs a dispatcher")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A receiver that answers 200 after `delay`.
async fn slow(delay: Duration) -> TestReceiver {
    TestReceiver::answering(move |_, _| Reply { status: 200, retry_after_secs: None, delay }).await
}

/// Publishes `n` events for tenant key `key`, one request each, `gap` apart,
/// and answers the latency of each at `receiver` (which gets nothing else).
async fn latencies(
    app: &TestApp,
    key: &str,
    receiver: &TestReceiver,
    n: usize,
    gap: Duration,
) -> Vec<Duration> {
    let before = receiver.received().len();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let at = Instant::now();
        let (status, _) = app
            .call(Method::POST, "/v1/events", key, Some(json!({"type": "a.b", "data": {"i": i}})))
            .await;
        assert_eq!(status, 202);
        sent.push(at);
        tokio::time::sleep_until(at + gap).await;
    }
    let received = receiver.wait_for(before + n, DEADLINE).await;
    let mut latencies: Vec<Duration> = received[before..]
        .iter()
        .map(|r| {
            let i = r.json()["data"]["i"].as_u64().expect("index") as usize;
            r.at - sent[i]
        })
        .collect();
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tarpit_tenant_at_its_largest_max_in_flight_leaves_another_tenants_p99_within_twice_its_baseline(
) {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("tarpit", |config| {
        dispatcher(config).request_timeout = secs(3);
        // B's flood is more than the whole stage holds.
        dispatcher(config).budgets =
            DeliveryBudgets { stage: 1_024, tenant: 1_024, ..DeliveryBudgets::default() };
        // Parked deliveries stay parked while A is measured: what is
        // measured is the engine, not the machine's load of parking churn.
        dispatcher(config).retry_schedule = RetrySchedule(vec![secs(60)]);
    })
    .await;
    let (_a, key_a) = app.tenant_with_key("a").await;
    let (_b, key_b) = app.tenant_with_key("b").await;
    let healthy = TestReceiver::start().await;
    let tarpit = slow(Duration::from_millis(2_500)).await;
    let limit = app.config.limits.max_in_flight;
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            &key_b,
            Some(json!({"url": tarpit.url, "event_types": ["*"], "max_in_flight": limit + 1})),
        )
        .await;
    assert_eq!(status, 422, "no max_in_flight above the server's limit");
    for (key, url, max_in_flight) in
        [(&key_a, &healthy.url, None), (&key_b, &tarpit.url, Some(limit))]
    {
        let body = json!({"url": url, "event_types": ["*"], "max_in_flight": max_in_flight});
        let (status, created) = app.call(Method::POST, "/v1/subscriptions", key, Some(body)).await;
        assert_eq!(status, 201, "{created}");
    }
    // Warm up, then the baseline of tenant A alone.
    latencies(&app, &key_a, &healthy, 20, Duration::from_millis(10)).await;
    let baseline = latencies(&app, &key_a, &healthy, 200, Duration::from_millis(20)).await;

    // Tenant B floods its tarpit with twice what the whole stage holds.
    // Measured once fan-out is through it and the tarpit holds all it can:
    // what is measured is the deliver stage beside it.
    const FLOOD: usize = 2_000;
    for batch in 0..FLOOD / 1_000 {
        let events: Vec<_> =
            (0..1_000).map(|i| json!({"type": "a.b", "data": {"b": batch, "i": i}})).collect();
        let body = Some(json!({ "events": events }));
        let (status, _) = app.call(Method::POST, "/v1/events/batch", &key_b, body).await;
        assert_eq!(status, 202);
    }
    let (group, events) = (app.topics.group_id.clone(), app.topics.publish.clone());
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let left = app.uncommitted(&group, &events).await;
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() > end {
            // What the stages say, so that a stall names its place.
            let text = metrics_text(&app).await;
            let names = [
                "hookgate_consumer_lag",
                "hookgate_paused_partitions",
                "hookgate_stage_",
                "hookgate_deliveries_in_flight",
                "hookgate_parked_total",
                "hookgate_stalled_partitions",
            ];
            let state: Vec<&str> =
                text.lines().filter(|l| names.iter().any(|n| l.starts_with(n))).collect();
            panic!("B's flood not fanned out after {DEADLINE:?}: {left} publish records uncommitted; the app's metrics:\n{}", state.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tarpit.wait_for(limit as usize, DEADLINE).await;
    eventually("B's backlog parked", DEADLINE, || async {
        (parked(&app).await >= (FLOOD - 2 * limit as usize) as f64).then_some(())
    })
    .await;
    let during = latencies(&app, &key_a, &healthy, 200, Duration::from_millis(20)).await;

    // A floor for the noise of a loaded 2-core machine: 10 ms.
    let bound = 2 * p99(&baseline).max(Duration::from_millis(10));
    eprintln!(
        "tenant A's p99: baseline {:?}, beside the tarpit {:?}",
        p99(&baseline),
        p99(&during)
    );
    assert!(
        p99(&during) <= bound,
        "tenant A's p99 {:?} beside the tarpit, baseline {:?}",
        p99(&during),
        p99(&baseline)
    );
    app.stop().await;
}

/// Events a second of `stream_kept_up_with`, for 6 s.
const RATE: usize = 500;
const STREAMED: usize = 6 * RATE;

/// Publishes `batch(second)` (`RATE` events) each second for 6 s, and
/// checks that `healthy` kept up: at least 90 % of what was published
/// arrived while it was published (and a second's grace).
async fn stream_kept_up_with(
    app: &TestApp,
    healthy: &TestReceiver,
    mut batch: impl FnMut(u64) -> Vec<serde_json::Value>,
) {
    let started = Instant::now();
    for second in 0..6 {
        let events = batch(second);
        let response = app.post_json("/v1/events/batch", json!({ "events": events })).await;
        assert_eq!(response.status(), 202);
        tokio::time::sleep_until(started + secs(second + 1)).await;
    }
    let published_for = started.elapsed();
    tokio::time::sleep_until(started + published_for + secs(1)).await;
    let kept_up = healthy.received().len();
    assert!(kept_up * 10 >= STREAMED * 9, "only {kept_up} of {STREAMED} delivered in time");
}

/// Deliveries parked so far, from the app's `/metrics`.
async fn parked(app: &TestApp) -> f64 {
    metric(app, "hookgate_parked_total{").await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_starts_hanging_mid_stream_leaves_the_others_at_full_rate_and_offsets_moving(
) {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("hang-mid-stream", |config| {
        dispatcher(config).request_timeout = secs(3);
        dispatcher(config).retry_schedule = RetrySchedule(vec![secs(30)]);
        // Smaller than what the hanging endpoint is sent: were its
        // deliveries to stay, they would fill the stage and stall the other.
        dispatcher(config).budgets =
            DeliveryBudgets { stage: 2_048, tenant: 2_048, ..DeliveryBudgets::default() };
    })
    .await;
    let hanging = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&hanging);
    let turning = TestReceiver::answering(move |_, _| Reply {
        status: 200,
        retry_after_secs: None,
        delay: if flag.load(Ordering::SeqCst) { secs(30) } else { Duration::ZERO },
    })
    .await;
    let healthy = TestReceiver::start().await;
    for url in [&turning.url, &healthy.url] {
        app.subscribe(json!({"url": url, "event_types": ["*"]})).await;
    }
    // The endpoint hangs from the second second.
    stream_kept_up_with(&app, &healthy, |second| {
        if second == 1 {
            hanging.store(true, Ordering::SeqCst);
        }
        (0..RATE).map(|i| json!({"type": "a.b", "data": {"s": second, "i": i}})).collect()
    })
    .await;
    healthy.wait_for(STREAMED, DEADLINE).await;
    // The hanging endpoint's backlog left the partition: once its last
    // requests time out (3 s), everything is committed, long before its
    // parked deliveries come back (30 s).
    let group = format!("{}.deliveries", app.topics.group_id);
    let deliveries = app.topics.deliveries.clone();
    eventually("the deliveries topic committed past the hanging endpoint", secs(15), || async {
        (app.uncommitted(&group, &deliveries).await == 0).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_ordered_endpoint_with_a_busy_key_parks_its_lanes_keeps_the_others_at_full_rate_and_their_order(
) {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("ordered-dead", |config| {
        dispatcher(config).request_timeout = secs(3);
        // Only a lane's head is attempted, and its retries do not open the
        // circuit: it must not run out of attempts (and be dead-lettered,
        // rightly) while the endpoint is down, up to about 22 s here.
        let mut schedule = vec![secs(1), secs(2)];
        schedule.extend([secs(4); 10]);
        dispatcher(config).retry_schedule = RetrySchedule(schedule);
        // Smaller than the busy key's backlog: were it to wait in its lane
        // here, it would fill the stage and stall the other subscription.
        dispatcher(config).budgets =
            DeliveryBudgets { stage: 1_024, tenant: 1_024, ..DeliveryBudgets::default() };
        // Probes every 5 s at most: however long the endpoint was down (a
        // loaded machine takes longer to commit), it is found back soon.
        dispatcher(config).circuit.max_open = secs(5);
    })
    .await;
    let dead = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&dead);
    let ordered = TestReceiver::answering(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) { 503 } else { 200 })
    })
    .await;
    let healthy = TestReceiver::start().await;
    app.subscribe(json!({"url": ordered.url, "event_types": ["*"], "ordered": true})).await;
    app.subscribe(json!({"url": healthy.url, "event_types": ["*"]})).await;
    // Four events in five for one busy key.
    const KEYS: [&str; 5] = ["busy", "busy", "busy", "busy", "quiet"];
    let mut next_n = [0u64; 5];
    stream_kept_up_with(&app, &healthy, |_| {
        (0..RATE)
            .map(|i| {
                let k = if KEYS[i % 5] == "busy" { 0 } else { 4 };
                next_n[k] += 1;
                let key = KEYS[k];
                json!({"type": "a.b", "key": key, "data": {"key": key, "n": next_n[k] - 1}})
            })
            .collect()
    })
    .await;
    // Its lanes wait in a retry tier, not in the partition: everything is
    // committed while the endpoint is still down.
    let group = format!("{}.deliveries", app.topics.group_id);
    let deliveries = app.topics.deliveries.clone();
    eventually("the deliveries topic committed past the dead endpoint", secs(15), || async {
        (app.uncommitted(&group, &deliveries).await == 0).then_some(())
    })
    .await;
    assert!(metric(&app, "hookgate_parked_total{reason=\"lane_parked\"}").await > 0.0);
    // Back up: each key's events arrive, all of them, in order.
    dead.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let total = (next_n[0] + next_n[4]) as usize;
    eventually("every ordered event delivered once the endpoint is back", secs(90), || async {
        let ok = ordered.received().iter().filter(|r| r.status == 200).count();
        (ok >= total).then_some(())
    })
    .await;
    eprintln!("ordered lanes drained {:?} after the endpoint came back", back.elapsed());
    let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for request in ordered.received().iter().filter(|r| r.status == 200) {
        let data = &request.json()["data"];
        let key = data["key"].as_str().expect("key").to_owned();
        seen.entry(key).or_default().push(data["n"].as_u64().expect("n"));
    }
    for (key, k) in [("busy", 0), ("quiet", 4)] {
        let mut sequence = seen.remove(key).unwrap_or_default();
        // At least once: a copy may repeat, never come after a later one.
        assert!(
            sequence.windows(2).all(|w| w[0] <= w[1]),
            "{key} out of order: {:?}",
            sequence.windows(2).find(|w| w[0] > w[1])
        );
        sequence.dedup();
        assert_eq!(sequence, (0..next_n[k]).collect::<Vec<_>>(), "{key}: every event");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_starved_of_room_keeps_polling_and_is_not_evicted() {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("starved", |config| {
        dispatcher(config).request_timeout = secs(30);
        dispatcher(config).budgets =
            DeliveryBudgets { stage: 16, tenant: 1_000, ..DeliveryBudgets::default() };
        // Evicted after 10 s without a poll (librdkafka's floor is the
        // session timeout, 10 s).
        config.kafka.properties.push(("max.poll.interval.ms".into(), "10000".into()));
    })
    .await;
    // Sixteen subscriptions each hold one slow delivery: the stage is full
    // for longer than the poll interval.
    let slow_receiver = slow(secs(13)).await;
    for _ in 0..16 {
        app.subscribe(json!({"url": slow_receiver.url, "event_types": ["slow.once"]})).await;
    }
    app.publish(json!({"type": "slow.once", "data": {}})).await;
    slow_receiver.wait_for(16, DEADLINE).await;
    let healthy = TestReceiver::start().await;
    app.subscribe(json!({"url": healthy.url, "event_types": ["fast"]})).await;
    app.publish(json!({"type": "fast", "data": {}})).await;
    // Past the poll interval, the slow answers come back and the healthy one goes.
    healthy.wait_for(1, DEADLINE).await;
    // Give a second owner (after an eviction) time to send again.
    let settled = Instant::now() + secs(5);
    tokio::time::sleep_until(settled).await;
    assert_eq!(
        slow_receiver.received().len(),
        16,
        "each slow delivery was sent once: the consumer kept its partitions"
    );
    assert_eq!(healthy.received().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_long_tier_does_not_delay_the_short_tier() {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("tiers", |config| {
        dispatcher(config).retry_schedule = RetrySchedule(vec![secs(1), secs(30)]);
        dispatcher(config).budgets =
            DeliveryBudgets { retry_tier: 8, ..DeliveryBudgets::default() };
    })
    .await;
    // 40 deliveries wait 30 s in the long tier: five times its budget.
    let asks_to_wait = TestReceiver::answering(|_, _| Reply {
        status: 503,
        retry_after_secs: Some(30),
        delay: Duration::ZERO,
    })
    .await;
    app.subscribe(json!({"url": asks_to_wait.url, "event_types": ["long"]})).await;
    let events: Vec<_> = (0..40).map(|i| json!({"type": "long", "data": {"i": i}})).collect();
    assert_eq!(app.post_json("/v1/events/batch", json!({ "events": events })).await.status(), 202);
    asks_to_wait.wait_for(1, DEADLINE).await;
    let long_tier = app.topics.retry_topic(secs(30));
    eventually("the long tier filled", DEADLINE, || async {
        (app.records_on(&long_tier).await >= 40).then_some(())
    })
    .await;
    // Now a delivery that fails once goes through the 1 s tier, on time.
    let once = TestReceiver::answering(|n, _| Reply::status(if n == 0 { 500 } else { 204 })).await;
    app.subscribe(json!({"url": once.url, "event_types": ["short"]})).await;
    app.publish(json!({"type": "short", "data": {}})).await;
    let received = once.wait_for(2, secs(20)).await;
    let waited = received[1].at - received[0].at;
    assert!(waited < secs(4), "the 1 s retry came after {waited:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_retry_schedule_between_two_runs_strands_no_pending_retry() {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("schedule-change", |config| {
        dispatcher(config).retry_schedule = RetrySchedule(vec![secs(6)]);
    })
    .await;
    let receiver =
        TestReceiver::answering(|n, _| Reply::status(if n == 0 { 500 } else { 204 })).await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {}})).await;
    receiver.wait_for(1, DEADLINE).await;
    let old_tier = app.topics.retry_topic(secs(6));
    eventually("the retry in the 6 s tier", DEADLINE, || async {
        (app.records_on(&old_tier).await >= 1).then_some(())
    })
    .await;
    // The next run has another schedule: the 6 s tier is not in it.
    let app = app
        .restart_with(|config| dispatcher(config).retry_schedule = RetrySchedule(vec![secs(1)]))
        .await;
    let received = receiver.wait_for(2, DEADLINE).await;
    assert_eq!(received[1].status, 204, "the stranded retry was delivered");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_blip_during_a_refresh_drops_no_delivery() {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("db-blip", |config| config.dispatcher = None).await;
    let upstream = url::Url::parse(&app.config.database_url).expect("database URL");
    let addr =
        format!("{}:{}", upstream.host_str().expect("host"), upstream.port().unwrap_or(5432));
    let proxy = DbProxy::start(addr.parse().expect("loopback address")).await;
    let mut through_proxy = app.config.clone();
    through_proxy.database_url = proxy.url_for(&app.config.database_url);
    let settings = hookgate::config::DispatcherConfig {
        retry_schedule: RetrySchedule(vec![secs(1)]),
        ..crate::harness::process_dispatcher(secs(5))
    };
    let mut process = DispatcherProcess::start(&through_proxy, &settings);
    let first = TestReceiver::start().await;
    app.subscribe(json!({"url": first.url, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {"n": 0}})).await;
    first.wait_for(1, DEADLINE).await;

    proxy.cut();
    // Made while the dispatcher cannot see the database.
    let second = TestReceiver::start().await;
    app.subscribe(json!({"url": second.url, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {"n": 1}})).await;
    // The blip lasts a few of the dispatcher's refreshes (every 0.5 s).
    tokio::time::sleep(secs(3)).await;
    proxy.restore();

    second.wait_for(1, DEADLINE).await;
    first.wait_for(2, DEADLINE).await;
    assert_eq!(second.received()[0].json()["data"]["n"], 1);
    process.kill().await;
    app.stop().await;
}

/// How the 40 deliveries of `requests_after_a_change` wait their turn.
#[derive(Clone, Copy)]
enum Waiting {
    /// On the subscription's gate: `max_in_flight` 1.
    Gate,
    /// In one key's lane of an `ordered` subscription.
    Lane,
}

/// Publishes 40 events to a subscription that takes one at a time, 300 ms
/// each (the others `waiting`); once it is under way, `change` is applied;
/// answers how many requests began later than a second after the change.
async fn requests_after_a_change(
    name: &str,
    waiting: Waiting,
    change: Method,
    body: Option<serde_json::Value>,
) -> usize {
    let app = TestApp::spawn(name).await;
    let receiver = slow(Duration::from_millis(300)).await;
    let subscription = match waiting {
        Waiting::Gate => json!({"url": receiver.url, "event_types": ["*"], "max_in_flight": 1}),
        Waiting::Lane => json!({"url": receiver.url, "event_types": ["*"], "ordered": true}),
    };
    let created = app.subscribe(subscription).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let events: Vec<_> =
        (0..40).map(|i| json!({"type": "a.b", "key": "one", "data": {"i": i}})).collect();
    assert_eq!(app.post_json("/v1/events/batch", json!({ "events": events })).await.status(), 202);
    receiver.wait_for(2, DEADLINE).await;
    let (status, _) = app.call(change, &format!("/v1/subscriptions/{id}"), ADMIN_TOKEN, body).await;
    assert!(status == 200 || status == 204, "the change was taken: {status}");
    let changed = Instant::now();
    // Watch for longer than all 40 would take one by one (12 s).
    tokio::time::sleep_until(changed + secs(13)).await;
    let late = receiver.received().iter().filter(|r| r.at > changed + secs(1)).count();
    app.stop().await;
    late
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_a_subscription_stops_every_delivery_to_it_within_a_second() {
    let _turn = TURN.lock().await;
    for (name, waiting) in [("pause-gate", Waiting::Gate), ("pause-lane", Waiting::Lane)] {
        let paused = Some(json!({"status": "paused"}));
        let late = requests_after_a_change(name, waiting, Method::PATCH, paused).await;
        assert_eq!(late, 0, "{name}: requests began more than a second after the pause");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_subscription_stops_every_delivery_to_it_within_a_second() {
    let _turn = TURN.lock().await;
    for (name, waiting) in [("delete-gate", Waiting::Gate), ("delete-lane", Waiting::Lane)] {
        let late = requests_after_a_change(name, waiting, Method::DELETE, None).await;
        assert_eq!(late, 0, "{name}: requests began more than a second after the delete");
    }
}

/// One sample of the app's `/metrics`, 0 when absent.
async fn metrics_text(app: &TestApp) -> String {
    let metrics = app.client.get(app.url("/metrics")).send().await.expect("metrics");
    metrics.text().await.expect("text")
}

async fn metric(app: &TestApp, line_start: &str) -> f64 {
    metrics_text(app)
        .await
        .lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_opens_after_failures_probes_once_and_closes_and_its_backlog_waits_elsewhere() {
    let _turn = TURN.lock().await;
    let app = TestApp::spawn_with("circuit", |config| {
        dispatcher(config).retry_schedule = RetrySchedule(vec![secs(1); 30]);
    })
    .await;
    let failing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    let receiver = TestReceiver::answering(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) { 500 } else { 204 })
    })
    .await;
    let created =
        app.subscribe(json!({"url": receiver.url, "event_types": ["*"], "max_in_flight": 1})).await;
    let path = format!("/v1/subscriptions/{}", created["id"].as_str().expect("id"));
    let circuit = || async {
        let (status, body) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        assert_eq!(status, 200);
        body["circuit"].clone()
    };
    assert_eq!(circuit().await, json!({"state": "closed", "opened_at": null, "retry_at": null}));
    const EVENTS: usize = 30;
    let events: Vec<_> = (0..EVENTS).map(|i| json!({"type": "a.b", "data": {"i": i}})).collect();
    assert_eq!(app.post_json("/v1/events/batch", json!({ "events": events })).await.status(), 202);

    // Five failures in a row open it.
    eventually("the circuit to open", DEADLINE, || async {
        (metric(&app, "hookgate_circuits_open ").await == 1.0).then_some(())
    })
    .await;
    let opened = Instant::now();
    let shown = eventually("the subscription to show its open circuit", secs(2), || async {
        let circuit = circuit().await;
        (circuit["state"] == "open").then_some(circuit)
    })
    .await;
    let retry_at = chrono::DateTime::parse_from_rfc3339(shown["retry_at"].as_str().expect("time"))
        .expect("RFC 3339");
    let opened_at =
        chrono::DateTime::parse_from_rfc3339(shown["opened_at"].as_str().expect("time"))
            .expect("RFC 3339");
    assert_eq!((retry_at - opened_at).num_seconds(), 5, "the first cool-down: {shown}");
    let sent_before = receiver.received().len();
    assert!((5..=6).contains(&sent_before), "opened after 5 failures, {sent_before} sent");
    failing.store(false, Ordering::SeqCst);
    // While open (5 s), nothing is sent, and nothing waits on the gate:
    // the backlog is parked.
    eventually("the backlog parked", secs(4), || async {
        let parked = metric(&app, "hookgate_parked_total{reason=\"circuit_open\"}").await;
        (parked >= (EVENTS - sent_before) as f64).then_some(())
    })
    .await;
    assert_eq!(metric(&app, "hookgate_deliveries_in_flight ").await, 0.0);
    tokio::time::sleep_until(opened + Duration::from_millis(4_000)).await;
    assert_eq!(receiver.received().len(), sent_before, "nothing was sent while open");

    // Then one probe; it succeeds, the circuit closes, and the rest goes.
    eventually("the circuit to close", DEADLINE, || async {
        (metric(&app, "hookgate_circuits_open ").await == 0.0).then_some(())
    })
    .await;
    eventually("the subscription to show its closed circuit", secs(2), || async {
        (circuit().await["state"] == "closed").then_some(())
    })
    .await;
    let received = receiver.received();
    let probe = &received[sent_before];
    assert!(probe.at >= opened + secs(4), "the probe waited for the cool-down");
    assert_eq!(probe.status, 204);
    assert_eq!(metric(&app, "hookgate_circuit_transitions_total{to=\"opened\"}").await, 1.0);
    assert_eq!(metric(&app, "hookgate_circuit_transitions_total{to=\"closed\"}").await, 1.0);
    eventually("every event delivered once the circuit closed", DEADLINE, || async {
        let delivered: std::collections::HashSet<u64> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 204)
            .filter_map(|r| r.json()["data"]["i"].as_u64())
            .collect();
        (delivered.len() == EVENTS).then_some(())
    })
    .await;
    app.stop().await;
}
