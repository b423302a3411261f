//! Every event has an audience: one tenant, or on purpose every tenant that
//! may see its type. Tried as tenant B would: its `*` subscription gets
//! nothing meant for tenant A or for the default tenant, whether published
//! through the API or straight to Kafka, and nothing of a type it may not see.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::json;

use crate::harness::{error_fields, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(30);
/// Every event of the test has this key and every subscription is ordered,
/// so a receiver that got the last event has been sent all it ever will.
const KEY: &str = "one-lane";

/// The `data.n` of each event a receiver got.
fn got(receiver: &TestReceiver) -> BTreeSet<u64> {
    receiver.received().iter().filter_map(|r| r.json()["data"]["n"].as_u64()).collect()
}

/// Writes a record straight to the source topic, with `extra` headers.
async fn produce(app: &TestApp, n: u64, extra: &[(&str, &str)]) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    let id = format!("raw-{n}");
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some("order.created") })
        .insert(Header { key: "ce_source", value: Some("raw") });
    for (key, value) in extra {
        headers = headers.insert(Header { key, value: Some(*value) });
    }
    let payload = json!({ "n": n }).to_string();
    producer
        .send(
            FutureRecord::to(&app.topics.publish).key(KEY).payload(&payload).headers(headers),
            DEADLINE,
        )
        .await
        .expect("record written");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_reaches_its_tenant_or_on_purpose_every_tenant_that_may_see_its_type() {
    let app = TestApp::spawn("audience").await;
    let (tenant_a, key_a) = app.tenant_with_key("a").await;
    let (tenant_b, key_b) = app.tenant_with_key("b").await;
    let (a, b, default) =
        (TestReceiver::start().await, TestReceiver::start().await, TestReceiver::start().await);
    for (key, receiver) in [(&key_a, &a), (&key_b, &b), (&ADMIN_TOKEN.to_owned(), &default)] {
        let body = json!({"url": receiver.url, "event_types": ["*"], "ordered": true});
        let (status, sub) = app.call(Method::POST, "/v1/subscriptions", key, Some(body)).await;
        assert_eq!(status, 201, "{sub}");
    }
    // Only tenant A may see `secret.report`.
    let (status, registered) = app
        .call(
            Method::POST,
            "/v1/event-types",
            ADMIN_TOKEN,
            Some(json!({"name": "secret.report", "visible_to": [tenant_a]})),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["visible_to"], json!([tenant_a]));

    let publish = |token: String, body: serde_json::Value| {
        let app = &app;
        async move {
            let (status, answer) = app.call(Method::POST, "/v1/events", &token, Some(body)).await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    let event =
        |n: u64, event_type: &str| json!({"type": event_type, "key": KEY, "data": {"n": n}});
    let with = |mut body: serde_json::Value, field: &str, value: serde_json::Value| {
        body[field] = value;
        body
    };
    let admin = || ADMIN_TOKEN.to_owned();
    // 1: the admin, for A. 2: the admin, naming no tenant. 3: A's own key.
    publish(admin(), with(event(1, "order.created"), "tenant_id", json!(tenant_a))).await;
    publish(admin(), event(2, "order.created")).await;
    publish(key_a.clone(), event(3, "order.created")).await;
    // 4: raw, no ce_tenantid. 5: raw, for A. 6: raw, a broadcast.
    produce(&app, 4, &[]).await;
    produce(&app, 5, &[("ce_tenantid", tenant_a.as_str())]).await;
    produce(&app, 6, &[("ce_broadcast", "true")]).await;
    // 7: a broadcast through the API. 8: a broadcast of a type only A sees.
    // 9: for B, of that type.
    publish(admin(), with(event(7, "order.created"), "broadcast", json!(true))).await;
    publish(admin(), with(event(8, "secret.report"), "broadcast", json!(true))).await;
    publish(admin(), with(event(9, "secret.report"), "tenant_id", json!(tenant_b))).await;
    // 10: last, for everyone: once it arrived, all before it did.
    publish(admin(), with(event(10, "order.created"), "broadcast", json!(true))).await;
    for receiver in [&a, &b, &default] {
        crate::harness::eventually("the last broadcast", DEADLINE, || async {
            got(receiver).contains(&10).then_some(())
        })
        .await;
    }
    assert_eq!(got(&a), BTreeSet::from([1, 3, 5, 6, 7, 8, 10]), "tenant A");
    assert_eq!(got(&b), BTreeSet::from([6, 7, 10]), "tenant B: broadcasts of what it may see");
    assert_eq!(got(&default), BTreeSet::from([2, 4, 6, 7, 10]), "the default tenant");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn who_may_publish_for_whom_is_checked_and_a_refused_publish_sends_nothing() {
    let app = TestApp::spawn("audience-refused").await;
    let (tenant_a, key_a) = app.tenant_with_key("a").await;
    let (tenant_b, _) = app.tenant_with_key("b").await;
    let cases = [
        (key_a.clone(), json!({"broadcast": true}), "broadcast"),
        (key_a.clone(), json!({"tenant_id": tenant_b}), "tenant_id"),
        (ADMIN_TOKEN.to_owned(), json!({"tenant_id": "ten_nobody"}), "tenant_id"),
        (ADMIN_TOKEN.to_owned(), json!({"tenant_id": "acme"}), "tenant_id"),
        (ADMIN_TOKEN.to_owned(), json!({"tenant_id": tenant_a, "broadcast": true}), "tenant_id"),
    ];
    let before = app.records_on(&app.topics.publish).await;
    for (token, mut body, field) in cases {
        body["type"] = json!("order.created");
        body["data"] = json!({});
        let (status, problem) =
            app.call(Method::POST, "/v1/events", &token, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        // In a batch, the same error names the event.
        let batch = json!({"events": [{"type": "a.b", "data": {}}, body]});
        let (status, problem) =
            app.call(Method::POST, "/v1/events/batch", &token, Some(batch)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], format!("events/1/{field}"), "{problem}");
    }
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/event-types",
            ADMIN_TOKEN,
            Some(json!({"name": "x.y", "visible_to": [tenant_a, "ten_nobody", "acme"]})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(error_fields(&problem), ["visible_to/1", "visible_to/2"]);
    let (status, _) = app.call(Method::GET, "/v1/event-types/x.y", ADMIN_TOKEN, None).await;
    assert_eq!(status, 404, "a refused type is not registered");
    assert_eq!(app.records_on(&app.topics.publish).await, before, "nothing was published");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_who_may_see_a_type_holds_for_the_events_published_after() {
    let app = TestApp::spawn("audience-patch").await;
    let (tenant_a, key_a) = app.tenant_with_key("a").await;
    let (_, key_b) = app.tenant_with_key("b").await;
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    for (key, receiver) in [(&key_a, &a), (&key_b, &b)] {
        let body = json!({"url": receiver.url, "event_types": ["*"], "ordered": true});
        let (status, sub) = app.call(Method::POST, "/v1/subscriptions", key, Some(body)).await;
        assert_eq!(status, 201, "{sub}");
    }
    let body = json!({"name": "beta.report", "description": "beta", "visible_to": [tenant_a]});
    let (status, _) = app.call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(status, 201);
    let path = "/v1/event-types/beta.report";
    let patch = |body: serde_json::Value| {
        let app = &app;
        async move { app.call(Method::PATCH, path, ADMIN_TOKEN, Some(body)).await }
    };
    let broadcast = |n: u64, event_type: &'static str| {
        let app = &app;
        async move {
            let body = json!({"type": event_type, "key": KEY, "broadcast": true, "data": {"n": n}});
            let (status, answer) =
                app.call(Method::POST, "/v1/events", ADMIN_TOKEN, Some(body)).await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    let until_both_got = |n: u64| {
        let (a, b) = (&a, &b);
        async move {
            for receiver in [a, b] {
                crate::harness::eventually(&format!("event {n}"), DEADLINE, || async {
                    got(receiver).contains(&n).then_some(())
                })
                .await;
            }
        }
    };

    // 1: A only (fanned out, as A got it: audiences are applied then).
    // Then every tenant may see it (null), and 2 reaches B too.
    broadcast(1, "beta.report").await;
    crate::harness::eventually("event 1 at A", DEADLINE, || async {
        got(&a).contains(&1).then_some(())
    })
    .await;
    let (status, open) = patch(json!({"visible_to": null})).await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(
        (open["visible_to"].clone(), open["description"].clone()),
        (json!(null), json!("beta"))
    );
    broadcast(2, "beta.report").await;
    until_both_got(2).await;
    // Back to A alone: 3 does not reach B; 4 (every tenant's) shows that
    // B's lane got past it.
    let (status, closed) = patch(json!({"visible_to": [tenant_a]})).await;
    assert_eq!(status, 200, "{closed}");
    broadcast(3, "beta.report").await;
    broadcast(4, "order.created").await;
    until_both_got(4).await;
    assert_eq!(got(&a), BTreeSet::from([1, 2, 3, 4]), "tenant A");
    assert_eq!(got(&b), BTreeSet::from([2, 4]), "tenant B: only while it could see the type");

    // Refused changes change nothing.
    let (status, problem) = patch(json!({"visible_to": ["ten_nobody"], "description": null})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(error_fields(&problem), ["visible_to/0"]);
    let (status, problem) = patch(json!({"schema": 7})).await;
    assert_eq!(status, 422, "{problem}");
    let (_, now) = app.call(Method::GET, path, ADMIN_TOKEN, None).await;
    assert_eq!(
        (now["visible_to"].clone(), now["description"].clone()),
        (json!([tenant_a]), json!("beta"))
    );
    let (status, _) =
        app.call(Method::PATCH, "/v1/event-types/no.such", ADMIN_TOKEN, Some(json!({}))).await;
    assert_eq!(status, 404);
    let (status, _) =
        app.call(Method::PATCH, path, &key_a, Some(json!({"visible_to": null}))).await;
    assert_eq!(status, 403, "a tenant key changes no event type");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_key_lists_the_catalogue_it_may_see_and_not_who_else_may() {
    let app = TestApp::spawn("audience-catalogue").await;
    let (tenant_a, key_a) = app.tenant_with_key("a").await;
    let (_, key_b) = app.tenant_with_key("b").await;
    for body in [
        json!({"name": "order.created", "schema": {"type": "object"}}),
        json!({"name": "secret.report", "visible_to": [tenant_a]}),
        json!({"name": "zeta.done"}),
    ] {
        let (status, answer) =
            app.call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .filter(|name| !name.starts_with("hookgate."))
            .map(str::to_owned)
            .collect()
    };
    let (status, page_a) = app.call(Method::GET, "/v1/event-types", &key_a, None).await;
    assert_eq!(status, 200, "{page_a}");
    assert_eq!(names(&page_a), ["order.created", "secret.report", "zeta.done"]);
    assert!(
        page_a["data"].as_array().expect("data").iter().all(|t| t["visible_to"].is_null()),
        "a tenant is not told who else may see a type: {page_a}"
    );
    let (_, page_b) = app.call(Method::GET, "/v1/event-types", &key_b, None).await;
    assert_eq!(names(&page_b), ["order.created", "zeta.done"], "tenant B");
    // One type a page: the hidden type is skipped, the cursor goes on.
    let mut seen = Vec::new();
    let mut path = "/v1/event-types?limit=1".to_owned();
    for _ in 0..20 {
        let (status, page) = app.call(Method::GET, &path, &key_b, None).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["data"].as_array().expect("data").len() <= 1);
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/event-types?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["order.created", "zeta.done"]);
    let (status, _) = app.call(Method::GET, "/v1/event-types/secret.report", &key_b, None).await;
    assert_eq!(status, 404, "a type B may not see is not there for B");
    let (status, one) = app.call(Method::GET, "/v1/event-types/secret.report", &key_a, None).await;
    assert_eq!((status, one["visible_to"].clone()), (200, json!(null)));
    let (status, _) =
        app.call(Method::POST, "/v1/event-types", &key_a, Some(json!({"name": "mine.too"}))).await;
    assert_eq!(status, 403, "registering stays the admins'");
    app.stop().await;
}
