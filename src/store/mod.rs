//! The store: what must be queried (tenants, subscriptions, attempts, …).
//!
//! API handlers write subscriptions → the version counter orders the changes →
//! dispatchers poll `subscription_changes` into their cache. Dispatchers hand
//! attempts to `AttemptLog`, which writes them in batches off the delivery path.
//! The dead-letter indexer inserts dead letters; admins list, replay and
//! discard them; the replay runner claims replay jobs by lease.
//!
//! One file and one narrow trait per table group (`tenants`, `subscriptions`,
//! `event_types`, `attempts`, `idempotency`, `dead_letters`, `replays`,
//! `portal`, plus
//! `retention` and `resealing`); `Store` is all of them, so callers hold an
//! `Arc<dyn Store>`. Two backends run the same SQL (`sql.rs`): PostgreSQL
//! (production and the test suite) and SQLite (`hookgate dev`).

mod attempt_log;
mod attempts;
mod dead_letters;
mod event_types;
mod health;
mod idempotency;
mod portal;
mod postgres;
mod replays;
pub mod resealing;
pub mod retention;
pub mod sealing;
mod sql;
mod sqlite;
mod subscription_rows;
mod subscriptions;
mod tenants;

use std::sync::Arc;

pub use attempt_log::{AfterWrite, AttemptLog};
pub use attempts::{AttemptFilter, Attempts};
pub use dead_letters::DeadLetters;
pub use event_types::{EventTypeChange, EventTypes};
pub use health::{Health, HealthReport};
pub use idempotency::{Idempotency, IdempotencyRecord};
pub use portal::Portal;
pub use replays::{replay_claim, Replays};
pub use resealing::{ResealBatch, SecretStore};
pub use retention::{Purgeable, Retention};
pub use sealing::{SealError, SecretKeys};
pub use sql::{PgStore, SqlStore, SqliteStore};
pub use subscriptions::{Guarded, SecretRotation, SubscriptionChange, Subscriptions};
pub use tenants::Tenants;

/// The largest page a list answers.
pub const MAX_PAGE: i64 = 200;

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

/// A page request: rows with an id (or name) above `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a str>,
    pub limit: i64,
}

/// The database itself: reachable, and at the schema this build expects.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn ping(&self) -> Result<()>;

    async fn migrate(&self) -> Result<()>;
}

/// Every table group: what callers hold, as `Arc<dyn Store>`.
pub trait Store:
    Backend
    + Tenants
    + Subscriptions
    + EventTypes
    + Attempts
    + Health
    + Idempotency
    + DeadLetters
    + Replays
    + Portal
    + Retention
    + SecretStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Backend
        + Tenants
        + Subscriptions
        + EventTypes
        + Attempts
        + Health
        + Idempotency
        + DeadLetters
        + Replays
        + Portal
        + Retention
        + SecretStore
        + Send
        + Sync
        + 'static
{
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
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
