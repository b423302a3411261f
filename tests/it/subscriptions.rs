//! Subscriptions through the API: lists with filters and stable cursors,
//! partial updates validated like creates, deletes the dispatcher honours.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Backend, TestApp, TestReceiver, ADMIN_TOKEN};

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
        (json!({"status": "disabled"}), "status"),
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
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
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

#[tokio::test]
async fn lists_filter_and_page_stably_while_rows_are_inserted_on_postgres() {
    lists_filter_and_page_stably_while_rows_are_inserted(Backend::Postgres).await;
}

#[tokio::test]
async fn lists_filter_and_page_stably_while_rows_are_inserted_on_sqlite() {
    lists_filter_and_page_stably_while_rows_are_inserted(Backend::Sqlite).await;
}

#[tokio::test]
async fn updates_are_partial_validated_and_versioned_on_postgres() {
    updates_are_partial_validated_and_versioned(Backend::Postgres).await;
}

#[tokio::test]
async fn updates_are_partial_validated_and_versioned_on_sqlite() {
    updates_are_partial_validated_and_versioned(Backend::Sqlite).await;
}

#[tokio::test]
async fn deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher_on_postgres() {
    deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher(Backend::Postgres).await;
}

#[tokio::test]
async fn deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher_on_sqlite() {
    deleted_subscriptions_are_gone_for_the_api_and_the_dispatcher(Backend::Sqlite).await;
}
