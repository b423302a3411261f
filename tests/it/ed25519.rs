//! Ed25519 (`v1a`) signatures, checked from outside: every webhook is
//! verified over `id.timestamp.body` by Python's `cryptography` (an Ed25519
//! implementation hookgate does not use) with the subscription's `whpk_`
//! public key, through rotations (both keys' signatures during the grace
//! period) and a move from hmac-sha256 to ed25519.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::receiver::Received;
use crate::harness::{error_fields, TestApp, TestReceiver};

const DEADLINE: Duration = Duration::from_secs(60);

/// Prints how many of the header's `v1a` signatures the public key verifies.
const VERIFY: &str = r#"
import base64, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
public, msg_id, timestamp, body, header = sys.argv[1:6]
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
content = f"{msg_id}.{timestamp}.".encode() + base64.b64decode(body)
verified = 0
for signature in header.split(" "):
    if signature.startswith("v1a,"):
        try:
            key.verify(base64.b64decode(signature[4:]), content)
            verified += 1
        except InvalidSignature:
            pass
print(verified)
"#;

/// How many of the webhook's `v1a` signatures `public_key` verifies, as
/// Python's `cryptography` sees it.
fn verified_by(public_key: &str, webhook: &Received, body: &[u8]) -> u32 {
    let python = std::env::var("HOOKGATE_TEST_PYTHON").expect(
        "HOOKGATE_TEST_PYTHON is not set: run `eval \"$(scripts/test-env env)\"` after `scripts/test-env start`",
    );
    let body = base64::engine::general_purpose::STANDARD.encode(body);
    let output = Command::new(&python)
        .args(["-c", VERIFY, public_key])
        .args([webhook.header("webhook-id"), webhook.header("webhook-timestamp")])
        .args([body.as_str(), webhook.header("webhook-signature")])
        .output()
        .expect("the verifying Python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("a count")
}

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, created) = app.call(Method::POST, "/v1/subscriptions", key, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn rotate(app: &TestApp, key: &str, id: &str, body: Value) -> Value {
    let path = format!("/v1/subscriptions/{id}/rotate-secret");
    let (status, rotated) = app.call(Method::POST, &path, key, Some(body)).await;
    assert_eq!(status, 200, "{rotated}");
    rotated
}

/// Publishes an order event and answers the webhook it became (the
/// receiver's `n`th, counting from 1).
async fn delivered(app: &TestApp, key: &str, receiver: &TestReceiver, n: usize) -> Received {
    let event = json!({"type": "order.paid", "data": {"n": n}});
    let (status, answer) = app.call(Method::POST, "/v1/events", key, Some(event)).await;
    assert_eq!(status, 202, "{answer}");
    receiver.wait_for(n, DEADLINE).await.swap_remove(n - 1)
}

fn public_key(answer: &Value) -> String {
    let key = answer["public_key"].as_str().expect("a public key").to_owned();
    assert!(key.starts_with("whpk_"), "{answer}");
    key
}

#[tokio::test(flavor = "multi_thread")]
async fn ed25519_webhooks_verify_outside_hookgate_through_rotations() {
    let app = TestApp::spawn("ed25519").await;
    let (_, key) = app.tenant_with_key("acme").await;
    let receiver = TestReceiver::start().await;
    let body =
        json!({"url": receiver.url, "event_types": ["order.*"], "signature_scheme": "ed25519"});
    let created = create(&app, &key, body).await;
    assert_eq!(created["signature_scheme"], "ed25519");
    assert!(created.get("secret").is_none(), "the secret key is never shown: {created}");
    let first = public_key(&created);
    let id = created["id"].as_str().expect("id").to_owned();
    let (_, read) = app.call(Method::GET, &format!("/v1/subscriptions/{id}"), &key, None).await;
    assert_eq!((read["public_key"].as_str(), read.get("secret")), (Some(first.as_str()), None));

    let webhook = delivered(&app, &key, &receiver, 1).await;
    assert!(webhook.header("webhook-signature").starts_with("v1a,"));
    assert_eq!(verified_by(&first, &webhook, &webhook.body), 1);
    assert_eq!(verified_by(&first, &webhook, b"{\"tampered\":true}"), 0);

    // During the grace period, both keys sign.
    let rotated = rotate(&app, &key, &id, json!({"grace_period_seconds": 3600})).await;
    assert_eq!(rotated["signature_scheme"], "ed25519");
    assert!(rotated.get("secret").is_none(), "{rotated}");
    let second = public_key(&rotated);
    assert_ne!(second, first);
    let webhook = delivered(&app, &key, &receiver, 2).await;
    assert_eq!(webhook.header("webhook-signature").split(' ').count(), 2);
    assert_eq!(verified_by(&first, &webhook, &webhook.body), 1, "the old key still verifies");
    assert_eq!(verified_by(&second, &webhook, &webhook.body), 1, "and the new one");

    // Without one, only the new key signs.
    let rotated = rotate(&app, &key, &id, json!({"grace_period_seconds": 0})).await;
    let third = public_key(&rotated);
    let webhook = delivered(&app, &key, &receiver, 3).await;
    assert_eq!(verified_by(&second, &webhook, &webhook.body), 0);
    assert_eq!(verified_by(&third, &webhook, &webhook.body), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_from_hmac_to_ed25519_signs_both_ways_during_the_grace_period() {
    let app = TestApp::spawn("ed25519-move").await;
    let (_, key) = app.tenant_with_key("acme").await;
    let receiver = TestReceiver::start().await;
    let created =
        create(&app, &key, json!({"url": receiver.url, "event_types": ["order.*"]})).await;
    assert_eq!(created["signature_scheme"], "hmac-sha256");
    assert!(created.get("public_key").is_none());
    let secret = created["secret"].as_str().expect("an hmac secret is shown once").to_owned();
    let id = created["id"].as_str().expect("id");
    let rotated = rotate(&app, &key, id, json!({"signature_scheme": "ed25519"})).await;
    let public = public_key(&rotated);
    let webhook = delivered(&app, &key, &receiver, 1).await;
    let hmac = standardwebhooks::Webhook::new(&secret).expect("a valid secret");
    assert!(hmac.verify(&webhook.body, &webhook.headers).is_ok(), "the old secret verifies v1");
    assert_eq!(verified_by(&public, &webhook, &webhook.body), 1, "the new key verifies v1a");
    app.stop().await;
}

#[tokio::test]
async fn a_key_of_the_wrong_scheme_or_shape_answers_422_and_an_own_key_is_kept() {
    let app = TestApp::spawn("ed25519-bad").await;
    let (_, key) = app.tenant_with_key("acme").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let url = "http://127.0.0.1:9/";
    let hmac = format!("whsec_{}", b64(&[7; 32]));
    let cases = [
        (json!({"signature_scheme": "ed25519", "secret": hmac}), "signature_scheme"),
        (json!({"secret": format!("whsk_{}", b64(&[7; 31]))}), "secret"),
        (json!({"secret": format!("whsk_{}", b64(&[7; 64]))}), "secret"),
        (json!({"secret": "whpk_AAAA"}), "secret"),
        (json!({"signature_scheme": "rsa"}), "signature_scheme"),
    ];
    for (fields, field) in cases {
        let mut body = json!({"url": url, "event_types": ["a.*"]});
        body.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
        let (status, problem) = app.call(Method::POST, "/v1/subscriptions", &key, Some(body)).await;
        assert_eq!(status, 422, "{fields}: {problem}");
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    // RFC 8032, section 7.1, test 1: the seed given, its public key shown.
    let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let hex = |text: &str| -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let body =
        json!({"url": url, "event_types": ["a.*"], "secret": format!("whsk_{}", b64(&hex(seed)))});
    let created = create(&app, &key, body).await;
    assert_eq!(created["signature_scheme"], "ed25519");
    assert_eq!(created["public_key"], format!("whpk_{}", b64(&hex(public))));
    app.stop().await;
}
