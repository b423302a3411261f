//! Bulk replays: every pending dead letter that matches a filter, sent again
//! at a rate the receiver can take, as a job that dispatchers run and that
//! survives their restarts (see `dispatcher::replay`).

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::dead_letters::{filter_of, FilterFields};
use super::extract::{Json, Path, Query};
use super::pagination::{list_of, PageParams};
use super::problem::{ApiError, FieldError};
use super::responses::{problems, BadQuery, JsonErrors, NoTenant};
use super::{validate, AppState};
use crate::domain::{DeadLetterStatus, Replay, ReplayId, ReplayStatus};

/// The highest rate a replay may ask for.
pub const MAX_RATE: u32 = 100_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReplay {
    /// Only this tenant's dead letters (a tenant key: its own, always).
    tenant_id: Option<String>,
    subscription_id: Option<String>,
    event_type: Option<String>,
    /// Dead-lettered at or after this time (RFC 3339).
    from: Option<String>,
    /// Dead-lettered before this time (RFC 3339).
    to: Option<String>,
    /// Send to this URL instead of each subscription's (a receiver that moved).
    url: Option<String>,
    /// At most this many deliveries a second to each subscription, so that a
    /// recovering receiver is not flooded; unlimited when absent.
    #[schema(minimum = 1, maximum = 100000)]
    rate_per_second: Option<u32>,
    /// Only count what would be replayed; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// A bulk replay and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOut {
    /// `rpl_…`
    id: String,
    /// `running`, `completed` or `cancelled`.
    status: String,
    /// Pending dead letters that matched when the replay was made.
    total: u64,
    /// Sent again.
    done: u64,
    /// Found not replayable (unreadable records, payloads Kafka refused).
    failed: u64,
    /// Replayed or discarded otherwise before this job reached them.
    skipped: u64,
    tenant_id: Option<String>,
    subscription_id: Option<String>,
    event_type: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    url: Option<String>,
    rate_per_second: Option<u32>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<Replay> for ReplayOut {
    fn from(r: Replay) -> Self {
        Self {
            id: r.id.as_str().to_owned(),
            status: r.status.as_str().to_owned(),
            total: r.total,
            done: r.done,
            failed: r.failed,
            skipped: r.skipped,
            tenant_id: r.filter.tenant_id.map(|t| t.as_str().to_owned()),
            subscription_id: r.filter.subscription_id.map(|s| s.as_str().to_owned()),
            event_type: r.filter.event_type,
            from: r.filter.from,
            to: r.filter.to,
            url: r.url,
            rate_per_second: r.rate_per_second,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        }
    }
}

/// What a dry run answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayDryRun {
    dry_run: bool,
    /// Pending dead letters that a replay with this filter would send again.
    total: u64,
}

problems! {
    InvalidReplay: 422 "Invalid fields (a bad time range, a bad rate…), or `quota_exceeded`: the tenant has `HOOKGATE_MAX_RUNNING_REPLAYS_PER_TENANT` replays running; nothing was created";
    NoReplay: 404 "No such replay (or another tenant's)";
}

