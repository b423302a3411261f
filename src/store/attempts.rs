//! Delivery attempts: written in batches by `AttemptLog`, listed by the API.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

use super::sql::{column_list, push_scope, to_u32, SqlStore};
use super::{Error, Page, Result};
use crate::domain::{Attempt, AttemptId, Outcome, Scope, SubscriptionId, TenantId};

/// Which attempts to list: those in `scope`; `None` fields do not filter.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFilter<'a> {
    pub scope: Scope<'a>,
    pub subscription: Option<&'a SubscriptionId>,
    pub event_id: Option<&'a str>,
}

impl<'a> AttemptFilter<'a> {
    /// Every attempt in `scope`.
    pub fn within(scope: Scope<'a>) -> Self {
        Self { scope, subscription: None, event_id: None }
    }
}

#[async_trait]
pub trait Attempts: Send + Sync {
    /// Writes a batch in one statement; rows already there (a retried
    /// batch) are left as they are.
    async fn insert_attempts(&self, attempts: &[Attempt]) -> Result<()>;

    /// Attempts by id (oldest first within a process), filtered.
    async fn list_attempts(
        &self,
        filter: &AttemptFilter<'_>,
        page: Page<'_>,
    ) -> Result<Vec<Attempt>>;

    /// An event's attempts in `scope`, oldest first.
    async fn attempts_for_event(&self, scope: Scope<'_>, event_id: &str) -> Result<Vec<Attempt>>;
}

/// The columns of a row, in the order `insert_attempts` binds them.
const ATTEMPT_COLUMNS: [&str; 13] = [
    "id",
    "event_id",
    "webhook_id",
    "subscription_id",
    "tenant_id",
    "event_type",
    "attempt",
    "outcome",
    "status_code",
    "latency_ms",
    "error",
    "response_excerpt",
    "created_at",
];

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: String,
    event_id: String,
    webhook_id: String,
    subscription_id: String,
    tenant_id: String,
    event_type: String,
    attempt: i64,
    outcome: String,
    status_code: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
    response_excerpt: Option<String>,
    created_at: DateTime<Utc>,
}

impl AttemptRow {
    fn into_attempt(self) -> Result<Attempt> {
        Ok(Attempt {
            id: AttemptId::from_trusted(self.id),
            event_id: self.event_id,
            webhook_id: crate::domain::WebhookId::from_trusted(self.webhook_id),
            subscription_id: SubscriptionId::from_trusted(self.subscription_id),
            tenant_id: TenantId::from_trusted(self.tenant_id),
            event_type: self.event_type,
            attempt: to_u32(self.attempt, "attempt")?,
            outcome: Outcome::parse(&self.outcome),
            status_code: self
                .status_code
                .map(|c| u16::try_from(c).map_err(|_| Error::Corrupt(format!("status_code = {c}"))))
                .transpose()?,
            latency_ms: to_u32(self.latency_ms, "latency_ms")?,
            error: self.error,
            response_excerpt: self.response_excerpt,
            created_at: self.created_at,
        })
    }
}

/// `Attempts` on one backend (see `sql.rs`).
macro_rules! attempts_on {
    ($db:ty) => {
        #[async_trait]
        impl Attempts for SqlStore<$db> {
            async fn insert_attempts(&self, attempts: &[Attempt]) -> Result<()> {
                if attempts.is_empty() {
                    return Ok(());
                }
                let mut insert = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO attempts {} ",
                    column_list(&ATTEMPT_COLUMNS)
                ));
                insert.push_values(attempts, |mut row, a| {
                    row.push_bind(a.id.as_str())
                        .push_bind(&a.event_id)
                        .push_bind(a.webhook_id.as_str())
                        .push_bind(a.subscription_id.as_str())
                        .push_bind(a.tenant_id.as_str())
                        .push_bind(&a.event_type)
                        .push_bind(i64::from(a.attempt))
                        .push_bind(a.outcome.as_str())
                        .push_bind(a.status_code.map(i64::from))
                        .push_bind(i64::from(a.latency_ms))
                        .push_bind(&a.error)
                        .push_bind(&a.response_excerpt)
                        .push_bind(a.created_at);
                });
                // Replays of a batch after a failed write must not fail on
                // rows that did land.
                insert.push(" ON CONFLICT (id) DO NOTHING");
                insert.build().execute(&self.pool).await?;
                Ok(())
            }

            async fn list_attempts(
                &self,
                filter: &AttemptFilter<'_>,
                page: Page<'_>,
            ) -> Result<Vec<Attempt>> {
                let mut query = QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM attempts WHERE 1 = 1",
                    ATTEMPT_COLUMNS.join(", ")
                ));
                push_scope(&mut query, filter.scope);
                if let Some(subscription) = filter.subscription {
                    query.push(" AND subscription_id = ").push_bind(subscription.as_str());
                }
                if let Some(event_id) = filter.event_id {
                    query.push(" AND event_id = ").push_bind(event_id);
                }
                if let Some(after) = page.after {
                    query.push(" AND id > ").push_bind(after);
                }
                query.push(" ORDER BY id LIMIT ").push_bind(page.limit);
                let rows: Vec<AttemptRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(AttemptRow::into_attempt).collect()
            }

            async fn attempts_for_event(
                &self,
                scope: Scope<'_>,
                event_id: &str,
            ) -> Result<Vec<Attempt>> {
                let mut query = QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM attempts WHERE event_id = ",
                    ATTEMPT_COLUMNS.join(", ")
                ));
                query.push_bind(event_id);
                push_scope(&mut query, scope);
                query.push(" ORDER BY created_at, id");
                let rows: Vec<AttemptRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(AttemptRow::into_attempt).collect()
            }
        }
    };
}

attempts_on!(sqlx::Postgres);
attempts_on!(sqlx::Sqlite);
