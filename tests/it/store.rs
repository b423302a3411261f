//! The store's behaviours, each on PostgreSQL and on SQLite; dead letters
//! and replays in `store/dead_letters.rs`, the two migration sets side by
//! side in `store/migrations.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hookgate::domain::filter::Filter;
use hookgate::domain::{
    ApiKey, ApiKeyId, Attempt, AttemptId, CircuitRecord, EventType, NewApiKey, Outcome, RateLimit,
    Scope, Subscription, SubscriptionId, SubscriptionPatch, SubscriptionStatus, Tenant, TenantId,
};
use hookgate::store::{AttemptFilter, Guarded, Page, SecretRotation, Store, SubscriptionChange};

use crate::harness::{both_backends, Backend, TestDb};

mod dead_letters;
mod migrations;

fn subscription(url: &str) -> Subscription {
    Subscription {
        rate_limit: Some(RateLimit { per_second: 10, burst: 20 }),
        max_in_flight: Some(4),
        ordered: true,
        headers: BTreeMap::from([("x-team".to_owned(), "billing".to_owned())]),
        description: Some("billing hook".to_owned()),
        metadata: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
        filter: Some(Arc::new(
            Filter::parse(serde_json::json!({"data.amount": {"$gte": 100}})).expect("a filter"),
        )),
        ..Subscription::new(
            TenantId::default_tenant(),
            url.to_owned(),
            vec!["order.*".to_owned(), "invoice.paid".to_owned()],
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            Utc::now(),
        )
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

fn page(after: Option<&str>, limit: i64) -> Page<'_> {
    Page { after, limit }
}

/// Now, at the databases' precision, so that times compare as stored.
fn stored_now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

// Basics: the schema, subscriptions as written, changes, attempts, circuits.

async fn a_second_migration_changes_nothing_and_the_default_tenant_exists(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    // Migrating again changes nothing and does not fail.
    store.migrate().await.expect("second migration is a no-op");
    store.ping().await.expect("ping");

    assert!(store.tenant_exists(&TenantId::default_tenant()).await.expect("query"));
    assert!(!store.tenant_exists(&TenantId::generate()).await.expect("query"));
}
both_backends!(a_second_migration_changes_nothing_and_the_default_tenant_exists);

async fn a_subscription_reads_back_as_written_and_only_in_its_scope(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let first = subscription("https://example.com/a");
    store.create_subscription(&first).await.expect("create first");

    // Every field comes back as written.
    let read = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
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
    assert_eq!(read.filter, first.filter);
    assert_eq!(read.created_at.timestamp_micros(), first.created_at.timestamp_micros());

    // Another tenant does not see it; an unknown id is not found.
    let other = TenantId::generate();
    assert!(store.get_subscription(Scope::Tenant(&other), &first.id).await.expect("get").is_none());
    assert!(store
        .get_subscription(Scope::Tenant(&TenantId::default_tenant()), &first.id)
        .await
        .expect("get")
        .is_some());
    assert!(store
        .get_subscription(Scope::All, &SubscriptionId::generate())
        .await
        .expect("get")
        .is_none());
}
both_backends!(a_subscription_reads_back_as_written_and_only_in_its_scope);

async fn changes_come_in_version_order_and_read_incrementally(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let first = subscription("https://example.com/a");
    let second = subscription("https://example.com/b");
    store.create_subscription(&first).await.expect("create first");
    store.create_subscription(&second).await.expect("create second");

    let all = store.subscription_changes(0, 100).await.expect("changes");
    assert_eq!(all.len(), 2);
    assert!(all[0].version < all[1].version);
    assert_eq!(all[0].subscription.id, first.id);
    let after_first = store.subscription_changes(all[0].version, 100).await.expect("changes");
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].subscription.id, second.id);
    let paged = store.subscription_changes(0, 1).await.expect("changes");
    assert_eq!(paged.len(), 1);
}
both_backends!(changes_come_in_version_order_and_read_incrementally);

