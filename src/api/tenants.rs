//! `/v1/tenants` (admin): tenants and their API keys. A key is shown once,
//! in the answer that creates it; only its hash is stored.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Caller};
use super::extract::{Json, OptionalJson, Path, Query};
use super::pagination::{list_of, PageParams};
use super::problem::ApiError;
use super::responses::{problems, BadQuery, Invalid, JsonBody, JsonErrors, NoTenant, NotAdmin};
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

problems! {
    NoOwnTenant: 404 "No such tenant (or another tenant's)";
    NoKey: 404 "No such tenant or key";
}

/// Keys are managed by admins; another tenant's id is 404 for a tenant
/// key (its existence is not told), its own is 403.
fn admin_of(caller: &Caller, id: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Tenant(own) if own.as_str() != id => Err(ApiError::not_found("tenant", id)),
        _ => caller.require_admin(),
    }
}

async fn require_tenant(state: &AppState, id: &TenantId) -> Result<(), ApiError> {
    if state.store.tenant_exists(id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("tenant", id))
    }
}

fn no_key(tenant: &str, key: &str) -> ApiError {
    ApiError::NotFound(format!("no key {key} for tenant {tenant}"))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "create_tenant",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantOut),
        JsonBody, NotAdmin, Invalid,
    ))]
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json { value: req, .. }: Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantOut>), ApiError> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN || super::validate::has_nul(name) {
        return Err(ApiError::field(
            "name",
            format!("1 to {MAX_NAME_LEN} bytes, not only spaces, without NUL"),
        ));
    }
    let tenant =
        Tenant { id: TenantId::generate(), name: name.to_owned(), created_at: super::now() };
    state.store.create_tenant(&tenant).await?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant.into())))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "list_tenants",
    params(PageParams),
    responses(
        (status = 200, description = "A page of tenants", body = TenantList),
        BadQuery, NotAdmin,
    ))]
pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<TenantList>, ApiError> {
    let page = page.request()?;
    let rows = state.store.list_tenants(page.store_page()).await?;
    let (rows, next_cursor) = page.finish(rows, |t| t.id.as_str());
    Ok(axum::Json(TenantList { data: rows.into_iter().map(Into::into).collect(), next_cursor }))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "get_tenant",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    responses(
        (status = 200, description = "The tenant (a tenant key reads its own)", body = TenantOut),
        NoOwnTenant,
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<TenantId>,
) -> Result<axum::Json<TenantOut>, ApiError> {
    // A tenant key may read its own tenant; any other is not there for it.
    if matches!(&caller, Caller::Tenant(own) if *own != id) {
        return Err(ApiError::not_found("tenant", &id));
    }
    let tenant = state.store.get_tenant(&id).await?;
    Ok(axum::Json(tenant.ok_or_else(|| ApiError::not_found("tenant", &id))?.into()))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/keys", tag = "tenants", operation_id = "create_api_key",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    request_body(content = Option<CreateApiKey>, description = "Optional"),
    responses(
        (status = 201, description = "Created; `key` is shown once", body = ApiKeyOut),
        JsonErrors, NotAdmin, NoTenant, Invalid,
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<TenantId>,
    OptionalJson(req): OptionalJson<CreateApiKey>,
) -> Result<(StatusCode, axum::Json<ApiKeyOut>), ApiError> {
    admin_of(&caller, tenant_id.as_str())?;
    let mut errors = Vec::new();
    super::validate::text("name", req.name.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    require_tenant(&state, &tenant_id).await?;
    let secret = NewApiKey::generate();
    let key = ApiKey {
        id: ApiKeyId::generate(),
        tenant_id,
        name: req.name,
        prefix: secret.shown_prefix(),
        created_at: super::now(),
        revoked_at: None,
    };
    state.store.create_api_key(&key, &secret.hash).await?;
    tracing::info!(tenant_id = %key.tenant_id, key_id = %key.id, "API key created");
    Ok((StatusCode::CREATED, axum::Json(ApiKeyOut::new(key, Some(secret.text)))))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/keys", tag = "tenants", operation_id = "list_api_keys",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)"), PageParams),
    responses(
        (status = 200, description = "A page of the tenant's keys (prefix only), revoked ones included", body = ApiKeyList),
        BadQuery, NotAdmin, NoTenant,
    ))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<TenantId>,
    Query(page): Query<PageParams>,
) -> Result<axum::Json<ApiKeyList>, ApiError> {
    admin_of(&caller, tenant_id.as_str())?;
    let page = page.request()?;
    require_tenant(&state, &tenant_id).await?;
    let rows = state.store.list_api_keys(&tenant_id, page.store_page()).await?;
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
        NotAdmin, NoKey,
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    // Read as text: whose key it is decides 403 or 404 before its form does.
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin_of(&caller, &id)?;
    let tenant_id = TenantId::parse(&id).ok_or_else(|| no_key(&id, &key_id))?;
    let parsed = ApiKeyId::parse(&key_id).ok_or_else(|| no_key(&id, &key_id))?;
    if !state.store.revoke_api_key(&tenant_id, &parsed, super::now()).await? {
        return Err(no_key(&id, &key_id));
    }
    tracing::info!(tenant_id = %tenant_id, key_id = %parsed, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}
