//! The store: what must be queried (tenants, subscriptions, attempts, …).
//!
//! API handlers write subscriptions → the version counter orders the changes →
//! dispatchers poll `subscription_changes` into their cache. Dispatchers hand
//! attempts to `AttemptLog`, which writes them in batches off the delivery path.
//!
//! One interface, two backends with the same SQL: PostgreSQL (production and
//! the test suite) and SQLite (`hookgate dev`).

mod attempt_log;
mod dead_letters;
mod postgres;
pub mod resealing;
pub mod retention;
mod rows;
pub mod sealing;
mod sql;
mod sql_api;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use attempt_log::AttemptLog;
pub use dead_letters::{replay_claim, DeadLetterStore, Purgeable};
pub use resealing::{ResealBatch, SecretStore};
pub use sealing::{SealError, SecretKeys};

/// The largest page a list answers.
pub const MAX_PAGE: i64 = 200;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use chrono::{DateTime, Utc};

use crate::domain::{
    ApiKey, ApiKeyId, Attempt, CircuitRecord, EventType, Subscription, SubscriptionId,
    SubscriptionPatch, SubscriptionStatus, Tenant, TenantId,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite:…")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    #[error("subscription {subscription}: a secret {source}")]
    Secret {
        subscription: String,
        #[source]
        source: SealError,
    },
    /// Its secrets did not open when it was read: what was read is not
    /// written back.
    #[error(
        "subscription {0}: its secrets cannot be decrypted with the configured HOOKGATE_SECRET_KEY"
    )]
    Unreadable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The database refused what was sent (a constraint, a bad value), as
    /// opposed to being unreachable: sending it again will not help.
    pub fn is_data_error(&self) -> bool {
        matches!(self, Self::Query(sqlx::Error::Database(_)))
    }

    /// The row itself is refused (a constraint, a value out of range), as
    /// opposed to the database being busy, locked or failing over: only
    /// then is writing it again pointless.
    pub fn is_refused_row(&self) -> bool {
        let Self::Query(sqlx::Error::Database(error)) = self else { return false };
        if !matches!(error.kind(), sqlx::error::ErrorKind::Other) {
            return true;
        }
        // PostgreSQL's data exceptions (class 22); SQLite's TOOBIG and MISMATCH.
        error.code().is_some_and(|code| code.starts_with("22") || code == "18" || code == "20")
    }
}

/// A subscription as it changed, for dispatcher caches.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub version: i64,
    pub subscription: Subscription,
    pub deleted: bool,
}

/// An event type as the dispatchers need it, in the order types were made.
#[derive(Debug, Clone)]
pub struct EventTypeChange {
    pub version: i64,
    pub name: String,
    /// The only tenants that may see it; `None`: every tenant.
    pub visible_to: Option<Vec<TenantId>>,
}

/// How a write guarded by a version went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded<T> {
    Written(T),
    /// No such live subscription (for the tenant asked).
    NotFound,
    /// The subscription is at `current`, not the version the write expected;
    /// nothing was written.
    Stale {
        current: i64,
    },
    /// A rotation to the secret it has already; nothing was written.
    SameSecret,
}

/// A secret rotation: `secret` becomes current; the replaced one keeps
/// signing until `grace_ends` (`None`: not at all).
#[derive(Debug, Clone, Copy)]
pub struct SecretRotation<'a> {
    pub secret: &'a str,
    pub grace_ends: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Which attempts to list; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter<'a> {
    pub tenant: Option<&'a TenantId>,
    pub subscription: Option<&'a SubscriptionId>,
    pub event_id: Option<&'a str>,
}

