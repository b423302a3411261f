//! `POST /v1/events` and `/v1/events/batch`: publish. The answer comes only
//! once Kafka acknowledged every write, within `PUBLISH_TIMEOUT`; otherwise
//! 503 with `Retry-After`. `GET /v1/events/{id}/attempts`: its deliveries.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Authenticated, Caller, TenantChoice};
use super::event_types::check_data;
use super::extract::{Json, Path, Query};
use super::idempotency;
use super::pagination::PageParams;
use super::problem::{ApiError, FieldError};
use super::responses::{problems, BadQuery, NotJson, TooLarge};
use super::subscription_actions::{attempt_page, AttemptList};
use super::AppState;
use crate::domain::event::is_valid_event_type;
use crate::domain::operational::is_operational;
use crate::domain::EventId;
use crate::domain::{Audience, Event, TenantId};
use crate::kafka::produce::PUBLISH_TIMEOUT;
use crate::metrics::Metrics;
use crate::store::AttemptFilter;
use crate::trace::TraceHeaders;

const MAX_ID_LEN: usize = 255;
const MAX_KEY_LEN: usize = 1024;
/// The most events one batch may hold (the body limit of 1 MiB holds too).
pub const MAX_BATCH: usize = 1_000;
const DEFAULT_SOURCE: &str = "hookgate";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// Dot-separated words: `order.created`. When the type is registered
    /// with a schema, `data` must satisfy it.
    #[serde(rename = "type")]
    #[schema(
        example = "order.created",
        pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        max_length = 255
    )]
    event_type: String,
    /// Any JSON; delivered as is.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    /// Partition key: events of one key are ordered (for `ordered` subscriptions).
    #[schema(min_length = 1, max_length = 1024)]
    key: Option<String>,
    /// Event id (default: a generated `evt_…`); `webhook-id`s derive from it.
    id: Option<String>,
    /// CloudEvents `source` (default `hookgate`).
    source: Option<String>,
    /// The tenant whose subscriptions get the event. A tenant key publishes
    /// for its own tenant only; an admin who names none publishes for the
    /// built-in `default` tenant.
    #[schema(example = "ten_01jd0000000000000000000000")]
    tenant_id: Option<String>,
    /// Admin only: for every tenant that may see the type, instead of one
    /// (leave `tenant_id` out).
    #[serde(default)]
    broadcast: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<PublishEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    #[schema(example = "evt_01jd0000000000000000000000")]
    id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedBatch {
    /// One per event, in the order sent.
    events: Vec<Published>,
}

problems! {
    BadJsonOrKey: 400 "Malformed JSON or Idempotency-Key";
    KeyInUse: 409 "A request with this Idempotency-Key is under way";
    InvalidEvent: 422 "Invalid fields (among them a `tenant_id` that is unknown or another tenant's, or `broadcast` from a tenant key), `data` against the event type's schema, or an Idempotency-Key reused with another body";
    InvalidBatch: 422 "Any invalid event (errors name `events/<i>/…`; the first 20 are listed); nothing was published";
    EventRateSpent: 429 "`rate_limited`: over the key's or the tenant's publish rate (`HOOKGATE_PUBLISH_RATE_PER_KEY`, `…_PER_TENANT`); nothing was published",
        header "Retry-After": u64 = "Seconds to wait";
    BatchRateSpent: 429 "`rate_limited`: over the key's or the tenant's publish rate, each event counting; nothing was published",
        header "Retry-After": u64 = "Seconds to wait";
    EventNotWritten: 503 "Kafka did not take the event within 5 s; nothing was published",
        header "Retry-After": u32 = "Seconds to wait";
    BatchNotWritten: 503 "Kafka did not take every event within 5 s; some may have been written, so retry with the same Idempotency-Key",
        header "Retry-After": u32 = "Seconds to wait";
    NoAttempts: 404 "No attempts of this event that the caller may see (yet)";
}

#[utoipa::path(post, path = "/v1/events", tag = "events", operation_id = "publish_event",
    request_body = PublishEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat a publish safely: the same key and body answer the first response and publish nothing new (kept 24 h)")),
    responses(
        (status = 202, description = "Written to Kafka", body = Published,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer to an earlier request with the same Idempotency-Key"))),
        BadJsonOrKey, KeyInUse, TooLarge, NotJson, InvalidEvent, EventRateSpent, EventNotWritten,
    ))]
