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

/// Every operation of the generated document, as (method, path).
fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            operations.push((method.clone(), path.clone()));
        }
    }
    operations
}

#[test]
fn every_operation_is_documented_with_its_errors() {
    let doc: serde_json::Value =
        serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = operations(&doc);
    assert!(operations.len() >= 30, "{operations:?}");
    for (method, path) in &operations {
        let operation = &doc["paths"][path][method];
        assert!(operation["operationId"].is_string(), "{method} {path} has an operationId");
        if path.starts_with("/v1/") {
            let unauthorized = &operation["responses"]["401"]["content"];
            assert!(
                unauthorized["application/problem+json"].is_object(),
                "{method} {path} documents its 401 problem"
            );
            assert_eq!(
                operation["security"],
                serde_json::json!([{"bearer": []}]),
                "{method} {path} takes the bearer token"
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
}

/// The document comes from the routers, so each operation it lists is one
/// the server routes: no `/v1` one answers before checking the token.
#[tokio::test]
async fn every_documented_operation_is_served_and_v1_ones_need_a_token() {
    let app = TestApp::spawn("openapi-served").await;
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("JSON");
    for (method, path) in operations(&doc) {
        // Path parameters as a client would fill them (the ids need not exist).
        let filled: String = path
            .split('/')
            .map(|segment| if segment.starts_with('{') { "sub_x" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response =
            app.client.request(method.clone(), app.url(&filled)).send().await.expect("send");
        let status = response.status().as_u16();
        assert!(status != 404 && status != 405, "{method} {path} is routed: {status}");
        if path.starts_with("/v1/") {
            assert_eq!(status, 401, "{method} {path} without a token");
            let problem: serde_json::Value = response.json().await.expect("problem JSON");
            assert_eq!(problem["code"], "unauthorized", "{method} {path}");
        }
    }
    app.stop().await;
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
