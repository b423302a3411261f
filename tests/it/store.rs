//! The same store scenarios on PostgreSQL and on SQLite.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use hookgate::domain::{
    ApiKey, ApiKeyId, Attempt, AttemptId, DeadLetterFilter, DeadLetterId, DeadLetterStatus,
    EventType, NewApiKey, NewDeadLetter, Outcome, RateLimit, RecordHeader, Replay, ReplayId,
    ReplayStatus, Subscription, SubscriptionId, SubscriptionPatch, SubscriptionStatus, Tenant,
    TenantId,
};
use hookgate::store::{retention, AttemptFilter, Guarded, Page, SecretRotation, Store};

use crate::harness::TestDb;

fn subscription(url: &str) -> Subscription {
    let now = Utc::now();
    Subscription {
        id: SubscriptionId::generate(),
        tenant_id: TenantId::default_tenant(),
        url: url.to_owned(),
        event_types: vec!["order.*".to_owned(), "invoice.paid".to_owned()],
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        previous_secrets: Vec::new(),
        rate_limit: Some(RateLimit { per_second: 10, burst: 20 }),
        max_in_flight: Some(4),
        ordered: true,
        headers: BTreeMap::from([("x-team".to_owned(), "billing".to_owned())]),
        secret_headers: Vec::new(),
        status: SubscriptionStatus::Active,
        disabled_reason: None,
        description: Some("billing hook".to_owned()),
        metadata: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
        created_at: now,
        updated_at: now,
        version: 0,
        unreadable: None,
    }
}

fn attempt(subscription: &Subscription, event_id: &str, n: u32, outcome: Outcome) -> Attempt {
    Attempt {
        id: AttemptId::generate(),
        event_id: event_id.to_owned(),
        webhook_id: hookgate::domain::WebhookId::from_trusted(format!("msg_{event_id}")),
        subscription_id: subscription.id.clone(),
        tenant_id: subscription.tenant_id.clone(),
        event_type: "order.created".to_owned(),
        attempt: n,
        outcome,
        status_code: Some(if outcome == Outcome::Success { 200 } else { 500 }),
        latency_ms: 12,
        error: (outcome == Outcome::Failed).then(|| "the endpoint answered 500".to_owned()),
        response_excerpt: Some("ok".to_owned()),
        created_at: Utc::now(),
    }
}

