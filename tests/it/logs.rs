//! Logs: a `hookgate serve` run with JSON logs at debug level, through
//! tenant keys, subscriptions, a rotation, publishing, deliveries, failures
//! and a test send, writes none of the secrets it handled.

use std::time::Duration;

use hookgate::config::RetrySchedule;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::harness::process::ServeProcess;
use crate::harness::{database_url, Reply, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

struct Api<'a> {
    serve: &'a ServeProcess,
    client: reqwest::Client,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = self
            .client
            .request(method, self.serve.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request reaches hookgate serve");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, body).await
    }
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_key_token_password_or_signature_is_logged() {
    // The dispatcher runs in the process under test, with the harness's settings.
    let mut settings = None;
    let app = TestApp::spawn_with("logs", |config| settings = config.dispatcher.take()).await;
    let mut dispatcher = settings.expect("the harness's dispatcher settings");
    dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(200)]);
    // A database role of its own, so that its password is a value to look for.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (role, password) = (format!("hg_logs_{suffix}"), format!("pw-{suffix}"));
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.expect("connect");
    sqlx::query(&format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"))
        .execute(&mut admin)
        .await
        .expect("create role");
    let mut config = app.config.clone();
    let mut url = url::Url::parse(&config.database_url).expect("database URL");
    url.set_username(&role).expect("user");
    url.set_password(Some(&password)).expect("password");
    config.database_url = url.to_string();

    // The key that encrypts secrets at rest is a secret too.
    let secret_key = {
        use base64::Engine;
        let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(key)
    };
    let serve = ServeProcess::start(
        &config,
        &dispatcher,
        &[
            ("HOOKGATE_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug,hookgate=trace"),
            ("HOOKGATE_SECRET_KEY", &format!("logs:{secret_key}")),
        ],
    )
    .await;
    let api = Api { serve: &serve, client: reqwest::Client::new() };
    let healthy = TestReceiver::start().await;
    // What a subscriber's endpoint asks for: sent with every webhook, never logged.
    let endpoint_credential = format!("Bearer endpoint-{}", uuid::Uuid::new_v4().simple());
    let failing = TestReceiver::answering(|_, _| Reply::status(500)).await;

    let (status, tenant) = api.post("/v1/tenants", ADMIN_TOKEN, json!({"name": "acme"})).await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = text(&tenant["id"]);
    let (status, key) = api
        .post(&format!("/v1/tenants/{tenant_id}/keys"), ADMIN_TOKEN, json!({"name": "ci"}))
        .await;
    assert_eq!(status, 201, "{key}");
    let tenant_key = text(&key["key"]);

    let (status, subscription) = api
        .post(
            "/v1/subscriptions",
            &tenant_key,
            json!({"url": healthy.url, "event_types": ["*"],
            "headers": {"authorization": endpoint_credential}}),
        )
        .await;
    assert_eq!(status, 201, "{subscription}");
    let first_secret = text(&subscription["secret"]);
    let subscription_id = text(&subscription["id"]);
    let (status, rotated) = api
        .post(&format!("/v1/subscriptions/{subscription_id}/rotate-secret"), &tenant_key, json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second_secret = text(&rotated["secret"]);
    let chosen_secret = {
        use base64::Engine;
        let mut key = uuid::Uuid::new_v4().as_bytes().to_vec();
        key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
    };
    let (status, failing_subscription) = api
        .post(
            "/v1/subscriptions",
            ADMIN_TOKEN,
            json!({"url": failing.url, "event_types": ["*"], "secret": chosen_secret,
                "tenant_id": tenant_id}),
        )
        .await;
    assert_eq!(status, 201, "{failing_subscription}");

    let (status, _) = api
        .post("/v1/events", &tenant_key, json!({"type": "order.created", "data": {"n": 1}}))
        .await;
    assert_eq!(status, 202);
    let (status, _) = api
        .post(&format!("/v1/subscriptions/{subscription_id}/test"), &tenant_key, json!({}))
        .await;
    assert!(status < 300, "test send: {status}");
    // A wrong key is a secret too (someone's, mistyped).
    let wrong_key = format!("{tenant_key}x");
    let (status, _) = api.post("/v1/events", &wrong_key, json!({"type": "a.b", "data": {}})).await;
    assert_eq!(status, 401);

    let delivered = healthy.wait_for(2, DEADLINE).await;
    assert!(delivered.iter().all(|w| w.header("authorization") == endpoint_credential));
    // The failing endpoint: one attempt, a retry, then the dead-letter topic.
    let failed = failing.wait_for(2, DEADLINE).await;
    crate::harness::eventually("the dead letter", DEADLINE, || async {
        (app.records_on(&app.topics.dlq).await >= 1).then_some(())
    })
    .await;
    let output = serve.stop().await;

    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let logged: Vec<Value> = lines
        .iter()
        .filter(|line| !line.starts_with("listening on "))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON log line: {line}"))
        })
        .collect();
    assert!(logged.len() > 20, "debug logging of a whole run: {} lines", logged.len());
    assert!(logged.iter().any(|l| l["message"] == "dispatcher started"), "{output}");
    assert!(logged.iter().any(|l| l["message"] == "delivery dead-lettered"), "{output}");

    let mut secrets = vec![
        ("the admin token", ADMIN_TOKEN.to_owned()),
        ("the tenant key", tenant_key.clone()),
        ("a wrong key", wrong_key),
        ("the database password", password.clone()),
        ("the endpoint's credential", endpoint_credential.clone()),
        ("the secret key", secret_key.clone()),
    ];
    for (what, secret) in [
        ("a secret", first_secret),
        ("a rotated secret", second_secret),
        ("a chosen secret", chosen_secret),
    ] {
        let key = secret.strip_prefix("whsec_").expect("whsec_ prefix").to_owned();
        secrets.push((what, secret));
        secrets.push((what, key));
    }
    for webhook in delivered.iter().chain(&failed) {
        for signature in webhook.header("webhook-signature").split(' ') {
            let (_, signature) = signature.split_once(',').expect("v1,<signature>");
            secrets.push(("a webhook signature", signature.to_owned()));
        }
    }
    for (what, secret) in &secrets {
        assert!(!output.contains(secret.as_str()), "{what} was logged");
    }

    app.stop().await;
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(&mut admin).await;
}
