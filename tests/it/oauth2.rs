//! OAuth 2.0 client credentials to an endpoint, against a loopback token
//! server that issues short-lived tokens and a receiver that takes only
//! those: hookgate fetches one token per lifetime (the token requests are
//! counted), a new one after it expires and when the receiver refuses one,
//! and a wrong client secret dead-letters with a reason that names the
//! token endpoint's answer, never the secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine as _;
use hookgate::config::RetrySchedule;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::harness::{eventually, TestApp, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "hookgate-client";
const CLIENT_SECRET: &str = "s3cret-do-not-log";
/// The tokens' lifetime: long enough for a burst to share one.
const LIFETIME: Duration = Duration::from_secs(4);

#[derive(Default)]
struct Issuer {
    /// Token → when it was issued, for tokens not revoked.
    valid: HashMap<String, Instant>,
    /// The form of every token request, in order.
    requests: Vec<HashMap<String, String>>,
    /// What the hook answered, in order.
    answers: Vec<u16>,
}

type Shared = Arc<Mutex<Issuer>>;

/// A token endpoint and a hook on one loopback port.
struct Endpoints {
    base: String,
    issuer: Shared,
}

impl Endpoints {
    async fn start() -> Self {
        let issuer = Shared::default();
        let app = Router::new()
            .route("/token", post(token))
            .route("/hook", post(hook))
            .with_state(Arc::clone(&issuer));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, issuer }
    }

    fn token_requests(&self) -> usize {
        self.issuer.lock().expect("lock").requests.len()
    }

    fn answers(&self) -> Vec<u16> {
        self.issuer.lock().expect("lock").answers.clone()
    }
}

async fn token(
    State(issuer): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
    let mut issuer = issuer.lock().expect("lock");
    issuer.requests.push(form.clone());
    if basic != Some(&format!("Basic {expected}")) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"})));
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "unsupported_grant_type"})));
    }
    let value = format!("tok-{}", issuer.requests.len());
    issuer.valid.insert(value.clone(), Instant::now());
    let answer =
        json!({"access_token": value, "token_type": "Bearer", "expires_in": LIFETIME.as_secs()});
    (StatusCode::OK, Json(answer))
}

async fn hook(State(issuer): State<Shared>, headers: HeaderMap) -> StatusCode {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut issuer = issuer.lock().expect("lock");
    let valid =
        bearer.and_then(|t| issuer.valid.get(t)).is_some_and(|issued| issued.elapsed() < LIFETIME);
    let status = if valid { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED };
    issuer.answers.push(status.as_u16());
    status
}

fn accepted(endpoints: &Endpoints) -> usize {
    endpoints.answers().iter().filter(|s| **s == 204).count()
}

async fn publish(app: &TestApp, n: usize) {
    let event = json!({"type": "order.paid", "data": {"n": n}});
    let (status, answer) = app.call(Method::POST, "/v1/events", ADMIN_TOKEN, Some(event)).await;
    assert_eq!(status, 202, "{answer}");
}

