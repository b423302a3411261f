//! The committed OpenAPI document is the one the code generates, and the
//! server serves it.

use hookgate::api::openapi::{yaml, ApiDoc};
use utoipa::OpenApi;

use crate::harness::TestApp;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/hookgate.yaml");

#[test]
fn committed_openapi_matches_the_code() {
    let generated = yaml();
    if std::env::var_os("HOOKGATE_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("rewrite openapi/hookgate.yaml");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/hookgate.yaml differs from what the code generates. Regenerate it with\n  \
         cargo run -- openapi > openapi/hookgate.yaml\nor\n  \
         HOOKGATE_UPDATE_OPENAPI=1 cargo test --test it openapi"
    );
}

#[test]
fn every_operation_is_documented_with_its_errors() {
    let doc: serde_json::Value =
        serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants"),
        ("get", "/v1/tenants/{id}"),
        ("post", "/v1/tenants/{id}/keys"),
        ("get", "/v1/tenants/{id}/keys"),
        ("delete", "/v1/tenants/{id}/keys/{key_id}"),
        ("post", "/v1/subscriptions"),
        ("get", "/v1/subscriptions"),
        ("get", "/v1/subscriptions/{id}"),
        ("patch", "/v1/subscriptions/{id}"),
        ("delete", "/v1/subscriptions/{id}"),
        ("post", "/v1/subscriptions/{id}/rotate-secret"),
        ("post", "/v1/subscriptions/{id}/test"),
        ("get", "/v1/subscriptions/{id}/attempts"),
        ("post", "/v1/event-types"),
        ("get", "/v1/event-types"),
        ("get", "/v1/event-types/{name}"),
        ("patch", "/v1/event-types/{name}"),
        ("post", "/v1/events"),
        ("post", "/v1/events/batch"),
        ("get", "/v1/events/{id}/attempts"),
        ("get", "/v1/dead-letters"),
        ("get", "/v1/dead-letters/{id}"),
        ("post", "/v1/dead-letters/{id}/replay"),
        ("post", "/v1/dead-letters/{id}/discard"),
        ("post", "/v1/replays"),
        ("get", "/v1/replays/{id}"),
        ("post", "/v1/replays/{id}/cancel"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ];
    for (method, path) in routes {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        if path.starts_with("/v1/") {
            let unauthorized = &operation["responses"]["401"]["content"];
            assert!(
                unauthorized["application/problem+json"].is_object(),
                "{method} {path} documents its 401 problem"
            );
        }
    }
    // Writes of a subscription honour If-Match; what answers one shows its ETag.
    for (method, path) in [
        ("patch", "/v1/subscriptions/{id}"),
        ("delete", "/v1/subscriptions/{id}"),
        ("post", "/v1/subscriptions/{id}/rotate-secret"),
        ("post", "/v1/subscriptions/{id}/test"),
    ] {
        let operation = &doc["paths"][path][method];
        let params = operation["parameters"].as_array().expect("parameters");
        assert!(
            params.iter().any(|p| p["name"] == "If-Match" && p["in"] == "header"),
            "{method} {path} documents If-Match"
        );
        for status in ["400", "412"] {
            assert!(
                operation["responses"][status]["content"]["application/problem+json"].is_object(),
                "{method} {path} documents its {status} problem"
            );
        }
    }
    for (method, path, status) in [
        ("post", "/v1/subscriptions", "201"),
        ("get", "/v1/subscriptions/{id}", "200"),
        ("patch", "/v1/subscriptions/{id}", "200"),
        ("post", "/v1/subscriptions/{id}/rotate-secret", "200"),
    ] {
        let headers = &doc["paths"][path][method]["responses"][status]["headers"];
        assert!(headers["ETag"].is_object(), "{method} {path} documents its ETag");
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(documented, routes.len(), "no undocumented extra operations");
}

#[tokio::test]
async fn the_server_serves_the_generated_document() {
    let app = TestApp::spawn("openapi").await;
    let served: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let generated = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
    assert_eq!(served, generated);
    app.stop().await;
}
