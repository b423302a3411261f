//! The failure lifecycle a receiver's owner follows, against the real
//! broker: operational events (failing, exhausted, disabled, enabled,
//! recovered) delivered signed to the tenant's `hookgate.*` subscription and
//! written to the operational topic, never to another tenant; an admin's
//! suspension; and the health stats, on both backends.

use std::time::Duration;

use hookgate::config::{LifecyclePolicy, RetrySchedule};
use hookgate::domain::health::{bin_bound, latency_bin};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::harness::kafka::{headers_of, read_topic};
use crate::harness::receiver::Received;
use crate::harness::{eventually, Backend, Reply, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long every attempt must fail before the subscription is disabled.
const DISABLE_AFTER: Duration = Duration::from_secs(4);

/// Two quick retries; `failing` after the second failed attempt; disabled
/// after `DISABLE_AFTER` of failures, at least three.
fn lifecycle(config: &mut hookgate::config::AppConfig) {
    if let Some(dispatcher) = &mut config.dispatcher {
        dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(500); 2]);
        dispatcher.lifecycle = LifecyclePolicy {
            failing_after: 2,
            disable_after: Some(DISABLE_AFTER),
            disable_min_failures: 3,
        };
    }
}

fn verifies(secret: &str, webhook: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("a valid secret")
        .verify(&webhook.body, &webhook.headers)
        .is_ok()
}

