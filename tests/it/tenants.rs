//! Tenants, API keys, and tenant isolation: a tenant key sees only its own
//! tenant's resources; another tenant's ids answer 404.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{both_backends, Backend, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(30);

async fn admins_create_tenants_and_keys_that_are_shown_once_and_revocable(backend: Backend) {
    let app = TestApp::spawn_on_backend("tenants", backend).await;
    let (status, tenant) =
        app.call(Method::POST, "/v1/tenants", ADMIN_TOKEN, Some(json!({"name": "Acme"}))).await;
    assert_eq!(status, 201);
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    assert!(tenant_id.starts_with("ten_"));
    assert_eq!(tenant["name"], "Acme");
    for name in ["", "   ", &"x".repeat(300), "nul\u{0}inside"] {
        let (status, problem) =
            app.call(Method::POST, "/v1/tenants", ADMIN_TOKEN, Some(json!({"name": name}))).await;
        assert_eq!(status, 422);
        assert_eq!(problem["errors"][0]["field"], "name");
    }

    // Listed with the built-in default tenant, one page at a time.
    for name in ["B", "C"] {
        app.call(Method::POST, "/v1/tenants", ADMIN_TOKEN, Some(json!({"name": name}))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=2&cursor={c}"),
            None => "/v1/tenants?limit=2".to_owned(),
        };
        let (status, page) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        assert_eq!(status, 200);
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|t| t["id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.contains(&"ten_default".to_owned()) && seen.contains(&tenant_id));

    // A key is shown once; lists show its prefix only.
    let keys = format!("/v1/tenants/{tenant_id}/keys");
    let (status, created) =
        app.call(Method::POST, &keys, ADMIN_TOKEN, Some(json!({"name": "ci"}))).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().expect("key shown").to_owned();
    assert!(key.starts_with("hgk_") && key.len() > 40);
    let prefix = created["prefix"].as_str().expect("prefix").to_owned();
    assert!(key.starts_with(&prefix) && prefix.len() < key.len() / 2);
    let (status, listed) = app.call(Method::GET, &keys, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().expect("data").len(), 1);
    assert_eq!(listed["data"][0]["prefix"], prefix.as_str());
    assert!(listed["data"][0].get("key").is_none());
    assert!(!listed.to_string().contains(&key[prefix.len()..]));

    // The key works, for its tenant, and not on admin routes.
    let (status, subs) = app.call(Method::GET, "/v1/subscriptions", &key, None).await;
    assert_eq!(status, 200);
    assert_eq!(subs["data"], json!([]));
    let (status, own) =
        app.call(Method::GET, &format!("/v1/tenants/{tenant_id}"), &key, None).await;
    assert_eq!((status, own["id"].as_str()), (200, Some(tenant_id.as_str())));
    for (method, path) in [
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/tenants"),
        (Method::POST, "/v1/event-types"),
    ] {
        let (status, problem) = app.call(method, path, &key, Some(json!({"name": "x"}))).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(problem["code"], "forbidden");
    }
    let (status, _) = app.call(Method::GET, &keys, &key, None).await;
    assert_eq!(status, 403, "key management is for admins");

    // Revoked: the key no longer authenticates; revoking again is fine.
    let key_id = created["id"].as_str().expect("key id");
    let revoke = format!("{keys}/{key_id}");
    let (status, _) = app.call(Method::DELETE, &revoke, ADMIN_TOKEN, None).await;
    assert_eq!(status, 204);
    let (status, _) = app.call(Method::DELETE, &revoke, ADMIN_TOKEN, None).await;
    assert_eq!(status, 204);
    let (status, problem) = app.call(Method::GET, "/v1/subscriptions", &key, None).await;
    assert_eq!((status, problem["code"].as_str()), (401, Some("unauthorized")));
    let (_, listed) = app.call(Method::GET, &keys, ADMIN_TOKEN, None).await;
    assert!(listed["data"][0]["revoked_at"].is_string());

    // Unknown tenants and keys.
    for path in
        ["/v1/tenants/ten_nobody", "/v1/tenants/ten_nobody/keys", "/v1/tenants/sub_wrongkind"]
    {
        let (status, _) = app.call(Method::GET, path, ADMIN_TOKEN, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) =
        app.call(Method::DELETE, &format!("{keys}/key_nothing"), ADMIN_TOKEN, None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn a_tenant_key_sees_only_its_own_tenant(backend: Backend) {
    let app = TestApp::spawn_on_backend("isolation", backend).await;
    let (tenant_a, key_a) = app.tenant_with_key("A").await;
    let (tenant_b, key_b) = app.tenant_with_key("B").await;
    let receiver_a = TestReceiver::start().await;
    let receiver_b = TestReceiver::start().await;

    let (status, sub_a) = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            &key_a,
            Some(json!({"url": receiver_a.url, "event_types": ["*"]})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(sub_a["tenant_id"], tenant_a.as_str());
    let sub_a = sub_a["id"].as_str().expect("id").to_owned();
    let (status, sub_b) = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            &key_b,
            Some(json!({"url": receiver_b.url, "event_types": ["*"]})),
        )
        .await;
    assert_eq!(status, 201);
    let sub_b = sub_b["id"].as_str().expect("id").to_owned();

    // An event published with A's key goes to A's subscriptions only.
    let (status, published) = app
        .call(
            Method::POST,
            "/v1/events",
            &key_a,
            Some(json!({"type": "order.created", "data": {"for": "a"}})),
        )
        .await;
    assert_eq!(status, 202);
    let event_a = published["id"].as_str().expect("id").to_owned();
    receiver_a.wait_for(1, DEADLINE).await;
    app.attempts_for(&event_a, DEADLINE).await;
    // An admin's broadcast goes to every tenant; once B has it, B would
    // long have had A's event too had it been sent there.
    let admin_event = app
        .publish(json!({"type": "order.created", "data": {"for": "all"}, "broadcast": true}))
        .await;
    receiver_b.wait_for(1, DEADLINE).await;
    receiver_a.wait_for(2, DEADLINE).await;
    let b_got: Vec<serde_json::Value> = receiver_b
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("JSON"))
        .collect();
    assert_eq!(b_got.len(), 1, "B got only the admin's event");
    assert_eq!(b_got[0]["data"]["for"], "all");
    let attempts = app.attempts_for(&admin_event, DEADLINE).await;
    assert!(!attempts.is_empty());

    // B gets 404 on every route with A's ids.
    let a_routes = [
        (Method::GET, format!("/v1/subscriptions/{sub_a}")),
        (Method::PATCH, format!("/v1/subscriptions/{sub_a}")),
        (Method::DELETE, format!("/v1/subscriptions/{sub_a}")),
        (Method::POST, format!("/v1/subscriptions/{sub_a}/rotate-secret")),
        (Method::POST, format!("/v1/subscriptions/{sub_a}/test")),
        (Method::GET, format!("/v1/subscriptions/{sub_a}/attempts")),
        (Method::GET, format!("/v1/events/{event_a}/attempts")),
        (Method::GET, format!("/v1/tenants/{tenant_a}")),
        (Method::GET, format!("/v1/tenants/{tenant_a}/keys")),
        (Method::POST, format!("/v1/tenants/{tenant_a}/keys")),
        (Method::GET, format!("/v1/subscriptions?tenant_id={tenant_a}")),
    ];
    for (method, path) in &a_routes {
        let body = (*method == Method::PATCH).then(|| json!({"description": "mine now"}));
        let (status, problem) = app.call(method.clone(), path, &key_b, body).await;
        assert_eq!(status, 404, "{method} {path} with B's key: {problem}");
        assert_eq!(problem["code"], "not_found");
    }
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            &key_b,
            Some(
                json!({"tenant_id": tenant_a, "url": "https://example.com", "event_types": ["*"]}),
            ),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "tenant_id");

    // B's list holds B's subscription only; A's is untouched and still
    // visible to A and to the admin.
    let (_, listed) = app.call(Method::GET, "/v1/subscriptions", &key_b, None).await;
    let ids: Vec<&str> =
        listed["data"].as_array().expect("data").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, [sub_b.as_str()]);
    let (status, own) =
        app.call(Method::GET, &format!("/v1/subscriptions/{sub_a}"), &key_a, None).await;
    assert_eq!(status, 200);
    assert!(own["description"].is_null());
    let (status, _) =
        app.call(Method::GET, &format!("/v1/subscriptions/{sub_a}"), ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    let (status, attempts) =
        app.call(Method::GET, &format!("/v1/events/{event_a}/attempts"), &key_a, None).await;
    assert_eq!(status, 200);
    assert_eq!(attempts["data"][0]["subscription_id"], sub_a.as_str());
    let (_, admin_list) = app
        .call(Method::GET, &format!("/v1/subscriptions?tenant_id={tenant_b}"), ADMIN_TOKEN, None)
        .await;
    assert_eq!(admin_list["data"][0]["id"], sub_b.as_str());
    app.stop().await;
}

both_backends!(admins_create_tenants_and_keys_that_are_shown_once_and_revocable);

both_backends!(a_tenant_key_sees_only_its_own_tenant);
