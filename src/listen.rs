//! `hookgate listen`: a local receiver that verifies each webhook's signature
//! and timestamp, prints the delivery, and answers 204 (401 when it does not
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

use crate::domain::SigningSecret;

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

/// Checks a request as any Standard Webhooks receiver would.
pub fn verify(
    secret: &SigningSecret,
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
    secret: SigningSecret,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(receive).with_state(Arc::new(secret));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn receive(
    State(secret): State<Arc<SigningSecret>>,
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

    fn signed(secret: &SigningSecret, ts: i64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().expect("valid"));
        headers.insert("webhook-timestamp", ts.to_string().parse().expect("valid"));
        headers.insert("webhook-signature", secret.sign("msg_1", ts, body).parse().expect("valid"));
        headers
    }

    #[test]
    fn accepts_good_and_refuses_bad_requests() {
        let secret = SigningSecret::generate();
        let now = 1_700_000_000;
        assert_eq!(verify(&secret, &signed(&secret, now, b"{}"), b"{}", now), Ok("msg_1".into()));
        assert_eq!(
            verify(&secret, &signed(&secret, now, b"{}"), b"{ }", now),
            Err(Rejection::BadSignature)
        );
        let other = SigningSecret::generate();
        assert_eq!(
            verify(&secret, &signed(&other, now, b"{}"), b"{}", now),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(&secret, &signed(&secret, now - 301, b"{}"), b"{}", now),
            Err(Rejection::StaleTimestamp)
        );
        assert_eq!(
            verify(&secret, &HeaderMap::new(), b"{}", now),
            Err(Rejection::MissingHeader("webhook-id"))
        );
    }
}
