//! `ApiError`: every error the API answers, as RFC 9457 problem+json with a
//! stable `type` and `code`. 5xx answers carry a generic detail; their cause
//! rides in the response's extensions (`Cause`) to `log_causes`, which logs
//! it once, with the request (axum's error-handling example).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem lists at most this many field errors (and counts the rest), so
/// that a large body of bad items answers a small problem.
pub const MAX_LISTED_ERRORS: usize = 20;
/// A field path or message longer than this is cut (a header name may be
/// long; its problem need not repeat it whole).
const MAX_ERROR_TEXT: usize = 200;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FieldError {
    /// Path of the field, JSON-pointer-like without the leading slash:
    /// `url`, `event_types/1`, `events/3/data/amount`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// With the path and message cut to `MAX_ERROR_TEXT` bytes.
    fn shortened(&self) -> Self {
        Self { field: cut(&self.field), message: cut(&self.message) }
    }
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this operation needs an admin token")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    BadRequest(String),
    #[error("the query has invalid parameters")]
    InvalidQuery(Vec<FieldError>),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// The caller may not do this to this resource (an admin's suspension
    /// stands against a tenant key).
    #[error("{detail}")]
    Refused { code: &'static str, detail: String },
    #[error(
        "the subscription changed: it is at ETag \"{current}\", not one If-Match names; \
         read it again and retry"
    )]
    PreconditionFailed { current: i64 },
    #[error("If-Match must be `*` or a list of entity tags, like `\"12\"` or `\"12\", \"13\"`")]
    InvalidIfMatch,
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    #[error("the request body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    #[error("{detail}")]
    Unavailable { detail: String, retry_after_secs: u32 },
    /// The database or Kafka failed under a request: 503 like `Unavailable`,
    /// with `cause` logged as `context` (`log_causes`), never answered.
    #[error("{detail}")]
    Dependency {
        detail: String,
        retry_after_secs: u32,
        context: &'static str,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A count quota is full (subscriptions, running replays): nothing was
    /// written.
    #[error("{detail}")]
    QuotaExceeded { quota: &'static str, limit: u64, detail: String },
    /// A rate quota is spent for now: retry after `retry_after_secs`.
    #[error("{detail}")]
    RateLimited { quota: &'static str, limit: u64, detail: String, retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An RFC 9457 problem, as every error answers (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI of the kind of problem: `urn:hookgate:problem:{code}`.
    #[serde(rename = "type")]
    #[schema(example = "urn:hookgate:problem:validation")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Stable machine-readable code: `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `bad_request`, `invalid_query`,
    /// `validation`, `conflict`, `precondition_failed`, `invalid_if_match`,
    /// `idempotency_in_progress`,
    /// `idempotency_key_reused`, `unsupported_media_type`,
    /// `payload_too_large`, `request_timeout`, `quota_exceeded`,
    /// `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    /// The invalid fields, for `validation` and `invalid_query`: at most 20.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub errors: Option<Vec<FieldError>>,
    /// How many more invalid fields there were than `errors` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_errors: Option<usize>,
    /// For `quota_exceeded` and `rate_limited`: which quota
    /// (`subscriptions_per_tenant`, `running_replays_per_tenant`,
    /// `publish_rate_per_key`, `publish_rate_per_tenant`,
    /// `test_sends_per_minute`, `auth_failures_per_minute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "subscriptions_per_tenant")]
    pub quota: Option<String>,
    /// The quota's limit (a count, or events or requests per its period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl ApiError {
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// 404 for `what` of this id: `no subscription sub_…`.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::NotFound(format!("no {what} {id}"))
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed")
            }
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query", "Invalid query"),
            Self::Validation(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Validation failed")
            }
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code, "Conflict"),
            Self::Refused { code, .. } => (StatusCode::FORBIDDEN, code, "Forbidden"),
            Self::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed", "Precondition failed")
            }
            Self::InvalidIfMatch => {
                (StatusCode::BAD_REQUEST, "invalid_if_match", "Invalid If-Match")
            }
            Self::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key reused",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large")
            }
            Self::BodyTimeout(_) => {
                (StatusCode::REQUEST_TIMEOUT, "request_timeout", "Request timeout")
            }
            Self::Unavailable { .. } | Self::Dependency { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            Self::QuotaExceeded { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded", "Quota exceeded")
            }
            Self::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let (errors, more_errors) = match &self {
            Self::Validation(errors) | Self::InvalidQuery(errors) => {
                let listed = errors.iter().take(MAX_LISTED_ERRORS).map(FieldError::shortened);
                let more = errors.len().saturating_sub(MAX_LISTED_ERRORS);
                (Some(listed.collect()), (more > 0).then_some(more))
            }
            _ => (None, None),
        };
        let mut detail = self.to_string();
        if let Some(more) = more_errors {
            detail = format!("{detail} (the first {MAX_LISTED_ERRORS} are listed, {more} more)");
        }
        let (quota, limit) = match &self {
            Self::QuotaExceeded { quota, limit, .. } | Self::RateLimited { quota, limit, .. } => {
                (Some((*quota).to_owned()), Some(*limit))
            }
            _ => (None, None),
        };
        let problem = Problem {
            kind: format!("urn:hookgate:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            errors,
            more_errors,
            quota,
            limit,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable { retry_after_secs, .. }
            | Self::Dependency { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // The rest of the body may still come: the connection cannot
            // carry another request (RFC 9110, 408).
            Self::BodyTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::Conflict { code: "idempotency_in_progress", .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            // The version it is at, so that a client can tell what it missed.
            Self::PreconditionFailed { current } => {
                headers.insert(header::ETAG, super::precondition::etag(*current));
            }
            _ => {}
        }
        let cause = match self {
            Self::Internal(cause) => Some(Cause { context: "request failed", error: cause.into() }),
            Self::Dependency { context, cause, .. } => Some(Cause { context, error: cause.into() }),
            _ => None,
        };
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

/// A store failure: an unreachable database is a 503 the client may retry;
/// anything else is our bug.
impl From<crate::store::Error> for ApiError {
    fn from(error: crate::store::Error) -> Self {
        use crate::store::Error as E;
        match &error {
            // Text PostgreSQL cannot store (NUL characters); validation
            // should catch it first, this keeps a miss from becoming a 500.
            E::Query(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                Self::BadRequest("text values must not contain NUL characters".to_owned())
            }
            E::Query(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                Self::Dependency {
                    detail: "the database is not reachable; try again".to_owned(),
                    retry_after_secs: 2,
                    context: "database unavailable",
                    cause: Box::new(error),
                }
            }
            _ => Self::Internal(Box::new(error)),
        }
    }
}

/// Why a request failed on our side, for the log only: `ApiError` leaves it
/// in the extensions of a 5xx answer, `log_causes` takes it out.
#[derive(Debug, Clone)]
pub struct Cause {
    /// The log message: what failed.
    pub context: &'static str,
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

/// Logs the cause a failed request left (`Cause`), once, with its method
/// and path: handlers answer an error and log nothing of it themselves.
pub async fn log_causes(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = next.run(request).await;
    if let Some(Cause { context, error }) = response.extensions_mut().remove::<Cause>() {
        let status = response.status().as_u16();
        let path = uri.path();
        // A dependency that is down is the operator's to watch, not our bug.
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%method, path, status, %error, "{context}");
        } else {
            tracing::error!(%method, path, status, %error, "{context}");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    /// What the log writes, to look at.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn answer(app: axum::Router, path: &str) -> (StatusCode, String, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = app.layer(axum::middleware::from_fn(log_causes)).oneshot(request).await;
        let response = response.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        let logged = captured.0.lock().expect("log").clone();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            String::from_utf8_lossy(&logged).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_cause_is_logged_once_with_its_request_and_never_answered() {
        let app = axum::Router::new().route(
            "/v1/boom",
            get(|| async { ApiError::internal(std::io::Error::other("disk on fire")) }),
        );
        let (status, body, logged) = answer(app, "/v1/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let problem: serde_json::Value = serde_json::from_str(&body).expect("problem JSON");
        assert_eq!(problem["detail"], "internal error");
        assert!(!body.contains("disk on fire"), "{body}");
        assert_eq!(logged.matches("disk on fire").count(), 1, "{logged}");
        assert!(logged.contains("ERROR") && logged.contains("request failed"), "{logged}");
        assert!(logged.contains("/v1/boom") && logged.contains("500"), "{logged}");
    }

    #[tokio::test]
    async fn an_unreachable_dependency_is_a_warning_with_its_context() {
        let app = axum::Router::new().route(
            "/v1/events",
            get(|| async {
                ApiError::Dependency {
                    detail: "try again".to_owned(),
                    retry_after_secs: 1,
                    context: "publish failed",
                    cause: Box::new(std::io::Error::other("broker gone")),
                }
            }),
        );
        let (status, body, logged) = answer(app, "/v1/events").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.contains("broker gone"), "{body}");
        assert_eq!(logged.matches("broker gone").count(), 1, "{logged}");
        assert!(logged.contains("WARN") && logged.contains("publish failed"), "{logged}");
    }

    #[tokio::test]
    async fn client_errors_log_nothing() {
        let app = axum::Router::new()
            .route("/v1/x", get(|| async { ApiError::NotFound("no such thing".to_owned()) }));
        let (status, _, logged) = answer(app, "/v1/x").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(logged, "");
    }
}