async fn attempts_are_written_in_one_batch_and_listed_per_event(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let first = subscription("https://example.com/a");
    let second = subscription("https://example.com/b");
    let other = TenantId::generate();
    let attempts = vec![
        attempt(&first, "evt_a", 1, Outcome::Failed),
        attempt(&first, "evt_a", 2, Outcome::Success),
        attempt(&second, "evt_b", 1, Outcome::Success),
    ];
    store.insert_attempts(&attempts).await.expect("insert attempts");
    // Writing the same batch again (a retried write) adds nothing.
    store.insert_attempts(&attempts).await.expect("insert attempts again");
    let for_a = store.attempts_for_event(Scope::All, "evt_a").await.expect("list");
    assert_eq!(for_a.len(), 2);
    assert_eq!(for_a[0].attempt, 1);
    assert_eq!(for_a[0].outcome, Outcome::Failed);
    assert_eq!(for_a[0].status_code, Some(500));
    assert_eq!(for_a[0].error.as_deref(), Some("the endpoint answered 500"));
    assert_eq!(for_a[1].outcome, Outcome::Success);
    assert!(store
        .attempts_for_event(Scope::Tenant(&other), "evt_a")
        .await
        .expect("list")
        .is_empty());
}
both_backends!(attempts_are_written_in_one_batch_and_listed_per_event);

