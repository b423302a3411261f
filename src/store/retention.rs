//! Retention: delivery attempts, dead letters and finished replays older
//! than the configured period are deleted, a small batch at a time, so that
//! no purge holds locks for long or competes with the delivery path; so are
//! subscriptions deleted longer ago than theirs (dispatchers have long seen
//! the delete by then, and a fresh one loads only live rows).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Purgeable, Result, Store};

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
