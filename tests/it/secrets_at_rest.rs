//! Secrets at rest (`HOOKGATE_SECRET_KEY`): with a key set the rows hold no
//! signing secret or secret header value in clear; the key rotates (a new
//! first key, `hookgate secrets re-encrypt`, the old key dropped) without a
//! subscription missing a delivery or a signature failing; `GET` shows
//! secret header values redacted, key or not, and a `PATCH` that sends the
//! placeholder back keeps the stored value.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use hookgate::domain::{
    EndpointTls, OAuth2, PreviousSecret, Scope, Subscription, SubscriptionId, SubscriptionPatch,
    TenantId,
};
use hookgate::store::{Guarded, SecretKeys, SecretRotation, Store};
use rand::RngCore;
use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

use crate::harness::receiver::Received;
use crate::harness::{both_backends, Backend, TestApp, TestDb, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(30);
const REDACTED: &str = "********";

/// `id:base64` of 32 fresh random bytes, URL-safe so that it needs no quoting.
fn new_key(id: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{id}:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn keys(text: &str) -> SecretKeys {
    SecretKeys::parse(text).expect("valid test keys")
}

fn generated_secret() -> String {
    hookgate::domain::SigningSecret::generate().expose().to_owned()
}

/// Every subscription row as the database holds it: id and the text of
/// every column that may hold a secret.
async fn raw_rows(url: &str) -> Vec<(String, String)> {
    let sql = "SELECT id, secret || ' ' || CAST(previous_secrets AS TEXT) || ' ' || \
               CAST(headers AS TEXT) || ' ' || COALESCE(CAST(oauth2 AS TEXT), '') || ' ' || \
               COALESCE(CAST(tls AS TEXT), '') \
               FROM subscriptions ORDER BY id";
    if url.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(url).await.expect("open SQLite");
        sqlx::query_as(sql).fetch_all(&mut db).await.expect("read rows")
    } else {
        let mut db = sqlx::PgConnection::connect(url).await.expect("connect PostgreSQL");
        sqlx::query_as(sql).fetch_all(&mut db).await.expect("read rows")
    }
}

/// Fails when any row holds one of `secrets` in clear (the base64 of a
/// `whsec_` secret counts, with or without its prefix).
async fn assert_nothing_in_clear(url: &str, secrets: &[&str]) {
    for (id, row) in raw_rows(url).await {
        for secret in secrets {
            let bare = secret.strip_prefix("whsec_").unwrap_or(secret);
            assert!(!row.contains(bare), "{id} holds {secret} in clear: {row}");
        }
    }
}

fn verifies(secret: &str, webhook: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&webhook.body, &webhook.headers)
        .is_ok()
}

