//! Who is calling: the bearer token decides. Admin tokens come from the
//! configuration; tenant API keys (`hgk_…`) are looked up by their hash.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use super::AppState;
use crate::domain::tenant::{hash_api_key, API_KEY_PREFIX};
use crate::domain::TenantId;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(TenantId),
}

/// Why a caller cannot act on the tenant it named.
pub enum TenantChoice {
    /// Not a tenant id at all.
    Malformed,
    /// Another tenant's (for a tenant key): answered like a missing one.
    NotVisible,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Tenant(_) => Err(ApiError::Forbidden),
        }
    }

    /// The tenant whose resources a caller sees; `None`: all (admin).
    pub fn scope(&self) -> Option<&TenantId> {
        match self {
            Self::Admin => None,
            Self::Tenant(tenant) => Some(tenant),
        }
    }

    /// Whose `Idempotency-Key`s these are.
    pub fn idempotency_scope(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::Tenant(tenant) => tenant.as_str(),
        }
    }

    /// The tenant a create or list acts on: a tenant key's own; for an
    /// admin the one named, or the built-in default tenant.
    pub fn acting_tenant(&self, requested: Option<&str>) -> Result<TenantId, TenantChoice> {
        let parsed =
            requested.map(|raw| TenantId::parse(raw).ok_or(TenantChoice::Malformed)).transpose()?;
        match (self, parsed) {
            (Self::Admin, None) => Ok(TenantId::default_tenant()),
            (Self::Admin, Some(tenant)) => Ok(tenant),
            (Self::Tenant(own), None) => Ok(own.clone()),
            (Self::Tenant(own), Some(tenant)) if *own == tenant => Ok(tenant),
            (Self::Tenant(_), Some(_)) => Err(TenantChoice::NotVisible),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        // Constant-time, and every token is compared, so timing tells nothing.
        let is_admin = state.admin_tokens.iter().fold(false, |found, known| {
            found | bool::from(known.as_bytes().ct_eq(token.as_bytes()))
        });
        if is_admin {
            return Ok(Caller::Admin);
        }
        if !token.starts_with(API_KEY_PREFIX) || token.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        state
            .store
            .tenant_for_key(&hash_api_key(token))
            .await
            .map_err(ApiError::store)?
            .map(Caller::Tenant)
            .ok_or(ApiError::Unauthorized)
    }
}
