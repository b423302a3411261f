//! Retention: delivery attempts, dead letters and finished replays older
//! than the configured period are deleted, a small batch at a time, so that
//! no purge holds locks for long or competes with the delivery path.

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
        loop {
            let deleted = store.purge(table, before, BATCH).await?;
            purged += deleted;
            if deleted < BATCH as u64 {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    Ok(purged)
}

/// Purges at start and every ten minutes until `shutdown`.
pub async fn run(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
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
