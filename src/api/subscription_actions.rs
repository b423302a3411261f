//! Actions on one subscription: rotate its secret, send it a test event,
//! list its delivery attempts, and answer its health stats.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{OptionalJson, Path, Query};
use super::pagination::{list_of, PageParams, PageRequest};
use super::precondition::{etag_header, IfMatch};
use super::problem::{ApiError, FieldError};
use super::responses::{problems, BadIfMatch, BadJsonOrIfMatch, BadQuery, Invalid, NotJson};
use super::subscriptions::{visible, written, ETag, IfMatchParam, NoSubscription};
use super::{validate, AppState};
use crate::delivery::Target;
use crate::domain::{
    Attempt, Audience, Event, EventId, Outcome, Scope, SignatureScheme, SubscriptionId,
};
use crate::store::{AttemptFilter, SecretRotation};
use crate::trace::TraceHeaders;

pub const DEFAULT_GRACE_SECS: u32 = 24 * 60 * 60;
pub const MAX_GRACE_SECS: u32 = 7 * 24 * 60 * 60;
pub const TEST_EVENT_TYPE: &str = "hookgate.test";

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The scheme of the new key (default: the current one's). A rotation
    /// to another scheme signs with both, each its own way, during the
    /// grace period: receivers move from one to the other without a gap.
    signature_scheme: Option<SignatureScheme>,
    /// The new secret (`whsec_…`, or `whsk_…` for ed25519); generated
    /// when absent.
    secret: Option<String>,
    /// How long webhooks stay signed with the old secret too (seconds,
    /// default 86400 = 24 h, at most 604800 = 7 days; 0 drops it at once).
    #[schema(minimum = 0, maximum = 604800)]
    grace_period_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    id: String,
    /// The new secret, shown once (hmac-sha256 only: an ed25519 secret key
    /// is never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    signature_scheme: SignatureScheme,
    /// ed25519: the new key's `whpk_…`; until the grace period ends,
    /// webhooks also carry the old key's signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// Until when webhooks also carry the old secret's signature; `null`
    /// when there is no grace period.
    previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The subscription's version after the rotation (its new `ETag`).
    #[schema(example = 43)]
    version: i64,
}

/// One delivery attempt, as logged.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    id: String,
    event_id: String,
    /// The `webhook-id` header: the same for every attempt of an event to a subscription.
    webhook_id: String,
    subscription_id: String,
    event_type: String,
    /// 1 for the first try.
    attempt: u32,
    /// `success` or `failed`.
    outcome: String,
    /// The endpoint's HTTP status; `null` when it did not answer.
    status_code: Option<u16>,
    latency_ms: u32,
    error: Option<String>,
    /// The start of the response body (up to 4 KiB): of a failed attempt
    /// or a test send; of a delivered one only when the operator keeps
    /// those (`HOOKGATE_KEEP_SUCCESS_RESPONSES`).
    response_excerpt: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id.as_str().to_owned(),
            event_id: a.event_id,
            webhook_id: a.webhook_id.into(),
            subscription_id: a.subscription_id.as_str().to_owned(),
            event_type: a.event_type,
            attempt: a.attempt,
            outcome: a.outcome.as_str().to_owned(),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
            response_excerpt: a.response_excerpt,
            created_at: a.created_at,
        }
    }
}

list_of!(AttemptList, AttemptOut);

