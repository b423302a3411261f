//! The same store scenarios on PostgreSQL and on SQLite.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use hookgate::domain::{
    Attempt, AttemptId, Outcome, RateLimit, Subscription, SubscriptionId, SubscriptionStatus,
    TenantId,
};
use hookgate::store::Store;

use crate::harness::TestDb;

fn subscription(url: &str) -> Subscription {
    let now = Utc::now();
    Subscription {
        id: SubscriptionId::generate(),
        tenant_id: TenantId::default_tenant(),
        url: url.to_owned(),
        event_types: vec!["order.*".to_owned(), "invoice.paid".to_owned()],
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        rate_limit: Some(RateLimit { per_second: 10, burst: 20 }),
        max_in_flight: Some(4),
        ordered: true,
        headers: BTreeMap::from([("x-team".to_owned(), "billing".to_owned())]),
        status: SubscriptionStatus::Active,
        disabled_reason: None,
        description: Some("billing hook".to_owned()),
        metadata: BTreeMap::from([("owner".to_owned(), "ops".to_owned())]),
        created_at: now,
        updated_at: now,
    }
}

fn attempt(subscription: &Subscription, event_id: &str, n: u32, outcome: Outcome) -> Attempt {
    Attempt {
        id: AttemptId::generate(),
        event_id: event_id.to_owned(),
        webhook_id: format!("msg_{event_id}"),
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
