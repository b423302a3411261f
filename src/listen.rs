//! `hookgate listen`: a local receiver that verifies each webhook's signature
//! (`v1` with the subscription's secret, or `v1a` with its public key) and
//! timestamp, prints the delivery, and answers 204 (401 when it does not
//! verify), like `stripe listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{PublicKey, SigningSecret};

/// How far a webhook's timestamp may be from our clock (Standard Webhooks'
/// suggested replay window).
const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away from now")]
    StaleTimestamp,
    #[error("signature does not verify")]
    BadSignature,
}

/// What a receiver holds: the shared secret (hmac-sha256) or the public
/// key (ed25519).
#[derive(Debug, Clone)]
pub enum Verifier {
    Secret(SigningSecret),
    PublicKey(PublicKey),
}

impl Verifier {
    fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        match self {
            Self::Secret(secret) => secret.verify(msg_id, timestamp, body, header),
            Self::PublicKey(key) => key.verify(msg_id, timestamp, body, header),
        }
    }
}

/// Checks a request as any Standard Webhooks receiver would.
pub fn verify(
    secret: &Verifier,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<String, Rejection> {
    let header = |name: &'static str| {
        headers.get(name).and_then(|v| v.to_str().ok()).ok_or(Rejection::MissingHeader(name))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 =
        header("webhook-timestamp")?.parse().map_err(|_| Rejection::BadTimestamp)?;
    let signature = header("webhook-signature")?;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Rejection::StaleTimestamp);
    }
    if !secret.verify(id, timestamp, body, signature) {
        return Err(Rejection::BadSignature);
    }
    Ok(id.to_owned())
}

/// Listens on `addr` until `shutdown`; prints `listening on http://…` first.
pub async fn run(
    addr: SocketAddr,
    secret: Verifier,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(receive).with_state(Arc::new(secret));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn receive(
    State(secret): State<Arc<Verifier>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match verify(&secret, &headers, &body, Utc::now().timestamp()) {
        Ok(id) => {
            println!("verified webhook-id={id} body={}", String::from_utf8_lossy(&body));
            StatusCode::NO_CONTENT
        }
        Err(rejection) => {
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            println!("rejected webhook-id={id}: {rejection}");
            StatusCode::UNAUTHORIZED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SignatureScheme, SigningKey};

    const NOW: i64 = 1_700_000_000;

    fn signed(key: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().expect("valid"));
        headers.insert("webhook-timestamp", ts.to_string().parse().expect("valid"));
        headers.insert("webhook-signature", key.sign("msg_1", ts, body).parse().expect("valid"));
        headers
    }

    #[test]
    fn accepts_good_and_refuses_bad_requests() {
        let secret = SigningSecret::generate();
        let key = SigningKey::Hmac(secret.clone());
        let verifier = Verifier::Secret(secret);
        assert_eq!(verify(&verifier, &signed(&key, NOW, b"{}"), b"{}", NOW), Ok("msg_1".into()));
        assert_eq!(
            verify(&verifier, &signed(&key, NOW, b"{}"), b"{ }", NOW),
            Err(Rejection::BadSignature)
        );
        let other = SigningKey::generate(SignatureScheme::HmacSha256);
        assert_eq!(
            verify(&verifier, &signed(&other, NOW, b"{}"), b"{}", NOW),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(&verifier, &signed(&key, NOW - 301, b"{}"), b"{}", NOW),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            verify(&verifier, &HeaderMap::new(), b"{}", NOW),
            Err(Rejection::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn a_public_key_verifies_ed25519_webhooks_and_nothing_else() {
        let key = SigningKey::generate(SignatureScheme::Ed25519);
        let public = key.public_key().expect("ed25519 has a public key");
        let verifier = Verifier::PublicKey(PublicKey::parse(&public).expect("public key"));
        assert_eq!(verify(&verifier, &signed(&key, NOW, b"{}"), b"{}", NOW), Ok("msg_1".into()));
        let hmac = SigningKey::generate(SignatureScheme::HmacSha256);
        assert_eq!(
            verify(&verifier, &signed(&hmac, NOW, b"{}"), b"{}", NOW),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(&verifier, &signed(&key, NOW, b"{}"), b"{\"x\":1}", NOW),
            Err(Rejection::BadSignature)
        );
    }
}
