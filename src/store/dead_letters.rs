//! Dead letters as indexed from the dead-letter topic: the indexer inserts
//! them, the API lists them and moves them (replayed, discarded), a replay
//! claims one before it sends it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use super::sql::{column_list, push_scope, SqlStore};
use super::{Error, Page, Result};
use crate::domain::{
    DeadLetter, DeadLetterFilter, DeadLetterId, DeadLetterStatus, DeadReason, NewDeadLetter,
    RecordHeader, ReplayId, Scope, SubscriptionId, TenantId,
};

#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Inserts unless the topic position is indexed already; answers
    /// whether the row is new.
    async fn insert_dead_letter(&self, dead_letter: &NewDeadLetter) -> Result<bool>;

    /// By id, filtered; without payloads.
    async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: Page<'_>,
    ) -> Result<Vec<DeadLetter>>;

    /// A dead letter in `scope`: another tenant's is not found.
    async fn get_dead_letter(
        &self,
        scope: Scope<'_>,
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
}

/// A row's columns, in the order `insert_dead_letter` binds them (and
/// `DeadLetterRow` reads them, by name).
const DEAD_LETTER_COLUMNS: [&str; 23] = [
    "id",
    "dlq_topic",
    "dlq_partition",
    "dlq_offset",
    "tenant_id",
    "subscription_id",
    "event_id",
    "event_type",
    "webhook_id",
    "reason",
    "error",
    "last_status",
    "attempts",
    "first_attempt_at",
    "last_attempt_at",
    "dead_at",
    "replay_of",
    "headers",
    "payload",
    "status",
    "replay_id",
    "status_changed_at",
    "created_at",
];

