//! Dead letters and replay jobs in the store: the indexer inserts, the API
//! lists and marks, the replay runner claims a job by lease and advances it.
//! One SQL body for both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Error, Page, Result};
use crate::domain::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterStatus, NewDeadLetter, RecordHeader,
    Replay, ReplayId, ReplayStatus, SubscriptionId, TenantId,
};

/// Tables whose old rows retention purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purgeable {
    Attempts,
    DeadLetters,
    /// Finished replay jobs.
    Replays,
    /// Deleted subscriptions (by when they were deleted), and their circuits.
    DeletedSubscriptions,
}

#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Inserts unless the topic position is indexed already; answers
    /// whether the row is new.
    async fn insert_dead_letter(&self, dead_letter: &NewDeadLetter) -> Result<bool>;

    /// By id, filtered; without payloads.
    async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: Page<'_>,
    ) -> Result<Vec<DeadLetter>>;

    /// `tenant: None` looks across tenants (admin).
    async fn get_dead_letter(
        &self,
        tenant: Option<&TenantId>,
        id: &DeadLetterId,
    ) -> Result<Option<DeadLetter>>;

    /// Claims a pending dead letter for one replay until `until`, unless an
    /// unexpired claim holds it; answers whether the claim is ours.
    async fn claim_dead_letter(
        &self,
        id: &DeadLetterId,
        claim: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Marks a claimed dead letter replayed, spending the claim; false when
    /// it is no longer ours (it ran out and another replay took it).
    async fn finish_dead_letter_claim(
        &self,
        id: &DeadLetterId,
        claim: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Claims those of `ids` that are pending and not held by another claim
    /// (`claim`'s own, an earlier turn of the same job, is renewed), until
    /// `until`; answers the ones claimed. A bulk replay sends only these.
    async fn claim_dead_letters(
        &self,
        ids: &[DeadLetterId],
        claim: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<DeadLetterId>>;

    /// Gives a claim up (its send failed), so that it can be replayed again.
    async fn release_dead_letter_claim(&self, id: &DeadLetterId, claim: &str) -> Result<()>;

    /// Moves pending dead letters that no replay holds a claim on to
    /// `status`; answers how many moved.
    async fn mark_dead_letters(
        &self,
        ids: &[DeadLetterId],
        status: DeadLetterStatus,
        replay: Option<&ReplayId>,
        at: DateTime<Utc>,
    ) -> Result<u64>;

    /// How many match, and the newest of them.
    async fn count_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<(u64, Option<DeadLetterId>)>;

    /// The pending dead letters of a replay after `after`, up to `upper`.
    async fn dead_letters_to_replay(
        &self,
        filter: &DeadLetterFilter,
        after: Option<&DeadLetterId>,
        upper: &DeadLetterId,
        limit: i64,
    ) -> Result<Vec<DeadLetter>>;

    async fn create_replay(&self, replay: &Replay) -> Result<()>;

    /// Like `create_replay`, unless the replay's tenant has `max_running`
    /// running already (false: nothing written). Concurrent creates of one
    /// tenant are counted one after the other.
    async fn create_replay_within(&self, replay: &Replay, max_running: u32) -> Result<bool>;

    async fn get_replay(&self, tenant: Option<&TenantId>, id: &ReplayId) -> Result<Option<Replay>>;

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

    /// Cancels a running job; answers the job as it is now (`None`: not
    /// found, or another tenant's).
    async fn cancel_replay(
        &self,
        tenant: Option<&TenantId>,
        id: &ReplayId,
        now: DateTime<Utc>,
    ) -> Result<Option<Replay>>;

    /// Deletes at most `limit` rows older than `before`; answers how many.
    async fn purge(&self, table: Purgeable, before: DateTime<Utc>, limit: i64) -> Result<u64>;
}

pub(super) const DEAD_LETTER_COLUMNS: &str = "id, dlq_topic, dlq_partition, dlq_offset, \
     tenant_id, subscription_id, event_id, event_type, webhook_id, reason, error, last_status, \
     attempts, first_attempt_at, last_attempt_at, dead_at, replay_of, headers, payload, status, \
     replay_id, status_changed_at, created_at";

/// The same, without the payload (NULL of its type): lists show no payload,
/// and a page of large records must not be read whole.
pub(super) const DEAD_LETTER_LIST_COLUMNS: &str = "id, dlq_topic, dlq_partition, dlq_offset, \
     tenant_id, subscription_id, event_id, event_type, webhook_id, reason, error, last_status, \
     attempts, first_attempt_at, last_attempt_at, dead_at, replay_of, headers, \
     CASE WHEN 1 = 0 THEN payload END AS payload, status, replay_id, status_changed_at, created_at";

pub(super) const REPLAY_COLUMNS: &str = "id, tenant_id, filter, upper_id, url, rate_per_second, \
     status, total, done, failed, skipped, cursor, created_at, updated_at, finished_at";

/// The filter's conditions on `$1`…`$6`.
pub(super) const FILTER: &str = "($1 IS NULL OR tenant_id = $1) \
     AND ($2 IS NULL OR subscription_id = $2) AND ($3 IS NULL OR event_type = $3) \
     AND ($4 IS NULL OR dead_at >= $4) AND ($5 IS NULL OR dead_at < $5) \
     AND ($6 IS NULL OR status = $6)";

#[derive(sqlx::FromRow)]
pub(super) struct DeadLetterRow {
    id: String,
    dlq_topic: String,
    dlq_partition: i32,
    dlq_offset: i64,
    tenant_id: Option<String>,
    subscription_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    webhook_id: Option<String>,
    reason: String,
    error: Option<String>,
    last_status: Option<i64>,
    attempts: i64,
    first_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    dead_at: DateTime<Utc>,
    replay_of: Option<String>,
    headers: Json<Vec<RecordHeader>>,
    payload: Option<Vec<u8>>,
    status: String,
    replay_id: Option<String>,
    status_changed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl DeadLetterRow {
    pub(super) fn into_dead_letter(self) -> Result<DeadLetter> {
        let status = DeadLetterStatus::parse(&self.status)
            .ok_or_else(|| Error::Corrupt(format!("dead letter status = {}", self.status)))?;
        Ok(DeadLetter {
            record: NewDeadLetter {
                id: DeadLetterId::from_trusted(self.id),
                dlq_topic: self.dlq_topic,
                dlq_partition: self.dlq_partition,
                dlq_offset: self.dlq_offset,
                tenant_id: self.tenant_id.map(TenantId::from_trusted),
                subscription_id: self.subscription_id.map(SubscriptionId::from_trusted),
                event_id: self.event_id,
                event_type: self.event_type,
                webhook_id: self.webhook_id.map(crate::domain::WebhookId::from_trusted),
                reason: self.reason,
                error: self.error,
                last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
                attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
                first_attempt_at: self.first_attempt_at,
                last_attempt_at: self.last_attempt_at,
                dead_at: self.dead_at,
                replay_of: self.replay_of.map(DeadLetterId::from_trusted),
                headers: self.headers.0,
                payload: self.payload,
                created_at: self.created_at,
            },
            status,
            replay_id: self.replay_id.map(ReplayId::from_trusted),
            status_changed_at: self.status_changed_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ReplayRow {
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
    pub(super) fn into_replay(self) -> Result<Replay> {
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

/// The claim a bulk replay job holds its batch's dead letters with: the
/// job's, so that whichever runner resumes it holds them too.
pub fn replay_claim(job: &ReplayId) -> String {
    format!("replay:{job}")
}

/// Binds a filter's six values, in `FILTER`'s order.
macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {
        $query
            .bind($filter.tenant_id.as_ref().map(|t| t.as_str()))
            .bind($filter.subscription_id.as_ref().map(|s| s.as_str()))
            .bind($filter.event_type.as_deref())
            .bind($filter.from)
            .bind($filter.to)
            .bind($filter.status.map(|s| s.as_str()))
    };
}

/// `UPDATE dead_letters` moving the pending ones of `ids` to `status`: the
/// unclaimed ones, and those `claim` holds.
macro_rules! move_pending {
    ($db:ty, $ids:expr, $status:expr, $replay:expr, $claim:expr, $at:expr) => {{
        let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE dead_letters SET status = ");
        query
            .push_bind($status.as_str())
            .push(", replay_id = ")
            .push_bind($replay.map(|r: &$crate::domain::ReplayId| r.as_str().to_owned()))
            .push(", status_changed_at = ")
            .push_bind($at)
            .push(", replay_claim = NULL, replay_claimed_until = NULL")
            .push(" WHERE status = 'pending' AND (replay_claimed_until IS NULL OR replay_claimed_until <= ")
            .push_bind($at)
            .push(" OR replay_claim = ")
            .push_bind($claim.map(str::to_owned))
            .push(") AND id IN (");
        let mut list = query.separated(", ");
        for id in $ids {
            list.push_bind(id.as_str().to_owned());
        }
        query.push(")");
        query
    }};
}

macro_rules! dead_letter_methods {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::DeadLetterStore for $store {
            async fn insert_dead_letter(
                &self,
                d: &$crate::domain::NewDeadLetter,
            ) -> $crate::store::Result<bool> {
                let sql = format!(
                    "INSERT INTO dead_letters ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
                     ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO NOTHING",
                    $crate::store::dead_letters::DEAD_LETTER_COLUMNS
                );
                let done = sqlx::query(&sql)
                    .bind(d.id.as_str())
                    .bind(&d.dlq_topic)
                    .bind(d.dlq_partition)
                    .bind(d.dlq_offset)
                    .bind(d.tenant_id.as_ref().map(|t| t.as_str()))
                    .bind(d.subscription_id.as_ref().map(|s| s.as_str()))
                    .bind(d.event_id.as_deref())
                    .bind(d.event_type.as_deref())
                    .bind(d.webhook_id.as_ref().map(|w| w.as_str()))
                    .bind(&d.reason)
                    .bind(d.error.as_deref())
                    .bind(d.last_status.map(i64::from))
                    .bind(i64::from(d.attempts))
                    .bind(d.first_attempt_at)
                    .bind(d.last_attempt_at)
                    .bind(d.dead_at)
                    .bind(d.replay_of.as_ref().map(|r| r.as_str()))
                    .bind(sqlx::types::Json(&d.headers))
                    .bind(d.payload.as_deref())
                    .bind($crate::domain::DeadLetterStatus::Pending.as_str())
                    .bind(None::<&str>)
                    .bind(None::<chrono::DateTime<chrono::Utc>>)
                    .bind(d.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_dead_letters(
                &self,
                filter: &$crate::domain::DeadLetterFilter,
                page: $crate::store::Page<'_>,
            ) -> $crate::store::Result<Vec<$crate::domain::DeadLetter>> {
                let sql = format!(
                    "SELECT {} FROM dead_letters WHERE {} AND ($7 IS NULL OR id > $7) \
                     ORDER BY id LIMIT $8",
                    $crate::store::dead_letters::DEAD_LETTER_LIST_COLUMNS,
                    $crate::store::dead_letters::FILTER
                );
                let query = sqlx::query_as(&sql);
                let rows: Vec<$crate::store::dead_letters::DeadLetterRow> =
                    $crate::store::dead_letters::bind_filter!(query, filter)
                        .bind(page.after)
                        .bind(page.limit)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(|r| r.into_dead_letter()).collect()
            }

            async fn get_dead_letter(
                &self,
                tenant: Option<&$crate::domain::TenantId>,
                id: &$crate::domain::DeadLetterId,
            ) -> $crate::store::Result<Option<$crate::domain::DeadLetter>> {
                let sql = format!(
                    "SELECT {} FROM dead_letters WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
                    $crate::store::dead_letters::DEAD_LETTER_COLUMNS
                );
                let row: Option<$crate::store::dead_letters::DeadLetterRow> =
                    sqlx::query_as(&sql)
                        .bind(id.as_str())
                        .bind(tenant.map(|t| t.as_str()))
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|r| r.into_dead_letter()).transpose()
            }

            async fn claim_dead_letter(
                &self,
                id: &$crate::domain::DeadLetterId,
                claim: &str,
                now: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<bool> {
                // One statement: of concurrent claims, one finds it unclaimed.
                let done = sqlx::query(
                    "UPDATE dead_letters SET replay_claim = $2, replay_claimed_until = $4 \
                     WHERE id = $1 AND status = 'pending' \
                     AND (replay_claimed_until IS NULL OR replay_claimed_until <= $3)",
                )
                .bind(id.as_str())
                .bind(claim)
                .bind(now)
                .bind(until)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_dead_letter_claim(
                &self,
                id: &$crate::domain::DeadLetterId,
                claim: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE dead_letters SET status = 'replayed', replay_id = NULL, \
                     status_changed_at = $3, replay_claim = NULL, replay_claimed_until = NULL \
                     WHERE id = $1 AND replay_claim = $2 AND status = 'pending'",
                )
                .bind(id.as_str())
                .bind(claim)
                .bind(at)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_dead_letters(
                &self,
                ids: &[$crate::domain::DeadLetterId],
                claim: &str,
                now: chrono::DateTime<chrono::Utc>,
                until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<Vec<$crate::domain::DeadLetterId>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // One statement: of concurrent claims on one row, one wins.
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE dead_letters SET replay_claim = ",
                );
                query
                    .push_bind(claim.to_owned())
                    .push(", replay_claimed_until = ")
                    .push_bind(until)
                    .push(" WHERE status = 'pending' AND (replay_claimed_until IS NULL OR replay_claimed_until <= ")
                    .push_bind(now)
                    .push(" OR replay_claim = ")
                    .push_bind(claim.to_owned())
                    .push(") AND id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.as_str().to_owned());
                }
                query.push(") RETURNING id");
                let claimed: Vec<String> = query.build_query_scalar().fetch_all(&self.pool).await?;
                claimed
                    .iter()
                    .map(|id| {
                        $crate::domain::DeadLetterId::parse(id)
                            .ok_or_else(|| $crate::store::Error::Corrupt(format!("dead letter id {id}")))
                    })
                    .collect()
            }

            async fn release_dead_letter_claim(
                &self,
                id: &$crate::domain::DeadLetterId,
                claim: &str,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "UPDATE dead_letters SET replay_claim = NULL, replay_claimed_until = NULL \
                     WHERE id = $1 AND replay_claim = $2",
                )
                .bind(id.as_str())
                .bind(claim)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn mark_dead_letters(
                &self,
                ids: &[$crate::domain::DeadLetterId],
                status: $crate::domain::DeadLetterStatus,
                replay: Option<&$crate::domain::ReplayId>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<u64> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut query =
                    $crate::store::dead_letters::move_pending!($db, ids, status, replay, None::<&str>, at);
                Ok(query.build().execute(&self.pool).await?.rows_affected())
            }

            async fn count_dead_letters(
                &self,
                filter: &$crate::domain::DeadLetterFilter,
            ) -> $crate::store::Result<(u64, Option<$crate::domain::DeadLetterId>)> {
                let sql = format!(
                    "SELECT COUNT(*), MAX(id) FROM dead_letters WHERE {}",
                    $crate::store::dead_letters::FILTER
                );
                let query = sqlx::query_as(&sql);
                let (count, newest): (i64, Option<String>) =
                    $crate::store::dead_letters::bind_filter!(query, filter)
                        .fetch_one(&self.pool)
                        .await?;
                Ok((
                    u64::try_from(count).unwrap_or(0),
                    newest.map($crate::domain::DeadLetterId::from_trusted),
                ))
            }

            async fn dead_letters_to_replay(
                &self,
                filter: &$crate::domain::DeadLetterFilter,
                after: Option<&$crate::domain::DeadLetterId>,
                upper: &$crate::domain::DeadLetterId,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::domain::DeadLetter>> {
                let sql = format!(
                    "SELECT {} FROM dead_letters WHERE {} AND status = 'pending' \
                     AND ($7 IS NULL OR id > $7) AND id <= $8 ORDER BY id LIMIT $9",
                    $crate::store::dead_letters::DEAD_LETTER_COLUMNS,
                    $crate::store::dead_letters::FILTER
                );
                let query = sqlx::query_as(&sql);
                let rows: Vec<$crate::store::dead_letters::DeadLetterRow> =
                    $crate::store::dead_letters::bind_filter!(query, filter)
                        .bind(after.map(|a| a.as_str()))
                        .bind(upper.as_str())
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(|r| r.into_dead_letter()).collect()
            }

            async fn create_replay(
                &self,
                r: &$crate::domain::Replay,
            ) -> $crate::store::Result<()> {
                $crate::store::dead_letters::insert_replay!(&self.pool, r);
                Ok(())
            }

            async fn create_replay_within(
                &self,
                r: &$crate::domain::Replay,
                max_running: u32,
            ) -> $crate::store::Result<bool> {
                let mut tx = self.pool.begin().await?;
                // A no-op write takes the tenant's row: creates of one tenant
                // count one after the other (in both backends).
                sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
                    .bind(r.tenant_id.as_ref().map(|t| t.as_str()))
                    .execute(&mut *tx)
                    .await?;
                let running: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM replays WHERE tenant_id = $1 AND status = 'running'",
                )
                .bind(r.tenant_id.as_ref().map(|t| t.as_str()))
                .fetch_one(&mut *tx)
                .await?;
                if running >= i64::from(max_running) {
                    return Ok(false);
                }
                $crate::store::dead_letters::insert_replay!(&mut *tx, r);
                tx.commit().await?;
                Ok(true)
            }

            async fn get_replay(
                &self,
                tenant: Option<&$crate::domain::TenantId>,
                id: &$crate::domain::ReplayId,
            ) -> $crate::store::Result<Option<$crate::domain::Replay>> {
                let sql = format!(
                    "SELECT {} FROM replays WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
                    $crate::store::dead_letters::REPLAY_COLUMNS
                );
                let row: Option<$crate::store::dead_letters::ReplayRow> = sqlx::query_as(&sql)
                    .bind(id.as_str())
                    .bind(tenant.map(|t| t.as_str()))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_replay()).transpose()
            }

            async fn claim_replay(
                &self,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<Option<$crate::domain::Replay>> {
                // The lease condition is repeated outside the subquery: of two
                // claimers, the second re-checks the updated row and misses.
                let sql = format!(
                    "UPDATE replays SET lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
                     WHERE id = (SELECT id FROM replays WHERE status = 'running' \
                       AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY updated_at, id LIMIT 1) \
                     AND status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                     RETURNING {}",
                    $crate::store::dead_letters::REPLAY_COLUMNS
                );
                let row: Option<$crate::store::dead_letters::ReplayRow> = sqlx::query_as(&sql)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.into_replay()).transpose()
            }

            async fn advance_replay(
                &self,
                id: &$crate::domain::ReplayId,
                owner: &str,
                cursor: Option<&$crate::domain::DeadLetterId>,
                sent: &[$crate::domain::DeadLetterId],
                failed: u64,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<bool> {
                let mut tx = self.pool.begin().await?;
                // Sent is sent: marked even when the job was cancelled meanwhile.
                if !sent.is_empty() {
                    let claim = $crate::store::dead_letters::replay_claim(id);
                    let mut query = $crate::store::dead_letters::move_pending!(
                        $db,
                        sent,
                        $crate::domain::DeadLetterStatus::Replayed,
                        Some(id),
                        Some(claim.as_str()),
                        now
                    );
                    query.build().execute(&mut *tx).await?;
                }
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                let result = sqlx::query(
                    "UPDATE replays SET cursor = COALESCE($1, cursor), done = done + $2, \
                     failed = failed + $3, updated_at = $4, lease_expires_at = $5 \
                     WHERE id = $6 AND lease_owner = $7 AND status = 'running'",
                )
                .bind(cursor.map(|c| c.as_str()))
                .bind(count(sent.len() as u64))
                .bind(count(failed))
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
                id: &$crate::domain::ReplayId,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "UPDATE replays SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
                     WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
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
                id: &$crate::domain::ReplayId,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<bool> {
                let result = sqlx::query(
                    "UPDATE replays SET status = 'completed', \
                     skipped = CASE WHEN total > done + failed THEN total - done - failed ELSE 0 END, \
                     updated_at = $1, finished_at = $1, lease_owner = NULL, lease_expires_at = NULL \
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
                tenant: Option<&$crate::domain::TenantId>,
                id: &$crate::domain::ReplayId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::Result<Option<$crate::domain::Replay>> {
                sqlx::query(
                    "UPDATE replays SET status = 'cancelled', updated_at = $1, finished_at = $1 \
                     WHERE id = $2 AND ($3 IS NULL OR tenant_id = $3) AND status = 'running'",
                )
                .bind(now)
                .bind(id.as_str())
                .bind(tenant.map(|t| t.as_str()))
                .execute(&self.pool)
                .await?;
                $crate::store::DeadLetterStore::get_replay(self, tenant, id).await
            }

            async fn purge(
                &self,
                table: $crate::store::Purgeable,
                before: chrono::DateTime<chrono::Utc>,
                limit: i64,
            ) -> $crate::store::Result<u64> {
                // Small batches by primary key: no long lock, no long transaction.
                let sql = match table {
                    $crate::store::Purgeable::Attempts => {
                        "DELETE FROM attempts WHERE id IN \
                         (SELECT id FROM attempts WHERE created_at < $1 LIMIT $2)"
                    }
                    $crate::store::Purgeable::DeadLetters => {
                        "DELETE FROM dead_letters WHERE id IN \
                         (SELECT id FROM dead_letters WHERE created_at < $1 LIMIT $2)"
                    }
                    $crate::store::Purgeable::Replays => {
                        "DELETE FROM replays WHERE id IN (SELECT id FROM replays \
                         WHERE status <> 'running' AND finished_at < $1 LIMIT $2)"
                    }
                    $crate::store::Purgeable::DeletedSubscriptions => {
                        let mut tx = self.pool.begin().await?;
                        let ids: Vec<String> = sqlx::query_scalar(
                            "DELETE FROM subscriptions WHERE id IN (SELECT id FROM subscriptions \
                             WHERE deleted_at < $1 LIMIT $2) RETURNING id",
                        )
                        .bind(before)
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                        if !ids.is_empty() {
                            let mut circuits = sqlx::QueryBuilder::<$db>::new(
                                "DELETE FROM subscription_circuits WHERE subscription_id IN (",
                            );
                            let mut list = circuits.separated(", ");
                            for id in &ids {
                                list.push_bind(id);
                            }
                            circuits.push(")");
                            circuits.build().execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                        return Ok(ids.len() as u64);
                    }
                };
                let result = sqlx::query(sql).bind(before).bind(limit).execute(&self.pool).await?;
                Ok(result.rows_affected())
            }
        }
    };
}

/// Inserts replay `$r` through `$executor`.
macro_rules! insert_replay {
    ($executor:expr, $r:expr) => {{
        let r = $r;
        let sql = format!(
            "INSERT INTO replays ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15)",
            $crate::store::dead_letters::REPLAY_COLUMNS
        );
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(&sql)
            .bind(r.id.as_str())
            .bind(r.tenant_id.as_ref().map(|t| t.as_str()))
            .bind(sqlx::types::Json(&r.filter))
            .bind(r.upper_id.as_ref().map(|u| u.as_str()))
            .bind(r.url.as_deref())
            .bind(r.rate_per_second.map(i64::from))
            .bind(r.status.as_str())
            .bind(count(r.total))
            .bind(count(r.done))
            .bind(count(r.failed))
            .bind(count(r.skipped))
            .bind(r.cursor.as_ref().map(|c| c.as_str()))
            .bind(r.created_at)
            .bind(r.updated_at)
            .bind(r.finished_at)
            .execute($executor)
            .await?;
    }};
}

pub(super) use {bind_filter, dead_letter_methods, insert_replay, move_pending};
