//! `/v1/subscriptions`: third parties register where their events go.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::{Json, Path};
use super::problem::{ApiError, FieldError};
use super::AppState;
use crate::domain::{
    EventTypePattern, RateLimit, SigningSecret, Subscription, SubscriptionId, SubscriptionStatus,
    TenantId,
};

const MAX_URL_LEN: usize = 2048;
const MAX_EVENT_TYPES: usize = 100;
const MAX_HEADERS: usize = 20;
const MAX_METADATA: usize = 50;
const MAX_TEXT_LEN: usize = 1024;
const MAX_IN_FLIGHT: u32 = 10_000;

/// Headers hookgate sets itself or that HTTP owns.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    tenant_id: Option<String>,
    url: String,
    event_types: Vec<String>,
    secret: Option<String>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<u32>,
    #[serde(default)]
    ordered: bool,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    status: Option<SubscriptionStatus>,
    description: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct SubscriptionOut {
    id: SubscriptionId,
    tenant_id: TenantId,
    url: String,
    event_types: Vec<String>,
    /// Only in the answer to create: the secret is shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<u32>,
    ordered: bool,
    headers: BTreeMap<String, String>,
    status: SubscriptionStatus,
    disabled_reason: Option<String>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SubscriptionOut {
    fn new(s: Subscription, show_secret: bool) -> Self {
        Self {
            secret: show_secret.then_some(s.secret),
            id: s.id,
            tenant_id: s.tenant_id,
            url: s.url,
            event_types: s.event_types,
            rate_limit: s.rate_limit,
            max_in_flight: s.max_in_flight,
            ordered: s.ordered,
            headers: s.headers,
            status: s.status,
            disabled_reason: s.disabled_reason,
            description: s.description,
            metadata: s.metadata,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    let tenant_id = resolve_tenant(&caller, req.tenant_id.as_deref(), &mut errors);
    validate_url(&req.url, &mut errors);
    validate_event_types(&req.event_types, &mut errors);
    let secret = match req.secret.as_deref().map(SigningSecret::parse) {
        None => Some(SigningSecret::generate()),
        Some(Ok(secret)) => Some(secret),
        Some(Err(e)) => {
            errors.push(FieldError::new("secret", e.to_string()));
            None
        }
    };
    if let Some(limit) = req.rate_limit {
        if limit.per_second == 0 {
            errors.push(FieldError::new("rate_limit/per_second", "must be at least 1"));
        }
        if limit.burst == 0 {
            errors.push(FieldError::new("rate_limit/burst", "must be at least 1"));
        }
    }
    if let Some(n) = req.max_in_flight {
        if !(1..=MAX_IN_FLIGHT).contains(&n) {
            errors.push(FieldError::new(
                "max_in_flight",
                format!("must be from 1 to {MAX_IN_FLIGHT}"),
            ));
        }
    }
    validate_headers(&req.headers, &mut errors);
    if req.status == Some(SubscriptionStatus::Disabled) {
        errors.push(FieldError::new("status", "a new subscription is active or paused"));
    }
    validate_text("description", req.description.as_deref(), &mut errors);
    if req.metadata.len() > MAX_METADATA {
        errors.push(FieldError::new("metadata", format!("at most {MAX_METADATA} entries")));
    }
    for (key, value) in &req.metadata {
        if key.len() > 255 || value.len() > MAX_TEXT_LEN {
            errors.push(FieldError::new(
                format!("metadata/{key}"),
                format!("keys are at most 255 and values {MAX_TEXT_LEN} bytes"),
            ));
        }
    }
    let (Some(tenant_id), Some(secret), true) = (tenant_id, secret, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };

    if !state.store.tenant_exists(&tenant_id).await.map_err(ApiError::internal)? {
        return Err(ApiError::Validation(vec![FieldError::new("tenant_id", "no such tenant")]));
    }
    let now = Utc::now();
    let subscription = Subscription {
        id: SubscriptionId::generate(),
        tenant_id,
        url: req.url,
        event_types: req.event_types,
        secret: secret.expose().to_owned(),
        rate_limit: req.rate_limit,
        max_in_flight: req.max_in_flight,
        ordered: req.ordered,
        headers: req.headers,
        status: req.status.unwrap_or(SubscriptionStatus::Active),
        disabled_reason: None,
        description: req.description,
        metadata: req.metadata,
        created_at: now,
        updated_at: now,
    };
    state.store.create_subscription(&subscription).await.map_err(ApiError::internal)?;
    tracing::info!(subscription_id = %subscription.id, tenant_id = %subscription.tenant_id, "subscription created");
    Ok((StatusCode::CREATED, axum::Json(SubscriptionOut::new(subscription, true))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<SubscriptionOut>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no subscription {id}"));
    let parsed = SubscriptionId::parse(&id).ok_or_else(not_found)?;
    let Caller::Admin = caller;
    let subscription = state
        .store
        .get_subscription(None, &parsed)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    Ok(axum::Json(SubscriptionOut::new(subscription, false)))
}

fn resolve_tenant(
    caller: &Caller,
    requested: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<TenantId> {
    let Caller::Admin = caller;
    match requested {
        None => Some(TenantId::default_tenant()),
        Some(raw) => {
            let parsed = TenantId::parse(raw);
            if parsed.is_none() {
                errors.push(FieldError::new("tenant_id", "not a tenant id (ten_…)"));
            }
            parsed
        }
    }
}

fn validate_url(raw: &str, errors: &mut Vec<FieldError>) {
    let problem = if raw.len() > MAX_URL_LEN {
        Some(format!("at most {MAX_URL_LEN} characters"))
    } else {
        match url::Url::parse(raw) {
            Err(e) => Some(format!("not a URL: {e}")),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                Some("the scheme must be http or https".to_owned())
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                Some("the URL has no host".to_owned())
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                Some("credentials do not go in the URL: use `headers`".to_owned())
            }
            Ok(_) => None,
        }
    };
    if let Some(message) = problem {
        errors.push(FieldError::new("url", message));
    }
}

fn validate_event_types(types: &[String], errors: &mut Vec<FieldError>) {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        errors.push(FieldError::new(
            "event_types",
            format!("list 1 to {MAX_EVENT_TYPES} event types"),
        ));
    }
    for (i, pattern) in types.iter().enumerate() {
        if EventTypePattern::parse(pattern).is_none() {
            errors.push(FieldError::new(
                format!("event_types/{i}"),
                format!("`{pattern}` is not an event type name, `prefix.*` or `*`"),
            ));
        }
    }
}

fn validate_headers(headers: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if headers.len() > MAX_HEADERS {
        errors.push(FieldError::new("headers", format!("at most {MAX_HEADERS} headers")));
    }
    for (name, value) in headers {
        let field = format!("headers/{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(field, "not a valid header name"));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            errors.push(FieldError::new(field, "this header is set by hookgate"));
        } else if http::HeaderValue::from_str(value).is_err() {
            errors.push(FieldError::new(field, "not a valid header value"));
        }
    }
}

fn validate_text(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) {
    if value.is_some_and(|v| v.len() > MAX_TEXT_LEN) {
        errors.push(FieldError::new(field, format!("at most {MAX_TEXT_LEN} bytes")));
    }
}