pub async fn publish(
    State(state): State<AppState>,
    authenticated: Authenticated,
    headers: HeaderMap,
    Json { value: req, bytes }: Json<PublishEvent>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency::key(&headers)?;
    within_rate(&state, &authenticated, 1)?;
    let caller = authenticated.caller;
    let mut errors = Vec::new();
    let mut tenants = KnownTenants::default();
    let event = validate(&state, &caller, req, "", &mut tenants, &mut errors).await?;
    let Some(event) = event.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let work = || async {
        send(&state, std::slice::from_ref(&event)).await?;
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event published");
        let answer = serde_json::json!({ "id": event.id });
        Ok((StatusCode::ACCEPTED, answer))
    };
    idempotency::with_key(&state, &caller, idempotency_key, "/v1/events", &bytes, work).await
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events", operation_id = "publish_events_batch",
    request_body = PublishBatch,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for `POST /v1/events`")),
    responses(
        (status = 202, description = "Every event written to Kafka", body = PublishedBatch,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer to an earlier request with the same Idempotency-Key"))),
        BadJsonOrKey, KeyInUse, TooLarge, NotJson, InvalidBatch, BatchRateSpent, BatchNotWritten,
    ))]
pub async fn publish_batch(
    State(state): State<AppState>,
    authenticated: Authenticated,
    headers: HeaderMap,
    Json { value: req, bytes }: Json<PublishBatch>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency::key(&headers)?;
    if req.events.is_empty() || req.events.len() > MAX_BATCH {
        return Err(ApiError::field("events", format!("1 to {MAX_BATCH} events")));
    }
    within_rate(&state, &authenticated, req.events.len())?;
    let caller = authenticated.caller;
    let mut errors = Vec::new();
    let mut tenants = KnownTenants::default();
    let mut events = Vec::with_capacity(req.events.len());
    for (i, item) in req.events.into_iter().enumerate() {
        let prefix = format!("events/{i}/");
        if let Some(event) =
            validate(&state, &caller, item, &prefix, &mut tenants, &mut errors).await?
        {
            events.push(event);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let work = || async {
        send(&state, &events).await?;
        tracing::debug!(events = events.len(), "batch published");
        let ids: Vec<serde_json::Value> =
            events.iter().map(|e| serde_json::json!({ "id": e.id })).collect();
        Ok((StatusCode::ACCEPTED, serde_json::json!({ "events": ids })))
    };
    idempotency::with_key(&state, &caller, idempotency_key, "/v1/events/batch", &bytes, work).await
}

#[utoipa::path(get, path = "/v1/events/{id}/attempts", tag = "events", operation_id = "list_event_attempts",
    params(("id" = String, Path, description = "Event id"), PageParams),
    responses(
        (status = 200, description = "A page of the event's delivery attempts (a tenant key sees its own subscriptions' only), oldest first", body = AttemptList),
        BadQuery, NoAttempts,
    ))]
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<PageParams>,
) -> Result<axum::Json<AttemptList>, ApiError> {
    let page = params.request()?;
    if !printable_token(&id, MAX_ID_LEN) {
        return Err(ApiError::NotFound(format!("no attempts of event {id}")));
    }
    let filter = AttemptFilter { event_id: Some(&id), ..AttemptFilter::within(caller.scope()) };
    let answer = attempt_page(&state, &filter, &page).await?;
    // Events are not stored, only their attempts: an event with none the
    // caller may see is, for that caller, not there.
    if params.cursor.is_none() && answer.data.is_empty() {
        return Err(ApiError::NotFound(format!("no attempts of event {id}")));
    }
    Ok(answer)
}

/// A tenant key publishes at its rate and its tenant's (each event counts);
/// admin tokens, the producers' own, are not limited.
fn within_rate(state: &AppState, who: &Authenticated, events: usize) -> Result<(), ApiError> {
    match (&who.caller, &who.key_hash) {
        (Caller::Tenant(tenant), Some(key)) => state.limiters.publish(key, tenant, events),
        _ => Ok(()),
    }
}

/// Whether tenants named in one request exist, looked up once each.
type KnownTenants = HashMap<TenantId, bool>;

/// Who an event is for: see `PublishEvent::tenant_id` and `broadcast`.
async fn audience(
    state: &AppState,
    caller: &Caller,
    tenant_id: Option<&str>,
    broadcast: bool,
    known: &mut KnownTenants,
) -> Result<Result<Audience, (&'static str, &'static str)>, ApiError> {
    if broadcast {
        return Ok(match (caller, tenant_id) {
            (Caller::Tenant(_), _) => Err(("broadcast", "only an admin token may broadcast")),
            (Caller::Admin, Some(_)) => {
                Err(("tenant_id", "a broadcast is for every tenant: leave tenant_id out"))
            }
            (Caller::Admin, None) => Ok(Audience::Broadcast),
        });
    }
    let tenant = match caller.acting_tenant(tenant_id) {
        Ok(tenant) => tenant,
        Err(TenantChoice::Malformed) => return Ok(Err(("tenant_id", "not a tenant id (ten_…)"))),
        Err(TenantChoice::NotVisible) => return Ok(Err(("tenant_id", "no such tenant"))),
    };
    if tenant_id.is_some() && matches!(caller, Caller::Admin) {
        let exists = match known.get(&tenant) {
            Some(exists) => *exists,
            None => {
                let exists = state.store.tenant_exists(&tenant).await?;
                known.insert(tenant.clone(), exists);
                exists
            }
        };
        if !exists {
            return Ok(Err(("tenant_id", "no such tenant")));
        }
    }
    Ok(Ok(Audience::Tenant(tenant)))
}

