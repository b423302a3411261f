//! Who is calling: the bearer token decides. Admin tokens come from the
//! configuration; tenant API keys (`hgk_…`) are looked up by their hash,
//! unless the token cannot be a key or its address failed too often of late
//! (`quota::Limiters`): neither costs a database query.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use super::AppState;
use crate::domain::tenant::{hash_api_key, API_KEY_PREFIX};
use crate::domain::{Scope, TenantId};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(TenantId),
}

/// Why a caller cannot act on the tenant it named.
#[derive(Debug)]
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

    /// Whose resources a caller sees: an admin every tenant's, a tenant
    /// key its own tenant's.
    pub fn scope(&self) -> Scope<'_> {
        match self {
            Self::Admin => Scope::All,
            Self::Tenant(tenant) => Scope::Tenant(tenant),
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

/// A caller the portal vouches for (`crate::portal::bridge`): its session
/// was checked there. Only code in this process can put it on a request (as
/// an extension), so no client can send one.
#[derive(Debug, Clone)]
pub(crate) struct Delegated(pub Caller);

/// A caller and, for a tenant key, the key's hash: what the per-key
/// publish rate counts by.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub key_hash: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Authenticated::from_request_parts(parts, state).await?.caller)
    }
}

/// An admin caller: for operations only admins may call. A tenant key
/// answers 403, before anything of the request is looked at.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::from_request_parts(parts, state).await?.require_admin()?;
        Ok(Self)
    }
}

/// The length of a tenant key: the prefix and 64 hex digits.
const API_KEY_LEN: usize = API_KEY_PREFIX.len() + 64;

/// Whether a token could be a key hookgate made, checked before it costs
/// a database lookup.
fn is_well_formed_key(token: &str) -> bool {
    token.len() == API_KEY_LEN
        && token.strip_prefix(API_KEY_PREFIX).is_some_and(|hex| {
            hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Delegated(caller)) = parts.extensions.get::<Delegated>() {
            return Ok(Self { caller: caller.clone(), key_hash: None });
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        // Digests compared in constant time, every token's, so that timing
        // tells neither a token nor its length.
        let sent = Sha256::digest(token.as_bytes());
        let is_admin = state.admin_tokens.iter().fold(false, |found, known| {
            found | bool::from(Sha256::digest(known.as_bytes()).ct_eq(&sent))
        });
        if is_admin {
            return Ok(Self { caller: Caller::Admin, key_hash: None });
        }
        // Without the peer (a router served without connect info) every
        // caller shares one address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |info| info.0.ip());
        let metrics = &state.metrics;
        if let Err(limited) = state.limiters.auth_allowed(peer) {
            metrics.auth_failure("limited");
            return Err(limited);
        }
        if !is_well_formed_key(token) {
            metrics.auth_failure("malformed");
            state.limiters.auth_failed(peer);
            return Err(ApiError::Unauthorized);
        }
        let key_hash = hash_api_key(token);
        metrics.api_key_lookups.inc();
        match state.store.tenant_for_key(&key_hash).await? {
            Some(tenant) => Ok(Self { caller: Caller::Tenant(tenant), key_hash: Some(key_hash) }),
            None => {
                metrics.auth_failure("unknown_key");
                state.limiters.auth_failed(peer);
                Err(ApiError::Unauthorized)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tenant::NewApiKey;

    #[test]
    fn only_keys_of_our_shape_are_looked_up() {
        assert!(is_well_formed_key(&NewApiKey::generate().text));
        assert!(!is_well_formed_key("hgk_short"));
        assert!(!is_well_formed_key(&format!("hgk_{}", "G".repeat(64))));
        assert!(!is_well_formed_key(&format!("hgk_{}", "A".repeat(64))), "lowercase hex only");
        assert!(!is_well_formed_key(&format!("xyz_{}", "a".repeat(64))));
        assert!(!is_well_formed_key(&format!("hgk_{}", "a".repeat(65))));
    }
}