/// The store on its own, on both backends: what it writes is sealed, what it
/// reads is plain, a placeholder keeps a stored value, re-sealing moves every
/// row (deleted ones too) to the first key without changing a version.
async fn the_store_seals_what_it_writes_and_reseals_to_the_first_key(backend: Backend) {
    let db = TestDb::on(backend).await;
    let (a, b) = (new_key("a"), new_key("b"));
    let connect = |keys: SecretKeys| {
        let url = db.url.clone();
        async move {
            let store = hookgate::store::connect_with_keys(&url, keys).await.expect("connect");
            store.migrate().await.expect("migrate");
            store
        }
    };
    let plain = connect(SecretKeys::none()).await;
    let old = generated_secret();
    let before_key = example(&old, "Bearer before-the-key");
    plain.create_subscription(&before_key).await.expect("create without a key");

    let store = connect(keys(&a)).await;
    let secret = generated_secret();
    let mut s = example(&secret, "Bearer sealed-credential");
    s.headers.insert("X-Marked".into(), "marked-credential".into());
    s.secret_headers = vec!["x-marked".into()];
    s.previous_secrets = vec![PreviousSecret {
        secret: old.clone(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
    }];
    s.oauth2 = Some(OAuth2 {
        token_url: "http://127.0.0.1:1/token".into(),
        client_id: "client".into(),
        client_secret: "oauth2-credential".into(),
        scope: None,
        audience: None,
    });
    s.tls = Some(EndpointTls {
        client_certificate: Some("certificate-in-clear".into()),
        client_key: Some("tls-key-credential".into()),
        ca_certificates: None,
    });
    store.create_subscription(&s).await.expect("create");
    let sealed = ["sealed-credential", "marked-credential", "oauth2-credential"];
    assert_nothing_in_clear(&db.url, &[&secret, sealed[0], sealed[1], sealed[2]]).await;
    assert_nothing_in_clear(&db.url, &["tls-key-credential"]).await;
    let rows = raw_rows(&db.url).await;
    let row = &rows.iter().find(|(id, _)| id == s.id.as_str()).expect("row").1;
    assert!(row.starts_with("enc:v1:a:"), "{row}");
    assert!(row.contains("visible-value"), "a header that is not secret stays plain: {row}");

    // Read back in clear, and rows written before the key still read.
    let read = store.get_subscription(Scope::All, &s.id).await.expect("read").expect("found");
    assert_eq!((read.secret.as_str(), read.unreadable.as_deref()), (secret.as_str(), None));
    assert_eq!(read.previous_secrets[0].secret, old);
    assert_eq!(read.headers["Authorization"], "Bearer sealed-credential");
    assert_eq!(read.headers["X-Marked"], "marked-credential");
    assert_eq!(read.oauth2.as_ref().map(|o| o.client_secret.as_str()), Some("oauth2-credential"));
    let tls = read.tls.as_ref().expect("TLS settings");
    assert_eq!(tls.client_key.as_deref(), Some("tls-key-credential"));
    let early =
        store.get_subscription(Scope::All, &before_key.id).await.expect("read").expect("found");
    assert_eq!(early.headers["Authorization"], "Bearer before-the-key");

    // The placeholder keeps the stored value; marking a header secret seals it.
    let patch = SubscriptionPatch {
        headers: Some(BTreeMap::from([
            ("authorization".to_owned(), REDACTED.to_owned()),
            ("X-Visible".to_owned(), "now-secret-value".to_owned()),
        ])),
        secret_headers: Some(vec!["X-Visible".into()]),
        ..Default::default()
    };
    let patched = written(
        store.patch_subscription(Scope::All, &s.id, &patch, Some(read.version), Utc::now()).await,
    );
    assert_eq!(patched.headers["authorization"], "Bearer sealed-credential");
    assert_eq!(patched.headers["X-Visible"], "now-secret-value");
    assert!(!patched.headers.contains_key("X-Marked"), "headers are replaced as a whole");
    assert_nothing_in_clear(&db.url, &[&secret, "sealed-credential", "now-secret-value"]).await;
    let rotated = written(
        store
            .rotate_subscription_secret(
                Scope::All,
                &s.id,
                SecretRotation { secret: &generated_secret(), grace_ends: None, now: Utc::now() },
                None,
            )
            .await,
    );
    assert_nothing_in_clear(&db.url, &[&rotated.secret]).await;
    store.delete_subscription(Scope::All, &before_key.id, None, Utc::now()).await.expect("delete");

    // B first: every row moves to it, each once, versions unchanged.
    let rotated_keys = connect(keys(&format!("{b},{a}"))).await;
    let versions: Vec<i64> = raw_versions(&rotated_keys, &[&s.id]).await;
    let first = rotated_keys.reseal_subscriptions(None, 1).await.expect("reseal");
    assert_eq!((first.scanned, first.rewritten), (1, 1));
    let rest =
        rotated_keys.reseal_subscriptions(first.last_id.as_deref(), 10).await.expect("reseal");
    assert_eq!((rest.scanned, rest.rewritten, rest.unreadable.len()), (1, 1, 0));
    for (id, row) in raw_rows(&db.url).await {
        assert!(!row.contains("enc:v1:a:"), "{id} still sealed with a: {row}");
        assert!(
            !row.contains("before-the-key"),
            "{id}: the row written before the key is sealed: {row}"
        );
    }
    assert_eq!(raw_versions(&rotated_keys, &[&s.id]).await, versions);
    let again = rotated_keys.reseal_subscriptions(None, 10).await.expect("reseal");
    assert_eq!((again.rewritten, again.current), (0, 2), "nothing left to do");

    // Only B: everything reads; only A: nothing reads, and it says why.
    let only_b = connect(keys(&b)).await;
    let read = only_b.get_subscription(Scope::All, &s.id).await.expect("read").expect("found");
    assert_eq!(read.secret, rotated.secret);
    assert_eq!(read.headers["X-Visible"], "now-secret-value");
    assert_eq!(read.oauth2.map(|o| o.client_secret), Some("oauth2-credential".to_owned()));
    assert_eq!(read.tls.and_then(|t| t.client_key), Some("tls-key-credential".to_owned()));
    let only_a = connect(keys(&a)).await;
    let unreadable =
        only_a.get_subscription(Scope::All, &s.id).await.expect("read").expect("found");
    let why = unreadable.unreadable.expect("cannot be read with a");
    assert!(why.contains("key id `b`"), "{why}");
    assert_eq!(unreadable.headers["X-Visible"], REDACTED, "no ciphertext passes for a value");
    let refused = only_a.reseal_subscriptions(None, 10).await.expect("reseal");
    assert_eq!(refused.unreadable.len(), 2, "{refused:?}");
    assert!(
        only_a
            .rotate_subscription_secret(
                Scope::All,
                &s.id,
                SecretRotation { secret: &generated_secret(), grace_ends: None, now: Utc::now() },
                None,
            )
            .await
            .is_err(),
        "a rotation would keep an unreadable secret"
    );
    drop((plain, store, rotated_keys, only_b, only_a));
    db.drop_db().await;
}

async fn raw_versions(store: &Arc<dyn Store>, ids: &[&SubscriptionId]) -> Vec<i64> {
    let mut versions = Vec::new();
    for id in ids {
        versions.push(
            store.get_subscription(Scope::All, id).await.expect("read").expect("found").version,
        );
    }
    versions
}

fn written(guarded: hookgate::store::Result<Guarded<Subscription>>) -> Subscription {
    match guarded.expect("write") {
        Guarded::Written(s) => s,
        other => panic!("not written: {other:?}"),
    }
}

fn example(secret: &str, authorization: &str) -> Subscription {
    Subscription {
        headers: BTreeMap::from([
            ("Authorization".to_owned(), authorization.to_owned()),
            ("X-Visible".to_owned(), "visible-value".to_owned()),
        ]),
        ..Subscription::new(
            TenantId::default_tenant(),
            "http://127.0.0.1:1/".to_owned(),
            vec!["order.*".to_owned()],
            secret.to_owned(),
            Utc::now(),
        )
    }
}

both_backends!(the_store_seals_what_it_writes_and_reseals_to_the_first_key);

async fn get_json(app: &TestApp, path: &str) -> serde_json::Value {
    let (status, body) = app.call(Method::GET, path, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn patch(app: &TestApp, id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    app.call(Method::PATCH, &format!("/v1/subscriptions/{id}"), ADMIN_TOKEN, Some(body)).await
}

/// Through the API with a key set: rows hold nothing secret in clear, `GET`
/// and lists redact, the placeholder keeps a value, and what the receiver
/// gets is the real credential, signed with the real secret.
#[tokio::test]
async fn with_a_key_the_rows_hold_no_secret_and_get_redacts_secret_headers() {
    let key = new_key("a");
    let app = TestApp::spawn_with("secrets-rows", |c| c.secret_keys = keys(&key)).await;
    let receiver = TestReceiver::start().await;
    let secret = generated_secret();
    let created = app
        .subscribe(json!({
            "url": receiver.url,
            "event_types": ["order.*"],
            "secret": secret,
            "headers": {
                "Authorization": "Bearer receiver-credential",
                "X-Api-Key": "api-key-credential",
                "X-Partner-Ref": "marked-credential",
                "X-Team": "billing",
            },
            "secret_headers": ["x-partner-ref"],
        }))
        .await;
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["secret"], secret.as_str(), "the secret is shown once, on create");
    assert_eq!(created["headers"]["Authorization"], REDACTED);
    let in_clear =
        [secret.as_str(), "receiver-credential", "api-key-credential", "marked-credential"];
    assert_nothing_in_clear(&app.config.database_url, &in_clear).await;

    for shown in [
        get_json(&app, &format!("/v1/subscriptions/{id}")).await,
        get_json(&app, "/v1/subscriptions").await["data"][0].clone(),
    ] {
        assert_eq!(shown["headers"]["Authorization"], REDACTED, "{shown}");
        assert_eq!(shown["headers"]["X-Api-Key"], REDACTED, "{shown}");
        assert_eq!(shown["headers"]["X-Partner-Ref"], REDACTED, "{shown}");
        assert_eq!(shown["headers"]["X-Team"], "billing", "{shown}");
        assert_eq!(shown["secret_headers"], json!(["x-partner-ref"]));
        assert!(shown.get("secret").is_none(), "{shown}");
        let text = shown.to_string();
        assert!(in_clear.iter().all(|s| !text.contains(s.trim_start_matches("whsec_"))), "{text}");
    }

    // The answer of GET sent back changes no credential.
    let (status, patched) = patch(
        &app,
        id,
        json!({"headers": {
            "Authorization": REDACTED,
            "X-Api-Key": REDACTED,
            "X-Partner-Ref": REDACTED,
            "X-Team": "payments",
        }}),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["headers"]["X-Team"], "payments");
    assert_nothing_in_clear(&app.config.database_url, &in_clear).await;
    app.publish(json!({"type": "order.created", "data": {"n": 1}})).await;
    let webhook = receiver.wait_for(1, DEADLINE).await.remove(0);
    assert_eq!(webhook.header("authorization"), "Bearer receiver-credential");
    assert_eq!(webhook.header("x-api-key"), "api-key-credential");
    assert_eq!(webhook.header("x-partner-ref"), "marked-credential");
    assert_eq!(webhook.header("x-team"), "payments");
    assert!(verifies(&secret, &webhook), "signed with the subscription's secret");

    // The placeholder is refused where there is nothing secret to keep.
    for (body, field) in [
        (json!({"headers": {"X-Team": REDACTED}}), "headers/X-Team"),
        (json!({"headers": {"X-Other-Token": REDACTED}}), "headers/X-Other-Token"),
        (json!({"headers": {"X-Team": "enc:v1:a:AAAA"}}), "headers/X-Team"),
        (json!({"secret_headers": ["not a header"]}), "secret_headers/0"),
    ] {
        let (status, problem) = patch(&app, id, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let response = app
        .post_json(
            "/v1/subscriptions",
            json!({"url": receiver.url, "event_types": ["x.*"], "headers": {"Authorization": REDACTED}}),
        )
        .await;
    assert_eq!(response.status(), 422, "a create cannot keep what it never stored");

    // Marking a header secret seals the value already stored, and GET hides it.
    let (status, marked) =
        patch(&app, id, json!({"secret_headers": ["X-Partner-Ref", "x-team"]})).await;
    assert_eq!(status, 200, "{marked}");
    assert_eq!(marked["headers"]["X-Team"], REDACTED);
    assert_nothing_in_clear(&app.config.database_url, &["payments"]).await;
    app.publish(json!({"type": "order.created", "data": {"n": 2}})).await;
    let webhook = receiver.wait_for(2, DEADLINE).await.remove(1);
    assert_eq!(webhook.header("x-team"), "payments", "the value stays what it was");

    // A rotation keeps the old secret sealed too.
    let (status, rotated) = app
        .call(Method::POST, &format!("/v1/subscriptions/{id}/rotate-secret"), ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("new secret");
    assert_nothing_in_clear(&app.config.database_url, &[&secret, new_secret]).await;
    app.stop().await;
}

/// Redaction does not depend on a key: without one, `GET` hides the same.
#[tokio::test]
async fn without_a_key_get_still_redacts_secret_headers() {
    let app = TestApp::spawn("secrets-nokey").await;
    let created = app
        .subscribe(json!({
            "url": "http://127.0.0.1:1/",
            "event_types": ["order.*"],
            "headers": {"Cookie": "session=credential", "X-Team": "billing"},
        }))
        .await;
    let shown =
        get_json(&app, &format!("/v1/subscriptions/{}", created["id"].as_str().expect("id"))).await;
    assert_eq!(shown["headers"], json!({"Cookie": REDACTED, "X-Team": "billing"}));
    app.stop().await;
}

/// `hookgate secrets re-encrypt`, the binary, against the app's database.
fn re_encrypt(database_url: &str, keys: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["secrets", "re-encrypt", "--batch-size", "2"])
        .env_clear()
        .env("HOOKGATE_DATABASE_URL", database_url)
        .env("HOOKGATE_SECRET_KEY", keys)
        .output()
        .expect("run hookgate secrets re-encrypt")
}

async fn subscribe(app: &TestApp, receiver: &TestReceiver, secret: &str) {
    app.subscribe(json!({
        "url": receiver.url,
        "event_types": ["key.*"],
        "secret": secret,
        "headers": {"Authorization": format!("Bearer {secret}-credential")},
    }))
    .await;
}

/// Publishes one event and answers what each receiver got for it, checking
/// that each one's signature verifies with its subscription's secret.
async fn deliver_round(app: &TestApp, subscribers: &[(TestReceiver, String)], round: usize) {
    let before: Vec<usize> = subscribers.iter().map(|(r, _)| r.received().len()).collect();
    app.publish(json!({"type": "key.rotated", "data": {"round": round}})).await;
    for ((receiver, secret), before) in subscribers.iter().zip(before) {
        let webhook = receiver.wait_for(before + 1, DEADLINE).await.remove(before);
        assert_eq!(webhook.json()["data"]["round"], round);
        assert!(verifies(secret, &webhook), "round {round}: the signature verifies");
        assert_eq!(webhook.header("authorization"), format!("Bearer {secret}-credential").as_str());
    }
}

/// Key A, then B added in front, re-encrypt, then only B: every subscription
/// (one written before any key, one mid-rotation) delivers with signatures
/// that verify throughout, and the rows end up sealed with B alone.
#[tokio::test]
async fn rotating_the_key_and_re_encrypting_keeps_every_subscription_delivering() {
    let (a, b) = (new_key("a"), new_key("b"));
    let mut app = TestApp::spawn("secrets-rotate").await;
    let mut subscribers = Vec::new();
    let receiver = TestReceiver::start().await;
    let secret = generated_secret();
    subscribe(&app, &receiver, &secret).await;
    subscribers.push((receiver, secret));
    deliver_round(&app, &subscribers, 1).await;

    app = app.restart_with(|c| c.secret_keys = keys(&a)).await;
    for _ in 0..2 {
        let receiver = TestReceiver::start().await;
        let secret = generated_secret();
        subscribe(&app, &receiver, &secret).await;
        subscribers.push((receiver, secret));
    }
    // One mid-rotation: webhooks carry the old and the new signature.
    let rotating =
        app.subscribe(json!({"url": "http://127.0.0.1:1/", "event_types": ["never.*"]})).await;
    let id = rotating["id"].as_str().expect("id");
    let (status, rotated) = app
        .call(Method::POST, &format!("/v1/subscriptions/{id}/rotate-secret"), ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let old_secret = rotating["secret"].as_str().expect("old secret").to_owned();
    deliver_round(&app, &subscribers, 2).await;

    app = app.restart_with(|c| c.secret_keys = keys(&format!("{b},{a}"))).await;
    deliver_round(&app, &subscribers, 3).await;
    let url = app.config.database_url.clone();
    let done = re_encrypt(&url, &format!("{b},{a}"));
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(stdout.trim_end().lines().count(), 1, "one line: {stdout}");
    assert!(stdout.starts_with("re-encrypted 4 of 4 subscriptions with key `b`"), "{stdout}");
    for (id, row) in raw_rows(&url).await {
        assert!(row.starts_with("enc:v1:b:") && !row.contains("enc:v1:a:"), "{id}: {row}");
    }
    let secrets: Vec<&str> = subscribers.iter().map(|(_, s)| s.as_str()).collect();
    assert_nothing_in_clear(&url, &[secrets.as_slice(), &[&old_secret]].concat()).await;
    let again = re_encrypt(&url, &format!("{b},{a}"));
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .starts_with("re-encrypted 0 of 4 subscriptions with key `b` (4 already were"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    app = app.restart_with(|c| c.secret_keys = keys(&b)).await;
    deliver_round(&app, &subscribers, 4).await;
    let test_send =
        app.call(Method::POST, &format!("/v1/subscriptions/{id}/test"), ADMIN_TOKEN, None).await;
    assert_eq!(test_send.0, 200, "the rotated one still opens: {}", test_send.1);

    // A key that opens none of it: re-encrypt names the rows and fails;
    // the API still answers, redacted.
    let stranger = new_key("c");
    let refused = re_encrypt(&url, &stranger);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("4 cannot be decrypted"));
    assert!(stderr.contains(id) && !stderr.contains(&stranger[2..]), "{stderr}");
    app = app.restart_with(|c| c.secret_keys = keys(&stranger)).await;
    let shown = get_json(&app, &format!("/v1/subscriptions/{id}")).await;
    assert_eq!(shown["headers"], json!({}), "{shown}");
    let listed = get_json(&app, "/v1/subscriptions").await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(4));
    for item in
        listed["data"].as_array().into_iter().flatten().filter(|s| s["headers"] != json!({}))
    {
        assert_eq!(item["headers"]["Authorization"], REDACTED);
    }
    app.stop().await;
}
