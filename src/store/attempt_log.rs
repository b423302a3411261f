//! Writes delivery attempts in batches, off the delivery path: a database
//! transaction per attempt would cap delivery at a few hundred per second.
//! Each batch also moves the subscriptions' health on (`Health`), and what
//! that changed goes to an `AfterWrite` (the dispatcher's lifecycle).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::domain::health::HealthChange;
use crate::domain::Attempt;

/// Told of every batch written, with the failure records it changed.
#[async_trait::async_trait]
pub trait AfterWrite: Send + Sync + std::fmt::Debug {
    async fn written(&self, attempts: &[Attempt], changes: Vec<HealthChange>);
}

const CHANNEL_CAPACITY: usize = 16_384;
const MAX_BATCH: usize = 1_000;
const WRITE_TRIES: u32 = 5;
/// The least time between two batches' writes.
const GATHER: Duration = Duration::from_millis(50);

/// The sending side; clone it freely. The writer ends once every clone is
/// dropped, or `stop` is cancelled, and what was queued is written.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    tx: mpsc::Sender<Attempt>,
}

impl AttemptLog {
    pub fn spawn(
        store: Arc<dyn Store>,
        after: Option<Arc<dyn AfterWrite>>,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (Self { tx }, tokio::spawn(write_batches(store, after, rx, stop)))
    }

    /// Waits when the writer is behind, so memory stays bounded.
    pub async fn record(&self, attempt: Attempt) {
        if self.tx.send(attempt).await.is_err() {
            tracing::error!("attempt log writer has stopped; attempt not recorded");
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    after: Option<Arc<dyn AfterWrite>>,
    mut rx: mpsc::Receiver<Attempt>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopped = false;
    let mut next_write = tokio::time::Instant::now();
    loop {
        // A batch is a transaction of several statements: at low rates,
        // attempts are gathered for a moment rather than written one by one
        // (which cost the database, beside the deliveries, CPU enough to
        // show in their p99).
        if !stopped {
            tokio::select! {
                () = tokio::time::sleep_until(next_write) => {}
                () = stop.cancelled() => {}
            }
        }
        let received = tokio::select! {
            received = rx.recv_many(&mut batch, MAX_BATCH) => received,
            // Shutdown, with senders left in work that was given up on: take
            // no more, write what is queued.
            () = stop.cancelled(), if !stopped => {
                stopped = true;
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let began = tokio::time::Instant::now();
        // Gathered only when the queue is drained: behind, every moment
        // waited is throughput lost.
        next_write = if rx.is_empty() { began + GATHER } else { began };
        let mut tries = 0;
        loop {
            tries += 1;
            match store.record_attempts(&batch).await {
                Ok(changes) => {
                    tracing::debug!(
                        rows = batch.len(),
                        took_ms = began.elapsed().as_millis() as u64,
                        queued = rx.len(),
                        "attempt log batch written"
                    );
                    if let Some(after) = &after {
                        after.written(&batch, changes).await;
                    }
                    break;
                }
                // One bad row fails the whole statement: write the rows one
                // by one, so that only the bad ones are lost.
                Err(error) if error.is_data_error() => {
                    tracing::warn!(%error, rows = batch.len(), "attempt log batch refused; writing rows one by one");
                    for attempt in &batch {
                        let one = std::slice::from_ref(attempt);
                        match store.record_attempts(one).await {
                            Ok(changes) => {
                                if let Some(after) = &after {
                                    after.written(one, changes).await;
                                }
                            }
                            Err(error) => {
                                tracing::error!(%error, attempt_id = %attempt.id, "attempt row dropped")
                            }
                        }
                    }
                    break;
                }
                Err(error) if tries < WRITE_TRIES => {
                    tracing::warn!(%error, rows = batch.len(), tries, "attempt log write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(error) => {
                    tracing::error!(%error, rows = batch.len(), "attempt log write failed; rows dropped");
                    break;
                }
            }
        }
        batch.clear();
    }
}