async fn scenarios(store: Arc<dyn Store>) {
    // Migrating again changes nothing and does not fail.
    store.migrate().await.expect("second migration is a no-op");
    store.ping().await.expect("ping");

    assert!(store.tenant_exists(&TenantId::default_tenant()).await.expect("query"));
    assert!(!store.tenant_exists(&TenantId::generate()).await.expect("query"));

    let first = subscription("https://example.com/a");
    let second = subscription("https://example.com/b");
    store.create_subscription(&first).await.expect("create first");
    store.create_subscription(&second).await.expect("create second");

    // Every field comes back as written.
    let read = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    assert_eq!(read.url, first.url);
    assert_eq!(read.event_types, first.event_types);
    assert_eq!(read.secret, first.secret);
    assert_eq!(read.rate_limit, first.rate_limit);
    assert_eq!(read.max_in_flight, first.max_in_flight);
    assert!(read.ordered);
    assert_eq!(read.headers, first.headers);
    assert_eq!(read.status, SubscriptionStatus::Active);
    assert_eq!(read.description, first.description);
    assert_eq!(read.metadata, first.metadata);
    assert_eq!(read.created_at.timestamp_micros(), first.created_at.timestamp_micros());

    // Another tenant does not see it; an unknown id is not found.
    let other = TenantId::generate();
    assert!(store.get_subscription(Some(&other), &first.id).await.expect("get").is_none());
    assert!(store
        .get_subscription(Some(&TenantId::default_tenant()), &first.id)
        .await
        .expect("get")
        .is_some());
    assert!(store
        .get_subscription(None, &SubscriptionId::generate())
        .await
        .expect("get")
        .is_none());

    // Changes come in version order and can be read incrementally.
    let all = store.subscription_changes(0, 100).await.expect("changes");
    assert_eq!(all.len(), 2);
    assert!(all[0].version < all[1].version);
    assert_eq!(all[0].subscription.id, first.id);
    let after_first = store.subscription_changes(all[0].version, 100).await.expect("changes");
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].subscription.id, second.id);
    let paged = store.subscription_changes(0, 1).await.expect("changes");
    assert_eq!(paged.len(), 1);

    // Attempts are written in one batch and listed per event, oldest first.
    let attempts = vec![
        attempt(&first, "evt_a", 1, Outcome::Failed),
        attempt(&first, "evt_a", 2, Outcome::Success),
        attempt(&second, "evt_b", 1, Outcome::Success),
    ];
    store.insert_attempts(&attempts).await.expect("insert attempts");
    // Writing the same batch again (a retried write) adds nothing.
    store.insert_attempts(&attempts).await.expect("insert attempts again");
    let for_a = store.attempts_for_event(None, "evt_a").await.expect("list");
    assert_eq!(for_a.len(), 2);
    assert_eq!(for_a[0].attempt, 1);
    assert_eq!(for_a[0].outcome, Outcome::Failed);
    assert_eq!(for_a[0].status_code, Some(500));
    assert_eq!(for_a[0].error.as_deref(), Some("the endpoint answered 500"));
    assert_eq!(for_a[1].outcome, Outcome::Success);
    assert!(store.attempts_for_event(Some(&other), "evt_a").await.expect("list").is_empty());

    // Circuit changes: the newest wins, whatever order they are written in.
    use hookgate::domain::CircuitRecord;
    assert_eq!(store.get_circuit(&first.id).await.expect("get circuit"), None);
    let opened = CircuitRecord {
        open: true,
        opened_ms: Some(2_000),
        until_ms: Some(7_000),
        changed_ms: 2_000,
    };
    let closed_before =
        CircuitRecord { open: false, opened_ms: None, until_ms: None, changed_ms: 1_000 };
    store.record_circuit(&first.id, &opened).await.expect("write circuit");
    store.record_circuit(&first.id, &closed_before).await.expect("write an older change");
    assert_eq!(store.get_circuit(&first.id).await.expect("get"), Some(opened), "not rolled back");
    let closed = CircuitRecord { changed_ms: 9_000, ..closed_before };
    store.record_circuit(&first.id, &closed).await.expect("write circuit");
    assert_eq!(store.get_circuit(&first.id).await.expect("get"), Some(closed));
    assert_eq!(store.get_circuit(&second.id).await.expect("get"), None, "per subscription");
}

