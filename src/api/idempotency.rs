//! `Idempotency-Key` for publishing. The key is claimed by inserting a row
//! first (the primary key makes one of concurrent requests win); the winner
//! publishes and saves its answer, which later requests with the same key
//! and body get back. Concurrent ones wait for it, up to a bound, then 409.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::auth::Caller;
use super::problem::ApiError;
use super::AppState;
use crate::kafka::produce::PUBLISH_TIMEOUT;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;
/// Keys are kept at least this long, then purged.
pub const RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// How often the API role purges expired keys.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// A request sharing a key with one under way waits this long for its
/// answer: longer than a publish can take.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(PUBLISH_TIMEOUT.as_secs() + 3);
const POLL: Duration = Duration::from_millis(25);
/// A claim older than this was left by a request that died (a publish is
/// bounded well below it), so another request may take it over.
const STALE_CLAIM: chrono::Duration = chrono::Duration::seconds(60);

/// The key of a request, when it has one. 400 for a malformed one.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY_LEN
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key is 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"
        ))),
    }
}

/// Runs `work`: once per (caller, key) when the request names an
/// `Idempotency-Key` (see `once`), otherwise every time.
pub async fn with_key<F, Fut>(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    route: &str,
    body: &[u8],
    work: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    match key {
        Some(key) => once(state, caller.idempotency_scope(), &key, route, body, work).await,
        None => {
            let (status, answer) = work().await?;
            Ok((status, axum::Json(answer)).into_response())
        }
    }
}

/// Runs `work` once per (scope, key): the first request's answer is saved
/// and replayed to any later one with the same body; another body is 422.
pub async fn once<F, Fut>(
    state: &AppState,
    scope: &str,
    key: &str,
    route: &str,
    body: &[u8],
    work: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(body);
    let request_hash = hex::encode(hash.finalize());

    let now = Utc::now();
    let claimed =
        state.store.idempotency_claim(scope, key, &request_hash, now, now - STALE_CLAIM).await?;
    if !claimed {
        return replay(state, scope, key, &request_hash).await;
    }
    match work().await {
        Ok((status, answer)) => {
            let text = answer.to_string();
            // The event is published: failing to save the answer must not
            // turn it into an error the client would retry.
            if let Err(error) =
                state.store.idempotency_complete(scope, key, status.as_u16(), &text).await
            {
                tracing::warn!(%error, "saving an idempotent answer failed");
            }
            Ok((status, axum::Json(answer)).into_response())
        }
        Err(error) => {
            // Nothing to replay: let the client's retry run afresh.
            if let Err(release) = state.store.idempotency_release(scope, key).await {
                tracing::warn!(error = %release, "releasing an idempotency key failed");
            }
            Err(error)
        }
    }
}

/// Answers for a key someone else claimed: its saved answer (after waiting
/// for it if need be), or an error.
async fn replay(
    state: &AppState,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + WAIT_FOR_FIRST;
    loop {
        let record = state.store.idempotency_get(scope, key).await?;
        match record {
            Some(record) if record.request_hash != request_hash => {
                return Err(ApiError::IdempotencyKeyReused)
            }
            Some(record) => {
                if let Some((status, body)) = record.response {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
                    let mut response =
                        (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
                            .into_response();
                    response
                        .headers_mut()
                        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
                    return Ok(response);
                }
            }
            // The first request failed and released the key meanwhile.
            None => {
                return Err(ApiError::Conflict {
                    code: "idempotency_in_progress",
                    detail: "the first request with this Idempotency-Key failed; retry".to_owned(),
                })
            }
        }
        if Instant::now() >= deadline {
            return Err(ApiError::Conflict {
                code: "idempotency_in_progress",
                detail: "a request with this Idempotency-Key is still being processed; retry"
                    .to_owned(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
