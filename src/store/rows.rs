//! Rows as both backends return them, and their conversion to domain types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Error, EventTypeChange, IdempotencyRecord, Result, SubscriptionChange};
use crate::domain::{
    ApiKey, ApiKeyId, Attempt, AttemptId, EventType, Outcome, PreviousSecret, RateLimit,
    Subscription, SubscriptionId, SubscriptionStatus, Tenant, TenantId,
};

#[derive(sqlx::FromRow)]
pub(super) struct SubscriptionRow {
    id: String,
    tenant_id: String,
    url: String,
    event_types: Json<Vec<String>>,
    secret: String,
    rate_limit_per_second: Option<i64>,
    rate_limit_burst: Option<i64>,
    max_in_flight: Option<i64>,
    ordered: bool,
    headers: Json<BTreeMap<String, String>>,
    status: String,
    disabled_reason: Option<String>,
    description: Option<String>,
    metadata: Json<BTreeMap<String, String>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    previous_secrets: Json<Vec<PreviousSecret>>,
}

fn to_u32(value: i64, column: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} = {value}")))
}

impl SubscriptionRow {
    pub(super) fn into_change(self) -> Result<SubscriptionChange> {
        let rate_limit = match (self.rate_limit_per_second, self.rate_limit_burst) {
            (Some(per_second), Some(burst)) => Some(RateLimit {
                per_second: to_u32(per_second, "rate_limit_per_second")?,
                burst: to_u32(burst, "rate_limit_burst")?,
            }),
            _ => None,
        };
        let status = SubscriptionStatus::parse(&self.status)
            .ok_or_else(|| Error::Corrupt(format!("status = {}", self.status)))?;
        Ok(SubscriptionChange {
            version: self.version,
            deleted: self.deleted_at.is_some(),
            subscription: Subscription {
                id: SubscriptionId::from_trusted(self.id),
                tenant_id: TenantId::from_trusted(self.tenant_id),
                url: self.url,
                event_types: self.event_types.0,
                secret: self.secret,
                previous_secrets: self.previous_secrets.0,
                rate_limit,
                max_in_flight: self
                    .max_in_flight
                    .map(|v| to_u32(v, "max_in_flight"))
                    .transpose()?,
                ordered: self.ordered,
                headers: self.headers.0,
                status,
                disabled_reason: self.disabled_reason,
                description: self.description,
                metadata: self.metadata.0,
                created_at: self.created_at,
                updated_at: self.updated_at,
                version: self.version,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    id: String,
    event_id: String,
    webhook_id: String,
    subscription_id: String,
    tenant_id: String,
    event_type: String,
    attempt: i64,
    outcome: String,
    status_code: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
    response_excerpt: Option<String>,
    created_at: DateTime<Utc>,
}

impl AttemptRow {
    pub(super) fn into_attempt(self) -> Result<Attempt> {
        Ok(Attempt {
            id: AttemptId::from_trusted(self.id),
            event_id: self.event_id,
            webhook_id: self.webhook_id,
            subscription_id: SubscriptionId::from_trusted(self.subscription_id),
            tenant_id: TenantId::from_trusted(self.tenant_id),
            event_type: self.event_type,
            attempt: to_u32(self.attempt, "attempt")?,
            outcome: Outcome::parse(&self.outcome),
            status_code: self
                .status_code
                .map(|c| u16::try_from(c).map_err(|_| Error::Corrupt(format!("status_code = {c}"))))
                .transpose()?,
            latency_ms: to_u32(self.latency_ms, "latency_ms")?,
            error: self.error,
            response_excerpt: self.response_excerpt,
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TenantRow {
    id: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self { id: TenantId::from_trusted(row.id), name: row.name, created_at: row.created_at }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    tenant_id: String,
    name: Option<String>,
    prefix: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_trusted(row.id),
            tenant_id: TenantId::from_trusted(row.tenant_id),
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EventTypeRow {
    name: String,
    description: Option<String>,
    json_schema: Option<Json<serde_json::Value>>,
    visible_to: Option<Json<Vec<String>>>,
    created_at: DateTime<Utc>,
}

/// Tenant ids as stored; one that no longer parses is dropped, which can
/// only narrow who sees the type.
fn tenants(ids: Option<Json<Vec<String>>>) -> Option<Vec<TenantId>> {
    ids.map(|ids| ids.0.iter().filter_map(|id| TenantId::parse(id)).collect())
}

impl From<EventTypeRow> for EventType {
    fn from(row: EventTypeRow) -> Self {
        Self {
            name: row.name,
            description: row.description,
            schema: row.json_schema.map(|j| j.0),
            visible_to: tenants(row.visible_to),
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct EventTypeChangeRow {
    version: i64,
    name: String,
    visible_to: Option<Json<Vec<String>>>,
}

impl From<EventTypeChangeRow> for EventTypeChange {
    fn from(row: EventTypeChangeRow) -> Self {
        Self { version: row.version, name: row.name, visible_to: tenants(row.visible_to) }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct IdempotencyRow {
    request_hash: String,
    status: String,
    response_status: Option<i64>,
    response_body: Option<String>,
    created_at: DateTime<Utc>,
}

impl IdempotencyRow {
    pub(super) fn into_record(self) -> Result<IdempotencyRecord> {
        let response = match (self.status.as_str(), self.response_status, self.response_body) {
            ("done", Some(status), Some(body)) => Some((
                u16::try_from(status)
                    .map_err(|_| Error::Corrupt(format!("response_status = {status}")))?,
                body,
            )),
            ("in_progress", _, _) => None,
            (other, _, _) => return Err(Error::Corrupt(format!("idempotency status = {other}"))),
        };
        Ok(IdempotencyRecord {
            request_hash: self.request_hash,
            response,
            created_at: self.created_at,
        })
    }
}
