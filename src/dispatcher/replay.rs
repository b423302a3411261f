//! Replaying dead letters: a dead letter becomes a fresh delivery record on
//! the deliveries topic (same event, same subscription, so the same
//! `webhook-id`), and goes through the normal delivery path: gates, retries,
//! and, failing again, a new dead letter linked to this one.
//!
//! Bulk replays are jobs in the store. `ReplayRunner` (in every dispatcher)
//! claims one by lease, sends its pending dead letters in id order at the
//! job's rate, and saves its cursor after each batch, so that a job survives
//! the process that runs it: once the lease expires, any dispatcher resumes.
//! After a minute a runner gives its job up to the one that waited longest,
//! so that long, slow jobs do not keep the others waiting.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{DeadLetter, DeadLetterId, Replay, Scope, SubscriptionId};
use crate::kafka::dead_letter::{delivery_of, NotReplayable};
use crate::kafka::delivery::{Delivery, ReplayOrigin};
use crate::kafka::Producer;
use crate::store::Store;

/// How long a claimed job stays this runner's without progress being saved:
/// well over one batch (a quarter second of the rate, or 200 records, plus
/// Kafka's acknowledgement timeout), so that no second runner takes it over
/// while the first is still sending.
pub const LEASE: Duration = Duration::from_secs(30);
/// How long a runner works on one job before it lets the others have a turn.
const TURN: Duration = Duration::from_secs(60);
/// How often an idle runner looks for a job.
const POLL: Duration = Duration::from_secs(1);
const MAX_BATCH: u32 = 200;
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A limiter that never lets more than `rate` through in any one-second
/// window: a burst of 1/20 s, and a steady rate 5 % under what remains, so
/// that jitter between sending and arriving does not push a receiver over.
pub fn replay_limiter(rate: NonZeroU32) -> DefaultDirectRateLimiter {
    let rate = rate.get();
    let burst = (rate / 20).max(1);
    let steady = (f64::from(rate - burst + 1) * 0.95).max(1.0);
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / steady))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota)
}

/// A job's limiter for one receiver (its subscription, or the job's URL),
/// and when it was last used.
type Limiters = HashMap<(String, String), (Arc<DefaultDirectRateLimiter>, Instant)>;

/// The delivery stage's limiters of replay jobs, per job and receiver.
#[derive(Debug, Default)]
pub struct ReplayLimits {
    limiters: Mutex<Limiters>,
}

const IDLE_LIMITER: Duration = Duration::from_secs(120);

impl ReplayLimits {
    /// The limiter a replayed delivery waits for, if its job set a rate.
    pub fn of(&self, delivery: &Delivery) -> Option<Arc<DefaultDirectRateLimiter>> {
        let replay = delivery.replay.as_ref()?;
        let rate = NonZeroU32::new(replay.rate_per_second?)?;
        let job = replay.job.clone()?;
        // One receiver for all of the job's subscriptions when it overrides the URL.
        let receiver = match &replay.url {
            Some(url) => url.clone(),
            None => delivery.subscription_id.as_str().to_owned(),
        };
        let now = Instant::now();
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        if limiters.len() >= 256 {
            limiters.retain(|_, (_, used)| now.duration_since(*used) < IDLE_LIMITER);
        }
        let entry = limiters
            .entry((job, receiver))
            .or_insert_with(|| (Arc::new(replay_limiter(rate)), now));
        entry.1 = now;
        Some(Arc::clone(&entry.0))
    }
}

#[derive(Debug)]
pub struct ReplayRunner {
    pub store: Arc<dyn Store>,
    pub producer: Producer,
    pub deliveries_topic: String,
    /// This runner's name in leases.
    pub owner: String,
    pub shutdown: CancellationToken,
}

/// How a batch went.
struct BatchResult {
    /// Sent and acknowledged.
    sent: Vec<DeadLetterId>,
    /// The last dead letter up to which every one was handled.
    cursor: Option<DeadLetterId>,
    /// Of those, how many cannot be replayed.
    failed: u64,
    /// A send failed: pause before going on.
    interrupted: bool,
}