/// A subscription of `tenant`'s made with its key; answers its JSON.
async fn subscribe(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, created) = app.call(Method::POST, "/v1/subscriptions", key, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn publish(app: &TestApp, key: &str, body: Value) {
    let (status, answer) = app.call(Method::POST, "/v1/events", key, Some(body)).await;
    assert_eq!(status, 202, "{answer}");
}

/// The operational webhooks received, as (type, data), in arrival order.
fn operational(received: &[Received]) -> Vec<(String, Value)> {
    received
        .iter()
        .map(|r| r.json())
        .map(|body| (body["type"].as_str().unwrap_or_default().to_owned(), body["data"].clone()))
        .collect()
}

/// Waits until the receiver got a webhook of `kind`; answers its data.
async fn first_of(receiver: &TestReceiver, kind: &str) -> Value {
    eventually(&format!("{kind} at the ops receiver"), DEADLINE, || async {
        operational(&receiver.received()).into_iter().find(|(t, _)| t == kind).map(|(_, d)| d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_yields_failing_then_exhausted_then_disabled_for_its_tenant_only() {
    let app = TestApp::spawn_with("lifecycle-dead", lifecycle).await;
    let (tenant, key) = app.tenant_with_key("acme").await;
    let (_, other_key) = app.tenant_with_key("other").await;
    let ops = TestReceiver::start().await;
    let ops_sub =
        subscribe(&app, &key, json!({"url": ops.url, "event_types": ["hookgate.*"]})).await;
    let others = TestReceiver::start().await;
    subscribe(&app, &other_key, json!({"url": others.url, "event_types": ["hookgate.*"]})).await;
    // Asks for operational events too: never those about itself.
    let dead = TestReceiver::answering(|_, _| Reply::status(503)).await;
    let dead_sub =
        subscribe(&app, &key, json!({"url": dead.url, "event_types": ["order.*", "hookgate.*"]}))
            .await;
    let dead_id = dead_sub["id"].as_str().expect("id").to_owned();
    publish(&app, &key, json!({"type": "order.created", "data": {"n": 1}})).await;

    let failing = first_of(&ops, "hookgate.delivery.failing").await;
    assert_eq!(failing["subscription_id"], dead_id.as_str());
    assert_eq!(failing["tenant_id"], tenant.as_str());
    assert_eq!(failing["attempts"], 2);
    assert_eq!(failing["last_status"], 503);
    assert_eq!(failing["event_type"], "order.created");
    let exhausted = first_of(&ops, "hookgate.delivery.exhausted").await;
    assert_eq!(exhausted["attempts"], 3, "the first try and both retries");
    assert_eq!(exhausted["reason"], "exhausted");
    let dead_letter = exhausted["dead_letter_id"].as_str().expect("the dead letter's id");
    let (status, stored) =
        app.call(Method::GET, &format!("/v1/dead-letters/{dead_letter}"), &key, None).await;
    assert_eq!(status, 200, "the id names the tenant's dead letter: {stored}");
    assert_eq!(stored["subscription_id"], dead_id.as_str());

    // Once every attempt failed for the span, the next failure disables it.
    let first_failure = dead.received()[0].at;
    tokio::time::sleep_until(first_failure + DISABLE_AFTER).await;
    publish(&app, &key, json!({"type": "order.created", "data": {"n": 2}})).await;
    let disabled = first_of(&ops, "hookgate.subscription.disabled").await;
    assert_eq!(disabled["reason"], "sustained_failure");
    assert!(disabled["consecutive_failures"].as_u64().is_some_and(|n| n >= 4), "{disabled}");
    let (_, read) =
        app.call(Method::GET, &format!("/v1/subscriptions/{dead_id}"), &key, None).await;
    assert_eq!(read["status"], "disabled");
    assert!(read["disabled_reason"].as_str().is_some_and(|r| r.contains("every attempt failed")));

    let received = ops.received();
    let kinds: Vec<String> = operational(&received).into_iter().map(|(t, _)| t).collect();
    let at = |kind: &str| kinds.iter().position(|k| k == kind).expect(kind);
    assert!(at("hookgate.delivery.failing") < at("hookgate.delivery.exhausted"), "{kinds:?}");
    assert!(at("hookgate.delivery.exhausted") < at("hookgate.subscription.disabled"), "{kinds:?}");
    let secret = ops_sub["secret"].as_str().expect("secret shown on create");
    assert!(received.iter().all(|webhook| verifies(secret, webhook)), "every one signed");

    // The operational topic has them too, for operators, scoped by tenant.
    let records = read_topic(&app.kafka.brokers, &app.topics.operational, 3, DEADLINE).await;
    for record in &records {
        let headers = headers_of(record);
        assert_eq!(headers["ce_tenantid"], tenant, "{headers:?}");
        assert_eq!(headers["ce_subject"], dead_id, "{headers:?}");
        assert!(headers["ce_type"].starts_with("hookgate."), "{headers:?}");
    }
    assert!(
        dead.received().iter().all(|w| w.json()["type"] == "order.created"),
        "nothing about itself reached the failing endpoint"
    );
    assert!(others.received().is_empty(), "another tenant hears nothing of it");

    // Made active again by its tenant: `enabled`, and a clean record.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/subscriptions/{dead_id}"),
            &key,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    let enabled = first_of(&ops, "hookgate.subscription.enabled").await;
    assert_eq!(enabled["previous_status"], "disabled");
    assert_eq!(enabled["by"], "tenant");
    let (_, stats) =
        app.call(Method::GET, &format!("/v1/subscriptions/{dead_id}/stats"), &key, None).await;
    assert_eq!(stats["consecutive_failures"], 0, "{stats}");
    assert_eq!(stats["circuit"]["state"], "closed");
    assert!(others.received().is_empty(), "another tenant hears nothing of it");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_after_failures_is_recovered_and_a_suspension_is_the_admins_to_lift() {
    let app = TestApp::spawn_with("lifecycle-recover", lifecycle).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let ops = TestReceiver::start().await;
    subscribe(&app, &key, json!({"url": ops.url, "event_types": ["hookgate.subscription.*"]}))
        .await;
    let flaky = TestReceiver::answering(|n, _| Reply::status(if n < 2 { 500 } else { 200 })).await;
    let sub = subscribe(&app, &key, json!({"url": flaky.url, "event_types": ["order.*"]})).await;
    let id = sub["id"].as_str().expect("id").to_owned();
    publish(&app, &key, json!({"type": "order.created", "data": {}})).await;

    let recovered = first_of(&ops, "hookgate.subscription.recovered").await;
    assert_eq!(recovered["subscription_id"], id.as_str());
    assert_eq!(recovered["failed_attempts"], 2);
    assert!(recovered["failing_since"].is_string(), "{recovered}");

    // Suspended by an admin: the tenant's key cannot lift it.
    let path = format!("/v1/subscriptions/{id}");
    let suspend = json!({"status": "suspended"});
    let (status, problem) = app.call(Method::PATCH, &path, &key, Some(suspend.clone())).await;
    assert_eq!(status, 403, "only an admin suspends: {problem}");
    let disable = Some(json!({"status": "disabled"}));
    let (status, problem) = app.call(Method::PATCH, &path, &key, disable).await;
    assert_eq!(status, 422, "a tenant pauses rather than disables: {problem}");
    assert_eq!(problem["errors"][0]["field"], "status");
    let (status, _) = app.call(Method::PATCH, &path, ADMIN_TOKEN, Some(suspend)).await;
    assert_eq!(status, 200);
    let disabled = first_of(&ops, "hookgate.subscription.disabled").await;
    assert_eq!(disabled["reason"], "suspended");
    for status in ["active", "paused"] {
        let (code, problem) =
            app.call(Method::PATCH, &path, &key, Some(json!({"status": status}))).await;
        assert_eq!(code, 403, "{problem}");
        assert_eq!(problem["code"], "suspended");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("only an admin")));
    }
    let (_, read) = app.call(Method::GET, &path, &key, None).await;
    assert_eq!(read["status"], "suspended", "the refused writes changed nothing");
    let (status, _) =
        app.call(Method::PATCH, &path, ADMIN_TOKEN, Some(json!({"status": "active"}))).await;
    assert_eq!(status, 200);
    let enabled = first_of(&ops, "hookgate.subscription.enabled").await;
    assert_eq!(
        (enabled["previous_status"].as_str(), enabled["by"].as_str()),
        (Some("suspended"), Some("admin"))
    );

    // Delivered again once active.
    publish(&app, &key, json!({"type": "order.created", "data": {}})).await;
    flaky.wait_for(4, DEADLINE).await;
    app.stop().await;
}

/// The attempts' latencies at quantile `q`, as the stats answer it: the
/// bound of the bin of the attempt at rank ⌈q·n⌉.
fn expected_percentile(latencies: &[u64], q: f64) -> u64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    let ms = u32::try_from(sorted[rank - 1]).expect("small");
    u64::from(bin_bound(latency_bin(ms)).unwrap_or(30_000))
}

async fn stats_agree_with_the_attempts_made(backend: Backend) {
    let app = TestApp::spawn_on_backend_with("lifecycle-stats", backend, lifecycle).await;
    let (_, key) = app.tenant_with_key("acme").await;
    // Three failures, a few slow successes, then fast ones.
    let receiver = TestReceiver::answering(|n, _| match n {
        0..=2 => Reply::status(503),
        3..=5 => Reply { delay: Duration::from_millis(120), ..Reply::status(200) },
        _ => Reply::status(200),
    })
    .await;
    let sub = subscribe(&app, &key, json!({"url": receiver.url, "event_types": ["order.*"]})).await;
    let id = sub["id"].as_str().expect("id").to_owned();
    for n in 0..10 {
        publish(&app, &key, json!({"type": "order.created", "data": {"n": n}})).await;
    }
    let attempts: Vec<Value> = eventually("ten deliveries", DEADLINE, || async {
        let path = format!("/v1/subscriptions/{id}/attempts?limit=200");
        let (_, page) = app.call(Method::GET, &path, &key, None).await;
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        let delivered = rows.iter().filter(|a| a["outcome"] == "success").count();
        (delivered == 10).then_some(rows)
    })
    .await;
    let started = Instant::now();
    let (status, stats) =
        app.call(Method::GET, &format!("/v1/subscriptions/{id}/stats?window=1h"), &key, None).await;
    assert_eq!(status, 200, "{stats}");
    let failures = attempts.iter().filter(|a| a["outcome"] == "failed").count() as u64;
    assert_eq!(stats["attempts"], attempts.len() as u64, "{stats}");
    assert_eq!(stats["successes"], 10);
    assert_eq!(stats["failures"], failures);
    assert_eq!(failures, 3, "the receiver failed three requests");
    let rate = stats["failure_rate"].as_f64().expect("a rate");
    assert!((rate - failures as f64 / attempts.len() as f64).abs() < 1e-9, "{rate}");
    let latencies: Vec<u64> =
        attempts.iter().map(|a| a["latency_ms"].as_u64().expect("latency")).collect();
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        assert_eq!(
            stats["latency_ms"][name],
            expected_percentile(&latencies, q),
            "{name}: {stats}"
        );
    }
    assert!(stats["latency_ms"]["p99"].as_u64().is_some_and(|p| p >= 120), "the slow ones");
    assert_eq!(stats["last_failure"]["status"], 503);
    assert!(stats["last_success"]["at"].is_string());
    assert_eq!(stats["consecutive_failures"], 0);
    assert_eq!(stats["pending_dead_letters"], 0);
    assert_eq!(stats["window"], "1h");
    assert!(started.elapsed() < DEADLINE);

    for bad in ["2h", "", "7D"] {
        let path = format!("/v1/subscriptions/{id}/stats?window={bad}");
        let (status, problem) = app.call(Method::GET, &path, &key, None).await;
        assert_eq!(status, 400, "{bad:?}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "window");
    }
    let (_, other_key) = app.tenant_with_key("other").await;
    let (status, _) =
        app.call(Method::GET, &format!("/v1/subscriptions/{id}/stats"), &other_key, None).await;
    assert_eq!(status, 404, "another tenant's subscription");
    app.stop().await;
}

crate::harness::both_backends!(multi_thread stats_agree_with_the_attempts_made);

#[tokio::test(flavor = "multi_thread")]
async fn the_operational_types_are_in_the_catalogue_and_nobody_else_may_use_them() {
    let app = TestApp::spawn("lifecycle-catalogue").await;
    let (status, page) =
        app.call(Method::GET, "/v1/event-types?limit=200", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    let types = page["data"].as_array().expect("a list");
    for kind in [
        "hookgate.subscription.disabled",
        "hookgate.subscription.enabled",
        "hookgate.subscription.recovered",
        "hookgate.delivery.failing",
        "hookgate.delivery.exhausted",
        "hookgate.circuit.opened",
        "hookgate.circuit.closed",
    ] {
        let found = types.iter().find(|t| t["name"] == kind).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(found["schema"]["type"], "object", "{kind}");
        assert!(found["schema"]["required"].as_array().is_some_and(|r| r.len() >= 4), "{kind}");
        assert!(found["description"].is_string());
    }
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/events",
            ADMIN_TOKEN,
            Some(json!({"type": "hookgate.subscription.disabled", "data": {}})),
        )
        .await;
    assert_eq!(status, 422, "nobody forges an operational event: {problem}");
    assert_eq!(problem["errors"][0]["field"], "type");
    let (status, _) = app
        .call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(json!({"name": "hookgate.mine"})))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .call(
            Method::PATCH,
            "/v1/event-types/hookgate.delivery.failing",
            ADMIN_TOKEN,
            Some(json!({"schema": null})),
        )
        .await;
    assert_eq!(status, 422, "their schemas are hookgate's");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_that_opens_and_closes_is_told_to_the_tenant() {
    let app = TestApp::spawn_with("lifecycle-circuit", |config| {
        lifecycle(config);
        if let Some(dispatcher) = &mut config.dispatcher {
            dispatcher.circuit.consecutive_failures = 3;
            dispatcher.circuit.open_for = Duration::from_secs(1);
        }
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let ops = TestReceiver::start().await;
    subscribe(&app, &key, json!({"url": ops.url, "event_types": ["hookgate.circuit.*"]})).await;
    // Three first attempts fail: the circuit opens; the probe succeeds.
    let flaky = TestReceiver::answering(|n, _| Reply::status(if n < 3 { 503 } else { 200 })).await;
    let sub = subscribe(&app, &key, json!({"url": flaky.url, "event_types": ["order.*"]})).await;
    for n in 0..3 {
        publish(&app, &key, json!({"type": "order.created", "data": {"n": n}})).await;
    }
    let opened = first_of(&ops, "hookgate.circuit.opened").await;
    assert_eq!(opened["subscription_id"], sub["id"]);
    assert_eq!(opened["reopened"], false);
    assert!(opened["until"].is_string());
    let closed = first_of(&ops, "hookgate.circuit.closed").await;
    assert_eq!(closed["subscription_id"], sub["id"]);
    let kinds: Vec<String> = operational(&ops.received()).into_iter().map(|(t, _)| t).collect();
    assert_eq!(kinds[..2], ["hookgate.circuit.opened", "hookgate.circuit.closed"], "{kinds:?}");
    app.stop().await;
}
