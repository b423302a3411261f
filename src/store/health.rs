//! Subscription health: the attempt log writer records each batch of
//! attempts with their rollups and the subscriptions' failure records in
//! one transaction, so that the counts `stats` answers are those of the
//! attempt log; re-enabling a subscription resets its failure record.

use std::collections::HashMap;

use super::attempts::{insert_unnest, insert_values};
use super::sql::SqlStore;
use super::Result;
use crate::domain::health::{rollups, FailureRecord, HealthChange, Totals};
use crate::domain::{Attempt, SubscriptionId};
use async_trait::async_trait;

/// What `stats` reads for one subscription.
#[derive(Debug, Clone, Default)]
pub struct HealthReport {
    pub totals: Totals,
    pub record: FailureRecord,
    /// Its dead letters waiting for a replay or a discard.
    pub pending_dead_letters: u64,
}

#[async_trait]
pub trait Health: Send + Sync {
    /// Writes a batch of attempts (in the order made), adds them to the
    /// rollups and moves each subscription's failure record on, in one
    /// transaction; answers each subscription's record before and after.
    async fn record_attempts(&self, attempts: &[Attempt]) -> Result<Vec<HealthChange>>;

    /// Forgets a subscription's run of failures (it was made active again).
    async fn reset_health(&self, id: &SubscriptionId) -> Result<()>;

    /// The rollups from `since_minute` (Unix minutes) on, the failure
    /// record and the pending dead letters of one subscription.
    async fn health_report(&self, id: &SubscriptionId, since_minute: i64) -> Result<HealthReport>;

    /// Deletes rollups of minutes before `before_minute`; answers how many.
    async fn purge_rollups(&self, before_minute: i64) -> Result<u64>;
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    subscription_id: String,
    consecutive_failures: i64,
    failing_since_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_failure_ms: Option<i64>,
    last_failure_status: Option<i64>,
    last_failure_error: Option<String>,
}

impl RecordRow {
    fn into_record(self) -> FailureRecord {
        FailureRecord {
            consecutive_failures: u64::try_from(self.consecutive_failures).unwrap_or(0),
            failing_since_ms: self.failing_since_ms,
            last_success_ms: self.last_success_ms,
            last_failure_ms: self.last_failure_ms,
            last_failure_status: self.last_failure_status.and_then(|s| u16::try_from(s).ok()),
            last_failure_error: self.last_failure_error,
        }
    }
}

const RECORD_COLUMNS: &str = "subscription_id, consecutive_failures, failing_since_ms, \
    last_success_ms, last_failure_ms, last_failure_status, last_failure_error";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// PostgreSQL: fixed statements over arrays, prepared once per connection
/// (a `VALUES` list of the batch's length is a new statement each time).
mod postgres {
    use super::{count, HealthChange, RecordRow, Result, RECORD_COLUMNS};
    use crate::domain::health::Rollup;

