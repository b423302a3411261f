//! Bulk replay jobs: the API creates and cancels them; a runner claims one
//! by lease, replays its dead letters in id order, and saves its cursor
//! after each batch, so that another runner resumes where it stopped.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use super::sql::{column_list, push_scope, SqlStore};
use super::{Error, Page, Result};
use crate::domain::{
    DeadLetterFilter, DeadLetterId, DeadLetterStatus, Replay, ReplayId, ReplayStatus, Scope,
    TenantId,
};

#[async_trait]
pub trait Replays: Send + Sync {
    async fn create_replay(&self, replay: &Replay) -> Result<()>;

    /// Like `create_replay`, unless the replay's tenant has `max_running`
    /// running already (false: nothing written). Concurrent creates of one
    /// tenant are counted one after the other.
    async fn create_replay_within(&self, replay: &Replay, max_running: u32) -> Result<bool>;

    /// A job in `scope`: another tenant's is not found.
    async fn get_replay(&self, scope: Scope<'_>, id: &ReplayId) -> Result<Option<Replay>>;

    /// Jobs in `scope`, newest first (`page.after`: the id to go below).
    async fn list_replays(&self, scope: Scope<'_>, page: Page<'_>) -> Result<Vec<Replay>>;

    /// Takes the running job whose lease is free or expired that waited
    /// longest (least recently updated).
    async fn claim_replay(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Replay>>;

    /// Saves a batch's progress: marks the dead letters sent as replayed by
    /// this job, moves the cursor (when given) and extends the lease; false
    /// when the job is no longer this owner's to run (cancelled, or the
    /// lease was lost).
    #[allow(clippy::too_many_arguments)]
    async fn advance_replay(
        &self,
        id: &ReplayId,
        owner: &str,
        cursor: Option<&DeadLetterId>,
        sent: &[DeadLetterId],
        failed: u64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives a running job's lease up, so that any runner may take it now;
    /// it goes behind the jobs that waited longer.
    async fn release_replay(&self, id: &ReplayId, owner: &str, now: DateTime<Utc>) -> Result<()>;

    /// Marks the job completed; what it did not find pending is `skipped`.
    async fn finish_replay(&self, id: &ReplayId, owner: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Cancels a running job in `scope`; answers the job as it is now
    /// (`None`: not found, or another tenant's).
    async fn cancel_replay(
        &self,
        scope: Scope<'_>,
        id: &ReplayId,
        now: DateTime<Utc>,
    ) -> Result<Option<Replay>>;
}

/// The claim a bulk replay job holds its batch's dead letters with: the
/// job's, so that whichever runner resumes it holds them too.
pub fn replay_claim(job: &ReplayId) -> String {
    format!("replay:{job}")
}

/// A row's columns, in the order `insert` binds them (and `ReplayRow`
/// reads them, by name).
const REPLAY_COLUMNS: [&str; 15] = [
    "id",
    "tenant_id",
    "filter",
    "upper_id",
    "url",
    "rate_per_second",
    "status",
    "total",
    "done",
    "failed",
    "skipped",
    "cursor",
    "created_at",
    "updated_at",
    "finished_at",
];

fn columns() -> String {
    REPLAY_COLUMNS.join(", ")
}

#[derive(sqlx::FromRow)]
struct ReplayRow {
    id: String,
    tenant_id: Option<String>,
    filter: Json<DeadLetterFilter>,
    upper_id: Option<String>,
    url: Option<String>,
    rate_per_second: Option<i64>,
    status: String,
    total: i64,
    done: i64,
    failed: i64,
    skipped: i64,
    cursor: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl ReplayRow {
    fn into_replay(self) -> Result<Replay> {
        let status = ReplayStatus::parse(&self.status)
            .ok_or_else(|| Error::Corrupt(format!("replay status = {}", self.status)))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Replay {
            id: ReplayId::from_trusted(self.id),
            tenant_id: self.tenant_id.map(TenantId::from_trusted),
            filter: self.filter.0,
            upper_id: self.upper_id.map(DeadLetterId::from_trusted),
            url: self.url,
            rate_per_second: self.rate_per_second.and_then(|r| u32::try_from(r).ok()),
            status,
            total: count(self.total),
            done: count(self.done),
            failed: count(self.failed),
            skipped: count(self.skipped),
            cursor: self.cursor.map(DeadLetterId::from_trusted),
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

/// A count as stored (the columns are signed).
fn stored_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `Replays` on one backend (see `sql.rs`).
macro_rules! replays_on {
    ($db:ty) => {
        impl SqlStore<$db> {
            /// The `INSERT` of `r`: every column bound here, once, in
            /// `REPLAY_COLUMNS`' order.
            fn insert_replay(r: &Replay) -> QueryBuilder<'_, $db> {
                let mut insert = QueryBuilder::new(format!(
                    "INSERT INTO replays {} ",
                    column_list(&REPLAY_COLUMNS)
                ));
                insert.push_values([r], |mut row, r| {
                    row.push_bind(r.id.as_str())
                        .push_bind(r.tenant_id.as_ref().map(TenantId::as_str))
                        .push_bind(Json(&r.filter))
                        .push_bind(r.upper_id.as_ref().map(DeadLetterId::as_str))
                        .push_bind(r.url.as_deref())
                        .push_bind(r.rate_per_second.map(i64::from))
                        .push_bind(r.status.as_str())
                        .push_bind(stored_count(r.total))
                        .push_bind(stored_count(r.done))
                        .push_bind(stored_count(r.failed))
                        .push_bind(stored_count(r.skipped))
                        .push_bind(r.cursor.as_ref().map(DeadLetterId::as_str))
                        .push_bind(r.created_at)
                        .push_bind(r.updated_at)
                        .push_bind(r.finished_at);
                });
                insert
            }
        }

        #[async_trait]
        impl Replays for SqlStore<$db> {
            async fn create_replay(&self, r: &Replay) -> Result<()> {
                Self::insert_replay(r).build().execute(&self.pool).await?;
                Ok(())
            }

            async fn create_replay_within(&self, r: &Replay, max_running: u32) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                // A no-op write takes the tenant's row: creates of one tenant
                // count one after the other (in both backends).
                let tenant = r.tenant_id.as_ref().map(TenantId::as_str);
                sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await?;
                let running: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM replays WHERE tenant_id = $1 AND status = 'running'",
                )
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await?;
                if running >= i64::from(max_running) {
                    return Ok(false);
                }
                Self::insert_replay(r).build().execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn get_replay(&self, scope: Scope<'_>, id: &ReplayId) -> Result<Option<Replay>> {
                let select = format!("SELECT {} FROM replays WHERE id = ", columns());
                let mut query = QueryBuilder::<$db>::new(select);
                query.push_bind(id.as_str());
                push_scope(&mut query, scope);
                let row: Option<ReplayRow> =
                    query.build_query_as().fetch_optional(&self.pool).await?;
                row.map(ReplayRow::into_replay).transpose()
            }

            async fn list_replays(&self, scope: Scope<'_>, page: Page<'_>) -> Result<Vec<Replay>> {
                let select = format!("SELECT {} FROM replays WHERE 1 = 1", columns());
                let mut query = QueryBuilder::<$db>::new(select);
                push_scope(&mut query, scope);
                if let Some(after) = page.after {
                    query.push(" AND id < ").push_bind(after);
                }
                query.push(" ORDER BY id DESC LIMIT ").push_bind(page.limit);
                let rows: Vec<ReplayRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(ReplayRow::into_replay).collect()
            }

            async fn claim_replay(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
            ) -> Result<Option<Replay>> {
                // The lease condition is repeated outside the subquery: of two
                // claimers, the second re-checks the updated row and misses.
                let sql = format!(
                    "UPDATE replays SET lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
                     WHERE id = (SELECT id FROM replays WHERE status = 'running' \
                       AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                       ORDER BY updated_at, id LIMIT 1) \
                     AND status = 'running' \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $3) RETURNING {}",
                    columns()
                );
                let row: Option<ReplayRow> = sqlx::query_as(&sql)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(ReplayRow::into_replay).transpose()
            }

            async fn advance_replay(
                &self,
                id: &ReplayId,
                owner: &str,
                cursor: Option<&DeadLetterId>,
                sent: &[DeadLetterId],
                failed: u64,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
            ) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                // Sent is sent: marked even when the job was cancelled meanwhile.
                if !sent.is_empty() {
                    let claim = replay_claim(id);
                    let mut query = Self::move_pending(
                        sent,
                        DeadLetterStatus::Replayed,
                        Some(id),
                        Some(claim.as_str()),
                        now,
                    );
                    query.build().execute(&mut *tx).await?;
                }
                let result = sqlx::query(
                    "UPDATE replays SET cursor = COALESCE($1, cursor), done = done + $2, \
                     failed = failed + $3, updated_at = $4, lease_expires_at = $5 \
                     WHERE id = $6 AND lease_owner = $7 AND status = 'running'",
                )
                .bind(cursor.map(DeadLetterId::as_str))
                .bind(stored_count(sent.len() as u64))
                .bind(stored_count(failed))
                .bind(now)
                .bind(lease_until)
                .bind(id.as_str())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(result.rows_affected() == 1)
            }

            async fn release_replay(
                &self,
                id: &ReplayId,
                owner: &str,
                now: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE replays SET lease_owner = NULL, lease_expires_at = NULL, \
                     updated_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
                )
                .bind(now)
                .bind(id.as_str())
                .bind(owner)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn finish_replay(
                &self,
                id: &ReplayId,
                owner: &str,
                now: DateTime<Utc>,
            ) -> Result<bool> {
                let result = sqlx::query(
                    "UPDATE replays SET status = 'completed', \
                     skipped = CASE WHEN total > done + failed \
                       THEN total - done - failed ELSE 0 END, \
                     updated_at = $1, finished_at = $1, lease_owner = NULL, \
                     lease_expires_at = NULL \
                     WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
                )
                .bind(now)
                .bind(id.as_str())
                .bind(owner)
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn cancel_replay(
                &self,
                scope: Scope<'_>,
                id: &ReplayId,
                now: DateTime<Utc>,
            ) -> Result<Option<Replay>> {
                let mut cancel = QueryBuilder::<$db>::new("UPDATE replays SET updated_at = ");
                cancel
                    .push_bind(now)
                    .push(", finished_at = ")
                    .push_bind(now)
                    .push(", status = 'cancelled' WHERE id = ")
                    .push_bind(id.as_str())
                    .push(" AND status = 'running'");
                push_scope(&mut cancel, scope);
                cancel.build().execute(&self.pool).await?;
                self.get_replay(scope, id).await
            }
        }
    };
}

replays_on!(sqlx::Postgres);
replays_on!(sqlx::Sqlite);