problems! {
    StaleRotation: 412 "If-Match names no current version: changed since; nothing was rotated",
        header "ETag": String = "The current version";
    StaleTest: 412 "If-Match names no current version: the subscription changed since; nothing was sent",
        header "ETag": String = "The current version";
    TestSendsSpent: 429 "`rate_limited`: the tenant made `HOOKGATE_TEST_SENDS_PER_MINUTE` test sends in the last minute; nothing was sent",
        header "Retry-After": u64 = "Seconds to wait";
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions", operation_id = "rotate_subscription_secret",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), IfMatchParam),
    request_body(content = Option<RotateSecret>, description = "Optional; an empty body generates a secret with a 24 h grace period"),
    responses(
        (status = 200, description = "Rotated, in one transaction with reading the secret it replaces; the new secret is shown once", body = RotatedSecret,
            headers(("ETag" = String, description = "The new version, as a strong entity tag"))),
        BadJsonOrIfMatch, NoSubscription, StaleRotation, NotJson, Invalid,
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    if_match: IfMatch,
    OptionalJson(req): OptionalJson<RotateSecret>,
) -> Result<(ETag, axum::Json<RotatedSecret>), ApiError> {
    let grace = req.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECS);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::field(
            "grace_period_seconds",
            format!("at most {MAX_GRACE_SECS} (7 days)"),
        ));
    }
    let current = visible(&state, &caller, &id).await?;
    let new_secret = validate::signing_key(
        req.secret.as_deref(),
        req.signature_scheme,
        current.signature_scheme(),
    )
    .map_err(|e| ApiError::Validation(vec![e]))?;
    let expected = if_match.expect(current.version)?;
    let now = super::now();
    let grace_ends = (grace > 0).then(|| now + Duration::seconds(i64::from(grace)));
    let rotation = SecretRotation { secret: new_secret.expose(), grace_ends, now };
    let guarded = state
        .store
        .rotate_subscription_secret(caller.scope(), &current.id, rotation, expected)
        .await?;
    let s = written(guarded, &id)?;
    tracing::info!(subscription_id = %s.id, grace_period_seconds = grace, "secret rotated");
    Ok((
        etag_header(s.version),
        axum::Json(RotatedSecret {
            id: s.id.as_str().to_owned(),
            signature_scheme: s.signature_scheme(),
            public_key: s.public_key(),
            secret: (s.signature_scheme() == SignatureScheme::HmacSha256).then_some(s.secret),
            previous_secret_expires_at: grace_ends,
            version: s.version,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/test", tag = "subscriptions", operation_id = "test_subscription",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), IfMatchParam),
    responses(
        (status = 200, description = "The attempt: a `hookgate.test` event sent to this subscription only, signed like any webhook. The endpoint's failure is an attempt with outcome `failed`, not an error.", body = AttemptOut),
        BadIfMatch, NoSubscription, StaleTest, TestSendsSpent,
    ))]
pub async fn send_test(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    if_match: IfMatch,
) -> Result<axum::Json<AttemptOut>, ApiError> {
    let subscription = visible(&state, &caller, &id).await?;
    // Sent with the subscription as read: a matching If-Match means the
    // test goes to the settings the caller saw.
    if_match.expect(subscription.version)?;
    // Each send is an outbound request: a tenant has so many a minute.
    state.limiters.test_send(&subscription.tenant_id)?;
    let data = serde_json::json!({
        "message": "a test event from hookgate",
        "subscription_id": subscription.id.as_str(),
    });
    let event = Event {
        id: EventId::generate(),
        event_type: TEST_EVENT_TYPE.to_owned(),
        source: "hookgate".to_owned(),
        time: super::now(),
        key: None,
        data: RawValue::from_string(data.to_string()).map_err(ApiError::internal)?.into(),
        audience: Audience::Tenant(subscription.tenant_id.clone()),
    };
    let target = Target::new(subscription).map_err(|reason| {
        ApiError::Internal(format!("the stored subscription cannot be sent for: {reason}").into())
    })?;
    let sent = state.test_client.send(&event, &target, TraceHeaders::current()).await;
    if let Some(error) = &sent.error {
        tracing::info!(subscription_id = %target.subscription.id, %error, "test delivery failed");
    }
    // Logged like any attempt, so it shows in the subscription's attempts.
    let attempt = sent.record(&event, &target, 1);
    state.store.insert_attempts(std::slice::from_ref(&attempt)).await?;
    Ok(axum::Json(attempt.into()))
}

/// The filters of a subscription's attempts (its page is `PageParams`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAttempts {
    /// `success` or `failed`.
    outcome: Option<String>,
    /// Made at or after this time (RFC 3339).
    from: Option<String>,
    /// Made before this time (RFC 3339).
    to: Option<String>,
    /// `oldest` (default) or `newest` first.
    order: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/attempts", tag = "subscriptions", operation_id = "list_subscription_attempts",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), PageParams, ListAttempts),
    responses(
        (status = 200, description = "A page of the subscription's attempts, oldest first unless `order=newest`", body = AttemptList),
        BadQuery, NoSubscription,
    ))]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    Query(page): Query<PageParams>,
    Query(params): Query<ListAttempts>,
) -> Result<axum::Json<AttemptList>, ApiError> {
    let mut errors = Vec::new();
    let page = match page.request() {
        Ok(page) => Some(page),
        Err(ApiError::InvalidQuery(more)) => {
            errors.extend(more);
            None
        }
        Err(error) => return Err(error),
    };
    let outcome = match params.outcome.as_deref() {
        None => None,
        Some("success") => Some(Outcome::Success),
        Some("failed") => Some(Outcome::Failed),
        Some(_) => {
            errors.push(FieldError::new("outcome", "`success` or `failed`"));
            None
        }
    };
    let mut time = |field: &str, raw: Option<&str>| {
        let parsed = DateTime::parse_from_rfc3339(raw?).map(|t| t.with_timezone(&Utc));
        if parsed.is_err() {
            errors.push(FieldError::new(field, "not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)"));
        }
        parsed.ok()
    };
    let since = time("from", params.from.as_deref());
    let until = time("to", params.to.as_deref());
    let newest_first = match params.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(_) => {
            errors.push(FieldError::new("order", "`oldest` or `newest`"));
            false
        }
    };
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(ApiError::InvalidQuery(errors));
    };
    let subscription = visible(&state, &caller, &id).await?;
    let filter = AttemptFilter {
        subscription: Some(&subscription.id),
        outcome,
        since,
        until,
        newest_first,
        ..AttemptFilter::within(Scope::Tenant(&subscription.tenant_id))
    };
    attempt_page(&state, &filter, &page).await
}

