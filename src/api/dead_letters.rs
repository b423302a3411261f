//! Dead letters: list and inspect what was not delivered, and replay or
//! discard it one at a time. Bulk replays are in `replays`.

use axum::extract::State;
use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, TenantChoice};
use super::extract::{OptionalJson, Path, Query};
use super::pagination::{list_of, PageParams};
use super::problem::{ApiError, FieldError};
use super::responses::{problems, Invalid, JsonErrors};
use super::subscription_actions::AttemptOut;
use super::{validate, AppState};
use crate::domain::event::is_valid_event_type;
use crate::domain::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterStatus, RecordHeader, Scope,
    SubscriptionId,
};
use crate::kafka::dead_letter::{delivery_of, NotReplayable};
use crate::kafka::delivery::ReplayOrigin;
use crate::kafka::produce::PUBLISH_TIMEOUT;
use crate::store::{AttemptFilter, Page, MAX_PAGE};

/// How long a single replay holds its dead letter: well over the longest
/// the API's producer takes to give a send up (`PUBLISH_TIMEOUT`), so that
/// no second replay takes over while the first one's record may still
/// land; after a crash, the dead letter is replayable again this soon.
const REPLAY_CLAIM_SECS: i64 = 6 * PUBLISH_TIMEOUT.as_secs() as i64;

/// A dead letter: a delivery that will not succeed as it is, or a record
/// that could not be read, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOut {
    /// `dl_…`
    id: String,
    /// `pending`, `replayed` or `discarded`.
    status: String,
    /// Why it died: `exhausted`, `expired`, `not_retryable`, `gone`,
    /// `forbidden_destination`, `subscription_paused`,
    /// `subscription_disabled`, `refused_by_kafka` or `poison`.
    reason: String,
    /// The last error: the endpoint's answer, a timeout, a refused connection…
    error: Option<String>,
    /// The endpoint's last HTTP status; `null` when it did not answer.
    last_status: Option<u16>,
    /// Attempts made.
    attempts: u32,
    /// `null` for an unreadable record that named no tenant.
    tenant_id: Option<String>,
    subscription_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    /// The `webhook-id` every attempt and replay of this delivery carries.
    webhook_id: Option<String>,
    first_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    /// When it reached the dead-letter topic.
    dead_at: DateTime<Utc>,
    /// The dead letter whose replay failed again into this one.
    replay_of: Option<String>,
    /// The bulk replay that sent it again.
    replay_id: Option<String>,
    /// When it was replayed or discarded.
    status_changed_at: Option<DateTime<Utc>>,
    /// Whether it can be sent again (an unreadable record cannot).
    replayable: bool,
}

impl From<&DeadLetter> for DeadLetterOut {
    fn from(d: &DeadLetter) -> Self {
        let r = &d.record;
        Self {
            id: r.id.as_str().to_owned(),
            status: d.status.as_str().to_owned(),
            reason: r.reason.as_str().to_owned(),
            error: r.error.clone(),
            last_status: r.last_status,
            attempts: r.attempts,
            tenant_id: r.tenant_id.as_ref().map(|t| t.as_str().to_owned()),
            subscription_id: r.subscription_id.as_ref().map(|s| s.as_str().to_owned()),
            event_id: r.event_id.clone(),
            event_type: r.event_type.clone(),
            webhook_id: r.webhook_id.clone().map(String::from),
            first_attempt_at: r.first_attempt_at,
            last_attempt_at: r.last_attempt_at,
            dead_at: r.dead_at,
            replay_of: r.replay_of.as_ref().map(|id| id.as_str().to_owned()),
            replay_id: d.replay_id.as_ref().map(|id| id.as_str().to_owned()),
            status_changed_at: d.status_changed_at,
            replayable: r.is_replayable(),
        }
    }
}

list_of!(DeadLetterList, DeadLetterOut);