/// The REST API's resources: tenants and keys, subscription lists and
/// writes, event types, idempotency records, attempt lists.
async fn api_scenarios(store: Arc<dyn Store>) {
    let page = |after: Option<&'static str>, limit: i64| Page { after, limit };
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);

    // Tenants, by id; keys by hash, revocable.
    let tenant = Tenant { id: TenantId::generate(), name: "Acme".to_owned(), created_at: now };
    store.create_tenant(&tenant).await.expect("create tenant");
    let read = store.get_tenant(&tenant.id).await.expect("get").expect("found");
    assert_eq!((read.name.as_str(), read.created_at), ("Acme", now));
    let tenants = store.list_tenants(page(None, 10)).await.expect("list");
    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [tenant.id.as_str(), "ten_default"], "ordered by id");
    let after_first = store
        .list_tenants(Page { after: Some(tenant.id.as_str()), limit: 10 })
        .await
        .expect("list");
    assert_eq!(after_first.len(), 1);

    let secret = NewApiKey::generate();
    let key = ApiKey {
        id: ApiKeyId::generate(),
        tenant_id: tenant.id.clone(),
        name: Some("ci".to_owned()),
        prefix: secret.shown_prefix(),
        created_at: now,
        revoked_at: None,
    };
    store.create_api_key(&key, &secret.hash).await.expect("create key");
    assert_eq!(store.tenant_for_key(&secret.hash).await.expect("lookup"), Some(tenant.id.clone()));
    assert_eq!(store.tenant_for_key("0000").await.expect("lookup"), None);
    let keys = store.list_api_keys(&tenant.id, page(None, 10)).await.expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].prefix, key.prefix);
    assert!(
        !store.revoke_api_key(&TenantId::default_tenant(), &key.id, now).await.expect("revoke"),
        "another tenant's key is not revoked"
    );
    assert!(store.revoke_api_key(&tenant.id, &key.id, now).await.expect("revoke"));
    assert_eq!(store.tenant_for_key(&secret.hash).await.expect("lookup"), None);

    // Subscriptions: listed per tenant and status, updated and deleted with
    // a new version each time.
    let mut first = subscription("https://example.com/1");
    first.tenant_id = tenant.id.clone();
    let mut second = subscription("https://example.com/2");
    second.tenant_id = tenant.id.clone();
    second.status = SubscriptionStatus::Paused;
    let other = subscription("https://example.com/other");
    for s in [&first, &second, &other] {
        store.create_subscription(s).await.expect("create");
    }
    let listed = store.list_subscriptions(&tenant.id, None, page(None, 10)).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        [first.id.clone(), second.id.clone()]
    );
    let paused = store
        .list_subscriptions(&tenant.id, Some(SubscriptionStatus::Paused), page(None, 10))
        .await
        .expect("list");
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].id, second.id);
    let version = |changes: &[hookgate::store::SubscriptionChange], id: &SubscriptionId| {
        changes.iter().find(|c| c.subscription.id == *id).map(|c| (c.version, c.deleted))
    };
    let before = store.subscription_changes(0, 100).await.expect("changes");
    let created = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    let patch = SubscriptionPatch {
        url: Some("https://example.com/new".to_owned()),
        description: Some(None),
        ..Default::default()
    };
    let Guarded::Written(patched) = store
        .patch_subscription(Some(&tenant.id), &first.id, &patch, Some(created.version), now)
        .await
        .expect("patch")
    else {
        panic!("the current version lets the patch through")
    };
    assert_eq!(patched.url, "https://example.com/new");
    assert_eq!(patched.description, None);
    assert_eq!(patched.metadata, first.metadata, "a field not named stays");
    assert!(patched.version > created.version);
    let read =
        store.get_subscription(Some(&tenant.id), &first.id).await.expect("get").expect("found");
    assert_eq!((read.url.as_str(), read.version), (patched.url.as_str(), patched.version));
    let after = store.subscription_changes(0, 100).await.expect("changes");
    assert!(version(&after, &first.id) > version(&before, &first.id));

    // A stale version writes nothing and names the current one.
    let stale = SubscriptionPatch { ordered: Some(false), ..Default::default() };
    assert!(matches!(
        store.patch_subscription(None, &first.id, &stale, Some(created.version), now).await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    let rotation =
        SecretRotation { secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", grace_ends: None, now };
    assert!(matches!(
        store.rotate_subscription_secret(None, &first.id, rotation, Some(created.version)).await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    assert!(matches!(
        store.delete_subscription(None, &first.id, Some(created.version), now).await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    let read = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    assert!(read.ordered && read.secret == first.secret && read.version == patched.version);

    // A rotation keeps the replaced secret for the grace period, and
    // refuses the current secret.
    let grace_ends = now + chrono::Duration::hours(1);
    let rotation = SecretRotation { grace_ends: Some(grace_ends), ..rotation };
    let Ok(Guarded::Written(rotated)) =
        store.rotate_subscription_secret(Some(&tenant.id), &first.id, rotation, None).await
    else {
        panic!("rotated")
    };
    let read = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    assert_eq!(read.secret, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    assert_eq!(read.previous_secrets.len(), 1);
    assert_eq!(read.previous_secrets[0].secret, first.secret);
    assert_eq!(read.version, rotated.version);
    assert_eq!(read.url, "https://example.com/new", "the rotation wrote only the secrets");
    assert!(matches!(
        store.rotate_subscription_secret(None, &first.id, rotation, None).await,
        Ok(Guarded::SameSecret)
    ));

    // The 410 disable: only for the URL that answered, once, and a later
    // patch of another field leaves it disabled.
    assert!(!store
        .disable_gone(&first.id, "https://example.com/1", "gone", now)
        .await
        .expect("disable"));
    assert!(store
        .disable_gone(&first.id, "https://example.com/new", "gone", now)
        .await
        .expect("disable"));
    let disabled = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    assert!(!store
        .disable_gone(&first.id, "https://example.com/new", "again", now)
        .await
        .expect("disable"));
    let read = store.get_subscription(None, &first.id).await.expect("get").expect("found");
    assert_eq!(read.version, disabled.version, "disabled already: no new version");
    assert_eq!(read.disabled_reason.as_deref(), Some("gone"));
    let describe = SubscriptionPatch { description: Some(Some("x".into())), ..Default::default() };
    let Ok(Guarded::Written(described)) =
        store.patch_subscription(None, &first.id, &describe, None, now).await
    else {
        panic!("patched")
    };
    assert_eq!(described.status, SubscriptionStatus::Disabled);
    assert_eq!(described.disabled_reason.as_deref(), Some("gone"));

    assert_eq!(
        store
            .delete_subscription(Some(&TenantId::default_tenant()), &first.id, None, now)
            .await
            .expect("delete"),
        Guarded::NotFound,
        "another tenant's subscription is not deleted"
    );
    assert_eq!(
        store
            .delete_subscription(Some(&tenant.id), &first.id, Some(described.version), now)
            .await
            .expect("delete"),
        Guarded::Written(())
    );
    assert_eq!(
        store.delete_subscription(None, &first.id, None, now).await.expect("delete again"),
        Guarded::NotFound
    );
    assert!(matches!(
        store.patch_subscription(None, &first.id, &describe, None, now).await,
        Ok(Guarded::NotFound)
    ));
    assert!(!store
        .disable_gone(&first.id, "https://example.com/new", "gone", now)
        .await
        .expect("disable"));
    let deleted = store.subscription_changes(0, 100).await.expect("changes");
    let (v, gone) = version(&deleted, &first.id).expect("listed");
    assert!(gone && Some((v, true)) > version(&after, &first.id));
    assert!(store.get_subscription(None, &first.id).await.expect("get").is_none());

    // Event types, unique by name.
    let schema = serde_json::json!({"type": "object"});
    let event_type = EventType {
        name: "invoice.paid".to_owned(),
        description: Some("paid".to_owned()),
        schema: Some(schema.clone()),
        visible_to: None,
        created_at: now,
    };
    assert!(store.create_event_type(&event_type).await.expect("create"));
    assert!(!store.create_event_type(&event_type).await.expect("create again"));
    let read = store.get_event_type("invoice.paid").await.expect("get").expect("found");
    assert_eq!(read.schema, Some(schema));
    assert!(store.get_event_type("nothing").await.expect("get").is_none());
    assert_eq!(store.list_event_types(page(None, 5)).await.expect("list").len(), 1);
    // Dispatchers load types made since they last looked, in order, with
    // who may see them.
    let seen = store.event_type_changes(0).await.expect("type changes");
    let since = seen.last().expect("invoice.paid is a change").version;
    let only_a = EventType {
        name: "secret.report".to_owned(),
        visible_to: Some(vec![tenant.id.clone()]),
        ..event_type.clone()
    };
    assert!(store.create_event_type(&only_a).await.expect("create"));
    assert!(!store.create_event_type(&only_a).await.expect("create again"));
    let changes = store.event_type_changes(since).await.expect("type changes");
    let names: Vec<(&str, Option<Vec<TenantId>>)> =
        changes.iter().map(|c| (c.name.as_str(), c.visible_to.clone())).collect();
    assert_eq!(names, [("secret.report", Some(vec![tenant.id.clone()]))], "only the new one");
    let read = store.get_event_type("secret.report").await.expect("get").expect("found");
    assert_eq!(read.visible_to, Some(vec![tenant.id.clone()]));

    // Idempotency: one claim wins; the answer is saved; old records purged.
    let old = now - chrono::Duration::hours(1);
    assert!(store.idempotency_claim("admin", "k1", "hash-a", now, old).await.expect("claim"));
    assert!(!store
        .idempotency_claim("admin", "k1", "hash-a", now, old)
        .await
        .expect("claim again"));
    assert!(store
        .idempotency_claim("ten_x", "k1", "hash-a", now, old)
        .await
        .expect("another scope"));
    let record = store.idempotency_get("admin", "k1").await.expect("get").expect("found");
    assert_eq!((record.request_hash.as_str(), record.response), ("hash-a", None));
    store.idempotency_complete("admin", "k1", 202, r#"{"id":"evt_1"}"#).await.expect("complete");
    let record = store.idempotency_get("admin", "k1").await.expect("get").expect("found");
    assert_eq!(record.response, Some((202, r#"{"id":"evt_1"}"#.to_owned())));
    store.idempotency_release("ten_x", "k1").await.expect("release");
    assert!(store.idempotency_get("ten_x", "k1").await.expect("get").is_none());
    // A claim left in progress by a dead request is taken over once stale.
    assert!(store.idempotency_claim("admin", "k2", "hash-b", old, old).await.expect("claim"));
    assert!(!store
        .idempotency_claim("admin", "k2", "hash-c", now, old)
        .await
        .expect("not stale yet"));
    assert!(store
        .idempotency_claim("admin", "k2", "hash-c", now, now)
        .await
        .expect("stale: taken over"));
    assert_eq!(
        store.purge_idempotency(now + chrono::Duration::seconds(1)).await.expect("purge"),
        2
    );
    assert!(store.idempotency_get("admin", "k1").await.expect("get").is_none());

    // Attempts, filtered and paged by id.
    let attempts = vec![
        attempt(&second, "evt_p", 1, Outcome::Failed),
        attempt(&second, "evt_p", 2, Outcome::Success),
        attempt(&other, "evt_p", 1, Outcome::Success),
    ];
    store.insert_attempts(&attempts).await.expect("insert");
    let for_second = AttemptFilter { subscription: Some(&second.id), ..AttemptFilter::default() };
    let page_one = store.list_attempts(&for_second, page(None, 1)).await.expect("list");
    assert_eq!(page_one.len(), 1);
    assert_eq!(page_one[0].id, attempts[0].id);
    let page_two = store
        .list_attempts(&for_second, Page { after: Some(page_one[0].id.as_str()), limit: 10 })
        .await
        .expect("list");
    assert_eq!(page_two.len(), 1);
    assert_eq!(page_two[0].id, attempts[1].id);
    let tenant_view = AttemptFilter {
        tenant: Some(&tenant.id),
        event_id: Some("evt_p"),
        ..AttemptFilter::default()
    };
    assert_eq!(store.list_attempts(&tenant_view, page(None, 10)).await.expect("list").len(), 2);
    let everyone = AttemptFilter { event_id: Some("evt_p"), ..AttemptFilter::default() };
    assert_eq!(store.list_attempts(&everyone, page(None, 10)).await.expect("list").len(), 3);
}

#[tokio::test]
async fn store_scenarios_on_postgres() {
    let db = TestDb::postgres().await;
    scenarios(db.store().await).await;
    db.drop_db().await;
}

#[tokio::test]
async fn store_scenarios_on_sqlite() {
    let db = TestDb::sqlite();
    scenarios(db.store().await).await;
}

#[tokio::test]
async fn api_store_scenarios_on_postgres() {
    let db = TestDb::postgres().await;
    api_scenarios(db.store().await).await;
    db.drop_db().await;
}

#[tokio::test]
async fn api_store_scenarios_on_sqlite() {
    let db = TestDb::sqlite();
    api_scenarios(db.store().await).await;
}

fn dead_letter(
    n: i64,
    subscription: &SubscriptionId,
    created_at: chrono::DateTime<Utc>,
) -> NewDeadLetter {
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
        reason: "exhausted".to_owned(),
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

async fn dead_letter_scenarios(store: Arc<dyn Store>) {
    let page = |after: Option<&'static str>, limit: i64| Page { after, limit };
    // At the databases' precision, so that times compare as stored.
    let now = {
        use chrono::SubsecRound;
        Utc::now().trunc_subsecs(6)
    };
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
    let stored = store.get_dead_letter(None, &first.id).await.expect("get").expect("found");
    assert_eq!(stored.record.payload, first.payload);
    assert_eq!(stored.record.headers, first.headers);
    assert_eq!(stored.status, DeadLetterStatus::Pending);
    let elsewhere = TenantId::generate();
    assert!(store.get_dead_letter(Some(&elsewhere), &first.id).await.expect("get").is_none());

    let recent = DeadLetterFilter {
        from: Some(now - chrono::Duration::minutes(1)),
        to: Some(now + chrono::Duration::minutes(1)),
        ..of_sub.clone()
    };
    let (count, newest) = store.count_dead_letters(&recent).await.expect("count");
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

    // A single replay's claim: one holder at a time; nothing else moves it
    // meanwhile; given up or run out, it can be claimed again; spent, it
    // marks the dead letter replayed.
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
    let replayed = store.get_dead_letter(None, id).await.expect("get").expect("found");
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert!(!store.claim_dead_letter(id, "d", later, later + minute).await.expect("claim"));

    // A replay job: one owner at a time, progress saved, completion counts skips.
    let replay = Replay {
        id: ReplayId::generate(),
        tenant_id: None,
        filter: pending.clone(),
        upper_id: newest.clone(),
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
    };
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
    let done = store.get_replay(None, &replay.id).await.expect("get").expect("found");
    assert_eq!(
        (done.status, done.done, done.failed, done.skipped),
        (ReplayStatus::Completed, 3, 0, 1)
    );
    let replayed = store.get_dead_letter(None, &sent[0]).await.expect("get").expect("found");
    assert_eq!(replayed.status, DeadLetterStatus::Replayed);
    assert_eq!(replayed.replay_id.as_ref(), Some(&replay.id));

    // A lease that ran out is taken over; a cancelled job stops its runner.
    let second = Replay { id: ReplayId::generate(), ..replay.clone() };
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
    let cancelled = store.cancel_replay(Some(&elsewhere), &second.id, later).await.expect("cancel");
    assert!(cancelled.is_none(), "another tenant's job is not found");
    let cancelled =
        store.cancel_replay(None, &second.id, later).await.expect("cancel").expect("found");
    assert_eq!(cancelled.status, ReplayStatus::Cancelled);
    assert!(!store
        .advance_replay(&second.id, "c", None, &[], 0, later, later)
        .await
        .expect("advance"));

    // Retention: rows older than the cutoff go, in batches; newer ones stay.
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
    let everyone = AttemptFilter::default();
    let attempts = store.list_attempts(&everyone, page(None, 10)).await.expect("list");
    assert_eq!(attempts.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(), ["evt_new"]);
    assert_eq!(store.list_dead_letters(&of_sub, page(None, 100)).await.expect("list").len(), 5);
}

#[tokio::test]
async fn dead_letter_scenarios_on_postgres() {
    let db = TestDb::postgres().await;
    dead_letter_scenarios(db.store().await).await;
    db.drop_db().await;
}

#[tokio::test]
async fn dead_letter_scenarios_on_sqlite() {
    let db = TestDb::sqlite();
    dead_letter_scenarios(db.store().await).await;
}
