//! Retention: delivery attempts, dead letters and finished replays older
//! than the configured period are deleted, a small batch at a time, so that
//! no purge holds locks for long or competes with the delivery path; so are
//! subscriptions deleted longer ago than theirs (dispatchers have long seen
//! the delete by then, and a fresh one loads only live rows).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::sql::SqlStore;
use super::{Result, Store};

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
pub trait Retention: Send + Sync {
    /// Deletes at most `limit` rows older than `before`; answers how many.
    async fn purge(&self, table: Purgeable, before: DateTime<Utc>, limit: i64) -> Result<u64>;
}

/// Rows deleted per statement.
pub const BATCH: i64 = 1_000;
/// Between two batches, room for everyone else.
const BATCH_PAUSE: Duration = Duration::from_millis(50);
const INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Purges every table of rows created before `before`; answers how many
/// rows went.
pub async fn purge(store: &dyn Store, before: DateTime<Utc>) -> Result<u64> {
    let mut purged = 0;
    for table in [Purgeable::Attempts, Purgeable::DeadLetters, Purgeable::Replays] {
        purged += purge_table(store, table, before).await?;
    }
    Ok(purged)
}

/// Purges subscriptions deleted before `before`; answers how many went.
pub async fn purge_deleted_subscriptions(store: &dyn Store, before: DateTime<Utc>) -> Result<u64> {
    purge_table(store, Purgeable::DeletedSubscriptions, before).await
}

async fn purge_table(store: &dyn Store, table: Purgeable, before: DateTime<Utc>) -> Result<u64> {
    let mut purged = 0;
    loop {
        let deleted = store.purge(table, before, BATCH).await?;
        purged += deleted;
        if deleted < BATCH as u64 {
            return Ok(purged);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}

/// How long attempt rollups are kept, in minutes: eight days.
const ROLLUP_MINUTES: i64 = 8 * 24 * 60;

/// Purges at start and every ten minutes until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    retention: Duration,
    deleted_retention: Duration,
    shutdown: CancellationToken,
) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let deleted_retention =
        chrono::Duration::from_std(deleted_retention).unwrap_or(chrono::Duration::MAX);
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Some(before) = Utc::now().checked_sub_signed(deleted_retention) {
            let purged = tokio::select! {
                _ = shutdown.cancelled() => return,
                purged = purge_deleted_subscriptions(store.as_ref(), before) => purged,
            };
            match purged {
                Ok(0) => {}
                Ok(rows) => {
                    tracing::info!(rows, %before, "retention: deleted subscriptions purged")
                }
                Err(error) => tracing::warn!(%error, "purge of deleted subscriptions failed"),
            }
        }
        // `stats` reads a week at most; a day more covers the window's edge.
        let rollups_before = Utc::now().timestamp().div_euclid(60) - ROLLUP_MINUTES;
        match store.purge_rollups(rollups_before).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "retention: old attempt rollups purged"),
            Err(error) => tracing::warn!(%error, "purge of attempt rollups failed"),
        }
        let Some(before) = Utc::now().checked_sub_signed(retention) else { continue };
        let purged = tokio::select! {
            _ = shutdown.cancelled() => return,
            purged = purge(store.as_ref(), before) => purged,
        };
        match purged {
            Ok(0) => {}
            Ok(rows) => {
                tracing::info!(rows, %before, "retention: old attempts and dead letters purged")
            }
            Err(error) => tracing::warn!(%error, "retention purge failed"),
        }
    }
}

/// `Retention` on one backend (see `sql.rs`).
macro_rules! retention_on {
    ($db:ty) => {
        #[async_trait]
        impl Retention for SqlStore<$db> {
            async fn purge(
                &self,
                table: Purgeable,
                before: DateTime<Utc>,
                limit: i64,
            ) -> Result<u64> {
                // Small batches by primary key: no long lock, no long transaction.
                let sql = match table {
                    Purgeable::Attempts => {
                        "DELETE FROM attempts WHERE id IN \
                         (SELECT id FROM attempts WHERE created_at < $1 LIMIT $2)"
                    }
                    Purgeable::DeadLetters => {
                        "DELETE FROM dead_letters WHERE id IN \
                         (SELECT id FROM dead_letters WHERE created_at < $1 LIMIT $2)"
                    }
                    Purgeable::Replays => {
                        "DELETE FROM replays WHERE id IN (SELECT id FROM replays \
                         WHERE status <> 'running' AND finished_at < $1 LIMIT $2)"
                    }
                    Purgeable::DeletedSubscriptions => {
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

retention_on!(sqlx::Postgres);
retention_on!(sqlx::Sqlite);