/// What a select reads: every column, or all but the payload (NULL of its
/// type): lists show no payload, and a page of large records must not be
/// read whole.
fn select_columns(payload: bool) -> String {
    let columns = DEAD_LETTER_COLUMNS.map(|column| match column {
        "payload" if !payload => "CASE WHEN 1 = 0 THEN payload END AS payload",
        column => column,
    });
    columns.join(", ")
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
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

/// A stored reason read back. One hookgate does not know reads as
/// `unknown`: rows indexed before reasons were typed keep the text a
/// record's producer wrote, and one such row must not fail a whole list.
fn reason_of(stored: &str) -> DeadReason {
    stored.parse().unwrap_or(DeadReason::Unknown)
}

impl DeadLetterRow {
    fn into_dead_letter(self) -> Result<DeadLetter> {
        let status = DeadLetterStatus::parse(&self.status)
            .ok_or_else(|| Error::Corrupt(format!("dead letter status = {}", self.status)))?;
        let reason = reason_of(&self.reason);
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
                reason,
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

fn into_dead_letters(rows: Vec<DeadLetterRow>) -> Result<Vec<DeadLetter>> {
    rows.into_iter().map(DeadLetterRow::into_dead_letter).collect()
}

/// `DeadLetters` on one backend (see `sql.rs`), with the statements that
/// replays share.
macro_rules! dead_letters_on {
    ($db:ty) => {
        impl SqlStore<$db> {
            /// `SELECT` from `dead_letters` where the filter holds; the
            /// caller goes on with `AND …`.
            fn filtered<'a>(
                columns: &str,
                filter: &'a DeadLetterFilter,
            ) -> QueryBuilder<'a, $db> {
                let mut query =
                    QueryBuilder::new(format!("SELECT {columns} FROM dead_letters WHERE 1 = 1"));
                if let Some(tenant) = &filter.tenant_id {
                    query.push(" AND tenant_id = ").push_bind(tenant.as_str());
                }
                if let Some(subscription) = &filter.subscription_id {
                    query.push(" AND subscription_id = ").push_bind(subscription.as_str());
                }
                if let Some(event_type) = &filter.event_type {
                    query.push(" AND event_type = ").push_bind(event_type.as_str());
                }
                if let Some(from) = filter.from {
                    query.push(" AND dead_at >= ").push_bind(from);
                }
                if let Some(to) = filter.to {
                    query.push(" AND dead_at < ").push_bind(to);
                }
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                query
            }

            /// `UPDATE dead_letters` moving the pending ones of `ids` to
            /// `status`: the unclaimed ones, and those `claim` holds.
            pub(super) fn move_pending<'a>(
                ids: &'a [DeadLetterId],
                status: DeadLetterStatus,
                replay: Option<&'a ReplayId>,
                claim: Option<&'a str>,
                at: DateTime<Utc>,
            ) -> QueryBuilder<'a, $db> {
                let mut query = QueryBuilder::new("UPDATE dead_letters SET status = ");
                query
                    .push_bind(status.as_str())
                    .push(", replay_id = ")
                    .push_bind(replay.map(ReplayId::as_str))
                    .push(", status_changed_at = ")
                    .push_bind(at)
                    .push(", replay_claim = NULL, replay_claimed_until = NULL");
                Self::push_pending_of(&mut query, ids, claim, at);
                query
            }

            /// ` WHERE` the pending ones of `ids` that no claim but `claim`
            /// holds at `at`.
            fn push_pending_of<'a>(
                query: &mut QueryBuilder<'a, $db>,
                ids: &'a [DeadLetterId],
                claim: Option<&'a str>,
                at: DateTime<Utc>,
            ) {
                query
                    .push(" WHERE status = 'pending' AND (replay_claimed_until IS NULL")
                    .push(" OR replay_claimed_until <= ")
                    .push_bind(at)
                    .push(" OR replay_claim = ")
                    .push_bind(claim)
                    .push(") AND id IN (");
                let mut list = query.separated(", ");
                for id in ids {
                    list.push_bind(id.as_str());
                }
                query.push(")");
            }
        }

        #[async_trait]
        impl DeadLetters for SqlStore<$db> {
            async fn insert_dead_letter(&self, d: &NewDeadLetter) -> Result<bool> {
                let mut insert = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO dead_letters {} ",
                    column_list(&DEAD_LETTER_COLUMNS)
                ));
                insert.push_values([d], |mut row, d| {
                    row.push_bind(d.id.as_str())
                        .push_bind(&d.dlq_topic)
                        .push_bind(d.dlq_partition)
                        .push_bind(d.dlq_offset)
                        .push_bind(d.tenant_id.as_ref().map(TenantId::as_str))
                        .push_bind(d.subscription_id.as_ref().map(SubscriptionId::as_str))
                        .push_bind(d.event_id.as_deref())
                        .push_bind(d.event_type.as_deref())
                        .push_bind(d.webhook_id.as_ref().map(|w| w.as_str()))
                        .push_bind(d.reason.as_str())
                        .push_bind(d.error.as_deref())
                        .push_bind(d.last_status.map(i64::from))
                        .push_bind(i64::from(d.attempts))
                        .push_bind(d.first_attempt_at)
                        .push_bind(d.last_attempt_at)
                        .push_bind(d.dead_at)
                        .push_bind(d.replay_of.as_ref().map(DeadLetterId::as_str))
                        .push_bind(Json(&d.headers))
                        .push_bind(d.payload.as_deref())
                        .push_bind(DeadLetterStatus::Pending.as_str())
                        .push_bind(None::<&str>)
                        .push_bind(None::<DateTime<Utc>>)
                        .push_bind(d.created_at);
                });
                insert.push(" ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO NOTHING");
                let done = insert.build().execute(&self.pool).await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_dead_letters(
                &self,
                filter: &DeadLetterFilter,
                page: Page<'_>,
            ) -> Result<Vec<DeadLetter>> {
                let mut query = Self::filtered(&select_columns(false), filter);
                if let Some(after) = page.after {
                    query.push(" AND id > ").push_bind(after);
                }
                query.push(" ORDER BY id LIMIT ").push_bind(page.limit);
                into_dead_letters(query.build_query_as().fetch_all(&self.pool).await?)
            }

            async fn get_dead_letter(
                &self,
                scope: Scope<'_>,
                id: &DeadLetterId,
            ) -> Result<Option<DeadLetter>> {
                let mut query = QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM dead_letters WHERE id = ",
                    select_columns(true)
                ));
                query.push_bind(id.as_str());
                push_scope(&mut query, scope);
                let row: Option<DeadLetterRow> =
                    query.build_query_as().fetch_optional(&self.pool).await?;
                row.map(DeadLetterRow::into_dead_letter).transpose()
            }

            async fn claim_dead_letter(
                &self,
                id: &DeadLetterId,
                claim: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<bool> {
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
                id: &DeadLetterId,
                claim: &str,
                at: DateTime<Utc>,
            ) -> Result<bool> {
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
                ids: &[DeadLetterId],
                claim: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<Vec<DeadLetterId>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // One statement: of concurrent claims on one row, one wins.
                let mut query =
                    QueryBuilder::<$db>::new("UPDATE dead_letters SET replay_claim = ");
                query
                    .push_bind(claim)
                    .push(", replay_claimed_until = ")
                    .push_bind(until);
                Self::push_pending_of(&mut query, ids, Some(claim), now);
                query.push(" RETURNING id");
                let claimed: Vec<String> = query.build_query_scalar().fetch_all(&self.pool).await?;
                claimed
                    .iter()
                    .map(|id| {
                        DeadLetterId::parse(id)
                            .ok_or_else(|| Error::Corrupt(format!("dead letter id {id}")))
                    })
                    .collect()
            }

            async fn release_dead_letter_claim(
                &self,
                id: &DeadLetterId,
                claim: &str,
            ) -> Result<()> {
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
                ids: &[DeadLetterId],
                status: DeadLetterStatus,
                replay: Option<&ReplayId>,
                at: DateTime<Utc>,
            ) -> Result<u64> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut query = Self::move_pending(ids, status, replay, None, at);
                Ok(query.build().execute(&self.pool).await?.rows_affected())
            }

            async fn count_dead_letters(
                &self,
                filter: &DeadLetterFilter,
            ) -> Result<(u64, Option<DeadLetterId>)> {
                let mut query = Self::filtered("COUNT(*), MAX(id)", filter);
                let (count, newest): (i64, Option<String>) =
                    query.build_query_as().fetch_one(&self.pool).await?;
                Ok((u64::try_from(count).unwrap_or(0), newest.map(DeadLetterId::from_trusted)))
            }

            async fn dead_letters_to_replay(
                &self,
                filter: &DeadLetterFilter,
                after: Option<&DeadLetterId>,
                upper: &DeadLetterId,
                limit: i64,
            ) -> Result<Vec<DeadLetter>> {
                let mut query = Self::filtered(&select_columns(true), filter);
                query.push(" AND status = 'pending'");
                if let Some(after) = after {
                    query.push(" AND id > ").push_bind(after.as_str());
                }
                query
                    .push(" AND id <= ")
                    .push_bind(upper.as_str())
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(limit);
                into_dead_letters(query.build_query_as().fetch_all(&self.pool).await?)
            }
        }
    };
}

dead_letters_on!(sqlx::Postgres);
dead_letters_on!(sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_reason_reads_back_typed_and_an_unknown_one_as_unknown() {
        assert_eq!(reason_of("exhausted"), DeadReason::Exhausted);
        assert_eq!(reason_of("melted"), DeadReason::Unknown);
    }
}
