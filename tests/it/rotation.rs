//! Secret rotation: during the grace period webhooks carry the old and the
//! new signature, so a receiver verifying with either accepts; afterwards,
//! only the new one.

use std::time::Duration;

use hookgate::domain::Scope;
use reqwest::Method;
use serde_json::json;

use crate::harness::receiver::Received;
use crate::harness::{both_backends, eventually, Backend, TestApp, TestReceiver, ADMIN_TOKEN};

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const DEADLINE: Duration = Duration::from_secs(30);

fn verifies(secret: &str, webhook: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&webhook.body, &webhook.headers)
        .is_ok()
}

fn signatures(webhook: &Received) -> usize {
    webhook
        .headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
        .map_or(0, |v| v.split(' ').count())
}

async fn rotate(app: &TestApp, id: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, rotated) = app
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            ADMIN_TOKEN,
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    rotated
}

async fn both_secrets_verify_during_the_grace_period_then_only_the_new_one(backend: Backend) {
    let app = TestApp::spawn_on_backend("rotation", backend).await;
    let receiver = TestReceiver::start().await;
    let long =
        app.subscribe(json!({"url": receiver.url, "event_types": ["long.*"], "secret": OLD})).await;
    let short = app
        .subscribe(json!({"url": receiver.url, "event_types": ["short.*"], "secret": OLD}))
        .await;

    // A day of grace: both signatures, each verifies on its own.
    let rotated = rotate(&app, long["id"].as_str().expect("id"), json!({"secret": NEW})).await;
    assert_eq!(rotated["secret"], NEW);
    let expires: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_expires_at"].as_str().expect("expiry").parse().expect("RFC 3339");
    let hours = (expires - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((23.9..=24.0).contains(&hours), "default grace is 24 h: {hours}");
    app.publish(json!({"type": "long.lived", "data": {}})).await;
    let webhook = receiver.wait_for(1, DEADLINE).await.remove(0);
    assert_eq!(signatures(&webhook), 2);
    assert!(verifies(OLD, &webhook), "a receiver still on the old secret accepts");
    assert!(verifies(NEW, &webhook), "a receiver on the new secret accepts");

    // A one-second grace: once it is over, only the new secret signs.
    let rotated = rotate(
        &app,
        short["id"].as_str().expect("id"),
        json!({"secret": NEW, "grace_period_seconds": 1}),
    )
    .await;
    assert!(rotated["previous_secret_expires_at"].is_string());
    let after_grace = eventually("a webhook signed after the grace period", DEADLINE, || async {
        let before = receiver.received().len();
        app.publish(json!({"type": "short.lived", "data": {}})).await;
        let webhook = receiver.wait_for(before + 1, DEADLINE).await.pop()?;
        (signatures(&webhook) == 1).then_some(webhook)
    })
    .await;
    assert!(verifies(NEW, &after_grace));
    assert!(!verifies(OLD, &after_grace), "the old secret no longer verifies");

    // A generated secret, no grace; bad requests change nothing.
    let id = long["id"].as_str().expect("id");
    let rotated = rotate(&app, id, json!({"grace_period_seconds": 0})).await;
    let generated = rotated["secret"].as_str().expect("generated");
    assert!(generated.starts_with("whsec_") && generated != NEW);
    assert!(rotated["previous_secret_expires_at"].is_null());
    for (body, field) in [
        (json!({"secret": "nope"}), "secret"),
        (json!({"secret": generated}), "secret"),
        (json!({"grace_period_seconds": 604_801}), "grace_period_seconds"),
        (json!({"grace_period_seconds": -1}), "grace_period_seconds"),
    ] {
        let (status, problem) = app
            .call(
                Method::POST,
                &format!("/v1/subscriptions/{id}/rotate-secret"),
                ADMIN_TOKEN,
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let stored = app
        .store
        .get_subscription(Scope::All, &hookgate::domain::SubscriptionId::parse(id).expect("id"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(stored.secret, generated);
    app.stop().await;
}

async fn concurrent_patches_never_undo_a_rotation(backend: Backend) {
    const ROUNDS: usize = 50;
    const PATCHES: usize = 3;
    let app = TestApp::spawn_on_backend("rotation-race", backend).await;
    let receiver = TestReceiver::start().await;
    let created =
        app.subscribe(json!({"url": receiver.url, "event_types": ["*"], "secret": OLD})).await;
    let id = created["id"].as_str().expect("id");
    let sub_id = hookgate::domain::SubscriptionId::parse(id).expect("id");
    let path = format!("/v1/subscriptions/{id}");
    let mut current = OLD.to_owned();
    for round in 0..ROUNDS {
        // Each PATCH reads the subscription before the rotation lands and
        // writes after it, or the other way round: neither may undo the other.
        let patches = futures::future::join_all((0..PATCHES).map(|n| {
            let patch = json!({"description": format!("round {round}, patch {n}")});
            app.call(Method::PATCH, &path, ADMIN_TOKEN, Some(patch))
        }));
        let (rotated, patched) = tokio::join!(rotate(&app, id, json!({})), patches);
        for (status, body) in patched {
            assert_eq!(status, 200, "round {round}: {body}");
        }
        let rotated_to = rotated["secret"].as_str().expect("new secret").to_owned();
        let stored =
            app.store.get_subscription(Scope::All, &sub_id).await.expect("read").expect("found");
        assert_eq!(
            stored.secret, rotated_to,
            "round {round}: a concurrent PATCH undid the rotation"
        );
        let previous = stored.previous_secrets.last().map(|p| p.secret.as_str());
        assert_eq!(
            previous,
            Some(current.as_str()),
            "round {round}: the old secret is the previous one"
        );
        let description = stored.description.unwrap_or_default();
        assert!(
            description.starts_with(&format!("round {round}, patch")),
            "round {round}: the rotation undid a PATCH: {description:?}"
        );
        current = rotated_to;
    }
    app.stop().await;
}

both_backends!(multi_thread concurrent_patches_never_undo_a_rotation);

both_backends!(both_secrets_verify_during_the_grace_period_then_only_the_new_one);
