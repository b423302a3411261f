//! Content filters, end to end against the real broker: a subscription
//! with a filter gets only the events that pass (and no dead letters for
//! the others), one without gets them all, and removing the filter lets
//! everything through again; bad filters answer 422 naming where, and
//! change nothing. The operator table is `domain::filter`'s unit tests.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{error_fields, eventually, Backend, TestApp, TestReceiver};

const DEADLINE: Duration = Duration::from_secs(60);

/// The `n` of every webhook the receiver got.
fn numbers(receiver: &TestReceiver) -> BTreeSet<u64> {
    receiver.received().iter().filter_map(|r| r.json()["data"]["n"].as_u64()).collect()
}

async fn only_events_that_pass_a_filter_reach_its_subscription(backend: Backend) {
    let app = TestApp::spawn_on_backend("filters", backend).await;
    let (_, key) = app.tenant_with_key("acme").await;
    let (filtered, everything) = (TestReceiver::start().await, TestReceiver::start().await);
    let filter = json!({
        "data.amount": {"$gte": 100},
        "$or": [{"data.currency": {"$in": ["EUR", "USD"]}}, {"data.customer.tier": "gold"}],
    });
    let body = json!({"url": filtered.url, "event_types": ["order.*"], "filter": filter});
    let (status, created) = app.call(Method::POST, "/v1/subscriptions", &key, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["filter"], filter, "shown as written");
    let id = created["id"].as_str().expect("id").to_owned();
    let body = json!({"url": everything.url, "event_types": ["order.*"]});
    let (status, plain) = app.call(Method::POST, "/v1/subscriptions", &key, Some(body)).await;
    assert_eq!(status, 201, "{plain}");
    assert_eq!(plain["filter"], Value::Null);

    let events = [
        json!({"n": 0, "amount": 150, "currency": "EUR"}),
        json!({"n": 1, "amount": 99.5, "currency": "EUR"}),
        json!({"n": 2, "amount": 100, "currency": "GBP", "customer": {"tier": "gold"}}),
        json!({"n": 3, "amount": 500, "currency": "GBP"}),
        json!({"n": 4, "amount": "150", "currency": "USD"}),
        json!({"n": 5, "currency": "USD"}),
        json!({"n": 6, "amount": 1e3, "currency": "USD"}),
    ];
    for data in &events {
        let event = json!({"type": "order.paid", "data": data});
        let (status, answer) = app.call(Method::POST, "/v1/events", &key, Some(event)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let all: BTreeSet<u64> = (0..events.len() as u64).collect();
    eventually("every event at the subscription without a filter", DEADLINE, || async {
        (numbers(&everything) == all).then_some(())
    })
    .await;
    // Every delivery record is on the topic before its fan-out is
    // committed: those of the filtered subscription are the passing ones.
    let passing = BTreeSet::from([0, 2, 6]);
    let records = app.records_on(&app.topics.deliveries).await;
    assert_eq!(records, (all.len() + passing.len()) as i64, "no delivery of a failing event");
    eventually("the passing events at the filtered subscription", DEADLINE, || async {
        (numbers(&filtered) == passing).then_some(())
    })
    .await;
    let path = format!("/v1/dead-letters?subscription_id={id}");
    let (status, dead) = app.call(Method::GET, &path, &key, None).await;
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead["data"], json!([]), "an event that does not pass is no dead letter");

    // Without its filter, it gets every event again.
    let path = format!("/v1/subscriptions/{id}");
    let (status, patched) =
        app.call(Method::PATCH, &path, &key, Some(json!({"filter": null}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["filter"], Value::Null);
    // The fan-out refreshes for an event written after a change.
    let event = json!({"type": "order.paid", "data": {"n": 7, "amount": 1}});
    let (status, answer) = app.call(Method::POST, "/v1/events", &key, Some(event)).await;
    assert_eq!(status, 202, "{answer}");
    eventually("a failing event once the filter is gone", DEADLINE, || async {
        numbers(&filtered).contains(&7).then_some(())
    })
    .await;
    app.stop().await;
}

crate::harness::both_backends!(multi_thread only_events_that_pass_a_filter_reach_its_subscription);

#[tokio::test]
async fn a_bad_filter_answers_422_naming_where_and_changes_nothing() {
    let app = TestApp::spawn("filters-bad").await;
    let (_, key) = app.tenant_with_key("acme").await;
    let deep = (0..5).fold(json!({"data.a": 1}), |f, _| json!({ "$not": f }));
    let cases = [
        (json!({"data.a": {"$in": vec![0; 101]}}), "filter/data.a/$in"),
        (deep, "filter/$not/$not/$not/$not/$not"),
        (json!({"data.note": "x".repeat(5_000)}), "filter"),
        (json!({"data.a": {"$regex": "^x"}}), "filter/data.a/$regex"),
        (json!({"$or": [{"type": "a.b"}, {"amount": 5}]}), "filter/$or/1/amount"),
        (json!({"data.a": {"$gt": [1]}}), "filter/data.a/$gt"),
        (json!("order.paid"), "filter"),
        (json!({}), "filter"),
    ];
    for (filter, field) in &cases {
        let body = json!({"url": "http://127.0.0.1:9/", "event_types": ["a.*"], "filter": filter});
        let (status, problem) = app.call(Method::POST, "/v1/subscriptions", &key, Some(body)).await;
        assert_eq!(status, 422, "{filter}: {problem}");
        assert_eq!(error_fields(&problem), [*field], "{problem}");
    }
    let (_, list) = app.call(Method::GET, "/v1/subscriptions", &key, None).await;
    assert_eq!(list["data"], json!([]), "nothing was created");

    let kept = json!({"type": {"$prefix": "a."}});
    let body = json!({"url": "http://127.0.0.1:9/", "event_types": ["a.*"], "filter": kept});
    let (_, created) = app.call(Method::POST, "/v1/subscriptions", &key, Some(body)).await;
    let path = format!("/v1/subscriptions/{}", created["id"].as_str().expect("id"));
    let bad = json!({"filter": {"data.a": {"$exists": 1}}, "description": "changed"});
    let (status, problem) = app.call(Method::PATCH, &path, &key, Some(bad)).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(error_fields(&problem), ["filter/data.a/$exists"]);
    let (_, now) = app.call(Method::GET, &path, &key, None).await;
    assert_eq!(
        (&now["filter"], &now["description"], &now["version"]),
        (&kept, &Value::Null, &created["version"])
    );
    app.stop().await;
}
