//! `hookgate dev` as a user runs it: no PostgreSQL, no Kafka; a subscription
//! to `hookgate listen`, an event, and `listen` prints the verified delivery.

use std::process::Stdio;
use std::time::Duration;

use hookgate::domain::{SignatureScheme, SigningKey};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const TOKEN: &str = "dev-mode-test-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

struct Process {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn start(args: &[&str], dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .current_dir(dir)
            .env_remove("HOOKGATE_DATABASE_URL")
            .env_remove("HOOKGATE_KAFKA_BROKERS")
            .env("HOOKGATE_ADMIN_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start hookgate");
        let stdout = child.stdout.take().expect("stdout");
        Self { _child: child, lines: BufReader::new(stdout).lines() }
    }

    /// Reads stdout until a line contains `needle`; answers that line.
    async fn line_with(&mut self, needle: &str) -> String {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("stdout ended before a line with {needle:?}");
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} within {DEADLINE:?}"))
    }

    async fn address(&mut self) -> String {
        let line = self.line_with("listening on http://").await;
        line.trim_start_matches("listening on ").trim().to_owned()
    }
}

#[tokio::test]
async fn dev_mode_delivers_to_listen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dev = Process::start(&["dev", "--listen", "127.0.0.1:0"], dir.path());
    let api = dev.address().await;
    assert!(dev.line_with("admin token: ").await.contains(TOKEN));
    assert!(
        dir.path().join("hookgate-dev.db").exists(),
        "the SQLite file is in the working directory"
    );

    let secret = hookgate::domain::SigningSecret::generate();
    let mut listen =
        Process::start(&["listen", "--port", "0", "--secret", secret.expose()], dir.path());
    let receiver = listen.address().await;

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{api}/v1/subscriptions"))
        .bearer_auth(TOKEN)
        .json(&json!({"url": format!("{receiver}/"), "event_types": ["order.*"], "secret": secret.expose()}))
        .send()
        .await
        .expect("create subscription");
    assert_eq!(created.status(), 201);
    let published = client
        .post(format!("{api}/v1/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "order.created", "data": {"order_id": 42}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);

    let line = listen.line_with("webhook-id=").await;
    assert!(line.starts_with("verified "), "listen verified it: {line}");
    assert!(
        line.contains(r#""type":"order.created""#) && line.contains(r#""order_id":42"#),
        "{line}"
    );
}

#[tokio::test]
async fn listen_refuses_a_bad_signature() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = hookgate::domain::SigningSecret::generate();
    let mut listen =
        Process::start(&["listen", "--port", "0", "--secret", secret.expose()], dir.path());
    let receiver = listen.address().await;

    let forger = SigningKey::generate(SignatureScheme::HmacSha256);
    assert_eq!(send_signed(&receiver, "msg_forged", &forger).await, 401);
    let line = listen.line_with("msg_forged").await;
    assert!(line.starts_with("rejected"), "{line}");

    assert_eq!(send_signed(&receiver, "msg_good", &SigningKey::Hmac(secret)).await, 204);
    assert!(listen.line_with("msg_good").await.starts_with("verified"));
}

#[tokio::test]
async fn listen_with_a_public_key_verifies_ed25519_webhooks_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::generate(SignatureScheme::Ed25519);
    let public = key.public_key().expect("a public key");
    let mut listen =
        Process::start(&["listen", "--port", "0", "--public-key", &public], dir.path());
    let receiver = listen.address().await;

    assert_eq!(send_signed(&receiver, "msg_ed25519", &key).await, 204);
    assert!(listen.line_with("msg_ed25519").await.starts_with("verified"));
    let hmac = SigningKey::generate(SignatureScheme::HmacSha256);
    assert_eq!(send_signed(&receiver, "msg_hmac", &hmac).await, 401);
    assert!(listen.line_with("msg_hmac").await.starts_with("rejected"));
    let other = SigningKey::generate(SignatureScheme::Ed25519);
    assert_eq!(send_signed(&receiver, "msg_other", &other).await, 401);
}

/// POSTs a webhook signed with `key`; answers the status.
async fn send_signed(receiver: &str, id: &str, key: &SigningKey) -> u16 {
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"type":"x.y","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
    reqwest::Client::new()
        .post(format!("{receiver}/"))
        .header("webhook-id", id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", key.sign(id, now, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}
