//! Publishing through the API: batches, event type schemas, idempotency
//! keys, the test send and attempt lists.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::receiver::Reply;
use crate::harness::{both_backends, eventually, Backend, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(30);

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn batches_publish_all_or_nothing() {
    let app = TestApp::spawn("batch").await;
    let topic = app.topics.publish.clone();
    let (status, answer) = app
        .call(
            Method::POST,
            "/v1/events/batch",
            ADMIN_TOKEN,
            Some(json!({"events": [
                {"type": "a.one", "data": 1},
                {"type": "a.two", "data": {"x": [1, 2]}, "key": "k", "id": "mine-1"},
                {"type": "a.three", "data": null},
            ]})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let ids: Vec<&str> = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], "mine-1");
    assert_eq!(app.records_on(&topic).await, 3);

    // One bad item: 422 naming it, and nothing published.
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/events/batch",
            ADMIN_TOKEN,
            Some(json!({"events": [
                {"type": "a.ok", "data": {}},
                {"type": "not ok", "data": {}},
                {"type": "a.ok", "data": {}, "key": ""},
            ]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["events/1/type", "events/2/key"]);
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/events/batch",
            ADMIN_TOKEN,
            Some(json!({"events": [{"type": "a.ok", "data": {}}, {"type": "a.ok"}]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["events/1/data"]);
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"type": "a.b", "data": 0})).collect();
    for body in [json!({"events": []}), json!({"events": too_many})] {
        let (status, problem) =
            app.call(Method::POST, "/v1/events/batch", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, 422);
        assert_eq!(fields(&problem), ["events"]);
    }
    // Over the body limit: 413, as problem+json.
    let big = "x".repeat(1024 * 1024);
    let response = app
        .admin(app.client.post(app.url("/v1/events/batch")))
        .json(&json!({"events": [{"type": "a.b", "data": big}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(app.records_on(&topic).await, 3, "nothing more was published");
    app.stop().await;
}

async fn registered_schemas_validate_published_data(backend: Backend) {
    let app = TestApp::spawn_on_backend("schemas", backend).await;
    let schema = json!({
        "type": "object",
        "required": ["amount"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0},
            "lines": {"type": "array", "items": {"type": "string"}}
        }
    });
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/event-types",
            ADMIN_TOKEN,
            Some(json!({"name": "invoice.paid", "description": "paid", "schema": schema})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["schema"], schema);
    let (status, problem) = app
        .call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(json!({"name": "invoice.paid"})))
        .await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("conflict")));
    for (body, field) in [
        (json!({"name": "x.y", "schema": {"type": "nonsense"}}), "schema"),
        (json!({"name": "x.y", "schema": {"minimum": "zero"}}), "schema"),
        (json!({"name": "x.y", "schema": 7}), "schema"),
        (json!({"name": "x.*", "schema": {}}), "name"),
    ] {
        let (status, problem) =
            app.call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&problem), [field], "{body}");
    }
    app.call(Method::POST, "/v1/event-types", ADMIN_TOKEN, Some(json!({"name": "free.form"})))
        .await;
    // Page by page, by name: the registered ones among hookgate's own.
    let mut names = Vec::new();
    let mut path = "/v1/event-types?limit=1".to_owned();
    loop {
        let (_, page) = app.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        let rows = page["data"].as_array().expect("a list");
        assert_eq!(rows.len(), 1, "{page}");
        names.push(rows[0]["name"].as_str().expect("name").to_owned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/event-types?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let registered: Vec<&str> =
        names.iter().map(String::as_str).filter(|n| !n.starts_with("hookgate.")).collect();
    assert_eq!(registered, ["free.form", "invoice.paid"]);
    assert_eq!(names.len(), 2 + 7, "and the seven operational types: {names:?}");

    // Data is checked against the schema, with the JSON path of each error.
    let publish = |data: Value| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/v1/events",
                ADMIN_TOKEN,
                Some(json!({"type": "invoice.paid", "data": data})),
            )
            .await
        }
    };
    let (status, problem) = publish(json!({"amount": -5, "lines": ["a", 3]})).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["data/amount", "data/lines/1"]);
    let (status, problem) = publish(json!({"lines": []})).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["data"]);
    let (status, _) = publish(json!({"amount": 12})).await;
    assert_eq!(status, 202);
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/events",
            ADMIN_TOKEN,
            Some(json!({"type": "free.form", "data": "anything"})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, problem) = app
        .call(
            Method::POST,
            "/v1/events/batch",
            ADMIN_TOKEN,
            Some(json!({"events": [{"type": "invoice.paid", "data": {"amount": 1.5}}]})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(fields(&problem), ["events/0/data/amount"]);
    assert_eq!(app.records_on(&app.topics.publish).await, 2);
    app.stop().await;
}

async fn one_idempotency_key_fired_twenty_times_at_once_publishes_once(backend: Backend) {
    let app = TestApp::spawn_on_backend("idempotency", backend).await;
    let body = json!({"type": "order.created", "data": {"order_id": 42}});
    let send = |key: &'static str, token: String, body: Value| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/v1/events"))
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let answers = futures::future::join_all(
        (0..20).map(|_| send("order-42", ADMIN_TOKEN.to_owned(), body.clone())),
    )
    .await;
    let first_id = answers[0].1["id"].as_str().expect("id").to_owned();
    for (status, answer) in &answers {
        assert_eq!(*status, 202, "{answer}");
        assert_eq!(answer["id"], first_id.as_str(), "every answer is the first one");
    }
    assert_eq!(app.records_on(&app.topics.publish).await, 1, "published once");

    // Later, the same key and body: the first answer, nothing new.
    let (status, again) = send("order-42", ADMIN_TOKEN.to_owned(), body.clone()).await;
    assert_eq!((status, again["id"].as_str()), (202, Some(first_id.as_str())));
    // The same key with another body: 422.
    let (status, problem) = send(
        "order-42",
        ADMIN_TOKEN.to_owned(),
        json!({"type": "order.created", "data": {"order_id": 43}}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["code"], "idempotency_key_reused");
    // Keys belong to their caller: a tenant's same key is its own.
    let (_, key) = app.tenant_with_key("T").await;
    let (status, theirs) = send("order-42", key, body.clone()).await;
    assert_eq!(status, 202);
    assert_ne!(theirs["id"], first_id.as_str());
    assert_eq!(app.records_on(&app.topics.publish).await, 2);
    // Malformed keys are refused.
    let response = app
        .admin(app.client.post(app.url("/v1/events")))
        .header("idempotency-key", "has spaces in it")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    // The batch endpoint honours keys too.
    let batch = json!({"events": [{"type": "a.b", "data": 1}, {"type": "a.c", "data": 2}]});
    let response = app
        .admin(app.client.post(app.url("/v1/events/batch")))
        .header("idempotency-key", "batch-1")
        .json(&batch)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 202);
    let first: Value = response.json().await.expect("JSON");
    let response = app
        .admin(app.client.post(app.url("/v1/events/batch")))
        .header("idempotency-key", "batch-1")
        .json(&batch)
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(response.json::<Value>().await.expect("JSON"), first);
    assert_eq!(app.records_on(&app.topics.publish).await, 4);
    app.stop().await;
}

async fn test_send_reports_the_attempt_and_attempts_are_listed(backend: Backend) {
    let app = TestApp::spawn_on_backend("test-send", backend).await;
    // The second request (the second test send) fails; the others succeed.
    let receiver =
        TestReceiver::answering(|n, _| Reply::status(if n == 1 { 500 } else { 204 })).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sub = app
        .subscribe(json!({"url": receiver.url, "event_types": ["order.*"], "secret": secret, "status": "paused"}))
        .await;
    let id = sub["id"].as_str().expect("id");
    let test_path = format!("/v1/subscriptions/{id}/test");

    let (status, attempt) = app.call(Method::POST, &test_path, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["outcome"], "success");
    assert_eq!(attempt["status_code"], 204);
    assert_eq!(attempt["subscription_id"], id);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "sent at once, to this subscription");
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&received[0].body, &received[0].headers)
        .expect("signed like any webhook");
    let body: Value = serde_json::from_slice(&received[0].body).expect("JSON");
    assert_eq!(body["type"], "hookgate.test");

    let (status, failed) = app.call(Method::POST, &test_path, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["status_code"], 500);
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("500")));

    // Both in the subscription's attempts, oldest first, one page at a time.
    let attempts = format!("/v1/subscriptions/{id}/attempts");
    let (status, page) =
        app.call(Method::GET, &format!("{attempts}?limit=1"), ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(page["data"][0]["id"], attempt["id"]);
    let cursor = page["next_cursor"].as_str().expect("more");
    let (_, page) = app
        .call(Method::GET, &format!("{attempts}?limit=1&cursor={cursor}"), ADMIN_TOKEN, None)
        .await;
    assert_eq!(page["data"][0]["id"], failed["id"]);
    assert!(page["next_cursor"].is_null());
    let (status, by_event) = app
        .call(
            Method::GET,
            &format!("/v1/events/{}/attempts", attempt["event_id"].as_str().expect("event")),
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let only = &by_event["data"][0];
    assert_eq!(only["status_code"], 204);
    assert!(only["latency_ms"].is_u64());
    assert!(only["created_at"].is_string());
    let (status, _) =
        app.call(Method::GET, "/v1/events/evt_never/attempts", ADMIN_TOKEN, None).await;
    assert_eq!(status, 404);
    let (status, _) =
        app.call(Method::POST, "/v1/subscriptions/sub_nothing/test", ADMIN_TOKEN, None).await;
    assert_eq!(status, 404);

    // A delivered event's attempts, through the API.
    app.call(
        Method::PATCH,
        &format!("/v1/subscriptions/{id}"),
        ADMIN_TOKEN,
        Some(json!({"status": "active"})),
    )
    .await;
    let event_id = app.publish(json!({"type": "order.created", "data": {}})).await;
    app.attempts_for(&event_id, DEADLINE).await;
    let (status, listed) =
        app.call(Method::GET, &format!("/v1/events/{event_id}/attempts"), ADMIN_TOKEN, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["outcome"], "success");
    assert_eq!(listed["data"][0]["event_type"], "order.created");
    app.stop().await;
}

both_backends!(registered_schemas_validate_published_data);

both_backends!(one_idempotency_key_fired_twenty_times_at_once_publishes_once);

both_backends!(test_send_reports_the_attempt_and_attempts_are_listed);

/// The attempt log keeps what a receiver answered when it failed; a
/// success's answer only when the operator asks for it.
async fn the_attempt_log_keeps_failed_answers_and_successful_ones_when_asked(backend: Backend) {
    for keep_successes in [false, true] {
        let receiver =
            TestReceiver::answering(|n, _| Reply::status(if n == 0 { 503 } else { 200 })).await;
        let name = format!("excerpts-{keep_successes}");
        let app = TestApp::spawn_on_backend_with(&name, backend, |config| {
            let dispatcher = config.dispatcher.as_mut().expect("a dispatcher");
            dispatcher.excerpts.of_successes = keep_successes;
        })
        .await;
        app.subscribe(json!({"url": receiver.url, "event_types": ["order.*"]})).await;
        let event_id = app.publish(json!({"type": "order.created", "data": {}})).await;
        let attempts =
            eventually("a failed attempt and a retry that succeeded", DEADLINE, || async {
                let (_, listed) = app
                    .call(
                        Method::GET,
                        &format!("/v1/events/{event_id}/attempts"),
                        ADMIN_TOKEN,
                        None,
                    )
                    .await;
                let attempts = listed["data"].as_array().cloned().unwrap_or_default();
                (attempts.len() == 2).then_some(attempts)
            })
            .await;
        assert_eq!(
            (attempts[0]["status_code"].as_u64(), attempts[1]["status_code"].as_u64()),
            (Some(503), Some(200))
        );
        assert_eq!(
            attempts[0]["response_excerpt"], "receiver says hi",
            "a failure's answer is kept"
        );
        let kept = if keep_successes { json!("receiver says hi") } else { Value::Null };
        assert_eq!(
            attempts[1]["response_excerpt"], kept,
            "kept with of_successes = {keep_successes}"
        );
        app.stop().await;
    }
}

both_backends!(the_attempt_log_keeps_failed_answers_and_successful_ones_when_asked);