pub async fn attempt_page(
    state: &AppState,
    filter: &AttemptFilter<'_>,
    page: &PageRequest,
) -> Result<axum::Json<AttemptList>, ApiError> {
    let rows = state.store.list_attempts(filter, page.store_page()).await?;
    let (rows, next_cursor) = page.finish(rows, |a| a.id.as_str());
    Ok(axum::Json(AttemptList {
        data: rows.into_iter().map(AttemptOut::from).collect(),
        next_cursor,
    }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rotate_secret))
        .routes(routes!(send_test))
        .routes(routes!(attempts))
        .routes(routes!(stats))
}

/// The windows `stats` answers for.
const WINDOWS: [(&str, i64); 3] = [("1h", 60), ("24h", 24 * 60), ("7d", 7 * 24 * 60)];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// `1h`, `24h` (default) or `7d`: the attempts counted are those of the
    /// whole minutes this far back.
    #[param(example = "24h")]
    window: Option<String>,
}

/// A subscription's health over a window, from the rollups the dispatchers
/// write with each batch of attempts (test sends are not counted).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionStats {
    subscription_id: String,
    #[schema(example = "24h")]
    window: String,
    /// The start of the window (the first whole minute counted).
    since: DateTime<Utc>,
    attempts: u64,
    successes: u64,
    failures: u64,
    /// `failures / attempts`, 0 to 1; `null` without attempts.
    failure_rate: Option<f64>,
    latency_ms: LatencyOut,
    last_success: Option<LastSuccess>,
    last_failure: Option<LastFailure>,
    /// Failed attempts since the last success (reset when it is made
    /// active again).
    consecutive_failures: u64,
    /// The first failure of that run.
    failing_since: Option<DateTime<Utc>>,
    circuit: super::subscriptions::CircuitOut,
    /// Its dead letters waiting for a replay or a discard.
    pending_dead_letters: u64,
}

/// Attempt latencies (request to answer) as the upper bound of their bin,
/// in milliseconds: 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200,
/// 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000 (what is
/// slower counts as 30000). `null` without attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyOut {
    p50: Option<u32>,
    p95: Option<u32>,
    p99: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastSuccess {
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastFailure {
    at: DateTime<Utc>,
    /// The endpoint's HTTP status, when it answered.
    status: Option<u16>,
    error: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/stats", tag = "subscriptions", operation_id = "get_subscription_stats",
    params(("id" = String, Path, description = "Subscription id (`sub_…`)"), StatsParams),
    responses(
        (status = 200, description = "The subscription's health over the window", body = SubscriptionStats),
        BadQuery, NoSubscription,
    ))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SubscriptionId>,
    Query(params): Query<StatsParams>,
) -> Result<axum::Json<SubscriptionStats>, ApiError> {
    let window = params.window.as_deref().unwrap_or("24h");
    let Some(&(window, minutes)) = WINDOWS.iter().find(|(name, _)| *name == window) else {
        return Err(ApiError::InvalidQuery(vec![super::problem::FieldError::new(
            "window",
            "one of `1h`, `24h`, `7d`",
        )]));
    };
    let subscription = visible(&state, &caller, &id).await?;
    let now = super::now();
    let since_minute = now.timestamp().div_euclid(60) - minutes + 1;
    let report = state.store.health_report(&subscription.id, since_minute).await?;
    let circuit = state.store.get_circuit(&subscription.id).await?;
    let totals = &report.totals;
    let last = crate::domain::health::LATENCY_BOUNDS_MS
        [crate::domain::health::LATENCY_BOUNDS_MS.len() - 1];
    let percentile = |q| totals.percentile(q).map(|bound| bound.unwrap_or(last));
    let time = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
    let record = report.record;
    let failures = totals.attempts - totals.successes;
    Ok(axum::Json(SubscriptionStats {
        subscription_id: subscription.id.as_str().to_owned(),
        window: window.to_owned(),
        since: DateTime::from_timestamp(since_minute * 60, 0).unwrap_or(now),
        attempts: totals.attempts,
        successes: totals.successes,
        failures,
        failure_rate: (totals.attempts > 0).then(|| failures as f64 / totals.attempts as f64),
        latency_ms: LatencyOut {
            p50: percentile(0.5),
            p95: percentile(0.95),
            p99: percentile(0.99),
        },
        last_success: time(record.last_success_ms).map(|at| LastSuccess { at }),
        last_failure: time(record.last_failure_ms).map(|at| LastFailure {
            at,
            status: record.last_failure_status,
            error: record.last_failure_error.clone(),
        }),
        consecutive_failures: record.consecutive_failures,
        failing_since: time(record.failing_since_ms),
        circuit: super::subscriptions::CircuitOut::new(circuit, now),
        pending_dead_letters: report.pending_dead_letters,
    }))
}