#[utoipa::path(post, path = "/v1/replays", tag = "dead-letters", operation_id = "create_replay",
    request_body = CreateReplay,
    responses(
        (status = 200, description = "Dry run: how many would be replayed; nothing changed", body = ReplayDryRun),
        (status = 202, description = "The replay job, started; follow it at `Location`", body = ReplayOut),
        JsonErrors, NoTenant, InvalidReplay,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json { value: req, .. }: Json<CreateReplay>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    if let Some(url) = &req.url {
        validate::url(url, &state.egress, &mut errors);
    }
    if req.rate_per_second.is_some_and(|r| r == 0 || r > MAX_RATE) {
        errors.push(FieldError::new("rate_per_second", format!("from 1 to {MAX_RATE}")));
    }
    let filter = filter_of(
        &caller,
        &FilterFields {
            tenant_id: req.tenant_id.as_deref(),
            subscription_id: req.subscription_id.as_deref(),
            event_type: req.event_type.as_deref(),
            from: req.from.as_deref(),
            to: req.to.as_deref(),
            status: None,
        },
        ApiError::Validation,
    );
    let mut filter = match filter {
        Ok(filter) if errors.is_empty() => filter,
        Ok(_) => return Err(ApiError::Validation(errors)),
        Err(ApiError::Validation(more)) => {
            errors.extend(more);
            return Err(ApiError::Validation(errors));
        }
        Err(error) => return Err(error),
    };
    // Only what waits for a decision is replayed.
    filter.status = Some(DeadLetterStatus::Pending);
    let (total, upper_id) = state.store.count_dead_letters(&filter).await?;
    if req.dry_run {
        return Ok(axum::Json(ReplayDryRun { dry_run: true, total }).into_response());
    }
    let now = super::now();
    let replay = Replay {
        id: ReplayId::generate(),
        tenant_id: caller.scope().tenant().cloned(),
        filter,
        upper_id,
        url: req.url,
        rate_per_second: req.rate_per_second,
        status: ReplayStatus::Running,
        total,
        done: 0,
        failed: 0,
        skipped: 0,
        cursor: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    // Admins are trusted; a tenant key has a quota of running jobs.
    match &replay.tenant_id {
        None => state.store.create_replay(&replay).await?,
        Some(tenant) => {
            let limit = state.quotas().running_replays_per_tenant;
            let created = state.store.create_replay_within(&replay, limit).await?;
            if !created {
                return Err(ApiError::QuotaExceeded {
                    quota: "running_replays_per_tenant",
                    limit: u64::from(limit),
                    detail: format!(
                        "tenant {tenant} has {limit} replays running, this server's limit; \
                         wait for one to finish or cancel one"
                    ),
                });
            }
        }
    }
    tracing::info!(replay_id = %replay.id, total, "replay job created");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/replays/{}", replay.id)) {
        headers.insert(LOCATION, location);
    }
    Ok((StatusCode::ACCEPTED, headers, axum::Json(ReplayOut::from(replay))).into_response())
}

/// The replay the store answered, or 404 (also for another tenant's).
fn answer(
    found: crate::store::Result<Option<Replay>>,
    id: &ReplayId,
) -> Result<axum::Json<ReplayOut>, ApiError> {
    found?.map(|r| axum::Json(r.into())).ok_or_else(|| ApiError::not_found("replay", id))
}

#[utoipa::path(get, path = "/v1/replays/{id}", tag = "dead-letters", operation_id = "get_replay",
    params(("id" = String, Path, description = "Replay id (`rpl_…`)")),
    responses(
        (status = 200, description = "The replay and its progress", body = ReplayOut),
        NoReplay,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ReplayId>,
) -> Result<axum::Json<ReplayOut>, ApiError> {
    answer(state.store.get_replay(caller.scope(), &id).await, &id)
}

list_of!(ReplayList, ReplayOut);

#[utoipa::path(get, path = "/v1/replays", tag = "dead-letters", operation_id = "list_replays",
    params(PageParams),
    responses(
        (status = 200, description = "A page of bulk replays, newest first (a tenant key: its own)", body = ReplayList),
        BadQuery,
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<ReplayList>, ApiError> {
    let page = page.request()?;
    let rows = state.store.list_replays(caller.scope(), page.store_page()).await?;
    let (rows, next_cursor) = page.finish(rows, |r| r.id.as_str());
    Ok(axum::Json(ReplayList { data: rows.into_iter().map(Into::into).collect(), next_cursor }))
}

#[utoipa::path(post, path = "/v1/replays/{id}/cancel", tag = "dead-letters", operation_id = "cancel_replay",
    params(("id" = String, Path, description = "Replay id (`rpl_…`)")),
    responses(
        (status = 200, description = "Cancelled (what was sent stays sent); a finished replay is answered as it is", body = ReplayOut),
        NoReplay,
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<ReplayId>,
) -> Result<axum::Json<ReplayOut>, ApiError> {
    answer(state.store.cancel_replay(caller.scope(), &id, super::now()).await, &id)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get)).routes(routes!(cancel))
}
