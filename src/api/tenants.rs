//! `/v1/tenants` (admin): tenants and their API keys. A key is shown once,
//! in the answer that creates it; only its hash is stored.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::extract::{Json, OptionalJson, Path, Query};
use super::pagination::{list_of, PageRequest};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::domain::{ApiKey, ApiKeyId, NewApiKey, Tenant, TenantId};

const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// A name for people, 1 to 255 bytes.
    #[schema(example = "Acme Corp")]
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantOut {
    #[schema(example = "ten_01jd0000000000000000000000")]
    id: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self { id: t.id.as_str().to_owned(), name: t.name, created_at: t.created_at }
    }
}

list_of!(TenantList, TenantOut);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, up to 1024 bytes.
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyOut {
    #[schema(example = "key_01jd0000000000000000000000")]
    id: String,
    tenant_id: String,
    name: Option<String>,
    /// The first characters of the key, to tell keys apart.
    #[schema(example = "hgk_1a2b3c4d")]
    prefix: String,
    /// The key itself: only in the answer to create, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyOut {
    fn new(k: ApiKey, key: Option<String>) -> Self {
        Self {
            id: k.id.as_str().to_owned(),
            tenant_id: k.tenant_id.as_str().to_owned(),
            name: k.name,
            prefix: k.prefix,
            key,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

list_of!(ApiKeyList, ApiKeyOut);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Keys are managed by admins; another tenant's id is 404 for a tenant
/// key (its existence is not told), its own is 403.
fn admin_of(caller: &Caller, id: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Tenant(own) if own.as_str() != id => {
            Err(ApiError::NotFound(format!("no tenant {id}")))
        }
        _ => caller.require_admin(),
    }
}

async fn existing_tenant(state: &AppState, id: &str) -> Result<TenantId, ApiError> {
    let not_found = || ApiError::NotFound(format!("no tenant {id}"));
    let tenant = TenantId::parse(id).ok_or_else(not_found)?;
    if state.store.tenant_exists(&tenant).await.map_err(ApiError::store)? {
        Ok(tenant)
    } else {
        Err(not_found())
    }
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "create_tenant",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantOut),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json { value: req, .. }: Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantOut>), ApiError> {
    caller.require_admin()?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN || super::validate::has_nul(name) {
        return Err(ApiError::field(
            "name",
            format!("1 to {MAX_NAME_LEN} bytes, not only spaces, without NUL"),
        ));
    }
    let tenant =
        Tenant { id: TenantId::generate(), name: name.to_owned(), created_at: super::now() };
    state.store.create_tenant(&tenant).await.map_err(ApiError::store)?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant.into())))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "list_tenants",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tenants", body = TenantList),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<TenantList>, ApiError> {
    caller.require_admin()?;
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let rows = state.store.list_tenants(page.store_page()).await.map_err(ApiError::store)?;
    let (rows, next_cursor) = page.finish(rows, |t| t.id.as_str());
    Ok(axum::Json(TenantList { data: rows.into_iter().map(Into::into).collect(), next_cursor }))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "get_tenant",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    responses(
        (status = 200, description = "The tenant (a tenant key reads its own)", body = TenantOut),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantOut>, ApiError> {
    // A tenant key may read its own tenant; any other is not there for it.
    if let Caller::Tenant(own) = &caller {
        if own.as_str() != id {
            return Err(ApiError::NotFound(format!("no tenant {id}")));
        }
    }
    let not_found = || ApiError::NotFound(format!("no tenant {id}"));
    let tenant_id = TenantId::parse(&id).ok_or_else(not_found)?;
    let tenant =
        state.store.get_tenant(&tenant_id).await.map_err(ApiError::store)?.ok_or_else(not_found)?;
    Ok(axum::Json(tenant.into()))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "tenants", operation_id = "create_api_key",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    request_body(content = Option<CreateApiKey>, description = "Optional"),
    responses(
        (status = 201, description = "Created; `key` is shown once", body = ApiKeyOut),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<ApiKeyOut>), ApiError> {
    admin_of(&caller, &id)?;
    let mut errors = Vec::new();
    super::validate::text("name", req.name.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let tenant_id = existing_tenant(&state, &id).await?;
    let secret = NewApiKey::generate();
    let key = ApiKey {
        id: ApiKeyId::generate(),
        tenant_id,
        name: req.name,
        prefix: secret.shown_prefix(),
        created_at: super::now(),
        revoked_at: None,
    };
    state.store.create_api_key(&key, &secret.hash).await.map_err(ApiError::store)?;
    tracing::info!(tenant_id = %key.tenant_id, key_id = %key.id, "API key created");
    Ok((StatusCode::CREATED, axum::Json(ApiKeyOut::new(key, Some(secret.text)))))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "tenants", operation_id = "list_api_keys",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)"), ListParams),
    responses(
        (status = 200, description = "A page of the tenant's keys (prefix only), revoked ones included", body = ApiKeyList),
        (status = 400, description = "Bad query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<ApiKeyList>, ApiError> {
    admin_of(&caller, &id)?;
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let tenant_id = existing_tenant(&state, &id).await?;
    let rows =
        state.store.list_api_keys(&tenant_id, page.store_page()).await.map_err(ApiError::store)?;
    let (rows, next_cursor) = page.finish(rows, |k| k.id.as_str());
    Ok(axum::Json(ApiKeyList {
        data: rows.into_iter().map(|k| ApiKeyOut::new(k, None)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/keys/{key_id}", tag = "tenants", operation_id = "revoke_api_key",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)"), ("key_id" = String, Path, description = "Key id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked: the key no longer authenticates (revoking again is fine)"),
        (status = 401, description = "No or bad token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant or key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin_of(&caller, &id)?;
    let not_found = || ApiError::NotFound(format!("no key {key_id} for tenant {id}"));
    let tenant_id = TenantId::parse(&id).ok_or_else(not_found)?;
    let parsed = ApiKeyId::parse(&key_id).ok_or_else(not_found)?;
    let revoked = state
        .store
        .revoke_api_key(&tenant_id, &parsed, super::now())
        .await
        .map_err(ApiError::store)?;
    if !revoked {
        return Err(not_found());
    }
    tracing::info!(tenant_id = %tenant_id, key_id = %parsed, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
