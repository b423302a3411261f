//! The REST API's answers to good and bad requests.

use serde_json::{json, Value};

use crate::harness::TestApp;

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:hookgate:problem:")));
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

#[tokio::test]
async fn subscriptions_and_events_answer_clear_errors() {
    let app = TestApp::spawn("api-errors").await;
    let subscriptions = app.url("/v1/subscriptions");
    let valid = json!({"url": "https://example.com/hook", "event_types": ["order.*"]});

    // No token, a wrong token.
    let response = app.client.post(&subscriptions).json(&valid).send().await.expect("send");
    assert_eq!(problem(response, 401).await["code"], "unauthorized");
    let response = app
        .client
        .post(&subscriptions)
        .bearer_auth("not-the-token-at-all")
        .json(&valid)
        .send()
        .await
        .expect("send");
    problem(response, 401).await;

    // Malformed JSON, a wrong content type.
    let response = app
        .admin(app.client.post(&subscriptions))
        .header("content-type", "application/json")
        .body("{\"url\": ")
        .send()
        .await
        .expect("send");
    problem(response, 400).await;
    let response =
        app.admin(app.client.post(&subscriptions)).body("url=x").send().await.expect("send");
    problem(response, 415).await;

    // Field errors name each bad field.
    let response = app
        .post_json(
            "/v1/subscriptions",
            json!({"url": "ftp://example.com", "event_types": ["a.*.b", "ok.*"], "secret": "nope",
                   "headers": {"webhook-signature": "x"}, "max_in_flight": 0}),
        )
        .await;
    let body = problem(response, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for field in ["url", "event_types/0", "secret", "headers/webhook-signature", "max_in_flight"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    assert!(!fields.contains(&"event_types/1"));

    // Unknown subscription, unknown route, wrong method.
    let response = app
        .admin(app.client.get(app.url("/v1/subscriptions/sub_01jxxxxxxxxxxxxxxxxxxxxxxx")))
        .send()
        .await
        .expect("send");
    problem(response, 404).await;
    let response = app.admin(app.client.get(app.url("/v1/nothing"))).send().await.expect("send");
    problem(response, 404).await;
    let response = app.admin(app.client.delete(app.url("/v1/events"))).send().await.expect("send");
    problem(response, 405).await;

    // Bad events.
    let response = app.post_json("/v1/events", json!({"type": "no spaces", "data": {}})).await;
    let body = problem(response, 422).await;
    assert_eq!(body["errors"][0]["field"], "type");
    let response = app.post_json("/v1/events", json!({"type": "a.b"})).await;
    problem(response, 422).await;

    // None of that created anything.
    let changes = app.store.subscription_changes(0, 10).await.expect("changes");
    assert!(changes.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn created_subscription_reads_back_without_its_secret() {
    let app = TestApp::spawn("api-create").await;
    let created = app
        .subscribe(
            json!({"url": "https://example.com/hook", "event_types": ["order.*", "invoice.paid"],
                          "rate_limit": {"per_second": 5, "burst": 10}, "description": "orders"}),
        )
        .await;
    let id = created["id"].as_str().expect("id");
    assert!(id.starts_with("sub_"));
    let secret = created["secret"].as_str().expect("generated secret");
    assert!(hookgate::domain::SigningSecret::parse(secret).is_ok(), "a usable whsec_ secret");
    assert_eq!(created["tenant_id"], "ten_default");
    assert_eq!(created["status"], "active");

    let response = app
        .admin(app.client.get(app.url(&format!("/v1/subscriptions/{id}"))))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let read: Value = response.json().await.expect("JSON");
    assert_eq!(read["url"], "https://example.com/hook");
    assert_eq!(read["event_types"], json!(["order.*", "invoice.paid"]));
    assert_eq!(read["rate_limit"], json!({"per_second": 5, "burst": 10}));
    assert!(read.get("secret").is_none(), "the secret is shown once, on create");

    let response = app
        .post_json(
            "/v1/subscriptions",
            json!({"url": "https://example.com", "event_types": ["a"], "tenant_id": "ten_nobody"}),
        )
        .await;
    assert_eq!(problem(response, 422).await["errors"][0]["field"], "tenant_id");
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn("api-health").await;
    let response = app.client.get(app.url("/healthz")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    let response = app.client.get(app.url("/readyz")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("JSON")["status"], "ready");
    app.stop().await;
}
