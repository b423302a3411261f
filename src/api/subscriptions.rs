//! `/v1/subscriptions`: third parties register where their events go, list,
//! change and delete them. Every write bumps the subscription version in its
//! transaction, which is how dispatchers notice; the version is the `ETag`
//! that `If-Match` checks (see `precondition`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, TenantChoice};
use super::extract::{Json, Path, Query};
use super::pagination::{list_of, PageParams};
use super::precondition::{etag_header, IfMatch};
use super::problem::{ApiError, FieldError};
use super::responses::{
    problems, BadIfMatch, BadJsonOrIfMatch, BadQuery, Invalid, JsonBody, NoTenant, NotJson,
    TooLarge,
};
use super::{validate, AppState};
use crate::domain::event::is_valid_event_type;
use crate::domain::operational::{DisabledBecause, Kind, Operational};
use crate::domain::subscription::REDACTED;
use crate::domain::{
    CircuitRecord, EndpointTls, EventTypePattern, OAuth2, RateLimit, SignatureScheme, Subscription,
    SubscriptionId, SubscriptionPatch, SubscriptionStatus, TenantId,
};
use crate::store::{Guarded, Page, MAX_PAGE};

/// A response's `ETag` header.
pub type ETag = [(HeaderName, HeaderValue); 1];

/// At most this many rows are read to fill one page filtered by event type;
/// past it the page comes back short, with a cursor to go on.
const MAX_SCAN: usize = 2_000;

// No `Debug`: it holds the secret and header values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// The tenant that owns it (admin only; default `ten_default`). A tenant
    /// key creates for its own tenant.
    tenant_id: Option<String>,
    /// Where webhooks are POSTed: http or https.
    #[schema(example = "https://example.com/hooks", max_length = 2048)]
    url: String,
    /// Event type names, `prefix.*` patterns, or `*`.
    #[schema(example = json!(["order.*", "invoice.paid"]), min_items = 1, max_items = 100)]
    event_types: Vec<String>,
    #[schema(value_type = Option<Object>, example = json!({"data.amount": {"$gte": 100}, "data.currency": {"$in": ["EUR", "USD"]}}))]
    filter: Option<serde_json::Value>,
    /// `hmac-sha256` (default: `v1` signatures with a shared secret) or
    /// `ed25519` (`v1a`: hookgate keeps the secret key, receivers verify
    /// with the subscription's `public_key`).
    signature_scheme: Option<SignatureScheme>,
    /// hmac-sha256: `whsec_` and base64 of 24 to 64 bytes. ed25519: `whsk_`
    /// and base64 of a 32-byte seed (or 64: seed, then public key).
    /// Generated when absent.
    secret: Option<String>,
    rate_limit: Option<RateLimit>,
    #[schema(minimum = 1, maximum = 10000)]
    max_in_flight: Option<u32>,
    /// Deliver events of one partition key in order.
    #[serde(default)]
    ordered: bool,
    /// Extra headers on every webhook. The values of secret headers (see
    /// `secret_headers`) are write-only: answers show `********`.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Headers whose values are secret too, beyond the credential headers
    /// that always are (`Authorization`, `Proxy-Authorization`, `Cookie`,
    /// `X-Api-Key`, `Api-Key`, `X-Auth-Token`, and any name containing
    /// `auth`, `token`, `secret`, `password`, `credential`, `api-key` or
    /// `signature`; without case). Secret values are encrypted at rest when
    /// the server has a secret key, and never shown again.
    #[serde(default)]
    #[schema(example = json!(["X-Partner-Id"]), max_items = 20)]
    secret_headers: Vec<String>,
    /// `active` (default) or `paused`.
    status: Option<SubscriptionStatus>,
    description: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    oauth2: Option<OAuth2>,
    tls: Option<EndpointTls>,
}

