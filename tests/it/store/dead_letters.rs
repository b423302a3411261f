//! Dead letters and replay jobs in the store, each on PostgreSQL and on
//! SQLite.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookgate::domain::{
    DeadLetterFilter, DeadLetterId, DeadLetterStatus, NewDeadLetter, Outcome, RecordHeader, Replay,
    ReplayId, ReplayStatus, Scope, SubscriptionId, TenantId,
};
use hookgate::store::{retention, AttemptFilter, Store};

use super::{attempt, page, stored_now, subscription};
use crate::harness::{both_backends, Backend, TestDb};

fn dead_letter(n: i64, subscription: &SubscriptionId, created_at: DateTime<Utc>) -> NewDeadLetter {
    NewDeadLetter {
        id: DeadLetterId::generate(),
        dlq_topic: "t.dlq".to_owned(),
        dlq_partition: 0,
        dlq_offset: n,
        tenant_id: Some(TenantId::default_tenant()),
        subscription_id: Some(subscription.clone()),
        event_id: Some(format!("evt_{n}")),
        event_type: Some("order.created".to_owned()),
        webhook_id: Some(hookgate::domain::WebhookId::from_trusted(format!("msg_{n}"))),
        reason: hookgate::domain::DeadReason::Exhausted,
        error: Some("the endpoint answered 503".to_owned()),
        last_status: Some(503),
        attempts: 4,
        first_attempt_at: Some(created_at),
        last_attempt_at: Some(created_at),
        dead_at: created_at,
        replay_of: None,
        headers: vec![RecordHeader::new("ce_id", Some(format!("evt_{n}").as_bytes()))],
        payload: Some(br#"{"n":1}"#.to_vec()),
        created_at,
    }
}

/// Dead letters at offsets 1 to 5 of `sub` (now), 6 of another
/// subscription, and 7 of `sub` dead-lettered 40 days ago.
struct Indexed {
    store: Arc<dyn Store>,
    /// Bind it (`_db`, not `..`): dropped, it drops the database.
    _db: TestDb,
    now: DateTime<Utc>,
    first: NewDeadLetter,
    /// `sub`'s dead letters.
    of_sub: DeadLetterFilter,
    /// `sub`'s dead letters of the last minute.
    recent: DeadLetterFilter,
}

async fn indexed(backend: Backend) -> Indexed {
    let (db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let sub = SubscriptionId::generate();
    let first = dead_letter(1, &sub, now);
    store.insert_dead_letter(&first).await.expect("insert");
    for n in 2..=5 {
        store.insert_dead_letter(&dead_letter(n, &sub, now)).await.expect("insert");
    }
    store.insert_dead_letter(&dead_letter(6, &SubscriptionId::generate(), now)).await.expect("6");
    let old = now - chrono::Duration::days(40);
    store.insert_dead_letter(&dead_letter(7, &sub, old)).await.expect("insert old");
    let of_sub = DeadLetterFilter { subscription_id: Some(sub.clone()), ..Default::default() };
    let recent = DeadLetterFilter {
        from: Some(now - chrono::Duration::minutes(1)),
        to: Some(now + chrono::Duration::minutes(1)),
        ..of_sub.clone()
    };
    Indexed { store, _db: db, now, first, of_sub, recent }
}

async fn a_dead_letter_is_indexed_once_per_topic_position(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let sub = SubscriptionId::generate();
    let other = SubscriptionId::generate();
    let old = now - chrono::Duration::days(40);
    let first = dead_letter(1, &sub, now);
    assert!(store.insert_dead_letter(&first).await.expect("insert"));
    // The same topic position again (a re-read of the topic) adds nothing.
    let again = NewDeadLetter { id: DeadLetterId::generate(), ..first.clone() };
    assert!(!store.insert_dead_letter(&again).await.expect("insert again"));
    for n in 2..=5 {
        store.insert_dead_letter(&dead_letter(n, &sub, now)).await.expect("insert");
    }
    store.insert_dead_letter(&dead_letter(6, &other, now)).await.expect("insert");
    store.insert_dead_letter(&dead_letter(7, &sub, old)).await.expect("insert old");

    let of_sub = DeadLetterFilter { subscription_id: Some(sub.clone()), ..Default::default() };
    let listed = store.list_dead_letters(&of_sub, page(None, 100)).await.expect("list");
    assert_eq!(listed.len(), 6, "5 recent and 1 old of the subscription");
    let stored = store.get_dead_letter(Scope::All, &first.id).await.expect("get").expect("found");
    assert_eq!(stored.record.payload, first.payload);
    assert_eq!(stored.record.headers, first.headers);
    assert_eq!(stored.status, DeadLetterStatus::Pending);
    let elsewhere = TenantId::generate();
    assert!(store
        .get_dead_letter(Scope::Tenant(&elsewhere), &first.id)
        .await
        .expect("get")
        .is_none());
}
both_backends!(a_dead_letter_is_indexed_once_per_topic_position);

async fn only_a_pending_dead_letter_moves_and_counts_follow(backend: Backend) {
    let Indexed { _db, store, now, first, recent, .. } = indexed(backend).await;
    let (count, _newest) = store.count_dead_letters(&recent).await.expect("count");
    assert_eq!(count, 5);
    assert_eq!(
        store
            .mark_dead_letters(
                std::slice::from_ref(&first.id),
                DeadLetterStatus::Discarded,
                None,
                now
            )
            .await
            .expect("mark"),
        1
    );
    assert_eq!(
        store
            .mark_dead_letters(
                std::slice::from_ref(&first.id),
                DeadLetterStatus::Replayed,
                None,
                now
            )
            .await
            .expect("mark"),
        0,
        "only a pending dead letter moves"
    );
    let pending = DeadLetterFilter { status: Some(DeadLetterStatus::Pending), ..recent.clone() };
    assert_eq!(store.count_dead_letters(&pending).await.expect("count").0, 4);
}
both_backends!(only_a_pending_dead_letter_moves_and_counts_follow);

/// A single replay's claim: one holder at a time; nothing else moves it
/// meanwhile; given up or run out, it can be claimed again; spent, it
/// marks the dead letter replayed.
async fn a_single_replays_claim_has_one_holder_at_a_time(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let claimed = dead_letter(8, &SubscriptionId::generate(), now);
    store.insert_dead_letter(&claimed).await.expect("insert");
    let id = &claimed.id;
    let minute = chrono::Duration::minutes(1);
    assert!(store.claim_dead_letter(id, "a", now, now + minute).await.expect("claim"));
    assert!(!store.claim_dead_letter(id, "b", now, now + minute).await.expect("claim"));
    assert_eq!(
        store
            .mark_dead_letters(std::slice::from_ref(id), DeadLetterStatus::Discarded, None, now)
            .await
            .expect("mark"),
        0,
        "a claimed dead letter is not discarded under the replay"
    );
    store.release_dead_letter_claim(id, "b").await.expect("release another's: nothing");
    assert!(!store.claim_dead_letter(id, "b", now, now + minute).await.expect("claim"));
    store.release_dead_letter_claim(id, "a").await.expect("release");
    assert!(store.claim_dead_letter(id, "b", now, now + minute).await.expect("claim"));
    let later = now + minute * 2;
    assert!(store.claim_dead_letter(id, "c", later, later + minute).await.expect("run out"));
    assert!(!store.finish_dead_letter_claim(id, "b", later).await.expect("finish"), "lost");
    assert!(store.finish_dead_letter_claim(id, "c", later).await.expect("finish"));
    let replayed = store.get_dead_letter(Scope::All, id).await.expect("get").expect("found");
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert!(!store.claim_dead_letter(id, "d", later, later + minute).await.expect("claim"));
}
both_backends!(a_single_replays_claim_has_one_holder_at_a_time);

/// An admin's running job over `filter`, up to `upper`.
fn replay_job(
    filter: &DeadLetterFilter,
    upper_id: Option<DeadLetterId>,
    now: DateTime<Utc>,
) -> Replay {
    Replay {
        id: ReplayId::generate(),
        tenant_id: None,
        filter: filter.clone(),
        upper_id,
        url: None,
        rate_per_second: Some(10),
        status: ReplayStatus::Running,
        total: 4,
        done: 0,
        failed: 0,
        skipped: 0,
        cursor: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

/// A replay job: one owner at a time, progress saved, completion counts skips.
async fn a_replay_job_has_one_owner_saves_its_progress_and_counts_skips(backend: Backend) {
    let Indexed { _db, store, now, first, recent, .. } = indexed(backend).await;
    let (_, newest) = store.count_dead_letters(&recent).await.expect("count");
    // The first is discarded: the four others are pending.
    let discarded = std::slice::from_ref(&first.id);
    store.mark_dead_letters(discarded, DeadLetterStatus::Discarded, None, now).await.expect("mark");
    let pending = DeadLetterFilter { status: Some(DeadLetterStatus::Pending), ..recent.clone() };

    let replay = replay_job(&pending, newest.clone(), now);
    store.create_replay(&replay).await.expect("create replay");
    let lease = now + chrono::Duration::seconds(10);
    let claimed = store.claim_replay("a", now, lease).await.expect("claim").expect("a job");
    assert_eq!(claimed.id, replay.id);
    assert!(store.claim_replay("b", now, lease).await.expect("claim").is_none(), "leased to a");
    let upper = newest.expect("newest");
    let batch = store.dead_letters_to_replay(&pending, None, &upper, 2).await.expect("batch");
    assert_eq!(batch.len(), 2);
    let sent: Vec<DeadLetterId> = batch.iter().map(|d| d.record.id.clone()).collect();
    assert!(store
        .advance_replay(&replay.id, "a", Some(&sent[1]), &sent, 0, now, lease)
        .await
        .expect("advance"));
    assert!(
        !store
            .advance_replay(&replay.id, "b", Some(&sent[1]), &[], 0, now, lease)
            .await
            .expect("advance"),
        "not b's job"
    );
    let rest =
        store.dead_letters_to_replay(&pending, Some(&sent[1]), &upper, 10).await.expect("rest");
    assert_eq!(rest.len(), 2);
    // One of the rest is discarded meanwhile: the job skips it.
    store
        .mark_dead_letters(
            std::slice::from_ref(&rest[0].record.id),
            DeadLetterStatus::Discarded,
            None,
            now,
        )
        .await
        .expect("discard");
    let last = vec![rest[1].record.id.clone()];
    assert!(store
        .advance_replay(&replay.id, "a", Some(&last[0]), &last, 0, now, lease)
        .await
        .expect("advance"));
    assert!(store.finish_replay(&replay.id, "a", now).await.expect("finish"));
    let done = store.get_replay(Scope::All, &replay.id).await.expect("get").expect("found");
    assert_eq!(
        (done.status, done.done, done.failed, done.skipped),
        (ReplayStatus::Completed, 3, 0, 1)
    );
    let replayed = store.get_dead_letter(Scope::All, &sent[0]).await.expect("get").expect("found");
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert_eq!(replayed.replay_id.as_ref(), Some(&replay.id));
}
both_backends!(a_replay_job_has_one_owner_saves_its_progress_and_counts_skips);

/// A lease that ran out is taken over; a cancelled job stops its runner.
async fn a_lapsed_lease_is_taken_over_and_a_cancelled_job_stops_its_runner(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let elsewhere = TenantId::generate();
    let second = replay_job(&DeadLetterFilter::default(), None, now);
    store.create_replay(&second).await.expect("create");
    store
        .claim_replay("a", now, now)
        .await
        .expect("claim")
        .expect("claimed with a lease that ends at once");
    let later = now + chrono::Duration::seconds(1);
    let taken =
        store.claim_replay("b", later, later + chrono::Duration::seconds(10)).await.expect("claim");
    assert_eq!(taken.map(|r| r.id), Some(second.id.clone()));
    // Given up, a job is anyone's at once.
    store.release_replay(&second.id, "b", later).await.expect("release");
    let again = store.claim_replay("c", later, later + chrono::Duration::seconds(10)).await;
    assert_eq!(again.expect("claim").map(|r| r.id), Some(second.id.clone()));
    let cancelled =
        store.cancel_replay(Scope::Tenant(&elsewhere), &second.id, later).await.expect("cancel");
    assert!(cancelled.is_none(), "another tenant's job is not found");
    let cancelled =
        store.cancel_replay(Scope::All, &second.id, later).await.expect("cancel").expect("found");
    assert_eq!(cancelled.status, ReplayStatus::Cancelled);
    assert!(!store
        .advance_replay(&second.id, "c", None, &[], 0, later, later)
        .await
        .expect("advance"));
}
both_backends!(a_lapsed_lease_is_taken_over_and_a_cancelled_job_stops_its_runner);

/// Retention: rows older than the cutoff go, in batches; newer ones stay.
async fn retention_purges_what_is_older_than_the_cutoff(backend: Backend) {
    let Indexed { _db, store, now, of_sub, .. } = indexed(backend).await;
    let old = now - chrono::Duration::days(40);
    let sub_row = subscription("https://example.com/hook");
    let mut old_attempt = attempt(&sub_row, "evt_old", 1, Outcome::Failed);
    old_attempt.created_at = old;
    store
        .insert_attempts(&[old_attempt, attempt(&sub_row, "evt_new", 1, Outcome::Success)])
        .await
        .expect("attempts");
    let purged =
        retention::purge(store.as_ref(), now - chrono::Duration::days(30)).await.expect("purge");
    assert_eq!(purged, 2, "one old attempt and one old dead letter");
    let everyone = AttemptFilter::within(Scope::All);
    let attempts = store.list_attempts(&everyone, page(None, 10)).await.expect("list");
    assert_eq!(attempts.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(), ["evt_new"]);
    assert_eq!(store.list_dead_letters(&of_sub, page(None, 100)).await.expect("list").len(), 5);
}
both_backends!(retention_purges_what_is_older_than_the_cutoff);
