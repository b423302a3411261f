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
    pub outcome: Option<Outcome>,
    /// Made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Made before this time.
    pub until: Option<DateTime<Utc>>,
    /// Newest first (the page's `after` is then the id to go below).
    pub newest_first: bool,
}

impl<'a> AttemptFilter<'a> {
    /// Every attempt in `scope`, oldest first.
    pub fn within(scope: Scope<'a>) -> Self {
        Self {
            scope,
            subscription: None,
            event_id: None,
            outcome: None,
            since: None,
            until: None,
            newest_first: false,
        }
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
    ($db:ty, $insert:ident) => {
        #[async_trait]
        impl Attempts for SqlStore<$db> {
            async fn insert_attempts(&self, attempts: &[Attempt]) -> Result<()> {
                if attempts.is_empty() {
                    return Ok(());
                }
                let mut connection = self.pool.acquire().await?;
                $insert(&mut connection, attempts).await
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
                if let Some(outcome) = filter.outcome {
                    query.push(" AND outcome = ").push_bind(outcome.as_str());
                }
                if let Some(since) = filter.since {
                    query.push(" AND created_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    query.push(" AND created_at < ").push_bind(until);
                }
                let (below, order) =
                    if filter.newest_first { (" < ", " DESC") } else { (" > ", "") };
                if let Some(after) = page.after {
                    query.push(" AND id").push(below).push_bind(after);
                }
                query.push(" ORDER BY id").push(order).push(" LIMIT ").push_bind(page.limit);
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

attempts_on!(sqlx::Postgres, insert_unnest);
attempts_on!(sqlx::Sqlite, insert_values);

/// PostgreSQL: one fixed statement whatever the batch's size, the rows as
/// one array per column, so that the server parses and plans it once per
/// connection (a `VALUES` list of 13 parameters a row is a new statement
/// for every batch size, parsed each time).
pub(super) async fn insert_unnest(
    connection: &mut sqlx::PgConnection,
    attempts: &[Attempt],
) -> Result<()> {
    let column = |f: fn(&Attempt) -> String| attempts.iter().map(f).collect::<Vec<_>>();
    let number = |f: fn(&Attempt) -> i64| attempts.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&INSERT_UNNEST)
        .bind(column(|a| a.id.as_str().to_owned()))
        .bind(column(|a| a.event_id.clone()))
        .bind(column(|a| a.webhook_id.as_str().to_owned()))
        .bind(column(|a| a.subscription_id.as_str().to_owned()))
        .bind(column(|a| a.tenant_id.as_str().to_owned()))
        .bind(column(|a| a.event_type.clone()))
        .bind(number(|a| i64::from(a.attempt)))
        .bind(column(|a| a.outcome.as_str().to_owned()))
        .bind(attempts.iter().map(|a| a.status_code.map(i64::from)).collect::<Vec<_>>())
        .bind(number(|a| i64::from(a.latency_ms)))
        .bind(attempts.iter().map(|a| a.error.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.response_excerpt.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.created_at).collect::<Vec<_>>())
        .execute(connection)
        .await?;
    Ok(())
}

/// The array types of `ATTEMPT_COLUMNS`, in order.
const ATTEMPT_ARRAY_TYPES: [&str; 13] = [
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "text[]",
    "bigint[]",
    "text[]",
    "bigint[]",
    "bigint[]",
    "text[]",
    "text[]",
    "timestamptz[]",
];

static INSERT_UNNEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let arrays: Vec<String> =
        ATTEMPT_ARRAY_TYPES.iter().enumerate().map(|(i, t)| format!("${}::{t}", i + 1)).collect();
    format!(
        "INSERT INTO attempts {} SELECT * FROM UNNEST({}) ON CONFLICT (id) DO NOTHING",
        column_list(&ATTEMPT_COLUMNS),
        arrays.join(", ")
    )
});

/// SQLite (`hookgate dev`): a `VALUES` list; it has no arrays.
pub(super) async fn insert_values(
    connection: &mut sqlx::SqliteConnection,
    attempts: &[Attempt],
) -> Result<()> {
    let mut insert = QueryBuilder::<sqlx::Sqlite>::new(format!(
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
    // Replays of a batch after a failed write must not fail on rows that
    // did land.
    insert.push(" ON CONFLICT (id) DO NOTHING");
    insert.build().execute(connection).await?;
    Ok(())
}