/// A partial update: absent fields stay; `null` clears the nullable ones.
// No `Debug`: it holds header values.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    /// Replaces the filter; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    filter: Option<Option<serde_json::Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    max_in_flight: Option<Option<u32>>,
    ordered: Option<bool>,
    /// Replaces all custom headers. A secret header sent with the value
    /// `********` (as answers show it) keeps its stored value.
    headers: Option<BTreeMap<String, String>>,
    /// Replaces the list of headers the subscription marks secret.
    #[schema(max_items = 20)]
    secret_headers: Option<Vec<String>>,
    /// `active` or `paused`; `active` also re-enables a disabled one (and
    /// resets its failure record). Admins may also set `disabled`, and
    /// `suspended`, which a tenant key cannot change (403).
    status: Option<SubscriptionStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    metadata: Option<BTreeMap<String, String>>,
    /// Replaces the client credentials (send the client secret again);
    /// `null` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<OAuth2>)]
    oauth2: Option<Option<OAuth2>>,
    /// Replaces the TLS settings (send the key again); `null` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<EndpointTls>)]
    tls: Option<Option<EndpointTls>>,
}

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    #[schema(example = "sub_01jd0000000000000000000000")]
    id: String,
    tenant_id: String,
    url: String,
    event_types: Vec<String>,
    /// Its content filter, as written; `null`: every event its types match.
    #[schema(value_type = Option<Object>)]
    filter: Option<serde_json::Value>,
    /// Only in the answer to create, and only for hmac-sha256: the secret
    /// is shown once. An ed25519 secret key is never shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    signature_scheme: SignatureScheme,
    /// ed25519: what receivers verify `v1a` signatures with (`whpk_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")]
    public_key: Option<String>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<u32>,
    ordered: bool,
    /// Custom headers; secret ones show `********` in place of their value.
    #[schema(example = json!({"Authorization": "********", "X-Partner-Id": "acme"}))]
    headers: BTreeMap<String, String>,
    /// The headers this subscription marks secret (beyond the credential
    /// headers that always are).
    secret_headers: Vec<String>,
    status: SubscriptionStatus,
    /// Why hookgate disabled it (the endpoint answered 410 Gone).
    disabled_reason: Option<String>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Bumped by every change; the `ETag` is this number in quotes, and
    /// `If-Match` with it makes a write apply only to this version.
    #[schema(example = 42)]
    version: i64,
    /// Its OAuth 2.0 client credentials, the secret shown as `********`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OAuth2>)]
    oauth2: Option<OAuth2>,
    /// Its TLS settings, the key shown as `********`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<EndpointTls>)]
    tls: Option<EndpointTls>,
    /// The circuit breaker of its deliveries (only on `GET
    /// /v1/subscriptions/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit: Option<CircuitOut>,
}

list_of!(SubscriptionList, SubscriptionOut);

/// A subscription's circuit breaker, as its dispatcher last reported it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitOut {
    /// `closed`: deliveries go. `open`: after failures in a row (or most
    /// recent attempts failing), deliveries wait in a retry tier until
    /// `retry_at`. `half_open`: past `retry_at`; one probe goes, and its
    /// outcome closes or opens the circuit again.
    #[schema(example = "closed")]
    state: CircuitState,
    /// When it opened (while not closed).
    opened_at: Option<DateTime<Utc>>,
    /// When the next probe may go (while not closed).
    retry_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitOut {
    pub fn new(record: Option<CircuitRecord>, now: DateTime<Utc>) -> Self {
        let time = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
        match record {
            Some(r) if r.open => {
                let retry_at = time(r.until_ms);
                let state = match retry_at {
                    Some(at) if at <= now => CircuitState::HalfOpen,
                    _ => CircuitState::Open,
                };
                Self { state, opened_at: time(r.opened_ms), retry_at }
            }
            _ => Self { state: CircuitState::Closed, opened_at: None, retry_at: None },
        }
    }
}