/// The record as it was on the dead-letter topic.
#[derive(Debug, Serialize, ToSchema)]
pub struct OriginalRecord {
    /// Its Kafka headers: the CloudEvents attributes (`ce_…`) and the
    /// delivery's state (`hookgate_…`).
    headers: Vec<RecordHeader>,
    /// The event's data, when it is JSON.
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
    /// The payload in base64, when it is not JSON.
    payload_base64: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    dead_letter: DeadLetterOut,
    record: OriginalRecord,
    /// The delivery's attempts from the attempt log, oldest first (at most 200).
    attempt_log: Vec<AttemptOut>,
}

/// The filters of a list (its page is `PageParams`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeadLetters {
    /// Only this tenant's (an admin sees every tenant's by default; a tenant
    /// key only its own).
    tenant_id: Option<String>,
    subscription_id: Option<String>,
    event_type: Option<String>,
    /// Dead-lettered at or after this time (RFC 3339).
    from: Option<String>,
    /// Dead-lettered before this time (RFC 3339).
    to: Option<String>,
    /// `pending`, `replayed` or `discarded`.
    status: Option<String>,
}

/// The filter fields that lists and bulk replays share, as sent.
#[derive(Debug)]
pub struct FilterFields<'a> {
    pub tenant_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub status: Option<&'a str>,
}

/// Checks a filter; a tenant key is held to its own tenant (naming another
/// is answered as not found). Bad fields are named each, in `fields_error`
/// (`InvalidQuery` for a query, `Validation` for a body).
pub fn filter_of(
    caller: &Caller,
    fields: &FilterFields<'_>,
    fields_error: fn(Vec<FieldError>) -> ApiError,
) -> Result<DeadLetterFilter, ApiError> {
    let mut errors = Vec::new();
    let tenant_id = match (caller, fields.tenant_id) {
        (Caller::Admin, None) => None,
        (caller, requested) => match caller.acting_tenant(requested) {
            Ok(tenant) => Some(tenant),
            Err(TenantChoice::Malformed) => {
                errors.push(FieldError::new("tenant_id", "not a tenant id (ten_…)"));
                None
            }
            Err(TenantChoice::NotVisible) => {
                return Err(ApiError::not_found("tenant", fields.tenant_id.unwrap_or_default()))
            }
        },
    };
    let subscription_id = fields.subscription_id.and_then(|raw| {
        let parsed = SubscriptionId::parse(raw);
        if parsed.is_none() {
            errors.push(FieldError::new("subscription_id", "not a subscription id (sub_…)"));
        }
        parsed
    });
    if let Some(event_type) = fields.event_type {
        if !is_valid_event_type(event_type) {
            errors.push(FieldError::new("event_type", "not an event type name"));
        }
    }
    let mut time = |field: &str, raw: Option<&str>| {
        let raw = raw?;
        match DateTime::parse_from_rfc3339(raw) {
            Ok(time) => Some(time.with_timezone(&Utc)),
            Err(_) => {
                errors.push(FieldError::new(
                    field,
                    "not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)",
                ));
                None
            }
        }
    };
    let from = time("from", fields.from);
    let to = time("to", fields.to);
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            errors.push(FieldError::new("to", "must be later than `from`"));
        }
    }
    let status = fields.status.and_then(|raw| {
        let parsed = DeadLetterStatus::parse(raw);
        if parsed.is_none() {
            errors.push(FieldError::new("status", "one of `pending`, `replayed`, `discarded`"));
        }
        parsed
    });
    if !errors.is_empty() {
        return Err(fields_error(errors));
    }
    Ok(DeadLetterFilter {
        tenant_id,
        subscription_id,
        event_type: fields.event_type.map(str::to_owned),
        from,
        to,
        status,
    })
}

problems! {
    BadFilter: 400 "Bad query parameters (a bad time range, an unknown status…)";
    NoDeadLetter: 404 "No such dead letter (or another tenant's)";
    ReplayConflict: 409 "Not pending (replayed or discarded already), being replayed by a concurrent request (each dead letter is claimed before it is sent, so it is sent once), or not replayable";
    DiscardConflict: 409 "Not pending (replayed or discarded already), or being replayed";
    ReplayNotWritten: 503 "Kafka did not take the delivery in time; try again";
}