impl ReplayRunner {
    pub async fn run(self) {
        loop {
            let now = Utc::now();
            // A claim cut short at shutdown leaves at most a lease that
            // runs out; a database that is slow must not hold the exit.
            let claimed = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                claimed = self.store.claim_replay(&self.owner, now, now + LEASE) => claimed,
            };
            let pause = match claimed {
                Ok(Some(job)) => {
                    tracing::info!(replay_id = %job.id, total = job.total, done = job.done, "replay job claimed");
                    self.replay(job).await;
                    Duration::ZERO
                }
                Ok(None) => POLL,
                Err(error) => {
                    tracing::warn!(%error, "looking for replay jobs failed");
                    POLL
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn replay(&self, job: Replay) {
        let limiter = job.rate_per_second.and_then(NonZeroU32::new).map(replay_limiter);
        let batch_size = job.rate_per_second.map_or(MAX_BATCH, |r| (r / 4).clamp(1, MAX_BATCH));
        let mut cursor = job.cursor.clone();
        let started = Instant::now();
        loop {
            // Stopping, or this job's turn is over: any runner resumes it from
            // the saved cursor (a killed runner's lease just runs out).
            if self.shutdown.is_cancelled() || started.elapsed() >= TURN {
                if let Err(error) =
                    self.store.release_replay(&job.id, &self.owner, Utc::now()).await
                {
                    tracing::warn!(replay_id = %job.id, %error, "giving a replay job up failed; its lease runs out");
                }
                return;
            }
            let batch = match &job.upper_id {
                None => Ok(Vec::new()),
                Some(upper) => {
                    self.store
                        .dead_letters_to_replay(
                            &job.filter,
                            cursor.as_ref(),
                            upper,
                            i64::from(batch_size),
                        )
                        .await
                }
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(replay_id = %job.id, %error, "reading a replay batch failed");
                    if !self.renew(&job, None, &[], 0).await || !self.pause(ERROR_PAUSE).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                match self.store.finish_replay(&job.id, &self.owner, Utc::now()).await {
                    Ok(true) => tracing::info!(replay_id = %job.id, "replay job completed"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(replay_id = %job.id, %error, "completing a replay job failed")
                    }
                }
                return;
            }
            let Some(result) = self.send_batch(&job, &batch, limiter.as_ref()).await else {
                return;
            };
            if let Some(last) = &result.cursor {
                cursor = Some(last.clone());
            }
            if !self.renew(&job, result.cursor.as_ref(), &result.sent, result.failed).await {
                tracing::info!(replay_id = %job.id, "replay job cancelled or taken over; stopping");
                return;
            }
            if result.interrupted && !self.pause(ERROR_PAUSE).await {
                return;
            }
        }
    }

    /// Sends a batch at the job's pace; `None` when shutdown interrupted it.
    async fn send_batch(
        &self,
        job: &Replay,
        batch: &[DeadLetter],
        limiter: Option<&DefaultDirectRateLimiter>,
    ) -> Option<BatchResult> {
        // Claimed before anything is sent: a dead letter another replay
        // holds (a single replay, or another job) is not sent twice.
        let ids: Vec<DeadLetterId> = batch.iter().map(|d| d.record.id.clone()).collect();
        let claim = crate::store::replay_claim(&job.id);
        let now = Utc::now();
        let claimed: HashSet<DeadLetterId> = match self
            .store
            .claim_dead_letters(&ids, &claim, now, now + LEASE)
            .await
        {
            Ok(claimed) => claimed.into_iter().collect(),
            Err(error) => {
                tracing::warn!(replay_id = %job.id, %error, "claiming a replay batch failed; retrying it");
                return Some(BatchResult {
                    sent: Vec::new(),
                    cursor: None,
                    failed: 0,
                    interrupted: true,
                });
            }
        };
        let mut queued = Vec::with_capacity(batch.len());
        // Whether each subscription still exists: a deleted one's delivery
        // would be dropped, so it counts as not replayable instead of done.
        let mut live: HashMap<SubscriptionId, bool> = HashMap::new();
        for dead_letter in batch {
            if !claimed.contains(&dead_letter.record.id) {
                queued.push(Queued::Held);
                continue;
            }
            let origin = ReplayOrigin {
                dead_letter: dead_letter.record.id.as_str().to_owned(),
                job: Some(job.id.as_str().to_owned()),
                rate_per_second: job.rate_per_second,
                url: job.url.clone(),
            };
            let delivery = match delivery_of(dead_letter, origin) {
                Ok(delivery) if !self.exists(&mut live, &delivery.subscription_id).await => {
                    Err(NotReplayable::SubscriptionDeleted(delivery.subscription_id))
                }
                other => other,
            };
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(why) => {
                    tracing::info!(replay_id = %job.id, dead_letter_id = %dead_letter.record.id, %why, "dead letter not replayable");
                    queued.push(Queued::NotReplayable);
                    continue;
                }
            };
            if let Some(limiter) = limiter {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = limiter.until_ready() => {}
                }
            }
            let acknowledgement =
                self.producer.enqueue_delivery(&self.deliveries_topic, &delivery).await;
            queued.push(Queued::Sent(acknowledgement));
        }
        let outcomes = join_all(queued.into_iter().map(|queued| async move {
            match queued {
                Queued::Held => Outcome::Held,
                Queued::NotReplayable => Outcome::NotReplayable,
                Queued::Sent(Ok(future)) => match future.await {
                    Ok(Ok(_)) => Outcome::Sent,
                    _ => Outcome::SendFailed,
                },
                Queued::Sent(Err(_)) => Outcome::SendFailed,
            }
        }))
        .await;
        let mut result =
            BatchResult { sent: Vec::new(), cursor: None, failed: 0, interrupted: false };
        for (dead_letter, outcome) in batch.iter().zip(outcomes) {
            let id = &dead_letter.record.id;
            match outcome {
                Outcome::Sent => result.sent.push(id.clone()),
                Outcome::NotReplayable if !result.interrupted => result.failed += 1,
                Outcome::NotReplayable => {}
                Outcome::SendFailed => {
                    if !result.interrupted {
                        tracing::warn!(replay_id = %job.id, "Kafka did not take a replayed delivery; retrying from it");
                    }
                    result.interrupted = true;
                }
                // Another replay holds it: once that one is done it is no
                // longer pending (and skipped); if it gave it up, ours.
                Outcome::Held => {
                    if !result.interrupted {
                        tracing::debug!(replay_id = %job.id, dead_letter_id = %id, "dead letter held by another replay; retrying from it");
                    }
                    result.interrupted = true;
                }
            }
            if !result.interrupted {
                result.cursor = Some(id.clone());
            }
        }
        Some(result)
    }

    /// Whether the subscription exists (asked once a batch); when the store
    /// cannot tell, it is sent, and the deliver stage decides.
    async fn exists(&self, live: &mut HashMap<SubscriptionId, bool>, id: &SubscriptionId) -> bool {
        if let Some(known) = live.get(id) {
            return *known;
        }
        // The runner acts for the system: the job's filter already holds
        // it to the tenant that asked.
        let exists = !matches!(self.store.get_subscription(Scope::All, id).await, Ok(None));
        live.insert(id.clone(), exists);
        exists
    }

    /// Saves progress and extends the lease; false when the job is not ours
    /// to go on with.
    async fn renew(
        &self,
        job: &Replay,
        cursor: Option<&DeadLetterId>,
        sent: &[DeadLetterId],
        failed: u64,
    ) -> bool {
        loop {
            let now = Utc::now();
            let saved = self
                .store
                .advance_replay(&job.id, &self.owner, cursor, sent, failed, now, now + LEASE)
                .await;
            match saved {
                Ok(ours) => return ours,
                Err(error) => {
                    tracing::warn!(replay_id = %job.id, %error, "saving replay progress failed; retrying")
                }
            }
            if !self.pause(ERROR_PAUSE).await {
                return false;
            }
        }
    }

    /// Sleeps; false when shutdown came first.
    async fn pause(&self, how_long: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(how_long) => true,
        }
    }
}

/// A dead letter of a batch, once handed on (or not).
enum Queued<A> {
    Held,
    NotReplayable,
    Sent(A),
}

enum Outcome {
    Sent,
    NotReplayable,
    SendFailed,
    Held,
}