impl SubscriptionOut {
    pub fn new(s: Subscription, show_secret: bool) -> Self {
        // Redacted with or without a secret key: header values are
        // credentials of the receiver, write-only like the secret.
        let headers = s
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if s.is_secret_header(name) { REDACTED } else { value.as_str() };
                (name.clone(), shown.to_owned())
            })
            .collect();
        let scheme = s.signature_scheme();
        let public_key = s.public_key();
        Self {
            secret: (show_secret && scheme == SignatureScheme::HmacSha256).then_some(s.secret),
            signature_scheme: scheme,
            public_key,
            id: s.id.as_str().to_owned(),
            tenant_id: s.tenant_id.as_str().to_owned(),
            url: s.url,
            event_types: s.event_types,
            filter: s.filter.map(|f| f.as_json().clone()),
            rate_limit: s.rate_limit,
            max_in_flight: s.max_in_flight,
            ordered: s.ordered,
            headers,
            secret_headers: s.secret_headers,
            status: s.status,
            disabled_reason: s.disabled_reason,
            description: s.description,
            metadata: s.metadata,
            created_at: s.created_at,
            updated_at: s.updated_at,
            version: s.version,
            oauth2: s.oauth2.map(|o| OAuth2 { client_secret: REDACTED.to_owned(), ..o }),
            tls: s.tls.map(|t| EndpointTls {
                client_key: t.client_key.map(|_| REDACTED.to_owned()),
                ..t
            }),
            circuit: None,
        }
    }
}

/// The filters of a list (its page is `PageParams`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSubscriptions {
    /// Only subscriptions with this status.
    status: Option<SubscriptionStatus>,
    /// Only subscriptions that receive events of this type (exactly, by
    /// pattern, or `*`). A page may then hold fewer than `limit` items even
    /// when more follow: go on while `next_cursor` is set.
    event_type: Option<String>,
    /// Whose subscriptions (admin only; default `ten_default`).
    tenant_id: Option<String>,
}

problems! {
    pub NoSubscription: 404 "No such subscription (or another tenant's)";
    InvalidSubscription: 422 "Invalid fields (headers and metadata over this server's byte quotas among them), or `quota_exceeded`: the tenant has `HOOKGATE_MAX_SUBSCRIPTIONS_PER_TENANT` live subscriptions; nothing was created";
    StaleUpdate: 412 "If-Match names no current version: changed since; nothing was written",
        header "ETag": String = "The current version";
    StaleDelete: 412 "If-Match names no current version: changed since; nothing was deleted",
        header "ETag": String = "The current version";
}

/// Loads a subscription the caller may see, or answers 404.
pub async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &SubscriptionId,
) -> Result<Subscription, ApiError> {
    let found = state.store.get_subscription(caller.scope(), id).await?;
    found.ok_or_else(|| ApiError::not_found("subscription", id))
}

/// What a guarded write answers: the written value, or 404 or 412.
pub fn written<T>(guarded: Guarded<T>, id: &SubscriptionId) -> Result<T, ApiError> {
    match guarded {
        Guarded::Written(value) => Ok(value),
        Guarded::NotFound => Err(ApiError::not_found("subscription", id)),
        Guarded::Stale { current } => Err(ApiError::PreconditionFailed { current }),
        Guarded::SameSecret => {
            Err(ApiError::field("secret", "the new secret must differ from the current one"))
        }
    }
}

