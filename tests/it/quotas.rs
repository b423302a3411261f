//! Quotas and limits for untrusted tenants: each over-quota request answers
//! 422 `quota_exceeded` or 429 `rate_limited` (with `Retry-After`), names the
//! quota and its limit, and changes nothing; failed authentication is
//! limited before it costs the database; error lists stay small; deleted
//! subscriptions are purged, and a dispatcher starts from live rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use futures::future::join_all;
use hookgate::dispatcher::cache::{Lookup, SubscriptionCache};
use hookgate::domain::{Scope, Subscription, SubscriptionId, TenantId};
use hookgate::store::{retention, Guarded};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{
    both_backends, error_fields, Backend, TestApp, TestDb, TestReceiver, ADMIN_TOKEN,
};

/// A request with `token`; answers the status, `Retry-After` and the body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Option<u64>, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request reaches the API");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if status >= 400 {
        assert_eq!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}: errors are problems"
        );
    }
    let bytes = response.bytes().await.expect("read body");
    let json =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
    (status, retry_after, json)
}

/// Asserts the problem of an exceeded quota: its status, code, quota name
/// and limit, and a detail that says the limit.
fn assert_quota(status: u16, problem: &Value, want_status: u16, quota: &str, limit: u64) {
    let code = if want_status == 429 { "rate_limited" } else { "quota_exceeded" };
    assert_eq!(status, want_status, "{problem}");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["type"], format!("urn:hookgate:problem:{code}"));
    assert_eq!(problem["quota"], quota, "{problem}");
    assert_eq!(problem["limit"], limit, "{problem}");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains(&limit.to_string()), "the detail names the limit: {detail}");
}

fn subscription_body(n: usize) -> Value {
    json!({"url": format!("https://example.com/hook/{n}"), "event_types": ["order.*"]})
}

async fn live_subscriptions(app: &TestApp, token: &str) -> usize {
    let (status, _, page) =
        send(app, Method::GET, "/v1/subscriptions?limit=200", token, None).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().expect("data").len()
}

