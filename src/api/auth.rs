//! Who is calling: the bearer token decides.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use super::AppState;

/// The authenticated caller. Tenant API keys join in with the tenants API.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
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
            Ok(Caller::Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