fn credentials(endpoints: &Endpoints, secret: &str) -> Value {
    json!({
        "token_url": format!("{}/token", endpoints.base),
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "scope": "webhooks:write",
        "audience": "https://receiver.example",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_fetched_once_per_lifetime_and_again_after_expiry_or_a_401() {
    let app = TestApp::spawn("oauth2").await;
    let endpoints = Endpoints::start().await;
    let body = json!({
        "url": format!("{}/hook", endpoints.base),
        "event_types": ["order.*"],
        "oauth2": credentials(&endpoints, CLIENT_SECRET),
    });
    let created = app.subscribe(body).await;
    assert_eq!(created["oauth2"]["client_secret"], "********", "write-only: {created}");
    assert_eq!(created["oauth2"]["client_id"], CLIENT_ID);

    for n in 0..5 {
        publish(&app, n).await;
    }
    eventually("five webhooks accepted", DEADLINE, || async {
        (accepted(&endpoints) == 5).then_some(())
    })
    .await;
    assert_eq!(endpoints.token_requests(), 1, "one token for the burst");
    assert_eq!(endpoints.answers(), [204; 5], "no webhook went without a valid token");
    let first = endpoints.issuer.lock().expect("lock").requests[0].clone();
    assert_eq!(first.get("scope").map(String::as_str), Some("webhooks:write"));
    assert_eq!(first.get("audience").map(String::as_str), Some("https://receiver.example"));

    // Past its lifetime, a new token.
    let issued = *endpoints.issuer.lock().expect("lock").valid.values().next().expect("issued");
    tokio::time::sleep_until(issued + LIFETIME).await;
    publish(&app, 5).await;
    eventually("the sixth accepted", DEADLINE, || async {
        (accepted(&endpoints) == 6).then_some(())
    })
    .await;
    assert_eq!(endpoints.token_requests(), 2);

    // A token the receiver no longer takes: one 401, one new token, delivered.
    endpoints.issuer.lock().expect("lock").valid.clear();
    publish(&app, 6).await;
    eventually("the seventh accepted", DEADLINE, || async {
        (accepted(&endpoints) == 7).then_some(())
    })
    .await;
    assert_eq!(endpoints.token_requests(), 3);
    assert_eq!(endpoints.answers().iter().filter(|s| **s == 401).count(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_client_secret_dead_letters_naming_the_token_endpoints_answer() {
    let app = TestApp::spawn_with("oauth2-wrong", |config| {
        if let Some(dispatcher) = &mut config.dispatcher {
            dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(200); 2]);
        }
    })
    .await;
    let endpoints = Endpoints::start().await;
    let wrong = "not-the-secret-either";
    let body = json!({
        "url": format!("{}/hook", endpoints.base),
        "event_types": ["order.*"],
        "oauth2": credentials(&endpoints, wrong),
    });
    let created = app.subscribe(body).await;
    let id = created["id"].as_str().expect("id").to_owned();
    publish(&app, 0).await;
    let dead = eventually("the dead letter", DEADLINE, || async {
        let path = format!("/v1/dead-letters?subscription_id={id}");
        let (_, page) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        page["data"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    assert_eq!(dead["reason"], "exhausted", "{dead}");
    assert_eq!(dead["attempts"], 3, "after the schedule: {dead}");
    let error = dead["error"].as_str().expect("an error");
    assert!(error.contains("the token endpoint answered 401 (invalid_client)"), "{error}");
    assert!(!error.contains(wrong), "{error}");
    assert_eq!(endpoints.answers(), Vec::<u16>::new(), "nothing was sent without a token");
    assert_eq!(endpoints.token_requests(), 3, "one token request per attempt");

    let path = format!("/v1/subscriptions/{id}/attempts");
    let (_, attempts) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
    assert!(!attempts.to_string().contains(wrong), "no attempt shows the secret");

    // Bad credentials are refused at the door.
    for (oauth2, field) in [
        (
            json!({"token_url": "ftp://x/", "client_id": "a", "client_secret": "b"}),
            "oauth2/token_url",
        ),
        (
            json!({"token_url": format!("{}/token", endpoints.base), "client_id": "", "client_secret": "b"}),
            "oauth2/client_id",
        ),
        (
            json!({"token_url": format!("{}/token", endpoints.base), "client_id": "a", "client_secret": "********"}),
            "oauth2/client_secret",
        ),
    ] {
        let body = json!({"url": format!("{}/hook", endpoints.base), "event_types": ["a.*"], "oauth2": oauth2});
        let (status, problem) =
            app.call(Method::POST, "/v1/subscriptions", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(crate::harness::error_fields(&problem), [field], "{problem}");
    }
    let body = json!({
        "url": format!("{}/hook", endpoints.base), "event_types": ["a.*"],
        "headers": {"Authorization": "Bearer mine"}, "oauth2": credentials(&endpoints, CLIENT_SECRET),
    });
    let (status, problem) =
        app.call(Method::POST, "/v1/subscriptions", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(
        (status, crate::harness::error_fields(&problem)),
        (422, vec!["oauth2"]),
        "{problem}"
    );
    app.stop().await;
}