async fn racing_creates_stop_at_the_subscription_quota(backend: Backend) {
    let app = TestApp::spawn_on_backend_with("quota-subs", backend, |config| {
        config.quotas.subscriptions_per_tenant = 3;
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    // Ten creates race for the three places: exactly three win.
    let creates = (0..10)
        .map(|n| send(&app, Method::POST, "/v1/subscriptions", &key, Some(subscription_body(n))));
    let answers = join_all(creates).await;
    let created = answers.iter().filter(|(status, _, _)| *status == 201).count();
    assert_eq!(created, 3, "{answers:?}");
    for (status, _, problem) in answers.iter().filter(|(status, _, _)| *status != 201) {
        assert_quota(*status, problem, 422, "subscriptions_per_tenant", 3);
    }
    assert_eq!(live_subscriptions(&app, &key).await, 3, "nothing more was created");

    // Another tenant has a quota of its own; a delete makes room.
    let (_, other) = app.tenant_with_key("globex").await;
    let (status, _, _) =
        send(&app, Method::POST, "/v1/subscriptions", &other, Some(subscription_body(0))).await;
    assert_eq!(status, 201);
    let (_, _, page) = send(&app, Method::GET, "/v1/subscriptions", &key, None).await;
    let first = page["data"][0]["id"].as_str().expect("id").to_owned();
    let (status, _, _) =
        send(&app, Method::DELETE, &format!("/v1/subscriptions/{first}"), &key, None).await;
    assert_eq!(status, 204);
    let (status, _, answer) =
        send(&app, Method::POST, "/v1/subscriptions", &key, Some(subscription_body(11))).await;
    assert_eq!(status, 201, "a deleted subscription frees its place: {answer}");
    app.stop().await;
}

both_backends!(multi_thread racing_creates_stop_at_the_subscription_quota);

#[tokio::test(flavor = "multi_thread")]
async fn headers_and_metadata_over_their_limits_are_refused_and_nothing_is_created() {
    let app = TestApp::spawn_with("quota-bytes", |config| {
        config.quotas.header_bytes = 100;
        config.quotas.metadata_bytes = 200;
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let with = |extra: Value| {
        let mut body = subscription_body(0);
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        body
    };
    let long_key = "k".repeat(41);
    let cases = [
        (json!({"headers": {"x-a": "a".repeat(60), "x-b": "b".repeat(60)}}), "headers"),
        (json!({"headers": {"x".repeat(300): "v"}}), "headers/"),
        (json!({"metadata": {"a": "v".repeat(150), "b": "w".repeat(150)}}), "metadata"),
        (json!({"metadata": {long_key.clone(): "v"}}), "metadata/"),
        (json!({"metadata": {"k": "v".repeat(501)}}), "metadata/k"),
    ];
    for (extra, field) in cases {
        let (status, _, problem) =
            send(&app, Method::POST, "/v1/subscriptions", &key, Some(with(extra.clone()))).await;
        assert_eq!(status, 422, "{extra}: {problem}");
        let fields = error_fields(&problem);
        assert!(fields.iter().any(|f| f.starts_with(field)), "{extra}: {fields:?}");
    }
    assert_eq!(live_subscriptions(&app, &key).await, 0, "nothing was created");
    // At the limits exactly, it is fine.
    let fits = with(json!({
        "headers": {"x-a": "a".repeat(97)},
        "metadata": {"k".repeat(40): "v".repeat(160)},
    }));
    let (status, _, answer) = send(&app, Method::POST, "/v1/subscriptions", &key, Some(fits)).await;
    assert_eq!(status, 201, "{answer}");
    // A PATCH that sets too many bytes changes nothing.
    let id = answer["id"].as_str().expect("id");
    let (status, _, _) = send(
        &app,
        Method::PATCH,
        &format!("/v1/subscriptions/{id}"),
        &key,
        Some(json!({"headers": {"x-a": "a".repeat(200)}})),
    )
    .await;
    assert_eq!(status, 422);
    let (_, _, stored) =
        send(&app, Method::GET, &format!("/v1/subscriptions/{id}"), &key, None).await;
    assert_eq!(stored["headers"]["x-a"].as_str().map(str::len), Some(97));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_over_the_key_or_tenant_rate_answers_429_and_publishes_nothing() {
    let app = TestApp::spawn_with("quota-publish", |config| {
        // Slow refills, so that the test sees the buckets as it spends them.
        config.quotas.publish_per_key = hookgate::config::Rate { per_second: 1, burst: 3 };
        config.quotas.publish_per_tenant = hookgate::config::Rate { per_second: 1, burst: 5 };
    })
    .await;
    let (tenant, first_key) = app.tenant_with_key("acme").await;
    let event = |n: usize| json!({"type": "order.created", "data": {"n": n}});
    let topic = app.topics.publish.clone();

    let batch = json!({"events": [event(1), event(2), event(3)]});
    let (status, _, answer) =
        send(&app, Method::POST, "/v1/events/batch", &first_key, Some(batch)).await;
    assert_eq!(status, 202, "{answer}");
    let (status, retry_after, problem) =
        send(&app, Method::POST, "/v1/events", &first_key, Some(event(4))).await;
    assert_quota(status, &problem, 429, "publish_rate_per_key", 1);
    assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After in whole seconds: {retry_after:?}");
    assert_eq!(app.records_on(&topic).await, 3, "the refused event was not published");

    // A batch larger than a burst can never pass: 422, not a retry.
    let too_big = json!({"events": (0..4).map(event).collect::<Vec<_>>()});
    let (status, retry_after, problem) =
        send(&app, Method::POST, "/v1/events/batch", &first_key, Some(too_big)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(retry_after, None);
    assert_eq!(error_fields(&problem), ["events"]);

    // A second key of the tenant has its own bucket, but shares the tenant's.
    let (status, second) = app
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/keys"),
            ADMIN_TOKEN,
            Some(json!({"name": "second"})),
        )
        .await;
    assert_eq!(status, 201);
    let second_key = second["key"].as_str().expect("key").to_owned();
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/v1/events/batch",
        &second_key,
        Some(json!({"events": [event(5), event(6)]})),
    )
    .await;
    assert_eq!(status, 202, "the tenant had 2 of 5 left");
    let (status, retry_after, problem) =
        send(&app, Method::POST, "/v1/events", &second_key, Some(event(7))).await;
    assert_quota(status, &problem, 429, "publish_rate_per_tenant", 1);
    assert!(retry_after.is_some());
    assert_eq!(app.records_on(&topic).await, 5);

    // Admin tokens (internal producers) are not limited.
    for n in 0..10 {
        app.publish(event(100 + n)).await;
    }
    assert_eq!(app.records_on(&topic).await, 15);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn test_sends_over_the_quota_answer_429_and_send_nothing() {
    let app = TestApp::spawn_with("quota-test-sends", |config| {
        config.quotas.test_sends_per_minute = 2;
    })
    .await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant_with_key("acme").await;
    let (status, _, sub) = send(
        &app,
        Method::POST,
        "/v1/subscriptions",
        &key,
        Some(json!({"url": receiver.url, "event_types": ["order.*"]})),
    )
    .await;
    assert_eq!(status, 201);
    let path = format!("/v1/subscriptions/{}/test", sub["id"].as_str().expect("id"));
    for _ in 0..2 {
        let (status, _, attempt) = send(&app, Method::POST, &path, &key, None).await;
        assert_eq!(status, 200, "{attempt}");
    }
    let (status, retry_after, problem) = send(&app, Method::POST, &path, &key, None).await;
    assert_quota(status, &problem, 429, "test_sends_per_minute", 2);
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)), "{retry_after:?}");
    assert_eq!(receiver.received().len(), 2, "the refused test was not sent");
    let attempts_path = format!("/v1/subscriptions/{}/attempts", sub["id"].as_str().expect("id"));
    let (_, _, attempts) = send(&app, Method::GET, &attempts_path, &key, None).await;
    assert_eq!(attempts["data"].as_array().map(Vec::len), Some(2), "nor logged");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn running_replays_over_the_quota_answer_422_and_start_nothing() {
    let app = TestApp::spawn_with("quota-replays", |config| {
        config.quotas.running_replays_per_tenant = 2;
        // No dispatcher: the jobs stay running.
        config.dispatcher = None;
    })
    .await;
    let (_, key) = app.tenant_with_key("acme").await;
    let replay = || json!({"event_type": "order.created"});
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let (status, _, job) = send(&app, Method::POST, "/v1/replays", &key, Some(replay())).await;
        assert_eq!(status, 202, "{job}");
        jobs.push(job["id"].as_str().expect("id").to_owned());
    }
    let (status, _, problem) = send(&app, Method::POST, "/v1/replays", &key, Some(replay())).await;
    assert_quota(status, &problem, 422, "running_replays_per_tenant", 2);
    // A dry run starts nothing, so it is fine; admins are not limited.
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/v1/replays",
        &key,
        Some(json!({"event_type": "order.created", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(&app, Method::POST, "/v1/replays", ADMIN_TOKEN, Some(replay())).await;
    assert_eq!(status, 202);
    // A cancelled job frees its place.
    let (status, _, _) =
        send(&app, Method::POST, &format!("/v1/replays/{}/cancel", jobs[0]), &key, None).await;
    assert_eq!(status, 200);
    let (status, _, job) = send(&app, Method::POST, "/v1/replays", &key, Some(replay())).await;
    assert_eq!(status, 202, "{job}");
    app.stop().await;
}

/// The value of a series on `/metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_bad_tokens_reaches_the_database_only_up_to_the_limit() {
    const LIMIT: u32 = 10;
    const CONCURRENCY: usize = 10;
    let app = TestApp::spawn_with("quota-auth", |config| {
        config.quotas.auth_failures_per_minute = LIMIT;
    })
    .await;
    let (_, good_key) = app.tenant_with_key("acme").await;
    let lookups_before = metric(&app, "hookgate_api_key_lookups_total").await;

    // Tokens that cannot be keys cost no lookup at all.
    for token in ["not-a-key", "hgk_short"] {
        let (status, _, _) = send(&app, Method::GET, "/v1/subscriptions", token, None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(metric(&app, "hookgate_api_key_lookups_total").await, lookups_before);

    // 200 well-formed unknown keys, ten at a time.
    let mut statuses = Vec::new();
    for round in 0..20 {
        let app = &app;
        let calls = (0..CONCURRENCY).map(|i| {
            let token = format!("hgk_{:064x}", round * CONCURRENCY + i);
            async move { send(app, Method::GET, "/v1/subscriptions", &token, None).await }
        });
        for (status, retry_after, problem) in join_all(calls).await {
            if status == 429 {
                assert_quota(status, &problem, 429, "auth_failures_per_minute", u64::from(LIMIT));
                assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
            }
            statuses.push(status);
        }
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(unauthorized + limited, 200, "{statuses:?}");
    let lookups = metric(&app, "hookgate_api_key_lookups_total").await - lookups_before;
    // Two malformed failures took from the bucket too; requests under way
    // when it ran out may each have looked up once more.
    let bound = f64::from(LIMIT) + CONCURRENCY as f64;
    assert!(lookups <= bound, "{lookups} lookups for 200 bad tokens (bound {bound})");
    assert!(limited >= 200 - bound as usize, "{limited} answered 429");
    assert_eq!(
        metric(&app, "hookgate_api_auth_failures_total{outcome=\"limited\"}").await,
        limited as f64
    );
    // The blocked address waits for a tenant key too; admin tokens still
    // work. (Two more failures first: the block lasts until the bucket has
    // room for one, which a slow run may have reached.)
    for token in ["hgk_bad", "hgk_worse"] {
        send(&app, Method::GET, "/v1/subscriptions", token, None).await;
    }
    let (status, _, _) = send(&app, Method::GET, "/v1/subscriptions", &good_key, None).await;
    assert_eq!(status, 429);
    let (status, _, _) = send(&app, Method::GET, "/v1/subscriptions", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_of_bad_items_answers_a_small_problem() {
    const BOUND: usize = 16 << 10;
    let app = TestApp::spawn("quota-errors").await;
    // A batch of 1,000 events, each with three bad fields, near 1 MiB.
    let filler = "x".repeat(900);
    let events: Vec<Value> = (0..1_000)
        .map(|i| json!({"type": format!("bad type {i} {filler}"), "data": {}, "id": "", "key": ""}))
        .collect();
    let body = serde_json::to_vec(&json!({ "events": events })).expect("JSON");
    assert!(body.len() > 900 << 10 && body.len() <= 1 << 20, "{} bytes", body.len());
    // Subscriptions with 16,000 bad metadata keys, and a 60 KiB header name.
    let metadata: BTreeMap<String, String> =
        (0..16_000).map(|i| (format!("{i:0>45}"), String::new())).collect();
    let subscription = serde_json::to_vec(&json!({
        "url": "https://example.com/hook",
        "event_types": ["order.*"],
        "metadata": metadata,
        "headers": {"x".repeat(60 << 10): "v"},
    }))
    .expect("JSON");
    assert!(subscription.len() <= 1 << 20, "{} bytes", subscription.len());
    for (path, body) in [("/v1/events/batch", body), ("/v1/subscriptions", subscription)] {
        let response = app
            .admin(app.client.post(app.url(path)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the API");
        assert_eq!(response.status(), 422, "{path}");
        let answer = response.bytes().await.expect("body");
        assert!(answer.len() < BOUND, "{path}: {} bytes answered", answer.len());
        let problem: Value = serde_json::from_slice(&answer).expect("JSON problem");
        assert_eq!(error_fields(&problem).len(), 20, "{path}: the first 20 are listed");
        let more = problem["more_errors"].as_u64().expect("the rest are counted");
        assert!(more > 1_000, "{path}: {more} more");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(&more.to_string()), "{detail}");
    }
    assert_eq!(app.records_on(&app.topics.publish).await, 0, "nothing was published");
    assert_eq!(live_subscriptions(&app, ADMIN_TOKEN).await, 0, "nothing was created");
    app.stop().await;
}

fn stored(tenant: &TenantId, n: usize) -> Subscription {
    Subscription::new(
        tenant.clone(),
        format!("https://example.com/{n}"),
        vec!["order.*".to_owned()],
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        Utc::now(),
    )
}

async fn deleted_subscriptions_are_purged_after_their_grace(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let tenant = TenantId::default_tenant();
    let kept = stored(&tenant, 1);
    let deleted = stored(&tenant, 2);
    for s in [&kept, &deleted] {
        store.create_subscription(s).await.expect("create");
    }
    // A running dispatcher's copy, loaded before the delete.
    let running = SubscriptionCache::new(Arc::clone(&store));
    running.refresh().await.expect("refresh");
    assert_eq!(running.held(), (2, 0));

    let at = Utc::now();
    let done = store.delete_subscription(Scope::All, &deleted.id, None, at).await.expect("delete");
    assert_eq!(done, Guarded::Written(()));
    running.refresh().await.expect("refresh");
    assert!(matches!(running.peek(&deleted.id), Lookup::Deleted));

    // A dispatcher that starts now loads only the live row.
    let fresh = SubscriptionCache::new(Arc::clone(&store));
    fresh.refresh().await.expect("refresh");
    assert_eq!(fresh.held(), (1, 0), "no tombstone for what was deleted before it started");
    assert!(matches!(fresh.peek(&kept.id), Lookup::Found(_)));

    // Within its grace the row stays; past it, it goes.
    let within = at - chrono::Duration::hours(1);
    assert_eq!(
        retention::purge_deleted_subscriptions(store.as_ref(), within).await.expect("purge"),
        0
    );
    let changes = store.subscription_changes(0, 100).await.expect("changes");
    assert_eq!(changes.len(), 2, "the deleted row is still there for the caches");
    let past = at + chrono::Duration::seconds(1);
    assert_eq!(
        retention::purge_deleted_subscriptions(store.as_ref(), past).await.expect("purge"),
        1
    );
    let changes = store.subscription_changes(0, 100).await.expect("changes");
    let ids: Vec<&SubscriptionId> = changes.iter().map(|c| &c.subscription.id).collect();
    assert_eq!(ids, [&kept.id], "the deleted row is gone, the live one stays");

    // The running copy still knows the delete it saw before the purge.
    running.refresh().await.expect("refresh");
    assert!(matches!(running.peek(&deleted.id), Lookup::Deleted));
    assert!(matches!(running.peek(&kept.id), Lookup::Found(_)));
    // And one that starts after the purge sees the same live set.
    let after = SubscriptionCache::new(Arc::clone(&store));
    after.refresh().await.expect("refresh");
    assert_eq!(after.held(), (1, 0));
}

both_backends!(multi_thread deleted_subscriptions_are_purged_after_their_grace);

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_deleted_during_the_first_load_is_not_kept() {
    let db = TestDb::postgres().await;
    let store = db.store().await;
    let tenant = TenantId::default_tenant();
    // More than a page, so that the first load takes several reads.
    let all: Vec<Subscription> = (0..1_100).map(|n| stored(&tenant, n)).collect();
    for s in &all {
        store.create_subscription(s).await.expect("create");
    }
    let cache = Arc::new(SubscriptionCache::new(Arc::clone(&store)));
    let loading = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.refresh().await }
    });
    // The first row goes while (or before) the copy reads its pages.
    store.delete_subscription(Scope::All, &all[0].id, None, Utc::now()).await.expect("delete");
    loading.await.expect("task").expect("refresh");
    cache.refresh().await.expect("refresh");
    assert!(
        !matches!(cache.peek(&all[0].id), Lookup::Found(_)),
        "a delete during the first load is seen"
    );
    assert_eq!(cache.held().0, 1_099);
    db.drop_db().await;
}
