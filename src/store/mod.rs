//! The store: what must be queried (tenants, subscriptions, attempts, …).
//!
//! API handlers write subscriptions → the version counter orders the changes →
//! dispatchers poll `subscription_changes` into their cache. Dispatchers hand
//! attempts to `AttemptLog`, which writes them in batches off the delivery path.
//!
//! One interface, two backends with the same SQL: PostgreSQL (production and
//! the test suite) and SQLite (`hookgate dev`).

mod attempt_log;
mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use attempt_log::AttemptLog;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::{Attempt, Subscription, SubscriptionId, SubscriptionStatus, TenantId};

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A subscription as it changed, for dispatcher caches.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub version: i64,
    pub subscription: Subscription,
    pub deleted: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    async fn migrate(&self) -> Result<()>;

    async fn tenant_exists(&self, id: &TenantId) -> Result<bool>;

    async fn create_subscription(&self, subscription: &Subscription) -> Result<()>;

    /// Sets a subscription's status (and why, for `disabled`).
    async fn set_subscription_status(
        &self,
        id: &SubscriptionId,
        status: SubscriptionStatus,
        reason: Option<&str>,
    ) -> Result<()>;

    /// `tenant: None` looks across tenants (admin); otherwise another
    /// tenant's subscription is not found.
    async fn get_subscription(
        &self,
        tenant: Option<&TenantId>,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>>;

    /// Changes with a version above `after`, oldest first, at most `limit`.
    async fn subscription_changes(&self, after: i64, limit: i64)
        -> Result<Vec<SubscriptionChange>>;

    async fn insert_attempts(&self, attempts: &[Attempt]) -> Result<()>;

    async fn attempts_for_event(
        &self,
        tenant: Option<&TenantId>,
        event_id: &str,
    ) -> Result<Vec<Attempt>>;
}

/// Opens the backend the URL names.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
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