    pub(super) async fn add_rollups(tx: &mut sqlx::PgConnection, rows: &[Rollup]) -> Result<()> {
        sqlx::query(
            "INSERT INTO attempt_rollups \
             (subscription_id, minute, latency_bin, attempts, successes) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (subscription_id, minute, latency_bin) DO UPDATE SET \
             attempts = attempt_rollups.attempts + excluded.attempts, \
             successes = attempt_rollups.successes + excluded.successes",
        )
        .bind(rows.iter().map(|r| r.subscription_id.as_str().to_owned()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.minute).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| i64::try_from(r.latency_bin).unwrap_or(i64::MAX)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| count(r.attempts)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| count(r.successes)).collect::<Vec<_>>())
        .execute(tx)
        .await?;
        Ok(())
    }

    pub(super) async fn read_records(
        tx: &mut sqlx::PgConnection,
        ids: &[&str],
    ) -> Result<Vec<RecordRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {RECORD_COLUMNS} FROM subscription_health WHERE subscription_id = ANY($1::text[])"
        ))
        .bind(ids)
        .fetch_all(tx)
        .await?)
    }

    pub(super) async fn write_records(
        tx: &mut sqlx::PgConnection,
        changes: &[HealthChange],
    ) -> Result<()> {
        let after = |f: fn(&crate::domain::health::FailureRecord) -> Option<i64>| {
            changes.iter().map(|c| f(&c.after)).collect::<Vec<_>>()
        };
        sqlx::query(&format!(
            "INSERT INTO subscription_health ({RECORD_COLUMNS}) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
             $5::bigint[], $6::bigint[], $7::text[]) \
             ON CONFLICT (subscription_id) DO UPDATE SET {}",
            super::RECORD_UPDATE
        ))
        .bind(changes.iter().map(|c| c.subscription_id.as_str().to_owned()).collect::<Vec<_>>())
        .bind(after(|r| Some(count(r.consecutive_failures))))
        .bind(after(|r| r.failing_since_ms))
        .bind(after(|r| r.last_success_ms))
        .bind(after(|r| r.last_failure_ms))
        .bind(after(|r| r.last_failure_status.map(i64::from)))
        .bind(changes.iter().map(|c| c.after.last_failure_error.clone()).collect::<Vec<_>>())
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// SQLite (`hookgate dev`): `VALUES` lists; it has no arrays.
mod sqlite {
    use sqlx::QueryBuilder;

    use super::{count, HealthChange, RecordRow, Result, RECORD_COLUMNS};
    use crate::domain::health::Rollup;

    pub(super) async fn add_rollups(
        tx: &mut sqlx::SqliteConnection,
        rows: &[Rollup],
    ) -> Result<()> {
        let mut add = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO attempt_rollups \
             (subscription_id, minute, latency_bin, attempts, successes) ",
        );
        add.push_values(rows, |mut row, r| {
            row.push_bind(r.subscription_id.as_str())
                .push_bind(r.minute)
                .push_bind(i64::try_from(r.latency_bin).unwrap_or(i64::MAX))
                .push_bind(count(r.attempts))
                .push_bind(count(r.successes));
        });
        add.push(
            " ON CONFLICT (subscription_id, minute, latency_bin) DO UPDATE SET \
             attempts = attempt_rollups.attempts + excluded.attempts, \
             successes = attempt_rollups.successes + excluded.successes",
        );
        add.build().execute(tx).await?;
        Ok(())
    }

    pub(super) async fn read_records(
        tx: &mut sqlx::SqliteConnection,
        ids: &[&str],
    ) -> Result<Vec<RecordRow>> {
        let mut read = QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {RECORD_COLUMNS} FROM subscription_health WHERE subscription_id IN ("
        ));
        let mut list = read.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        read.push(")");
        Ok(read.build_query_as().fetch_all(tx).await?)
    }

    pub(super) async fn write_records(
        tx: &mut sqlx::SqliteConnection,
        changes: &[HealthChange],
    ) -> Result<()> {
        let mut write = QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO subscription_health ({RECORD_COLUMNS}) "
        ));
        write.push_values(changes, |mut row, c| {
            let r = &c.after;
            row.push_bind(c.subscription_id.as_str())
                .push_bind(count(r.consecutive_failures))
                .push_bind(r.failing_since_ms)
                .push_bind(r.last_success_ms)
                .push_bind(r.last_failure_ms)
                .push_bind(r.last_failure_status.map(i64::from))
                .push_bind(r.last_failure_error.as_deref());
        });
        write
            .push(format!(" ON CONFLICT (subscription_id) DO UPDATE SET {}", super::RECORD_UPDATE));
        write.build().execute(tx).await?;
        Ok(())
    }
}

/// An upsert's update of every failure-record column.
const RECORD_UPDATE: &str = "consecutive_failures = excluded.consecutive_failures, \
    failing_since_ms = excluded.failing_since_ms, \
    last_success_ms = excluded.last_success_ms, \
    last_failure_ms = excluded.last_failure_ms, \
    last_failure_status = excluded.last_failure_status, \
    last_failure_error = excluded.last_failure_error";

