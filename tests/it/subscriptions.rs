//! Subscriptions through the API: lists with filters and stable cursors,
//! partial updates validated like creates, deletes the dispatcher honours,
//! versions as ETags that guard writes, and writes that never undo a
//! concurrent one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookgate::domain::Scope;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{
    both_backends, error_fields, eventually, Backend, Reply, TestApp, TestReceiver, ADMIN_TOKEN,
};

const DEADLINE: Duration = Duration::from_secs(30);

async fn create(app: &TestApp, body: Value) -> String {
    app.subscribe(body).await["id"].as_str().expect("id").to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Sends a request with `If-Match` (when given); answers the status, the
/// `ETag` and the JSON body (`Null` when empty).
async fn call_if_match(
    app: &TestApp,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request reaches the API");
    let status = response.status().as_u16();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if status >= 400 {
        let content_type = response.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}: errors are problems"
        );
    }
    let bytes = response.bytes().await.expect("read body");
    let json =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
    (status, etag, json)
}

/// The strong ETag of a version, as the API writes it.
fn etag_of(body: &Value) -> String {
    format!("\"{}\"", body["version"].as_i64().expect("version"))
}

async fn lists_filter_and_page_stably_while_rows_are_inserted(backend: Backend) {
    let app = TestApp::spawn_on_backend("sub-list", backend).await;
    let url = "https://example.com/hook";
    let mut created = Vec::new();
    for (types, status) in [
        (json!(["order.*"]), "active"),
        (json!(["invoice.paid"]), "paused"),
        (json!(["*"]), "active"),
        (json!(["order.created"]), "paused"),
        (json!(["user.deleted"]), "active"),
    ] {
        created
            .push(create(&app, json!({"url": url, "event_types": types, "status": status})).await);
    }

    // Walk two at a time, inserting a row between pages: every row once, in order.
    let mut seen = Vec::new();
    let mut path = "/v1/subscriptions?limit=2".to_owned();
    let mut inserted = None;
    loop {
        let (status, page) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        if inserted.is_none() {
            inserted = Some(create(&app, json!({"url": url, "event_types": ["late.*"]})).await);
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/subscriptions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected = created.clone();
    expected.push(inserted.expect("inserted"));
    assert_eq!(seen, expected);

    let (_, paused) =
        app.call(Method::GET, "/v1/subscriptions?status=paused", ADMIN_TOKEN, None).await;
    assert_eq!(ids(&paused), [created[1].clone(), created[3].clone()]);
    let (_, orders) = app
        .call(Method::GET, "/v1/subscriptions?event_type=order.created", ADMIN_TOKEN, None)
        .await;
    assert_eq!(ids(&orders), [created[0].clone(), created[2].clone(), created[3].clone()]);
    let (_, both) = app
        .call(
            Method::GET,
            "/v1/subscriptions?event_type=order.created&status=active&limit=1",
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(ids(&both), [created[0].clone()]);
    let cursor = both["next_cursor"].as_str().expect("more follow");
    let (_, rest) = app
        .call(
            Method::GET,
            &format!(
                "/v1/subscriptions?event_type=order.created&status=active&limit=1&cursor={cursor}"
            ),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(ids(&rest), [created[2].clone()]);

    // Bad query parameters are 400 problems naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("limit=-1", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90IGEgY3Vyc29y%FF", "cursor"),
        ("status=gone", "status"),
        ("event_type=a.*.b", "event_type"),
        ("tenant_id=nope", "tenant_id"),
    ] {
        let (status, problem) =
            app.call(Method::GET, &format!("/v1/subscriptions?{query}"), ADMIN_TOKEN, None).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["code"], "invalid_query", "{query}");
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
    let (status, _) =
        app.call(Method::GET, "/v1/subscriptions?tenant_id=ten_nobody", ADMIN_TOKEN, None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn updates_are_partial_validated_and_versioned(backend: Backend) {
    let app = TestApp::spawn_on_backend("sub-update", backend).await;
    let id = create(
        &app,
        json!({"url": "https://example.com/a", "event_types": ["order.*"], "description": "first",
               "rate_limit": {"per_second": 5, "burst": 10}, "metadata": {"team": "billing"}}),
    )
    .await;
    let path = format!("/v1/subscriptions/{id}");
    let version_before = app.store.subscription_changes(0, 100).await.expect("changes")[0].version;

    let (status, updated) = app
        .call(
            Method::PATCH,
            &path,
            ADMIN_TOKEN,
            Some(json!({"url": "https://example.com/b", "description": null, "status": "paused",
                        "rate_limit": null, "max_in_flight": 3})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["url"], "https://example.com/b");
    assert!(updated["description"].is_null());
    assert!(updated["rate_limit"].is_null());
    assert_eq!(updated["status"], "paused");
    assert_eq!(updated["max_in_flight"], 3);
    assert_eq!(updated["event_types"], json!(["order.*"]), "untouched");
    assert_eq!(updated["metadata"], json!({"team": "billing"}), "untouched");
    assert!(updated.get("secret").is_none());
    let changes = app.store.subscription_changes(0, 100).await.expect("changes");
    assert_eq!(changes.len(), 1);
    assert!(changes[0].version > version_before, "the write bumped the version");

    // Invalid patches name each field and change nothing.
    for (patch, field) in [
        (json!({"url": "ftp://example.com"}), "url"),
        (json!({"url": 42}), "url"),
        (json!({"event_types": ["a.*.b"]}), "event_types/0"),
        (json!({"event_types": []}), "event_types"),
        (json!({"rate_limit": {"per_second": -1, "burst": 1}}), "rate_limit/per_second"),
        (json!({"rate_limit": {"per_second": 0, "burst": 1}}), "rate_limit/per_second"),
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"status": "sleepy"}), "status"),
        (json!({"headers": {"Webhook-Id": "x"}}), "headers/Webhook-Id"),
        (json!({"ordered": "yes"}), "ordered"),
        (json!({"description": "nul\u{0}"}), "description"),
        (json!({"metadata": {"k": "nul\u{0}"}}), "metadata/k"),
        (json!({"secret": "whsec_x"}), "secret"),
    ] {
        let (status, problem) =
            app.call(Method::PATCH, &path, ADMIN_TOKEN, Some(patch.clone())).await;
        assert_eq!(status, 422, "{patch}: {problem}");
        let fields = error_fields(&problem);
        assert!(fields.contains(&field), "{patch}: {fields:?}");
    }
    let (_, mut read) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
    // Only a GET of one subscription shows its circuit.
    let circuit = read.as_object_mut().and_then(|o| o.remove("circuit"));
    assert_eq!(circuit, Some(json!({"state": "closed", "opened_at": null, "retry_at": null})));
    assert_eq!(read, updated, "nothing changed");
    assert_eq!(
        app.store.subscription_changes(0, 100).await.expect("changes")[0].version,
        changes[0].version
    );
    let (status, _) = app
        .call(Method::PATCH, "/v1/subscriptions/sub_nothing", ADMIN_TOKEN, Some(json!({})))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher(backend: Backend) {
    let app = TestApp::spawn_on_backend("sub-delete", backend).await;
    let doomed = TestReceiver::start().await;
    let alive = TestReceiver::start().await;
    let doomed_id = create(&app, json!({"url": doomed.url, "event_types": ["*"]})).await;
    create(&app, json!({"url": alive.url, "event_types": ["*"]})).await;

    let path = format!("/v1/subscriptions/{doomed_id}");
    let (status, body) = app.call(Method::DELETE, &path, ADMIN_TOKEN, None).await;
    assert_eq!((status, body), (204, Value::Null));
    for method in [Method::GET, Method::DELETE, Method::PATCH] {
        let (status, _) = app.call(method, &path, ADMIN_TOKEN, Some(json!({}))).await;
        assert_eq!(status, 404);
    }
    let (_, listed) = app.call(Method::GET, "/v1/subscriptions", ADMIN_TOKEN, None).await;
    assert!(!ids(&listed).contains(&doomed_id));
    let changes = app.store.subscription_changes(0, 100).await.expect("changes");
    let change = changes
        .iter()
        .find(|c| c.subscription.id.as_str() == doomed_id)
        .expect("the deletion is a change");
    assert!(change.deleted);

    // Both were matched together before; now only the live one is.
    app.publish(json!({"type": "order.created", "data": {}})).await;
    alive.wait_for(1, DEADLINE).await;
    assert!(doomed.received().is_empty());
    app.stop().await;
}

async fn etags_guard_writes_against_stale_versions(backend: Backend) {
    let app = TestApp::spawn_on_backend("sub-etag", backend).await;
    let receiver = TestReceiver::start().await;
    let (status, etag, created) = call_if_match(
        &app,
        Method::POST,
        "/v1/subscriptions",
        None,
        Some(json!({"url": receiver.url, "event_types": ["order.*"], "description": "zero"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(etag.as_deref(), Some(etag_of(&created).as_str()), "create answers the ETag");
    let id = created["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/subscriptions/{id}");
    let secret = created["secret"].as_str().expect("secret").to_owned();

    let (status, first_tag, read) = call_if_match(&app, Method::GET, &path, None, None).await;
    assert_eq!(status, 200);
    let first_tag = first_tag.expect("GET answers an ETag");
    assert_eq!(first_tag, etag_of(&read), "the ETag is the version shown");
    assert_eq!(first_tag, etag_of(&created), "a read changes no version");

    // The current ETag lets a PATCH through and answers the new one.
    let (status, second_tag, patched) = call_if_match(
        &app,
        Method::PATCH,
        &path,
        Some(&first_tag),
        Some(json!({"description": "one"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    let second_tag = second_tag.expect("PATCH answers an ETag");
    assert_ne!(second_tag, first_tag);
    assert_eq!(second_tag, etag_of(&patched));

    // A stale ETag: 412 for every write, and nothing changes.
    let writes = [
        (Method::PATCH, path.clone(), Some(json!({"description": "two"}))),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/rotate-secret"), Some(json!({}))),
        (Method::POST, format!("{path}/test"), None),
    ];
    for (method, target, body) in writes {
        let (status, _, problem) =
            call_if_match(&app, method.clone(), &target, Some(&first_tag), body).await;
        assert_eq!(status, 412, "{method} {target}: {problem}");
        assert_eq!(problem["type"], "urn:hookgate:problem:precondition_failed", "{problem}");
        assert_eq!(problem["code"], "precondition_failed");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains(&second_tag)), "{problem}");
    }
    assert!(receiver.received().is_empty(), "a stale test send sends nothing");
    let (status, tag, mut read) = call_if_match(&app, Method::GET, &path, None, None).await;
    assert_eq!((status, tag.as_deref()), (200, Some(second_tag.as_str())), "nothing changed");
    assert_eq!(read["description"], "one");
    read.as_object_mut().map(|o| o.remove("circuit"));
    assert_eq!(read, patched);
    let stored = app
        .store
        .get_subscription(Scope::All, &hookgate::domain::SubscriptionId::parse(&id).expect("id"))
        .await
        .expect("read")
        .expect("not deleted");
    assert_eq!(stored.secret, secret, "the stale rotation rotated nothing");

    // Malformed If-Match: a clear 400, nothing changes.
    for malformed in ["12", "\"12", "W/", "\"1\" \"2\"", "W/\"1"] {
        let (status, _, problem) = call_if_match(
            &app,
            Method::PATCH,
            &path,
            Some(malformed),
            Some(json!({"description": "three"})),
        )
        .await;
        assert_eq!(status, 400, "{malformed:?}: {problem}");
        assert_eq!(problem["code"], "invalid_if_match", "{malformed:?}");
    }
    // A weak tag never matches (If-Match compares strongly).
    let weak = format!("W/{second_tag}");
    let (status, _, _) =
        call_if_match(&app, Method::PATCH, &path, Some(&weak), Some(json!({}))).await;
    assert_eq!(status, 412);
    let (_, tag, _) = call_if_match(&app, Method::GET, &path, None, None).await;
    assert_eq!(tag.as_deref(), Some(second_tag.as_str()));

    // `*` and a list holding the current tag match.
    let (status, third_tag, _) =
        call_if_match(&app, Method::PATCH, &path, Some("*"), Some(json!({"description": "four"})))
            .await;
    assert_eq!(status, 200);
    let third_tag = third_tag.expect("etag");
    let list = format!("\"1\", {third_tag}");
    let (status, fourth_tag, rotated) = call_if_match(
        &app,
        Method::POST,
        &format!("{path}/rotate-secret"),
        Some(&list),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let fourth_tag = fourth_tag.expect("rotation answers the new ETag");
    assert_eq!(fourth_tag, etag_of(&rotated));
    let (status, _, _) = call_if_match(&app, Method::DELETE, &path, Some(&third_tag), None).await;
    assert_eq!(status, 412, "the rotation made the tag stale");
    let (status, _, _) = call_if_match(&app, Method::DELETE, &path, Some(&fourth_tag), None).await;
    assert_eq!(status, 204);
    let (status, _, _) = call_if_match(&app, Method::GET, &path, None, None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn a_patch_racing_the_410_disable_leaves_it_disabled(backend: Backend) {
    const ROUNDS: usize = 10;
    const PATCHERS: usize = 4;
    let app = Arc::new(TestApp::spawn_on_backend("sub-gone-race", backend).await);
    let receiver = TestReceiver::answering(|_, _| Reply::status(410)).await;
    let id = create(&app, json!({"url": receiver.url, "event_types": ["*"]})).await;
    let path = format!("/v1/subscriptions/{id}");
    for round in 1..=ROUNDS {
        if round > 1 {
            let (status, body) = app
                .call(Method::PATCH, &path, ADMIN_TOKEN, Some(json!({"status": "active"})))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        app.publish(json!({"type": "order.created", "data": {"round": round}})).await;

        // PATCHes of another field, back to back, while the 410 comes in.
        let stop = Arc::new(AtomicBool::new(false));
        let patchers: Vec<_> = (0..PATCHERS)
            .map(|n| {
                let (app, stop, path) = (Arc::clone(&app), Arc::clone(&stop), path.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let patch = json!({"description": format!("round {round}, {n}.{i}")});
                        let (status, body) =
                            app.call(Method::PATCH, &path, ADMIN_TOKEN, Some(patch)).await;
                        assert_eq!(status, 200, "{body}");
                    }
                })
            })
            .collect();
        // The dead letter follows the disable.
        eventually(&format!("round {round}'s dead letter"), DEADLINE, || async {
            let (_, page) = app
                .call(
                    Method::GET,
                    &format!("/v1/dead-letters?subscription_id={id}&limit=200"),
                    ADMIN_TOKEN,
                    None,
                )
                .await;
            (page["data"].as_array().map_or(0, Vec::len) >= round).then_some(())
        })
        .await;
        stop.store(true, Ordering::SeqCst);
        for patcher in patchers {
            patcher.await.expect("patcher");
        }
        let (_, read) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        assert_eq!(read["status"], "disabled", "round {round}: a PATCH undid the disable: {read}");
        assert!(
            read["disabled_reason"].as_str().is_some_and(|r| r.contains("410")),
            "round {round}: {read}"
        );
        assert!(
            read["description"].as_str().is_some_and(|d| d.starts_with(&format!("round {round},"))),
            "round {round}: the PATCHes kept their field: {read}"
        );
    }
    assert_eq!(receiver.received().len(), ROUNDS, "one delivery a round");
    Arc::into_inner(app).expect("patchers are done").stop().await;
}

both_backends!(etags_guard_writes_against_stale_versions);

both_backends!(multi_thread a_patch_racing_the_410_disable_leaves_it_disabled);

both_backends!(lists_filter_and_page_stably_while_rows_are_inserted);

both_backends!(updates_are_partial_validated_and_versioned);

both_backends!(deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher);
