//! Extractors that turn bad input into our problem+json instead of axum's
//! plain-text rejections, naming the field at fault; typed path ids that
//! answer 404 for a malformed id. (Who calls: `auth::Caller`, `auth::Admin`.)

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::{ApiError, FieldError};
use crate::domain::{DeadLetterId, ReplayId, SubscriptionId, TenantId};
use crate::server::BodyDeadline;

/// A JSON body: 415 without a JSON content type, 413 over the body limit,
/// 400 for malformed JSON, 422 naming the field for JSON of the wrong shape.
/// Keeps the raw bytes too (idempotency compares them).
#[derive(Debug)]
pub struct Json<T> {
    pub value: T,
    pub bytes: Bytes,
}

/// Like `Json`, but an empty body (with or without a content type) is
/// `T::default()`: for actions whose body is all optional.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        Ok(Self { value: parse_json(&bytes)?, bytes })
    }
}

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

/// The body, read by the request's `BodyDeadline` when it has one (the
/// server sets it): a client that sends it too slowly gets 408.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let read = Bytes::from_request(req, state);
    let read = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.at, read)
            .await
            .map_err(|_| ApiError::BodyTimeout(deadline.limit))?,
        None => read.await,
    };
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })
}

/// `application/json` or any `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Parses JSON, naming the field of a type error (`rate_limit/burst`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(error) => {
            let path = pointer(error.path());
            let inner = error.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = without_position(&inner.to_string());
                    ApiError::Validation(vec![FieldError::new(field_of(&path, &message), message)])
                }
                _ => ApiError::BadRequest(format!("the body is not valid JSON: {inner}")),
            });
        }
    };
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// `serde_path_to_error`'s path as `a/0/b`; empty at the root.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A missing or unknown field is reported at its parent: name the field.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if !path.ends_with(name) => {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            }
        }
        _ if path.is_empty() => "body".to_owned(),
        _ => path.to_owned(),
    }
}

fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters, with 400 `invalid_query` naming the parameter at fault.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Self).map_err(|error| {
            let field = match pointer(error.path()) {
                p if p.is_empty() => "query".to_owned(),
                p => p,
            };
            ApiError::InvalidQuery(vec![FieldError::new(field, error.inner().to_string())])
        })
    }
}

/// `axum::extract::Path` with our errors, read as `T`: the raw text, or an
/// id of the kind the route names (`Path<SubscriptionId>`).
#[derive(Debug)]
pub struct Path<T>(pub T);

/// What a route's path parameters become. A malformed id names nothing, so
/// it answers the same 404 as an id of nothing: `no subscription sub_…`.
pub trait FromPath: Sized {
    /// What axum's `Path` reads first.
    type Raw: DeserializeOwned + Send;

    fn from_path(raw: Self::Raw) -> Result<Self, ApiError>;
}

impl FromPath for String {
    type Raw = Self;

    fn from_path(raw: Self) -> Result<Self, ApiError> {
        Ok(raw)
    }
}

impl FromPath for (String, String) {
    type Raw = Self;

    fn from_path(raw: Self) -> Result<Self, ApiError> {
        Ok(raw)
    }
}

/// Ids in paths, each with what it names in a 404's detail.
macro_rules! ids_in_paths {
    ($($id:ty: $what:literal),* $(,)?) => {$(
        impl FromPath for $id {
            type Raw = String;

            fn from_path(raw: String) -> Result<Self, ApiError> {
                <$id>::parse(&raw).ok_or_else(|| ApiError::not_found($what, raw))
            }
        }
    )*};
}

ids_in_paths!(
    SubscriptionId: "subscription",
    TenantId: "tenant",
    DeadLetterId: "dead letter",
    ReplayId: "replay",
);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: FromPath + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<T::Raw>::from_request_parts(parts, state)
                .await
                .map_err(|rejection: PathRejection| ApiError::BadRequest(rejection.body_text()))?;
        T::from_path(raw).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        burst: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        url: String,
        limits: Option<Inner>,
        list: Option<Vec<u32>>,
    }

    fn field(body: &str) -> String {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(field(r#"{"url": 1}"#), "url");
        assert_eq!(field(r#"{"url": "x", "limits": {"burst": -1}}"#), "limits/burst");
        assert_eq!(field(r#"{"url": "x", "list": [1, "a"]}"#), "list/1");
        assert_eq!(field(r#"{}"#), "url");
        assert_eq!(field(r#"{"url": "x", "limits": {}}"#), "limits/burst");
        assert_eq!(field(r#"{"url": "x", "nope": 1}"#), "nope");
        assert_eq!(field(r#"[]"#), "body");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(parse_json::<Outer>(b"{\"url\": "), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            parse_json::<Outer>(b"{\"url\": \"x\"} trailing"),
            Err(ApiError::BadRequest(_))
        ));
    }

    async fn answer_for(path: &str) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt as _;
        let app = axum::Router::new().route(
            "/v1/subscriptions/{id}",
            axum::routing::get(|Path(id): Path<SubscriptionId>| async move { id.to_string() }),
        );
        let request = Request::get(path).body(axum::body::Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn a_malformed_id_in_a_path_is_not_found_like_a_missing_one() {
        let (status, problem) = answer_for("/v1/subscriptions/ten_01jd").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(problem["code"], "not_found");
        assert_eq!(problem["detail"], "no subscription ten_01jd");
        let (status, _) = answer_for("/v1/subscriptions/sub_01jd").await;
        assert_eq!(status, StatusCode::OK);
    }
}