/// Each subscription's failure record before and after `attempts` (in the
/// order made), from the records `stored`; in key order, as the rollups, so
/// that two writers (a rebalance) take the rows' locks in one order and
/// cannot deadlock.
fn changes(attempts: &[Attempt], stored: Vec<RecordRow>) -> Vec<HealthChange> {
    let mut stored: HashMap<String, RecordRow> =
        stored.into_iter().map(|r| (r.subscription_id.clone(), r)).collect();
    let mut changes: HashMap<&SubscriptionId, HealthChange> = HashMap::new();
    for a in attempts {
        let change = changes.entry(&a.subscription_id).or_insert_with(|| {
            let before = stored
                .remove(a.subscription_id.as_str())
                .map(RecordRow::into_record)
                .unwrap_or_default();
            HealthChange {
                subscription_id: a.subscription_id.clone(),
                after: before.clone(),
                before,
            }
        });
        change.after.apply(a);
    }
    let mut changes: Vec<HealthChange> = changes.into_values().collect();
    changes.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
    changes
}

/// `Health` on one backend (see `sql.rs`); `$insert` writes the attempts,
/// `$sql` the rest.
macro_rules! health_on {
    ($db:ty, $insert:ident, $sql:ident) => {
        #[async_trait]
        impl Health for SqlStore<$db> {
            async fn record_attempts(&self, attempts: &[Attempt]) -> Result<Vec<HealthChange>> {
                if attempts.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin().await?;
                $insert(&mut *tx, attempts).await?;
                $sql::add_rollups(&mut *tx, &rollups(attempts)).await?;
                let mut ids: Vec<&str> = attempts.iter().map(|a| a.subscription_id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                let stored = $sql::read_records(&mut *tx, &ids).await?;
                let changes = changes(attempts, stored);
                $sql::write_records(&mut *tx, &changes).await?;
                tx.commit().await?;
                Ok(changes)
            }

            async fn reset_health(&self, id: &SubscriptionId) -> Result<()> {
                sqlx::query(
                    "UPDATE subscription_health SET consecutive_failures = 0, \
                     failing_since_ms = NULL WHERE subscription_id = $1",
                )
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn health_report(
                &self,
                id: &SubscriptionId,
                since_minute: i64,
            ) -> Result<HealthReport> {
                let bins: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT latency_bin, CAST(SUM(attempts) AS BIGINT), \
                     CAST(SUM(successes) AS BIGINT) FROM attempt_rollups \
                     WHERE subscription_id = $1 AND minute >= $2 GROUP BY latency_bin",
                )
                .bind(id.as_str())
                .bind(since_minute)
                .fetch_all(&self.pool)
                .await?;
                let mut totals = Totals::default();
                for (bin, attempts, successes) in bins {
                    let n = |v: i64| u64::try_from(v).unwrap_or(0);
                    totals.add(usize::try_from(bin).unwrap_or(usize::MAX), n(attempts), n(successes));
                }
                let record: Option<RecordRow> = sqlx::query_as(&format!(
                    "SELECT {RECORD_COLUMNS} FROM subscription_health WHERE subscription_id = $1"
                ))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM dead_letters WHERE subscription_id = $1 \
                     AND status = 'pending'",
                )
                .bind(id.as_str())
                .fetch_one(&self.pool)
                .await?;
                Ok(HealthReport {
                    totals,
                    record: record.map(RecordRow::into_record).unwrap_or_default(),
                    pending_dead_letters: u64::try_from(pending).unwrap_or(0),
                })
            }

            async fn purge_rollups(&self, before_minute: i64) -> Result<u64> {
                let done = sqlx::query("DELETE FROM attempt_rollups WHERE minute < $1")
                    .bind(before_minute)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

health_on!(sqlx::Postgres, insert_unnest, postgres);
health_on!(sqlx::Sqlite, insert_values, sqlite);