async fn the_newest_circuit_change_wins_whatever_the_write_order(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let first = subscription("https://example.com/a");
    let second = subscription("https://example.com/b");
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
both_backends!(the_newest_circuit_change_wins_whatever_the_write_order);

// The REST API's resources: tenants and keys, subscription lists and
// writes, event types, idempotency records, attempt lists.

async fn new_tenant(store: &dyn Store, now: DateTime<Utc>) -> Tenant {
    let tenant = Tenant { id: TenantId::generate(), name: "Acme".to_owned(), created_at: now };
    store.create_tenant(&tenant).await.expect("create tenant");
    tenant
}

async fn tenants_list_by_id_and_keys_are_found_by_hash_until_revoked(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let tenant = new_tenant(store.as_ref(), now).await;
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
}
both_backends!(tenants_list_by_id_and_keys_are_found_by_hash_until_revoked);

async fn subscriptions_are_listed_per_tenant_and_status(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let tenant = new_tenant(store.as_ref(), stored_now()).await;
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
}
both_backends!(subscriptions_are_listed_per_tenant_and_status);

/// A subscription's version (and whether it is deleted) among `changes`.
fn version(changes: &[SubscriptionChange], id: &SubscriptionId) -> Option<(i64, bool)> {
    changes.iter().find(|c| c.subscription.id == *id).map(|c| (c.version, c.deleted))
}

/// The patch of `https://example.com/1` to `…/new`, without a description
/// or a filter.
fn url_patch() -> SubscriptionPatch {
    SubscriptionPatch {
        url: Some("https://example.com/new".to_owned()),
        description: Some(None),
        filter: Some(None),
        ..Default::default()
    }
}

/// A tenant's subscription, patched once (`url_patch`).
struct Patched {
    store: Arc<dyn Store>,
    /// Bind it (`_db`, not `..`): dropped, it drops the database.
    _db: TestDb,
    now: DateTime<Utc>,
    tenant: Tenant,
    first: Subscription,
    /// As it was created.
    created: Subscription,
    patched: Subscription,
    /// The changes after the patch.
    after: Vec<SubscriptionChange>,
}

async fn patched(backend: Backend) -> Patched {
    let (db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let tenant = new_tenant(store.as_ref(), now).await;
    let mut first = subscription("https://example.com/1");
    first.tenant_id = tenant.id.clone();
    store.create_subscription(&first).await.expect("create");
    let created = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    let written = store
        .patch_subscription(Scope::Tenant(&tenant.id), &first.id, &url_patch(), None, now)
        .await
        .expect("patch");
    let Guarded::Written(patched) = written else { panic!("patched: {written:?}") };
    let after = store.subscription_changes(0, 100).await.expect("changes");
    Patched { store, _db: db, now, tenant, first, created, patched, after }
}

/// The rotation of the stale-version and rotation stories.
fn rotation(now: DateTime<Utc>) -> SecretRotation<'static> {
    SecretRotation { secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", grace_ends: None, now }
}

async fn a_patch_writes_only_the_columns_it_names_with_a_new_version(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    let tenant = new_tenant(store.as_ref(), now).await;
    let mut first = subscription("https://example.com/1");
    first.tenant_id = tenant.id.clone();
    store.create_subscription(&first).await.expect("create");
    let before = store.subscription_changes(0, 100).await.expect("changes");
    let created = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    let patch = url_patch();
    let Guarded::Written(patched) = store
        .patch_subscription(
            Scope::Tenant(&tenant.id),
            &first.id,
            &patch,
            Some(created.version),
            now,
        )
        .await
        .expect("patch")
    else {
        panic!("the current version lets the patch through")
    };
    assert_eq!(patched.url, "https://example.com/new");
    assert_eq!(patched.description, None);
    assert_eq!(patched.filter, None);
    assert!(first.filter.is_some());
    assert_eq!(patched.metadata, first.metadata, "a field not named stays");
    assert!(patched.version > created.version);
    let read = store
        .get_subscription(Scope::Tenant(&tenant.id), &first.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!((read.url.as_str(), read.version), (patched.url.as_str(), patched.version));
    let after = store.subscription_changes(0, 100).await.expect("changes");
    assert!(version(&after, &first.id) > version(&before, &first.id));
}
both_backends!(a_patch_writes_only_the_columns_it_names_with_a_new_version);

async fn a_write_at_a_stale_version_writes_nothing_and_names_the_current_one(backend: Backend) {
    let Patched { _db, store, first, created, patched, now, .. } = patched(backend).await;
    let stale = SubscriptionPatch { ordered: Some(false), ..Default::default() };
    assert!(matches!(
        store.patch_subscription(Scope::All, &first.id, &stale, Some(created.version), now).await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    let rotation = rotation(now);
    assert!(matches!(
        store
            .rotate_subscription_secret(Scope::All, &first.id, rotation, Some(created.version))
            .await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    assert!(matches!(
        store.delete_subscription(Scope::All, &first.id, Some(created.version), now).await,
        Ok(Guarded::Stale { current }) if current == patched.version
    ));
    let read = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    assert!(read.ordered && read.secret == first.secret && read.version == patched.version);
}
both_backends!(a_write_at_a_stale_version_writes_nothing_and_names_the_current_one);

async fn a_rotation_keeps_the_replaced_secret_for_its_grace_and_refuses_the_current_one(
    backend: Backend,
) {
    let Patched { _db, store, tenant, first, now, .. } = patched(backend).await;
    let grace_ends = now + chrono::Duration::hours(1);
    let rotation = SecretRotation { grace_ends: Some(grace_ends), ..rotation(now) };
    let Ok(Guarded::Written(rotated)) = store
        .rotate_subscription_secret(Scope::Tenant(&tenant.id), &first.id, rotation, None)
        .await
    else {
        panic!("rotated")
    };
    let read = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    assert_eq!(read.secret, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    assert_eq!(read.previous_secrets.len(), 1);
    assert_eq!(read.previous_secrets[0].secret, first.secret);
    assert_eq!(read.version, rotated.version);
    assert_eq!(read.url, "https://example.com/new", "the rotation wrote only the secrets");
    assert!(matches!(
        store.rotate_subscription_secret(Scope::All, &first.id, rotation, None).await,
        Ok(Guarded::SameSecret)
    ));
}
both_backends!(a_rotation_keeps_the_replaced_secret_for_its_grace_and_refuses_the_current_one);

/// The patch that gives `first` a description.
fn describe() -> SubscriptionPatch {
    SubscriptionPatch { description: Some(Some("x".into())), ..Default::default() }
}

async fn the_410_disable_holds_once_for_the_url_that_answered(backend: Backend) {
    let Patched { _db, store, first, now, .. } = patched(backend).await;
    assert!(!store
        .disable_gone(&first.id, "https://example.com/1", "gone", now)
        .await
        .expect("disable"));
    assert!(store
        .disable_gone(&first.id, "https://example.com/new", "gone", now)
        .await
        .expect("disable"));
    let disabled =
        store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    assert!(!store
        .disable_gone(&first.id, "https://example.com/new", "again", now)
        .await
        .expect("disable"));
    let read = store.get_subscription(Scope::All, &first.id).await.expect("get").expect("found");
    assert_eq!(read.version, disabled.version, "disabled already: no new version");
    assert_eq!(read.disabled_reason.as_deref(), Some("gone"));
    // A later patch of another field leaves it disabled.
    let Ok(Guarded::Written(described)) =
        store.patch_subscription(Scope::All, &first.id, &describe(), None, now).await
    else {
        panic!("patched")
    };
    assert_eq!(described.status, SubscriptionStatus::Disabled);
    assert_eq!(described.disabled_reason.as_deref(), Some("gone"));
}
both_backends!(the_410_disable_holds_once_for_the_url_that_answered);

async fn a_delete_is_held_to_its_scope_and_version_and_dispatchers_see_it(backend: Backend) {
    let Patched { _db, store, tenant, first, now, after, .. } = patched(backend).await;
    let describe = describe();
    let written = store.patch_subscription(Scope::All, &first.id, &describe, None, now).await;
    let Ok(Guarded::Written(described)) = written else { panic!("described: {written:?}") };
    assert_eq!(
        store
            .delete_subscription(Scope::Tenant(&TenantId::default_tenant()), &first.id, None, now)
            .await
            .expect("delete"),
        Guarded::NotFound,
        "another tenant's subscription is not deleted"
    );
    assert_eq!(
        store
            .delete_subscription(Scope::Tenant(&tenant.id), &first.id, Some(described.version), now)
            .await
            .expect("delete"),
        Guarded::Written(())
    );
    assert_eq!(
        store.delete_subscription(Scope::All, &first.id, None, now).await.expect("delete again"),
        Guarded::NotFound
    );
    assert!(matches!(
        store.patch_subscription(Scope::All, &first.id, &describe, None, now).await,
        Ok(Guarded::NotFound)
    ));
    assert!(!store
        .disable_gone(&first.id, "https://example.com/new", "gone", now)
        .await
        .expect("disable"));
    let deleted = store.subscription_changes(0, 100).await.expect("changes");
    let (v, gone) = version(&deleted, &first.id).expect("listed");
    assert!(gone && Some((v, true)) > version(&after, &first.id));
    assert!(store.get_subscription(Scope::All, &first.id).await.expect("get").is_none());
}
both_backends!(a_delete_is_held_to_its_scope_and_version_and_dispatchers_see_it);

async fn event_types_are_unique_by_name_and_load_with_their_audience(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
    // Only named in the audience: a type's audience needs no tenant row.
    let tenant = Tenant { id: TenantId::generate(), name: "Acme".to_owned(), created_at: now };
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
}
both_backends!(event_types_are_unique_by_name_and_load_with_their_audience);

async fn one_idempotency_claim_wins_and_its_answer_is_kept_until_purged(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let now = stored_now();
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
}
both_backends!(one_idempotency_claim_wins_and_its_answer_is_kept_until_purged);

async fn attempts_are_filtered_by_scope_and_paged_by_id(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    // Attempts name their tenant; none needs a row.
    let tenant =
        Tenant { id: TenantId::generate(), name: "Acme".to_owned(), created_at: Utc::now() };
    let mut second = subscription("https://example.com/2");
    second.tenant_id = tenant.id.clone();
    let other = subscription("https://example.com/other");
    let attempts = vec![
        attempt(&second, "evt_p", 1, Outcome::Failed),
        attempt(&second, "evt_p", 2, Outcome::Success),
        attempt(&other, "evt_p", 1, Outcome::Success),
    ];
    store.insert_attempts(&attempts).await.expect("insert");
    let for_second =
        AttemptFilter { subscription: Some(&second.id), ..AttemptFilter::within(Scope::All) };
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
        event_id: Some("evt_p"),
        ..AttemptFilter::within(Scope::Tenant(&tenant.id))
    };
    assert_eq!(store.list_attempts(&tenant_view, page(None, 10)).await.expect("list").len(), 2);
    let everyone = AttemptFilter { event_id: Some("evt_p"), ..AttemptFilter::within(Scope::All) };
    assert_eq!(store.list_attempts(&everyone, page(None, 10)).await.expect("list").len(), 3);
}
both_backends!(attempts_are_filtered_by_scope_and_paged_by_id);

async fn attempts_filter_by_outcome_and_time_and_list_newest_first(backend: Backend) {
    let (_db, store) = TestDb::with_store(backend).await;
    let sub = subscription("https://example.com/filtered");
    let start = stored_now();
    let mut attempts = Vec::new();
    for (n, outcome) in [(1, Outcome::Failed), (2, Outcome::Failed), (3, Outcome::Success)] {
        let mut made = attempt(&sub, "evt_f", n, outcome);
        made.created_at = start + chrono::Duration::seconds(i64::from(n));
        attempts.push(made);
    }
    store.insert_attempts(&attempts).await.expect("insert");
    let of_sub = AttemptFilter { subscription: Some(&sub.id), ..AttemptFilter::within(Scope::All) };
    let ns = |rows: Vec<Attempt>| rows.iter().map(|a| a.attempt).collect::<Vec<_>>();
    let failed = AttemptFilter { outcome: Some(Outcome::Failed), ..of_sub };
    assert_eq!(ns(store.list_attempts(&failed, page(None, 10)).await.expect("list")), [1, 2]);
    let window = AttemptFilter {
        since: Some(start + chrono::Duration::seconds(2)),
        until: Some(start + chrono::Duration::seconds(3)),
        ..of_sub
    };
    assert_eq!(ns(store.list_attempts(&window, page(None, 10)).await.expect("list")), [2]);
    let newest = AttemptFilter { newest_first: true, ..of_sub };
    let first = store.list_attempts(&newest, page(None, 2)).await.expect("list");
    assert_eq!(ns(first.clone()), [3, 2]);
    let rest =
        store.list_attempts(&newest, page(Some(first[1].id.as_str()), 2)).await.expect("list");
    assert_eq!(ns(rest), [1]);
}
both_backends!(attempts_filter_by_outcome_and_time_and_list_newest_first);

async fn a_portal_link_opens_once_before_it_expires_and_sessions_end(backend: Backend) {
    use hookgate::domain::portal::{PortalLink, PortalScope, PortalSecret, PortalSession};
    let (_db, store) = TestDb::with_store(backend).await;
    let tenant =
        Tenant { id: TenantId::generate(), name: "Acme".to_owned(), created_at: stored_now() };
    store.create_tenant(&tenant).await.expect("tenant");
    let at = stored_now();
    let link = |read_only, expires_in: i64| PortalLink {
        tenant_id: tenant.id.clone(),
        read_only,
        created_at: at,
        expires_at: at + chrono::Duration::seconds(expires_in),
    };
    let fresh = PortalSecret::link_token();
    let stale = PortalSecret::link_token();
    store.create_portal_link(&fresh.hash, &link(true, 600)).await.expect("fresh link");
    store.create_portal_link(&stale.hash, &link(false, 60)).await.expect("stale link");
    let later = at + chrono::Duration::seconds(120);
    let session = PortalSecret::session();
    let until = at + chrono::Duration::hours(1);
    let csrf = "c".repeat(64);
    let open = |token: &str, session: &str| {
        let (store, token, session, csrf) =
            (Arc::clone(&store), token.to_owned(), session.to_owned(), csrf.clone());
        async move { store.open_portal_session(&token, later, &session, &csrf, until).await }
    };
    let opened = open(&fresh.hash, &session.hash).await.expect("open");
    let opened = opened.expect("an unused, unexpired link opens a session");
    let scope = PortalScope::Tenant { tenant: tenant.id.clone(), read_only: true };
    assert_eq!((opened.scope.clone(), opened.expires_at), (scope.clone(), until));
    let second = PortalSecret::session();
    assert!(open(&fresh.hash, &second.hash).await.expect("again").is_none(), "once");
    assert!(store.portal_session(&second.hash, later).await.expect("read").is_none());
    assert!(open(&stale.hash, &second.hash).await.expect("stale").is_none(), "expired");
    assert!(open("not-a-hash", &second.hash).await.expect("unknown").is_none());
    assert!(store.portal_session(&second.hash, later).await.expect("read").is_none(), "none made");
    let stored = PortalSession {
        scope: scope.clone(),
        csrf_token: csrf.clone(),
        created_at: at,
        expires_at: until,
    };
    let admin = PortalSecret::session();
    let admin_scope = PortalScope::Admin { token_hash: "ab".repeat(32) };
    let admin_session = PortalSession { scope: admin_scope.clone(), ..stored.clone() };
    store.create_portal_session(&admin.hash, &admin_session).await.expect("admin session");
    let found = store.portal_session(&session.hash, later).await.expect("read").expect("found");
    assert_eq!((found.scope, found.csrf_token), (scope, "c".repeat(64)));
    let found = store.portal_session(&admin.hash, later).await.expect("read").expect("found");
    assert_eq!(found.scope, admin_scope);
    let after_expiry = at + chrono::Duration::hours(2);
    assert!(store.portal_session(&session.hash, after_expiry).await.expect("read").is_none());
    store.end_portal_session(&admin.hash).await.expect("end");
    assert!(store.portal_session(&admin.hash, later).await.expect("read").is_none(), "ended");
    let unused = PortalSecret::link_token();
    store.create_portal_link(&unused.hash, &link(false, 600)).await.expect("unused link");
    assert_eq!(
        store.revoke_portal_access(&tenant.id).await.expect("revoke"),
        3,
        "the unused links (one of them expired) and the session"
    );
    assert!(open(&unused.hash, &second.hash).await.expect("open").is_none());
    assert!(store.portal_session(&session.hash, later).await.expect("read").is_none());
    assert_eq!(store.purge_portal(after_expiry).await.expect("purge"), 1, "the used link");
}
both_backends!(a_portal_link_opens_once_before_it_expires_and_sessions_end);
