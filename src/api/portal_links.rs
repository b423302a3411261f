//! `POST /v1/tenants/{id}/portal-links` (admin): a one-time link into the
//! tenant's portal (`crate::portal`). The token is shown once, in the
//! answer; only its hash is stored, and opening the link uses it up.
//! `DELETE /v1/tenants/{id}/portal-access` withdraws what was handed out.

use axum::extract::State;
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{OptionalJson, Path};
use super::problem::ApiError;
use super::responses::{Invalid, JsonErrors, NoTenant, NotAdmin};
use super::AppState;
use crate::domain::portal::{PortalLink, PortalSecret};
use crate::domain::TenantId;

/// A link's lifetime unless the request names one, and the bounds of one.
const DEFAULT_LIFETIME_SECS: u32 = 15 * 60;
const MIN_LIFETIME_SECS: u32 = 60;
const MAX_LIFETIME_SECS: u32 = 7 * 24 * 3600;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalLink {
    /// The portal shows everything and changes nothing (default: false).
    #[serde(default)]
    read_only: bool,
    /// Seconds until the link expires unused, 60 to 604800 (default: 900).
    #[schema(minimum = 60, maximum = 604800, example = 900)]
    expires_in: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLinkOut {
    /// Opens the tenant's portal once; hand it to the tenant, not to a log.
    #[schema(example = "https://hooks.example.com/portal/login?token=hgp_…")]
    url: String,
    tenant_id: String,
    read_only: bool,
    expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/portal-links", tag = "tenants", operation_id = "create_portal_link",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    request_body(content = Option<CreatePortalLink>, description = "Optional"),
    responses(
        (status = 201, description = "Created: a one-time link into the tenant's portal", body = PortalLinkOut),
        JsonErrors, NotAdmin, NoTenant, Invalid,
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(tenant_id): Path<TenantId>,
    OptionalJson(req): OptionalJson<CreatePortalLink>,
) -> Result<(StatusCode, axum::Json<PortalLinkOut>), ApiError> {
    admin_of_existing(&state, &caller, &tenant_id).await?;
    let lifetime = req.expires_in.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !(MIN_LIFETIME_SECS..=MAX_LIFETIME_SECS).contains(&lifetime) {
        return Err(ApiError::field(
            "expires_in",
            format!("{MIN_LIFETIME_SECS} to {MAX_LIFETIME_SECS} seconds"),
        ));
    }
    let base = portal_base(state.public_url.as_deref(), &headers)?;
    let now = super::now();
    let link = PortalLink {
        tenant_id,
        read_only: req.read_only,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(i64::from(lifetime)),
    };
    let token = PortalSecret::link_token();
    state.store.create_portal_link(&token.hash, &link).await?;
    tracing::info!(tenant_id = %link.tenant_id, read_only = link.read_only, "portal link created");
    Ok((
        StatusCode::CREATED,
        axum::Json(PortalLinkOut {
            url: format!("{base}/portal/login?token={}", token.text),
            tenant_id: link.tenant_id.as_str().to_owned(),
            read_only: link.read_only,
            expires_at: link.expires_at,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/portal-access", tag = "tenants", operation_id = "revoke_portal_access",
    params(("id" = String, Path, description = "Tenant id (`ten_…`)")),
    responses(
        (status = 204, description = "The tenant's portal sessions are ended and its unused links void (its keys are untouched)"),
        NotAdmin, NoTenant,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<TenantId>,
) -> Result<StatusCode, ApiError> {
    admin_of_existing(&state, &caller, &tenant_id).await?;
    let revoked = state.store.revoke_portal_access(&tenant_id).await?;
    tracing::info!(tenant_id = %tenant_id, revoked, "portal access revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Portal access is the admins' to give: like keys, another tenant's id is
/// not there for a tenant key (its own answers 403), nor is a tenant that
/// does not exist.
async fn admin_of_existing(
    state: &AppState,
    caller: &Caller,
    tenant: &TenantId,
) -> Result<(), ApiError> {
    if matches!(caller, Caller::Tenant(own) if own != tenant) {
        return Err(ApiError::not_found("tenant", tenant));
    }
    caller.require_admin()?;
    if !state.store.tenant_exists(tenant).await? {
        return Err(ApiError::not_found("tenant", tenant));
    }
    Ok(())
}

/// Where the portal is reached: the configured public URL, or else the
/// host the admin called (over plain HTTP: behind a TLS proxy, configure
/// `HOOKGATE_PUBLIC_URL`).
fn portal_base(public_url: Option<&str>, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_host(h))
        .ok_or_else(|| ApiError::field("Host", "a portal link needs a host name: send a valid `Host` header, or configure HOOKGATE_PUBLIC_URL"))?;
    Ok(format!("http://{host}"))
}

/// A host and optional port, nothing that could change the URL's meaning.
fn is_host(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(revoke))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_names_the_configured_url_or_else_the_host_called() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(portal_base(None, &headers).unwrap(), "http://127.0.0.1:8080");
        assert_eq!(
            portal_base(Some("https://hooks.example.com/"), &headers).unwrap(),
            "https://hooks.example.com"
        );
        headers.insert(HOST, "evil.example/path?x=".parse().unwrap());
        assert!(portal_base(None, &headers).is_err());
        assert!(portal_base(None, &HeaderMap::new()).is_err());
        assert!(is_host("[::1]:8080"));
    }
}
