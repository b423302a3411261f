//! Tenants (the third parties that own subscriptions), their API keys, and
//! the event types admins register.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{ApiKeyId, TenantId};

/// Tenant API keys start with this, so a key pasted somewhere is recognisable.
pub const API_KEY_PREFIX: &str = "hgk_";
/// How much of a key lists show: the prefix and a few characters.
const SHOWN_LEN: usize = 12;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    /// The first characters of the key, to tell keys apart in lists.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly made key: the text is shown once; only its hash is stored.
pub struct NewApiKey {
    pub text: String,
    pub hash: String,
}

impl NewApiKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let text = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
        let hash = hash_api_key(&text);
        Self { text, hash }
    }

    pub fn shown_prefix(&self) -> String {
        self.text[..SHOWN_LEN].to_owned()
    }
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewApiKey(***)")
    }
}

/// The stored form of a key: hex SHA-256. The key has 256 random bits, so a
/// fast hash is enough; looking it up by hash needs no constant-time compare.
pub fn hash_api_key(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whose rows a store call may read or write: every tenant's, or one
/// tenant's (another tenant's rows are then not found). Built from the
/// caller (`api::auth::Caller::scope`), so that "every tenant" is a choice
/// someone made, never an absent value; the dispatcher acts for the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    Tenant(&'a TenantId),
}

impl<'a> Scope<'a> {
    /// The one tenant this scope is held to; `None` for `All`.
    pub fn tenant(self) -> Option<&'a TenantId> {
        match self {
            Self::All => None,
            Self::Tenant(tenant) => Some(tenant),
        }
    }
}

/// A registered event type; `schema`, when set, is the JSON Schema that a
/// published event's `data` must satisfy.
#[derive(Debug, Clone)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    pub schema: Option<serde_json::Value>,
    /// The only tenants that may see it; `None`: every tenant.
    pub visible_to: Option<Vec<TenantId>>,
    pub created_at: DateTime<Utc>,
}

impl EventType {
    /// Whether `tenant` may see (and subscribe to) this type.
    pub fn is_visible_to(&self, tenant: &TenantId) -> bool {
        self.visible_to.as_ref().is_none_or(|tenants| tenants.contains(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let a = NewApiKey::generate();
        let b = NewApiKey::generate();
        assert!(a.text.starts_with(API_KEY_PREFIX));
        assert_ne!(a.text, b.text);
        assert_eq!(a.hash, hash_api_key(&a.text));
        assert!(!a.hash.contains(&a.text[4..]));
        assert!(a.text.starts_with(&a.shown_prefix()));
        assert_eq!(format!("{a:?}"), "NewApiKey(***)");
    }
}