/// A page request: rows with an id (or name) above `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// The stored state of an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    /// The saved answer; `None` while the first request is still at work.
    pub response: Option<(u16, String)>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait Store: DeadLetterStore + SecretStore + Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    async fn migrate(&self) -> Result<()>;

    async fn tenant_exists(&self, id: &TenantId) -> Result<bool>;

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;

    async fn list_tenants(&self, page: Page<'_>) -> Result<Vec<Tenant>>;

    /// Stores a key by the hash of its text.
    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()>;

    /// A tenant's keys, revoked ones included, by id.
    async fn list_api_keys(&self, tenant: &TenantId, page: Page<'_>) -> Result<Vec<ApiKey>>;

    /// Answers false when the tenant has no such key (revoking twice is fine).
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// The tenant of an unrevoked key with this hash.
    async fn tenant_for_key(&self, key_hash: &str) -> Result<Option<TenantId>>;

    /// Answers the version it was stored with.
    async fn create_subscription(&self, subscription: &Subscription) -> Result<i64>;

    /// Like `create_subscription`, unless its tenant has `max_per_tenant`
    /// live subscriptions already (`None`: nothing written). Concurrent
    /// creates are counted one after the other.
    async fn create_subscription_within(
        &self,
        subscription: &Subscription,
        max_per_tenant: u32,
    ) -> Result<Option<i64>>;

    /// The version of the last subscription write committed.
    async fn subscription_version(&self) -> Result<i64>;

    /// Live (not deleted) subscriptions with a version above `after` up to
    /// `upto`, oldest first, at most `limit`: a fresh dispatcher's first
    /// load, before it follows `subscription_changes` from `upto`.
    async fn live_subscriptions(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionChange>>;

    /// Sets a subscription's status (and why, for `disabled`), and nothing else.
    async fn set_subscription_status(
        &self,
        id: &SubscriptionId,
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<()>;

    /// Disables a subscription whose endpoint answered 410 Gone, unless it
    /// was disabled already or its URL is no longer `url` (changed since
    /// that endpoint answered). Writes only the status, its reason and the
    /// version; answers whether it disabled.
    async fn disable_gone(
        &self,
        id: &SubscriptionId,
        url: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// `tenant: None` looks across tenants (admin); otherwise another
    /// tenant's subscription is not found.
    async fn get_subscription(
        &self,
        tenant: Option<&TenantId>,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>>;

    /// A tenant's live subscriptions by id, optionally of one status.
    async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        status: Option<SubscriptionStatus>,
        page: Page<'_>,
    ) -> Result<Vec<Subscription>>;

    /// Writes the columns the patch names (and a new version) in one
    /// statement, only while the subscription is at `expected` (when
    /// given); answers the subscription as it is after the write.
    async fn patch_subscription(
        &self,
        tenant: Option<&TenantId>,
        id: &SubscriptionId,
        patch: &SubscriptionPatch,
        expected: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<Guarded<Subscription>>;

    /// Rotates the secret in one transaction that reads the current secrets
    /// and writes the new ones, so that no concurrent write comes between;
    /// only while the subscription is at `expected` (when given).
    async fn rotate_subscription_secret(
        &self,
        tenant: Option<&TenantId>,
        id: &SubscriptionId,
        rotation: SecretRotation<'_>,
        expected: Option<i64>,
    ) -> Result<Guarded<Subscription>>;

    /// Soft-deletes with a new version, so dispatchers see it go; only
    /// while the subscription is at `expected` (when given). `tenant: None`
    /// looks across tenants.
    async fn delete_subscription(
        &self,
        tenant: Option<&TenantId>,
        id: &SubscriptionId,
        expected: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<Guarded<()>>;

    /// False when an event type of that name exists.
    async fn create_event_type(&self, event_type: &EventType) -> Result<bool>;

    /// Rewrites an event type's description, schema and audience (the name
    /// and creation time stay) and moves it to a new version, so that the
    /// dispatchers load its audience in their next refresh; false when it
    /// does not exist.
    async fn update_event_type(&self, event_type: &EventType) -> Result<bool>;

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>>;

    async fn list_event_types(&self, page: Page<'_>) -> Result<Vec<EventType>>;

    /// Event types made after version `after`, oldest first.
    async fn event_type_changes(&self, after: i64) -> Result<Vec<EventTypeChange>>;

    /// Claims `key` for this request: true when it is ours to do (a new key,
    /// or one whose earlier claim is `in_progress` since before
    /// `stale_before`, its holder presumably dead); false when it exists.
    async fn idempotency_claim(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool>;

    async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>>;

    /// Saves the answer the key replays from now on.
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()>;

    /// Forgets a claim whose request failed, so that a retry can run.
    async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()>;

    /// Deletes records created before `before`; answers how many.
    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Changes with a version above `after`, oldest first, at most `limit`.
    async fn subscription_changes(&self, after: i64, limit: i64)
        -> Result<Vec<SubscriptionChange>>;

    async fn insert_attempts(&self, attempts: &[Attempt]) -> Result<()>;

    /// Writes a subscription's circuit state, unless a newer one is there.
    async fn record_circuit(&self, id: &SubscriptionId, circuit: &CircuitRecord) -> Result<()>;

    /// The circuit state last written for a subscription.
    async fn get_circuit(&self, id: &SubscriptionId) -> Result<Option<CircuitRecord>>;

    /// Attempts by id (oldest first within a process), filtered.
    async fn list_attempts(
        &self,
        filter: &AttemptFilter<'_>,
        page: Page<'_>,
    ) -> Result<Vec<Attempt>>;

    async fn attempts_for_event(
        &self,
        tenant: Option<&TenantId>,
        event_id: &str,
    ) -> Result<Vec<Attempt>>;
}

/// Opens the backend the URL names, without a statement timeout nor a secret
/// key (for `hookgate migrate` and tests): secrets are written plain, and
/// sealed ones do not open.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_with(url, None, SecretKeys::none()).await
}

/// Opens the backend the URL names; `keys` seal and open secrets at rest.
pub async fn connect_with_keys(url: &str, keys: SecretKeys) -> Result<Arc<dyn Store>> {
    connect_with(url, None, keys).await
}

/// Opens the backend the URL names; on PostgreSQL every pooled connection
/// gets `statement_timeout` (SQLite has none: its statements are local, and
/// a lock waits at most its busy timeout); `keys` seal and open secrets.
pub async fn connect_with(
    url: &str,
    statement_timeout: Option<std::time::Duration>,
    keys: SecretKeys,
) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect_with(url, statement_timeout, keys).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, keys).await?))
    } else {
        Err(Error::UnsupportedUrl(redact(url)))
    }
}

/// The URL without its password, for error messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
