//! The portal's only way to read and change anything: the REST API's own
//! router, called in-process as the session's caller (`api::auth::Delegated`).
//! So a portal session can do exactly what its tenant's API key could, with
//! the API's checks, quotas and errors, and nothing else.

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HOST, IF_MATCH};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;
use tower::ServiceExt;

use crate::api::auth::{Caller, Delegated};

/// The largest answer the portal reads (a page of 200 attempts fits).
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The API, as one caller.
#[derive(Debug, Clone)]
pub(super) struct Api {
    router: Router,
    caller: Caller,
    /// The `Host` the browser named: links the API makes point there.
    host: Option<HeaderValue>,
}

/// What the API refused, as its problem+json said it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Problem {
    pub(super) status: u16,
    pub(super) title: String,
    #[serde(default)]
    pub(super) detail: String,
    #[serde(default)]
    pub(super) code: String,
    #[serde(default)]
    pub(super) errors: Vec<FieldProblem>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct FieldProblem {
    pub(super) field: String,
    pub(super) message: String,
}

impl Problem {
    /// A problem of the portal's own (the API's answer could not be read).
    pub(super) fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: 500,
            title: "Something went wrong".to_owned(),
            detail: detail.into(),
            code: "internal".to_owned(),
            errors: Vec::new(),
        }
    }

    pub(super) fn not_found(what: &str) -> Self {
        Self {
            status: 404,
            title: "Not found".to_owned(),
            detail: format!("There is no such {what}, or it is not yours."),
            code: "not_found".to_owned(),
            errors: Vec::new(),
        }
    }

    /// The message for a field, if the API named it.
    pub(super) fn about(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field || e.field.starts_with(&format!("{field}/")))
            .map(|e| e.message.as_str())
    }
}

impl Api {
    pub(super) fn new(router: Router, caller: Caller, host: Option<HeaderValue>) -> Self {
        Self { router, caller, host }
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, Problem> {
        self.call(Method::GET, path, None, None).await
    }

    pub(super) async fn post(&self, path: &str, body: Value) -> Result<Value, Problem> {
        self.call(Method::POST, path, Some(body), None).await
    }

    pub(super) async fn delete(&self, path: &str) -> Result<Value, Problem> {
        self.call(Method::DELETE, path, None, None).await
    }

    /// `version`, when given, goes as `If-Match`: the change applies only to
    /// the version the page showed.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        version: Option<i64>,
    ) -> Result<Value, Problem> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(host) = &self.host {
            request = request.header(HOST, host.clone());
        }
        if let Some(version) = version {
            request = request.header(IF_MATCH, format!("\"{version}\""));
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .extension(Delegated(self.caller.clone()))
            .body(body)
            .map_err(|e| Problem::internal(format!("request not made: {e}")))?;
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Problem::internal(format!("answer not read: {e}")))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| Problem::internal(format!("answer not JSON: {e}")));
        }
        Err(serde_json::from_slice(&bytes).unwrap_or_else(|_| Problem {
            status: status.as_u16(),
            ..Problem::internal(
                String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>(),
            )
        }))
    }
}

/// A page's `cursor` from its query: where a list goes on.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Cursor {
    cursor: Option<String>,
}

impl Cursor {
    pub(super) fn value(&self) -> &str {
        self.cursor.as_deref().unwrap_or_default()
    }
}

/// `path?query`, the query made from `pairs` whose value is not empty.
pub(super) fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_leave_the_query_and_the_rest_is_encoded() {
        assert_eq!(with_query("/v1/x", &[("a", ""), ("b", "")]), "/v1/x");
        assert_eq!(
            with_query("/v1/x", &[("from", "2026-12-01T00:00:00+01:00"), ("a", "")]),
            "/v1/x?from=2026-12-01T00%3A00%3A00%2B01%3A00"
        );
    }

    #[test]
    fn a_problem_tells_the_message_of_a_field_and_its_items() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "status": 422, "title": "Invalid", "detail": "bad", "code": "validation",
            "errors": [{"field": "event_types/1", "message": "not a type"}]
        }))
        .unwrap();
        assert_eq!(problem.about("event_types"), Some("not a type"));
        assert_eq!(problem.about("url"), None);
    }
}