/// Checks one event; errors go to `errors` under `prefix` (`events/3/`).
async fn validate(
    state: &AppState,
    caller: &Caller,
    req: PublishEvent,
    prefix: &str,
    known: &mut KnownTenants,
    errors: &mut Vec<FieldError>,
) -> Result<Option<Event>, ApiError> {
    let before = errors.len();
    let audience =
        match audience(state, caller, req.tenant_id.as_deref(), req.broadcast, known).await? {
            Ok(audience) => Some(audience),
            Err((field, message)) => {
                errors.push(FieldError::new(format!("{prefix}{field}"), message));
                None
            }
        };
    let mut error = |field: &str, message: String| {
        errors.push(FieldError::new(format!("{prefix}{field}"), message));
    };
    let valid_type = is_valid_event_type(&req.event_type) && !is_operational(&req.event_type);
    if !is_valid_event_type(&req.event_type) {
        error(
            "type",
            "dot-separated words of letters, digits, `_` and `-`, at most 255 characters".into(),
        );
    } else if is_operational(&req.event_type) {
        error("type", super::event_types::RESERVED.into());
    }
    if req.id.as_ref().is_some_and(|id| !printable_token(id, MAX_ID_LEN)) {
        error("id", format!("1 to {MAX_ID_LEN} printable ASCII characters without spaces"));
    }
    if req.key.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN) {
        error("key", format!("1 to {MAX_KEY_LEN} bytes"));
    }
    if req.source.as_ref().is_some_and(|s| !printable_token(s, MAX_ID_LEN)) {
        error("source", format!("1 to {MAX_ID_LEN} printable ASCII characters without spaces"));
    }
    if valid_type {
        if let Some(validator) =
            state.schemas.validator(state.store.as_ref(), &req.event_type).await?
        {
            check_data(&validator, &req.data, prefix, errors);
        }
    }
    let Some(audience) = audience.filter(|_| errors.len() == before) else {
        return Ok(None);
    };
    Ok(Some(Event {
        id: req.id.map_or_else(EventId::generate, EventId::from),
        event_type: req.event_type,
        source: req.source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned()),
        time: Utc::now(),
        key: req.key.map(String::into_bytes),
        data: req.data.into(),
        audience,
    }))
}

fn printable_token(value: &str, max_len: usize) -> bool {
    !value.is_empty() && value.len() <= max_len && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Writes every event and waits for the acknowledgements, within a bound.
async fn send(state: &AppState, events: &[Event]) -> Result<(), ApiError> {
    let writes =
        join_all(events.iter().map(|event| state.producer.publish(&state.publish_topic, event)));
    // librdkafka gives up on a record after PUBLISH_TIMEOUT; this guard
    // bounds the request even if that promise broke.
    let results = tokio::time::timeout(PUBLISH_TIMEOUT + std::time::Duration::from_secs(1), writes)
        .await
        .map_err(|_| unavailable(5))?;
    let written = results.iter().filter(|result| result.is_ok()).count();
    state.metrics.published_events.inc_by(written as u64);
    for result in results {
        result.map_err(publish_error)?;
    }
    Ok(())
}

/// Around `POST /v1/events` and `/v1/events/batch`: the publish span, a
/// child of the request's `traceparent` (the records carry its context on),
/// and the count of requests by status.
pub async fn observe_publish(
    Extension(metrics): Extension<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::debug_span!("publish", otel.kind = "server", http.request.method = "POST",
        http.route = %request.uri().path(), http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty);
    let parent = TraceHeaders::from_http(request.headers());
    TraceHeaders::adopt(parent.as_ref(), &span);
    let onward = TraceHeaders::onward(parent.as_ref(), &span);
    let response = TraceHeaders::scope(onward, next.run(request)).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    metrics.publish_request(status);
    response
}

const UNWRITTEN: &str = "the event could not be written to Kafka in time; try again";

fn unavailable(retry_after_secs: u32) -> ApiError {
    ApiError::Unavailable { detail: UNWRITTEN.to_owned(), retry_after_secs }
}

fn publish_error(error: KafkaError) -> ApiError {
    let (context, retry_after_secs) = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => return ApiError::PayloadTooLarge,
        Some(RDKafkaErrorCode::QueueFull) => ("producer queue full", 1),
        _ => ("publish failed", 5),
    };
    ApiError::Dependency {
        detail: UNWRITTEN.to_owned(),
        retry_after_secs,
        context,
        cause: Box::new(error),
    }
}

/// The two publish routes are observed (`observe_publish`), the attempts
/// route is not.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(publish_batch))
        .route_layer(axum::middleware::from_fn(observe_publish))
        .routes(routes!(attempts))
}