/// The tenant a list acts on; another tenant's or an unknown one is 404.
pub async fn list_tenant(
    state: &AppState,
    caller: &Caller,
    requested: Option<&str>,
) -> Result<TenantId, ApiError> {
    let tenant = match caller.acting_tenant(requested) {
        Ok(tenant) => tenant,
        Err(TenantChoice::Malformed) => {
            return Err(ApiError::InvalidQuery(vec![FieldError::new(
                "tenant_id",
                "not a tenant id (ten_…)",
            )]))
        }
        Err(TenantChoice::NotVisible) => {
            return Err(ApiError::not_found("tenant", requested.unwrap_or_default()))
        }
    };
    if requested.is_some() && !state.store.tenant_exists(&tenant).await? {
        return Err(ApiError::not_found("tenant", &tenant));
    }
    Ok(tenant)
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", operation_id = "create_subscription",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created; the answer shows the secret, once", body = SubscriptionOut,
            headers(("ETag" = String, description = "The version, as a strong entity tag: `\"42\"`"))),
        JsonBody, InvalidSubscription,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json { value: req, .. }: Json<CreateSubscription>,
) -> Result<(StatusCode, ETag, axum::Json<SubscriptionOut>), ApiError> {
    let mut errors = Vec::new();
    let tenant_id = match caller.acting_tenant(req.tenant_id.as_deref()) {
        Ok(tenant) => Some(tenant),
        Err(TenantChoice::Malformed) => {
            errors.push(FieldError::new("tenant_id", "not a tenant id (ten_…)"));
            None
        }
        Err(TenantChoice::NotVisible) => {
            errors.push(FieldError::new("tenant_id", "no such tenant"));
            None
        }
    };
    let secret = validate::signing_key(
        req.secret.as_deref(),
        req.signature_scheme,
        SignatureScheme::default(),
    )
    .map_err(|e| errors.push(e))
    .ok();
    if matches!(req.status, Some(SubscriptionStatus::Disabled | SubscriptionStatus::Suspended)) {
        errors.push(FieldError::new("status", "a new subscription is active or paused"));
    }
    for (name, value) in &req.headers {
        if value == REDACTED {
            errors.push(FieldError::new(
                format!("headers/{}", validate::pointer_escape(name)),
                "`********` is how answers show a secret value: send the value itself",
            ));
        }
    }
    let filter = req.filter.and_then(|json| validate::filter(json, &mut errors));
    let mut subscription = Subscription {
        filter,
        rate_limit: req.rate_limit,
        max_in_flight: req.max_in_flight,
        ordered: req.ordered,
        headers: req.headers,
        secret_headers: req.secret_headers,
        status: req.status.unwrap_or(SubscriptionStatus::Active),
        description: req.description,
        metadata: req.metadata,
        oauth2: req.oauth2,
        tls: req.tls,
        ..Subscription::new(
            tenant_id.clone().unwrap_or_else(TenantId::default_tenant),
            req.url,
            req.event_types,
            secret.as_ref().map(|s| s.expose().to_owned()).unwrap_or_default(),
            super::now(),
        )
    };
    let rules = validate::Rules::new(state.limits.max_in_flight, state.quotas());
    errors.extend(validate::subscription(&subscription, &rules, Some(&state.egress)));
    if let Some(oauth2) = &subscription.oauth2 {
        validate::oauth2(oauth2, &state.egress, &mut errors);
    }
    validate::one_authorization(subscription.oauth2.as_ref(), &subscription.headers, &mut errors);
    if let Some(tls) = &subscription.tls {
        validate::tls(tls, &subscription.url, &mut errors);
    }
    if !errors.is_empty() || tenant_id.is_none() || secret.is_none() {
        return Err(ApiError::Validation(errors));
    }
    if !state.store.tenant_exists(&subscription.tenant_id).await? {
        return Err(ApiError::field("tenant_id", "no such tenant"));
    }
    let limit = state.quotas().subscriptions_per_tenant;
    subscription.version =
        state.store.create_subscription_within(&subscription, limit).await?.ok_or_else(|| {
            ApiError::QuotaExceeded {
                quota: "subscriptions_per_tenant",
                limit: u64::from(limit),
                detail: format!(
                    "tenant {} has {limit} subscriptions, this server's limit; delete one first",
                    subscription.tenant_id
                ),
            }
        })?;
    tracing::info!(subscription_id = %subscription.id, tenant_id = %subscription.tenant_id, "subscription created");
    let tag = etag_header(subscription.version);
    Ok((StatusCode::CREATED, tag, axum::Json(SubscriptionOut::new(subscription, true))))
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", operation_id = "list_subscriptions",
    params(PageParams, ListSubscriptions),
    responses(
        (status = 200, description = "A page of subscriptions, oldest first", body = SubscriptionList),
        BadQuery, NoTenant,
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
    Query(params): Query<ListSubscriptions>,
) -> Result<axum::Json<SubscriptionList>, ApiError> {
    let page = page.request()?;
    if let Some(event_type) = &params.event_type {
        if !is_valid_event_type(event_type) {
            return Err(ApiError::InvalidQuery(vec![FieldError::new(
                "event_type",
                "not an event type name",
            )]));
        }
    }
    let tenant = list_tenant(&state, &caller, params.tenant_id.as_deref()).await?;
    let Some(event_type) = params.event_type else {
        let rows =
            state.store.list_subscriptions(&tenant, params.status, page.store_page()).await?;
        let (rows, next_cursor) = page.finish(rows, |s| s.id.as_str());
        return Ok(axum::Json(SubscriptionList {
            data: rows.into_iter().map(|s| SubscriptionOut::new(s, false)).collect(),
            next_cursor,
        }));
    };

    // Patterns match in Rust, the same way the dispatcher does: scan pages
    // until the page is full (plus one, to know more follow) or enough was read.
    let mut found = Vec::new();
    let mut after = page.store_page().after.map(str::to_owned);
    let mut scanned = 0;
    let mut exhausted = false;
    while found.len() <= page.limit() && scanned < MAX_SCAN {
        let rows = state
            .store
            .list_subscriptions(
                &tenant,
                params.status,
                Page { after: after.as_deref(), limit: MAX_PAGE },
            )
            .await?;
        exhausted = (rows.len() as i64) < MAX_PAGE;
        for s in rows {
            scanned += 1;
            after = Some(s.id.as_str().to_owned());
            let wanted = s
                .event_types
                .iter()
                .filter_map(|p| EventTypePattern::parse(p))
                .any(|p| p.matches(&event_type));
            if wanted {
                found.push(s);
                if found.len() > page.limit() {
                    break;
                }
            }
        }
        if exhausted {
            break;
        }
    }
    let (rows, mut next_cursor) = page.finish(found, |s| s.id.as_str());
    if next_cursor.is_none() && !exhausted {
        next_cursor = after.as_deref().map(super::pagination::encode);
    }
    Ok(axum::Json(SubscriptionList {
        data: rows.into_iter().map(|s| SubscriptionOut::new(s, false)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions", operation_id = "get_subscription",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)")),
    responses(
        (status = 200, description = "The subscription, without its secret", body = SubscriptionOut,
            headers(("ETag" = String, description = "The version, as a strong entity tag: `\"42\"`; send it back in `If-Match`"))),
        NoSubscription,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
) -> Result<(ETag, axum::Json<SubscriptionOut>), ApiError> {
    let subscription = visible(&state, &caller, &id).await?;
    let circuit = state.store.get_circuit(&subscription.id).await?;
    let tag = etag_header(subscription.version);
    let mut out = SubscriptionOut::new(subscription, false);
    out.circuit = Some(CircuitOut::new(circuit, Utc::now()));
    Ok((tag, axum::Json(out)))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions", operation_id = "update_subscription",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), IfMatchParam),
    request_body = UpdateSubscription,
    responses(
        (status = 200, description = "The updated subscription. Only the fields sent are written: a concurrent change of the others (a rotation, a 410 disable) stands", body = SubscriptionOut,
            headers(("ETag" = String, description = "The new version, as a strong entity tag"))),
        BadJsonOrIfMatch, NoSubscription, StaleUpdate, TooLarge, NotJson, Invalid,
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    if_match: IfMatch,
    Json { value: req, .. }: Json<UpdateSubscription>,
) -> Result<(ETag, axum::Json<SubscriptionOut>), ApiError> {
    let current = visible(&state, &caller, &id).await?;
    let expected = if_match.expect(current.version)?;
    let mut errors = Vec::new();
    let admin = matches!(caller, Caller::Admin);
    let status_reason = match (req.status, admin) {
        (Some(SubscriptionStatus::Disabled), false) => {
            errors.push(FieldError::new(
                "status",
                "`disabled` is set by hookgate (410 Gone, sustained failure) or an admin; use `paused`",
            ));
            None
        }
        (Some(SubscriptionStatus::Suspended), false) => {
            return Err(ApiError::Refused {
                code: "admin_only_status",
                detail: "only an admin can suspend a subscription; use `paused`".into(),
            })
        }
        (Some(status), false) if current.status == SubscriptionStatus::Suspended => {
            return Err(ApiError::Refused {
                code: "suspended",
                detail: format!(
                    "subscription {id} is suspended by an admin: only an admin can make it {}",
                    status.as_str()
                ),
            })
        }
        (Some(SubscriptionStatus::Disabled), true) => {
            Some(format!("disabled by an admin at {}", super::now().to_rfc3339()))
        }
        (Some(SubscriptionStatus::Suspended), true) => {
            Some(format!("suspended by an admin at {}", super::now().to_rfc3339()))
        }
        _ => None,
    };
    let filter = req.filter.map(|f| f.and_then(|json| validate::filter(json, &mut errors)));
    let patch = SubscriptionPatch {
        url: req.url,
        event_types: req.event_types,
        filter,
        rate_limit: req.rate_limit,
        max_in_flight: req.max_in_flight,
        ordered: req.ordered,
        headers: req.headers,
        secret_headers: req.secret_headers,
        status: req.status.filter(|s| admin || *s != SubscriptionStatus::Disabled),
        status_reason,
        unless_suspended: !admin,
        description: req.description,
        metadata: req.metadata,
        oauth2: req.oauth2,
        tls: req.tls,
    };
    // A value set before the limit was lowered stays until it is changed.
    let max_in_flight_limit = match patch.max_in_flight {
        Some(_) => state.limits.max_in_flight,
        None => current.max_in_flight.unwrap_or(0).max(state.limits.max_in_flight),
    };
    // Checked as it will be once patched; the fields are checked one by
    // one, so what a concurrent write changes in the others cannot make it
    // invalid.
    let mut candidate = current.clone();
    // Headers and metadata stored before tighter limits stay until changed.
    if patch.headers.is_none() {
        candidate.headers.clear();
    }
    if patch.metadata.is_none() {
        candidate.metadata.clear();
    }
    patch.apply_to(&mut candidate);
    let rules = validate::Rules::new(max_in_flight_limit, state.quotas());
    // A URL accepted before the rules changed stays until it is changed.
    let egress = patch.url.is_some().then_some(&*state.egress);
    errors.extend(validate::subscription(&candidate, &rules, egress));
    if let Some(Some(oauth2)) = &patch.oauth2 {
        validate::oauth2(oauth2, &state.egress, &mut errors);
    }
    if let Some(Some(tls)) = &patch.tls {
        validate::tls(tls, patch.url.as_ref().unwrap_or(&current.url), &mut errors);
    } else if patch.url.as_ref().is_some_and(|u| !u.starts_with("https://"))
        && patch.tls.is_none()
        && current.tls.is_some()
    {
        errors.push(FieldError::new("url", "the subscription has TLS settings: its URL is https"));
    }
    if patch.oauth2.is_some() || patch.headers.is_some() {
        let oauth2 = patch.oauth2.as_ref().map_or(current.oauth2.as_ref(), Option::as_ref);
        let headers = patch.headers.as_ref().unwrap_or(&current.headers);
        validate::one_authorization(oauth2, headers, &mut errors);
    }
    for (name, _) in patch.headers.iter().flatten().filter(|(_, v)| *v == REDACTED) {
        // The store swaps the placeholder for the stored value.
        let problem = if !candidate.is_secret_header(name) {
            Some("`********` keeps a secret header's stored value, and this header is not secret: send its value")
        } else if !current.headers.keys().any(|n| n.eq_ignore_ascii_case(name)) {
            Some("`********` keeps the stored value, and this header has none: send its value")
        } else {
            None
        };
        if let Some(message) = problem {
            errors.push(FieldError::new(
                format!("headers/{}", validate::pointer_escape(name)),
                message,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let guarded = state
        .store
        .patch_subscription(caller.scope(), &current.id, &patch, expected, super::now())
        .await?;
    let s = written(guarded, &id)?;
    tracing::info!(subscription_id = %s.id, "subscription updated");
    if patch.status.is_some() && s.status != current.status {
        status_changed(&state, &s, current.status, admin).await;
    }
    Ok((etag_header(s.version), axum::Json(SubscriptionOut::new(s, false))))
}

/// A status an API call changed: the tenant hears of it, and one made
/// active again starts with a clean failure record.
async fn status_changed(
    state: &AppState,
    s: &Subscription,
    before: SubscriptionStatus,
    admin: bool,
) {
    let (tenant, id, now) = (s.tenant_id.clone(), s.id.clone(), super::now());
    let event = match s.status {
        SubscriptionStatus::Active => {
            if let Err(error) = state.store.reset_health(&s.id).await {
                tracing::warn!(subscription_id = %s.id, %error, "failure record not reset");
            }
            // The dispatcher that owns it closes its breaker when it sees
            // the status change; what the API shows meanwhile is closed.
            let closed = CircuitRecord {
                open: false,
                opened_ms: None,
                until_ms: None,
                changed_ms: now.timestamp_millis(),
            };
            if let Err(error) = state.store.record_circuit(&s.id, &closed).await {
                tracing::warn!(subscription_id = %s.id, %error, "circuit state not reset");
            }
            Operational::new(Kind::SubscriptionEnabled, tenant, id, now)
                .with("previous_status", before.as_str())
                .with("by", if admin { "admin" } else { "tenant" })
        }
        SubscriptionStatus::Disabled | SubscriptionStatus::Suspended => {
            let because = match s.status {
                SubscriptionStatus::Suspended => DisabledBecause::Suspended,
                _ => DisabledBecause::Admin,
            };
            Operational::new(Kind::SubscriptionDisabled, tenant, id, now)
                .with("reason", because)
                .with("detail", s.disabled_reason.as_deref().unwrap_or_default())
                .with("consecutive_failures", 0)
                .with("failing_since", Option::<String>::None)
        }
        SubscriptionStatus::Paused => return,
    };
    state.operational.emit(event);
}

/// `If-Match`, as the writes of a subscription document it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatchParam {
    /// Apply only if the subscription is still at this version: its `ETag`
    /// (`"42"`), a list of them, or `*`. A stale one answers 412 and
    /// changes nothing; without it the write applies to whatever version
    /// is current (and still writes only its own fields).
    #[param(rename = "If-Match", value_type = String, required = false, example = "\"42\"")]
    if_match: Option<String>,
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions", operation_id = "delete_subscription",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), IfMatchParam),
    responses(
        (status = 204, description = "Deleted; nothing more is delivered to it"),
        BadIfMatch, NoSubscription, StaleDelete,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    if_match: IfMatch,
) -> Result<StatusCode, ApiError> {
    // Only a list of tags needs the current version to compare with.
    let expected = match if_match {
        IfMatch::Tags(_) => if_match.expect(visible(&state, &caller, &id).await?.version)?,
        IfMatch::Absent | IfMatch::Any => None,
    };
    let guarded =
        state.store.delete_subscription(caller.scope(), &id, expected, super::now()).await?;
    written(guarded, &id)?;
    tracing::info!(subscription_id = %id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get, update, delete))
}
