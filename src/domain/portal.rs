//! The consumer portal's credentials: one-time links an admin hands a tenant
//! and the browser sessions they open. Both are 256 random bits shown once;
//! only their SHA-256 is stored, as for API keys.

use chrono::{DateTime, Utc};
use rand::RngCore;

use super::tenant::hash_api_key;
use super::TenantId;

/// A link's token starts with this, a session's cookie with `hgs_`.
pub const LINK_TOKEN_PREFIX: &str = "hgp_";
const SESSION_PREFIX: &str = "hgs_";

/// What a portal session may see and do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalScope {
    /// One tenant's portal; `read_only` refuses every change.
    Tenant { tenant: TenantId, read_only: bool },
    /// The admin view, opened with the admin token of this SHA-256 (hex):
    /// it ends when that token is no longer configured.
    Admin { token_hash: String },
}

/// A stored link: what redeeming it opens.
#[derive(Debug, Clone)]
pub struct PortalLink {
    pub tenant_id: TenantId,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A stored session, found by the hash of its cookie.
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub scope: PortalScope,
    /// Every form of the session carries it back (the synchronizer token).
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A secret made for a link, a session or a CSRF token: its text (shown
/// once) and the hash that is stored.
pub struct PortalSecret {
    pub text: String,
    pub hash: String,
}

impl PortalSecret {
    pub fn link_token() -> Self {
        Self::with_prefix(LINK_TOKEN_PREFIX)
    }

    pub fn session() -> Self {
        Self::with_prefix(SESSION_PREFIX)
    }

    fn with_prefix(prefix: &str) -> Self {
        let text = format!("{prefix}{}", random_hex());
        let hash = hash_secret(&text);
        Self { text, hash }
    }
}

impl std::fmt::Debug for PortalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortalSecret(***)")
    }
}

/// 256 random bits as hex: a CSRF token, or the body of a secret.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a link token or session cookie.
pub fn hash_secret(text: &str) -> String {
    hash_api_key(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_prefixed_and_stored_only_by_their_hash() {
        let a = PortalSecret::link_token();
        let b = PortalSecret::link_token();
        assert!(a.text.starts_with(LINK_TOKEN_PREFIX));
        assert_eq!(a.text.len(), LINK_TOKEN_PREFIX.len() + 64);
        assert_ne!(a.text, b.text);
        assert_eq!(a.hash, hash_secret(&a.text));
        assert!(!a.hash.contains(&a.text[4..]));
        assert!(PortalSecret::session().text.starts_with("hgs_"));
        assert_eq!(format!("{a:?}"), "PortalSecret(***)");
    }
}
