//! `/v1/event-types` (admin): named event types with an optional JSON Schema
//! that published `data` must satisfy. Publishing looks schemas up through
//! `SchemaCache`, so a publish costs no database read most of the time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Caller};
use super::extract::{FromPath, Json, Path, Query};
use super::pagination::{list_of, PageParams};
use super::problem::{ApiError, FieldError};
use super::responses::{problems, BadQuery, JsonBody, NotAdmin};
use super::validate::MAX_TEXT_LEN;
use super::AppState;
use crate::domain::event::is_valid_event_type;
use crate::domain::operational::is_operational;
use crate::domain::{EventType, TenantId};
use crate::store::Store;

/// Why nobody may register, change or publish a `hookgate.…` type.
pub const RESERVED: &str = "`hookgate.` types are hookgate's own operational events: they cannot be registered, changed or published";

/// How long a looked-up schema (or its absence) is trusted. Another API
/// replica's new event type is enforced here at most this much later.
const SCHEMA_TTL: Duration = Duration::from_secs(2);
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventType {
    /// Dot-separated words: `order.created`.
    #[schema(
        example = "order.created",
        pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        max_length = 255
    )]
    name: String,
    description: Option<String>,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) for `data`.
    // A JSON Schema is an object or a boolean: any value here.
    #[schema(value_type = Option<Value>)]
    schema: Option<serde_json::Value>,
    /// The only tenants that may see this type (absent: every tenant). A
    /// tenant's `*` and `prefix.*` never match a type it may not see, and a
    /// broadcast of it reaches only these tenants.
    #[schema(max_items = 1000, example = json!(["ten_01jd0000000000000000000000"]))]
    visible_to: Option<Vec<String>>,
}

/// What `PATCH` changes: each field given (`null` clears it); the name stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventType {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    // A JSON Schema is an object or a boolean: any value here.
    #[schema(value_type = Option<Value>)]
    schema: Option<Option<serde_json::Value>>,
    /// The only tenants that may see this type from now on; `null`: every
    /// tenant. It holds for every event fanned out after the change,
    /// including one published before it that was still on its topic.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, max_items = 1000)]
    visible_to: Option<Option<Vec<String>>>,
}

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeOut {
    name: String,
    description: Option<String>,
    // A JSON Schema is an object or a boolean: any value here.
    #[schema(value_type = Option<Value>)]
    schema: Option<serde_json::Value>,
    /// The only tenants that may see it; `null`: every tenant.
    visible_to: Option<Vec<String>>,
    created_at: DateTime<Utc>,
}

impl EventTypeOut {
    /// A tenant is not told which other tenants may see a type.
    fn for_caller(t: EventType, caller: &Caller) -> Self {
        let mut out = Self::from(t);
        if matches!(caller, Caller::Tenant(_)) {
            out.visible_to = None;
        }
        out
    }
}

impl From<EventType> for EventTypeOut {
    fn from(t: EventType) -> Self {
        Self {
            name: t.name,
            description: t.description,
            schema: t.schema,
            visible_to: t
                .visible_to
                .map(|ids| ids.into_iter().map(|id| id.as_str().to_owned()).collect()),
            created_at: t.created_at,
        }
    }
}

list_of!(EventTypeList, EventTypeOut);

/// An event type's name in a path: what cannot be a name names nothing.
#[derive(Debug)]
pub struct EventTypeName(pub String);

impl FromPath for EventTypeName {
    type Raw = String;

    fn from_path(raw: String) -> Result<Self, ApiError> {
        if is_valid_event_type(&raw) {
            Ok(Self(raw))
        } else {
            Err(ApiError::not_found("event type", raw))
        }
    }
}

problems! {
    NoEventType: 404 "No such event type";
    EventTypeExists: 409 "An event type of that name exists";
    InvalidEventType: 422 "Invalid fields, such as a schema that is not a JSON Schema, a `visible_to` tenant that does not exist, or a `hookgate.` name (those are hookgate's own)";
}

#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", operation_id = "create_event_type",
    request_body = CreateEventType,
    responses(
        (status = 201, description = "Registered", body = EventTypeOut),
        JsonBody, NotAdmin, EventTypeExists, InvalidEventType,
    ))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json { value: req, .. }: Json<CreateEventType>,
) -> Result<(StatusCode, axum::Json<EventTypeOut>), ApiError> {
    let mut errors = Vec::new();
    if !is_valid_event_type(&req.name) {
        errors.push(FieldError::new(
            "name",
            "dot-separated words of letters, digits, `_` and `-`, at most 255 characters",
        ));
    } else if is_operational(&req.name) {
        errors.push(FieldError::new("name", RESERVED));
    }
    super::validate::text("description", req.description.as_deref(), &mut errors);
    let validator = match &req.schema {
        None => None,
        Some(schema) => match compile(schema) {
            Ok(validator) => Some(Arc::new(validator)),
            Err(message) => {
                errors.push(FieldError::new("schema", message));
                None
            }
        },
    };
    let visible_to = match req.visible_to {
        None => None,
        Some(ids) => Some(visible_to(&state, &ids, &mut errors).await?),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let event_type = EventType {
        name: req.name,
        description: req.description,
        schema: req.schema,
        visible_to,
        created_at: super::now(),
    };
    let created = state.store.create_event_type(&event_type).await?;
    if !created {
        return Err(ApiError::Conflict {
            code: "conflict",
            detail: format!("event type {} exists", event_type.name),
        });
    }
    state.schemas.put(&event_type.name, validator);
    tracing::info!(event_type = %event_type.name, "event type registered");
    Ok((StatusCode::CREATED, axum::Json(event_type.into())))
}

#[utoipa::path(patch, path = "/v1/event-types/{name}", tag = "event-types", operation_id = "update_event_type",
    params(("name" = String, Path, description = "Event type name")),
    request_body = UpdateEventType,
    responses(
        (status = 200, description = "Updated", body = EventTypeOut),
        JsonBody, NotAdmin, NoEventType, InvalidEventType,
    ))]
pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(EventTypeName(name)): Path<EventTypeName>,
    Json { value: req, .. }: Json<UpdateEventType>,
) -> Result<axum::Json<EventTypeOut>, ApiError> {
    let found = state.store.get_event_type(&name).await?;
    let mut event_type = found.ok_or_else(|| ApiError::not_found("event type", &name))?;
    if is_operational(&name) {
        return Err(ApiError::field("name", RESERVED));
    }
    let mut errors = Vec::new();
    if let Some(description) = req.description {
        super::validate::text("description", description.as_deref(), &mut errors);
        event_type.description = description;
    }
    // `Some`: the schema changed, to this validator (`None`: no schema).
    let mut validator = None;
    if let Some(schema) = req.schema {
        validator = Some(None);
        if let Some(schema) = &schema {
            match compile(schema) {
                Ok(compiled) => validator = Some(Some(Arc::new(compiled))),
                Err(message) => errors.push(FieldError::new("schema", message)),
            }
        }
        event_type.schema = schema;
    }
    if let Some(tenants) = req.visible_to {
        event_type.visible_to = match tenants {
            None => None,
            Some(ids) => Some(visible_to(&state, &ids, &mut errors).await?),
        };
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Concurrent updates of one type: the last one wins, whole (an admin
    // call, rare; each answer shows what it wrote).
    if !state.store.update_event_type(&event_type).await? {
        return Err(ApiError::not_found("event type", &name));
    }
    if let Some(validator) = validator {
        // Other API replicas enforce it within their schema cache's TTL.
        state.schemas.put(&event_type.name, validator);
    }
    tracing::info!(event_type = %event_type.name, "event type updated");
    Ok(axum::Json(event_type.into()))
}

/// The most tenants one type may name.
const MAX_VISIBLE_TO: usize = 1_000;

/// Checks `visible_to`: existing tenants, each once (repeats are dropped).
async fn visible_to(
    state: &AppState,
    ids: &[String],
    errors: &mut Vec<FieldError>,
) -> Result<Vec<TenantId>, ApiError> {
    if ids.len() > MAX_VISIBLE_TO {
        errors.push(FieldError::new("visible_to", format!("at most {MAX_VISIBLE_TO} tenants")));
        return Ok(Vec::new());
    }
    let mut tenants: Vec<TenantId> = Vec::with_capacity(ids.len());
    for (i, raw) in ids.iter().enumerate() {
        let field = format!("visible_to/{i}");
        let Some(tenant) = TenantId::parse(raw) else {
            errors.push(FieldError::new(field, "not a tenant id (ten_…)"));
            continue;
        };
        if tenants.contains(&tenant) {
            continue;
        }
        if !state.store.tenant_exists(&tenant).await? {
            errors.push(FieldError::new(field, "no such tenant"));
            continue;
        }
        tenants.push(tenant);
    }
    Ok(tenants)
}

#[utoipa::path(get, path = "/v1/event-types", tag = "event-types", operation_id = "list_event_types",
    params(PageParams),
    responses(
        (status = 200, description = "A page of event types, by name: for a tenant key, the types it may see (the catalogue it subscribes from), without `visible_to`", body = EventTypeList),
        BadQuery,
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<EventTypeList>, ApiError> {
    let page = page.request()?;
    let (rows, scanned_to) = match &caller {
        Caller::Admin => (state.store.list_event_types(page.store_page()).await?, None),
        Caller::Tenant(tenant) => visible_page(&state, tenant, &page).await?,
    };
    let (rows, next_cursor) = page.finish(rows, |t| t.name.as_str());
    let next_cursor =
        next_cursor.or_else(|| scanned_to.map(|name| super::pagination::encode(&name)));
    let data = rows.into_iter().map(|t| EventTypeOut::for_caller(t, &caller)).collect();
    Ok(axum::Json(EventTypeList { data, next_cursor }))
}

/// The most stored pages one tenant's page of the catalogue reads.
const MAX_SCANNED_PAGES: usize = 10;

/// A page of the types `tenant` may see, and where the next page starts
/// when the scan stopped before the types ran out: stored pages are read
/// until the page is full (with the extra row that tells of a next page),
/// or the types run out, or `MAX_SCANNED_PAGES` were read (the page then
/// ends early, and its cursor goes on from the last type read).
async fn visible_page(
    state: &AppState,
    tenant: &TenantId,
    page: &super::pagination::PageRequest,
) -> Result<(Vec<EventType>, Option<String>), ApiError> {
    let wanted = page.limit() + 1;
    let mut after = page.store_page().after.map(str::to_owned);
    let mut visible = Vec::new();
    for _ in 0..MAX_SCANNED_PAGES {
        let store_page =
            crate::store::Page { after: after.as_deref(), limit: crate::store::MAX_PAGE };
        let rows = state.store.list_event_types(store_page).await?;
        let exhausted = (rows.len() as i64) < crate::store::MAX_PAGE;
        after = rows.last().map(|t| t.name.clone());
        visible.extend(rows.into_iter().filter(|t| t.is_visible_to(tenant)));
        if visible.len() >= wanted || exhausted {
            visible.truncate(wanted);
            return Ok((visible, None));
        }
    }
    Ok((visible, after))
}

#[utoipa::path(get, path = "/v1/event-types/{name}", tag = "event-types", operation_id = "get_event_type",
    params(("name" = String, Path, description = "Event type name")),
    responses(
        (status = 200, description = "The event type (for a tenant key, one it may see, without `visible_to`)", body = EventTypeOut),
        NoEventType,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(EventTypeName(name)): Path<EventTypeName>,
) -> Result<axum::Json<EventTypeOut>, ApiError> {
    let event_type = state
        .store
        .get_event_type(&name)
        .await?
        .filter(|t| match &caller {
            Caller::Admin => true,
            Caller::Tenant(tenant) => t.is_visible_to(tenant),
        })
        .ok_or_else(|| ApiError::not_found("event type", &name))?;
    Ok(axum::Json(EventTypeOut::for_caller(event_type, &caller)))
}

/// Checks that `schema` is a JSON Schema and compiles it.
fn compile(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema is an object or a boolean".to_owned());
    }
    let text = serde_json::to_string(schema).unwrap_or_default();
    if text.len() > 64 * MAX_TEXT_LEN {
        return Err("at most 64 KiB".to_owned());
    }
    if text.contains("\\u0000") {
        return Err(super::validate::NUL_MESSAGE.to_owned());
    }
    jsonschema::meta::validate(schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    jsonschema::validator_for(schema).map_err(|e| format!("not a usable JSON Schema: {e}"))
}

type Entry = (Instant, Option<Arc<jsonschema::Validator>>);

/// Compiled schemas by event type name, each trusted for `SCHEMA_TTL`.
#[derive(Debug, Default)]
pub struct SchemaCache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl SchemaCache {
    fn put(&self, name: &str, validator: Option<Arc<jsonschema::Validator>>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
            entries.insert(name.to_owned(), (Instant::now(), validator));
        }
    }

    /// The validator for an event type; `None` when it has no schema or is
    /// not registered.
    pub async fn validator(
        &self,
        store: &dyn Store,
        name: &str,
    ) -> Result<Option<Arc<jsonschema::Validator>>, ApiError> {
        let cached = self.entries.read().ok().and_then(|entries| entries.get(name).cloned());
        if let Some((at, validator)) = cached {
            if at.elapsed() < SCHEMA_TTL {
                return Ok(validator);
            }
        }
        let event_type = store.get_event_type(name).await?;
        let validator = match event_type.and_then(|t| t.schema) {
            // Stored schemas were checked on create; one that no longer
            // compiles (a newer library) must not block publishing.
            Some(schema) => match jsonschema::validator_for(&schema) {
                Ok(validator) => Some(Arc::new(validator)),
                Err(error) => {
                    tracing::warn!(event_type = name, %error, "stored schema does not compile; not enforced");
                    None
                }
            },
            None => None,
        };
        self.put(name, validator.clone());
        Ok(validator)
    }
}

/// Validates `data` of an event; errors name `{prefix}/data/<json path>`.
pub fn check_data(
    validator: &jsonschema::Validator,
    data: &serde_json::value::RawValue,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data.get()) else {
        errors.push(FieldError::new(format!("{prefix}data"), "not JSON"));
        return;
    };
    for error in validator.iter_errors(&value).take(20) {
        errors.push(FieldError::new(
            format!("{prefix}data{}", error.instance_path()),
            error.to_string(),
        ));
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get, update))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_schema_number_reads_back_as_postgresql_writes_it() {
        // JSONB keeps numbers as exact decimals: `1.7976931348623157e308`
        // (f64::MAX as written) comes back as 309 digits. Read imprecisely,
        // they overflow, and every list of event types answered 500.
        let stored = format!("{{\"maximum\":17976931348623157{}}}", "0".repeat(292));
        let schema: serde_json::Value = serde_json::from_str(&stored).expect("reads back");
        assert_eq!(schema["maximum"].as_f64(), Some(f64::MAX));
    }
}