/// Loads a dead letter the caller may see, or answers 404.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &DeadLetterId,
) -> Result<DeadLetter, ApiError> {
    let found = state.store.get_dead_letter(caller.scope(), id).await?;
    found.ok_or_else(|| ApiError::not_found("dead letter", id))
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead-letters", operation_id = "list_dead_letters",
    params(PageParams, ListDeadLetters),
    responses(
        (status = 200, description = "A page of dead letters, oldest first", body = DeadLetterList),
        BadFilter,
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
    Query(params): Query<ListDeadLetters>,
) -> Result<axum::Json<DeadLetterList>, ApiError> {
    // Bad page and filter fields are answered together.
    let page = page.request();
    let filter = filter_of(
        &caller,
        &FilterFields {
            tenant_id: params.tenant_id.as_deref(),
            subscription_id: params.subscription_id.as_deref(),
            event_type: params.event_type.as_deref(),
            from: params.from.as_deref(),
            to: params.to.as_deref(),
            status: params.status.as_deref(),
        },
        ApiError::InvalidQuery,
    );
    let (page, filter) = match (page, filter) {
        (Ok(page), Ok(filter)) => (page, filter),
        (Err(ApiError::InvalidQuery(mut errors)), Err(ApiError::InvalidQuery(more))) => {
            errors.extend(more);
            return Err(ApiError::InvalidQuery(errors));
        }
        (Err(error), _) | (_, Err(error)) => return Err(error),
    };
    let rows = state.store.list_dead_letters(&filter, page.store_page()).await?;
    let (rows, next_cursor) = page.finish(rows, |d| d.record.id.as_str());
    Ok(axum::Json(DeadLetterList { data: rows.iter().map(Into::into).collect(), next_cursor }))
}

#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead-letters", operation_id = "get_dead_letter",
    params(("id" = String, Path, description = "Dead letter id (`dl_…`)")),
    responses(
        (status = 200, description = "The dead letter, its original record and its attempts", body = DeadLetterDetail),
        NoDeadLetter,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<DeadLetterId>,
) -> Result<axum::Json<DeadLetterDetail>, ApiError> {
    let dead_letter = visible(&state, &caller, &id).await?;
    let record = &dead_letter.record;
    let attempt_log = match (&record.tenant_id, &record.subscription_id, &record.event_id) {
        (Some(tenant), Some(subscription), Some(event_id)) => {
            state
                .store
                .list_attempts(
                    &AttemptFilter {
                        subscription: Some(subscription),
                        event_id: Some(event_id),
                        ..AttemptFilter::within(Scope::Tenant(tenant))
                    },
                    Page { after: None, limit: MAX_PAGE },
                )
                .await?
        }
        _ => Vec::new(),
    };
    let payload = record.payload.as_deref().unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(payload).ok();
    let original = OriginalRecord {
        headers: record.headers.clone(),
        payload_base64: (json.is_none() && !payload.is_empty()).then(|| B64.encode(payload)),
        payload: json,
    };
    Ok(axum::Json(DeadLetterDetail {
        dead_letter: (&dead_letter).into(),
        record: original,
        attempt_log: attempt_log.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayOne {
    /// Send to this URL instead of the subscription's (a receiver that moved).
    url: Option<String>,
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead-letters", operation_id = "replay_dead_letter",
    params(("id" = String, Path, description = "Dead letter id (`dl_…`)")),
    request_body(content = Option<ReplayOne>, description = "Optional: a URL to send to instead of the subscription's"),
    responses(
        (status = 202, description = "Sent again through the deliveries topic, with the same `webhook-id`", body = DeadLetterOut),
        JsonErrors, NoDeadLetter, ReplayConflict, Invalid, ReplayNotWritten,
    ))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<DeadLetterId>,
    OptionalJson(req): OptionalJson<ReplayOne>,
) -> Result<(StatusCode, axum::Json<DeadLetterOut>), ApiError> {
    if let Some(url) = &req.url {
        let mut errors = Vec::new();
        validate::url(url, &state.egress, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
    }
    let dead_letter = visible(&state, &caller, &id).await?;
    require_pending(&dead_letter)?;
    let origin = ReplayOrigin {
        dead_letter: dead_letter.record.id.as_str().to_owned(),
        url: req.url,
        ..ReplayOrigin::default()
    };
    let delivery = delivery_of(&dead_letter, origin)
        .map_err(|why| ApiError::Conflict { code: "not_replayable", detail: why.to_string() })?;
    let subscription =
        state.store.get_subscription(caller.scope(), &delivery.subscription_id).await?;
    if subscription.is_none() {
        return Err(ApiError::Conflict {
            code: "not_replayable",
            detail: NotReplayable::SubscriptionDeleted(delivery.subscription_id).to_string(),
        });
    }
    // Claimed before it is sent, so that of concurrent replays one sends. A
    // failed send gives the claim up; a crash leaves a claim that runs out:
    // pending either way, to be replayed again, never lost.
    let id = &dead_letter.record.id;
    let claim = ulid::Ulid::new().to_string();
    let now = super::now();
    let until = now + chrono::Duration::seconds(REPLAY_CLAIM_SECS);
    if !state.store.claim_dead_letter(id, &claim, now, until).await? {
        let current = visible(&state, &caller, id).await?;
        require_pending(&current)?;
        return Err(being_replayed(id));
    }
    let sent = state
        .producer
        .send(&state.deliveries_topic, Some(delivery.key()), delivery.headers(), delivery.payload())
        .await;
    if let Err(error) = sent {
        if let Err(error) = state.store.release_dead_letter_claim(id, &claim).await {
            tracing::warn!(dead_letter_id = %id, %error, "could not give a replay claim up; it runs out");
        }
        return Err(ApiError::Dependency {
            detail: "the replay could not be written to Kafka in time; try again".to_owned(),
            retry_after_secs: 1,
            context: "replay could not be written to Kafka",
            cause: Box::new(error),
        });
    }
    let finished = state.store.finish_dead_letter_claim(id, &claim, super::now()).await?;
    if !finished {
        // Sent, but slower than the claim, and another replay took it over.
        tracing::warn!(dead_letter_id = %id, "a replay outlasted its claim; it may be sent twice");
    }
    let current = visible(&state, &caller, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json((&current).into())))
}

fn being_replayed(id: &DeadLetterId) -> ApiError {
    ApiError::Conflict {
        code: "conflict",
        detail: format!("dead letter {id} is being replayed by another request"),
    }
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/discard", tag = "dead-letters", operation_id = "discard_dead_letter",
    params(("id" = String, Path, description = "Dead letter id (`dl_…`)")),
    responses(
        (status = 200, description = "Discarded: it will not be replayed", body = DeadLetterOut),
        NoDeadLetter, DiscardConflict,
    ))]
pub async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<DeadLetterId>,
) -> Result<axum::Json<DeadLetterOut>, ApiError> {
    let dead_letter = visible(&state, &caller, &id).await?;
    require_pending(&dead_letter)?;
    set_status(&state, &caller, dead_letter, DeadLetterStatus::Discarded).await
}

fn require_pending(dead_letter: &DeadLetter) -> Result<(), ApiError> {
    if dead_letter.status == DeadLetterStatus::Pending {
        return Ok(());
    }
    Err(ApiError::Conflict {
        code: "conflict",
        detail: format!(
            "dead letter {} is {} already",
            dead_letter.record.id,
            dead_letter.status.as_str()
        ),
    })
}

/// Moves a pending dead letter to `status` and answers it as it is now
/// (a concurrent request may have moved it first); 409 while a replay
/// holds it.
async fn set_status(
    state: &AppState,
    caller: &Caller,
    dead_letter: DeadLetter,
    status: DeadLetterStatus,
) -> Result<axum::Json<DeadLetterOut>, ApiError> {
    let id = dead_letter.record.id.clone();
    state.store.mark_dead_letters(std::slice::from_ref(&id), status, None, super::now()).await?;
    let now = visible(state, caller, &id).await?;
    if now.status == DeadLetterStatus::Pending {
        return Err(being_replayed(&id));
    }
    Ok(axum::Json((&now).into()))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(replay))
        .routes(routes!(discard))
}
