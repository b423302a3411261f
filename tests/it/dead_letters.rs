//! Dead letters and replay, against the real broker and database: what
//! failed is listed with its reason, replayed with the same `webhook-id`
//! (one at a time or in bulk, at a rate the receiver can take), and a bulk
//! replay survives the death of the process running it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use hookgate::config::{DispatcherConfig, RetrySchedule};
use hookgate::domain::{DeadLetterFilter, DeadLetterStatus, DeadReason, SubscriptionId};
use hookgate::store::Page;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::harness::answers::DeadLetterAnswer;
use crate::harness::kafka::wait_for_group;
use crate::harness::process::DispatcherProcess;
use crate::harness::{
    both_backends, eventually, Backend, ForTests, Reply, TestApp, TestReceiver, ADMIN_TOKEN,
};

const DEADLINE: Duration = Duration::from_secs(90);

fn one_retry(config: &mut hookgate::config::AppConfig) {
    if let Some(dispatcher) = &mut config.dispatcher {
        dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(200)]);
    }
}

/// A receiver that answers `failing` while `broken` is set, 200 after.
async fn fixable_receiver(failing: u16) -> (TestReceiver, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let receiver = TestReceiver::answering(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) { failing } else { 200 })
    })
    .await;
    (receiver, broken)
}

fn rfc3339(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.call(Method::GET, path, ADMIN_TOKEN, None).await
}

async fn post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(Method::POST, path, ADMIN_TOKEN, body).await
}

/// Waits until the list with `query` holds `n` dead letters; answers them.
async fn wait_for_dead_letters(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} dead letter(s) listed for {query}"), DEADLINE, || async {
        let (status, page) = get(app, &format!("/v1/dead-letters?limit=200&{query}")).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        (data.len() >= n).then_some(data)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_listed_with_its_reason_and_replayed_with_the_same_webhook_id() {
    let app = TestApp::spawn_with("dl-replay", one_retry).await;
    let (receiver, broken) = fixable_receiver(503).await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let sub = created["id"].as_str().expect("id");
    let event_id = app.publish(json!({"type": "order.created", "data": {"n": 7}})).await;

    let listed = wait_for_dead_letters(&app, &format!("subscription_id={sub}"), 1).await;
    let dead = DeadLetterAnswer::of(&listed[0]);
    assert_eq!(dead.reason, DeadReason::Exhausted);
    assert_eq!(dead.status, DeadLetterStatus::Pending);
    assert_eq!(dead.attempts, 2, "the first try and one retry");
    assert_eq!(dead.last_status, Some(503));
    assert_eq!(dead.event_id.as_deref(), Some(event_id.as_str()));
    assert_eq!(dead.event_type.as_deref(), Some("order.created"));
    assert!(dead.replayable);
    let first_tries = receiver.received();
    assert_eq!(first_tries.len(), 2);
    let webhook_id = first_tries[0].header("webhook-id").to_owned();
    assert_eq!(dead.webhook_id.as_deref(), Some(webhook_id.as_str()));

    let id = dead.id.as_str();
    let detail = eventually("both attempts logged", DEADLINE, || async {
        let (status, detail) = get(&app, &format!("/v1/dead-letters/{id}")).await;
        assert_eq!(status, 200, "{detail}");
        (detail["attempt_log"].as_array().map_or(0, Vec::len) == 2).then_some(detail)
    })
    .await;
    assert_eq!(detail["record"]["payload"], json!({"n": 7}));
    assert!(detail["record"]["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .any(|h| h["name"] == "ce_id" && h["value"] == event_id.as_str()));

    // Replayed while the receiver still fails: a new dead letter, linked.
    let (status, replayed) = post(&app, &format!("/v1/dead-letters/{id}/replay"), None).await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed["status"], "replayed");
    let (status, again) = post(&app, &format!("/v1/dead-letters/{id}/replay"), None).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("conflict")), "{again}");
    let (status, _) = post(&app, &format!("/v1/dead-letters/{id}/discard"), None).await;
    assert_eq!(status, 409, "a replayed dead letter is not discarded");
    let listed = wait_for_dead_letters(&app, &format!("subscription_id={sub}"), 2).await;
    let second = &listed[1];
    assert_eq!(second["replay_of"], id, "{second}");
    assert_eq!(second["webhook_id"], webhook_id.as_str());
    assert_eq!(second["attempts"], 2, "attempts count afresh for a replay");

    // Fixed: the replay of the second delivers, with the same webhook id and body.
    broken.store(false, Ordering::SeqCst);
    let second_id = second["id"].as_str().expect("id");
    let (status, _) = post(&app, &format!("/v1/dead-letters/{second_id}/replay"), None).await;
    assert_eq!(status, 202);
    let received = receiver.wait_for(5, DEADLINE).await;
    let delivered = &received[4];
    assert_eq!(delivered.status, 200);
    assert_eq!(delivered.header("webhook-id"), webhook_id);
    assert_eq!(delivered.json()["data"], json!({"n": 7}));

    // Discarded: set aside, out of the pending list, not replayable.
    broken.store(true, Ordering::SeqCst);
    app.publish(json!({"type": "order.created", "data": {"n": 8}})).await;
    let listed = wait_for_dead_letters(&app, &format!("subscription_id={sub}"), 3).await;
    let third = listed[2]["id"].as_str().expect("id");
    let (status, discarded) = post(&app, &format!("/v1/dead-letters/{third}/discard"), None).await;
    assert_eq!((status, discarded["status"].as_str()), (200, Some("discarded")), "{discarded}");
    let (status, _) = post(&app, &format!("/v1/dead-letters/{third}/replay"), None).await;
    assert_eq!(status, 409);
    let (_, pending) =
        get(&app, &format!("/v1/dead-letters?subscription_id={sub}&status=pending")).await;
    assert_eq!(pending["data"].as_array().map(Vec::len), Some(0), "{pending}");
    let (_, gone) =
        get(&app, &format!("/v1/dead-letters?subscription_id={sub}&status=discarded")).await;
    assert_eq!(gone["data"][0]["id"], third);

    // Its subscription deleted: nobody to send to, said as much.
    app.publish(json!({"type": "order.created", "data": {"n": 9}})).await;
    let listed = wait_for_dead_letters(&app, &format!("subscription_id={sub}"), 4).await;
    let fourth = listed[3]["id"].as_str().expect("id");
    let (status, _) =
        app.call(Method::DELETE, &format!("/v1/subscriptions/{sub}"), ADMIN_TOKEN, None).await;
    assert_eq!(status, 204);
    let (status, problem) = post(&app, &format!("/v1/dead-letters/{fourth}/replay"), None).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("not_replayable")), "{problem}");
    let (status, job) = post(&app, "/v1/replays", Some(json!({"subscription_id": sub}))).await;
    assert_eq!(status, 202, "{job}");
    let (replay, _) = wait_for_replay(&app, job["id"].as_str().expect("id")).await;
    assert_eq!(
        (replay["done"].as_u64(), replay["failed"].as_u64()),
        (Some(0), Some(1)),
        "{replay}"
    );
    app.stop().await;
}

async fn concurrent_replays_of_one_dead_letter_send_it_once(backend: Backend) {
    const DEAD_LETTERS: usize = 10;
    const REPLAYS: usize = 3;
    let app = TestApp::spawn_on_backend("dl-replay-race", backend).await;
    // 400 is final: each event is dead-lettered at its first attempt.
    let (receiver, broken) = fixable_receiver(400).await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let sub = created["id"].as_str().expect("id");
    for n in 0..DEAD_LETTERS {
        app.publish(json!({"type": "order.created", "data": {"n": n}})).await;
    }
    let listed = wait_for_dead_letters(&app, &format!("subscription_id={sub}"), DEAD_LETTERS).await;
    broken.store(false, Ordering::SeqCst);
    let before = app.records_on(&app.topics.deliveries).await;

    for dead in &listed {
        let path = format!("/v1/dead-letters/{}/replay", dead["id"].as_str().expect("id"));
        let answers =
            futures::future::join_all((0..REPLAYS).map(|_| post(&app, &path, None))).await;
        let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        statuses.sort_unstable();
        let mut expected = vec![202];
        expected.resize(REPLAYS, 409);
        let codes: Vec<&Value> = answers.iter().map(|(_, body)| &body["code"]).collect();
        assert_eq!(statuses, expected, "one replay wins, the others are told: {codes:?}");
    }
    // Each replay answers after Kafka took its record: the topic holds all.
    let sent = app.records_on(&app.topics.deliveries).await - before;
    assert_eq!(sent, DEAD_LETTERS as i64, "one replayed delivery per dead letter");
    let delivered = eventually("every replay delivered", DEADLINE, || async {
        let mut delivered: HashMap<String, usize> = HashMap::new();
        for webhook in receiver.received().iter().filter(|w| w.status == 200) {
            *delivered.entry(webhook.header("webhook-id").to_owned()).or_default() += 1;
        }
        (delivered.values().sum::<usize>() >= DEAD_LETTERS).then_some(delivered)
    })
    .await;
    assert_eq!(delivered.len(), DEAD_LETTERS, "{delivered:?}");
    assert!(delivered.values().all(|&n| n == 1), "each delivered once: {delivered:?}");
    let (_, replayed) =
        get(&app, &format!("/v1/dead-letters?subscription_id={sub}&status=replayed&limit=200"))
            .await;
    assert_eq!(replayed["data"].as_array().map(Vec::len), Some(DEAD_LETTERS), "{replayed}");
    app.stop().await;
}

both_backends!(multi_thread concurrent_replays_of_one_dead_letter_send_it_once);

/// Publishes `n` events of `event_type` in batches of 1,000.
async fn publish_many(app: &TestApp, event_type: &str, n: usize) {
    for start in (0..n).step_by(1000) {
        let events: Vec<Value> = (start..n.min(start + 1000))
            .map(|i| json!({"type": event_type, "data": {"n": i}}))
            .collect();
        let (status, answer) =
            post(app, "/v1/events/batch", Some(json!({ "events": events }))).await;
        assert_eq!(status, 202, "{answer}");
    }
}

/// Polls a replay until it completes; answers it and whether progress was
/// seen part-way.
async fn wait_for_replay(app: &TestApp, id: &str) -> (Value, bool) {
    let saw_progress = AtomicBool::new(false);
    let done = eventually(&format!("replay {id} completed"), DEADLINE, || async {
        let (status, replay) = get(app, &format!("/v1/replays/{id}")).await;
        assert_eq!(status, 200, "{replay}");
        let (done, total) = (replay["done"].as_u64(), replay["total"].as_u64());
        if done > Some(0) && done < total {
            saw_progress.store(true, Ordering::SeqCst);
        }
        (replay["status"] == "completed").then_some(replay)
    })
    .await;
    (done, saw_progress.load(Ordering::SeqCst))
}

/// The most requests that arrived within any one second.
fn busiest_second(arrivals: &mut [Instant]) -> usize {
    arrivals.sort();
    let mut busiest = 0;
    let mut start = 0;
    for end in 0..arrivals.len() {
        while arrivals[end].duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        busiest = busiest.max(end - start + 1);
    }
    busiest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_replay_of_ten_thousand_delivers_each_once_more_within_the_rate_cap() {
    const EVENTS: usize = 10_000;
    const RATE: usize = 1_000;
    let app = TestApp::spawn("dl-bulk").await;
    // 400 is not retried: each event is dead-lettered at its first attempt.
    let (receiver, broken) = fixable_receiver(400).await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["order.*"]})).await;
    let sub = created["id"].as_str().expect("id").to_owned();
    let (other_receiver, _) = fixable_receiver(400).await;
    app.subscribe(json!({"url": other_receiver.url, "event_types": ["invoice.*"]})).await;

    let from = Utc::now();
    publish_many(&app, "order.created", EVENTS).await;
    publish_many(&app, "invoice.paid", 5).await;
    let sub_id = SubscriptionId::parse(&sub).expect("sub id");
    let of_sub = DeadLetterFilter { subscription_id: Some(sub_id.clone()), ..Default::default() };
    eventually("every delivery dead-lettered and indexed", DEADLINE, || async {
        let (count, _) = app.store.count_dead_letters(&of_sub).await.expect("count");
        (count == EVENTS as u64).then_some(())
    })
    .await;
    let to = Utc::now();
    // Dead-lettered after `to`: outside the replay's time range.
    publish_many(&app, "order.late", 3).await;
    eventually("the late ones dead-lettered too", DEADLINE, || async {
        let (count, _) = app.store.count_dead_letters(&of_sub).await.expect("count");
        (count == EVENTS as u64 + 3).then_some(())
    })
    .await;
    // At least once: a rebalance may have sent one twice.
    let received_before = receiver.received().len();
    assert!(received_before >= EVENTS + 3, "{received_before}");

    let filter = json!({"subscription_id": sub, "from": rfc3339(from), "to": rfc3339(to)});
    let mut dry = filter.clone();
    dry["dry_run"] = json!(true);
    let (status, answer) = post(&app, "/v1/replays", Some(dry)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"dry_run": true, "total": EVENTS}));
    let pending = DeadLetterFilter { status: Some(DeadLetterStatus::Pending), ..of_sub.clone() };
    let (still_pending, _) = app.store.count_dead_letters(&pending).await.expect("count");
    assert_eq!(still_pending, EVENTS as u64 + 3, "a dry run changes nothing");

    broken.store(false, Ordering::SeqCst);
    let mut request = filter.clone();
    request["rate_per_second"] = json!(RATE);
    let (status, job) = post(&app, "/v1/replays", Some(request)).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["total"], EVENTS);
    assert_eq!(job["status"], "running");
    let (replay, saw_progress) = wait_for_replay(&app, job["id"].as_str().expect("id")).await;
    assert!(saw_progress, "progress is reported while the replay runs");
    assert_eq!(
        (replay["done"].as_u64(), replay["failed"].as_u64()),
        (Some(EVENTS as u64), Some(0))
    );

    let replayed = receiver.wait_for(received_before + EVENTS, DEADLINE).await;
    let replayed = &replayed[received_before..];
    let mut per_webhook: HashMap<&str, usize> = HashMap::new();
    for request in replayed {
        *per_webhook.entry(request.header("webhook-id")).or_default() += 1;
    }
    assert_eq!(per_webhook.len(), EVENTS, "each dead letter delivered once more");
    assert!(per_webhook.values().all(|n| *n == 1));
    let mut arrivals: Vec<Instant> = replayed.iter().map(|r| r.at).collect();
    let busiest = busiest_second(&mut arrivals);
    assert!(
        busiest <= RATE,
        "{busiest} requests arrived within one second, over the cap of {RATE}"
    );
    // Nothing outside the filter moved: the late ones and the other subscription's.
    let (left, _) = app.store.count_dead_letters(&pending).await.expect("count");
    assert_eq!(left, 3, "the dead letters after `to` are still pending");
    assert_eq!(other_receiver.received().len(), 5, "the other subscription got no replay");
    let page = Page { after: None, limit: 1 };
    let listed = app.store.list_dead_letters(&pending, page).await.expect("list");
    assert_eq!(listed[0].record.event_type.as_deref(), Some("order.late"));
    app.stop().await;
}

/// Subscribes `receiver` (failing) and publishes `events` events; answers
/// the subscription's id and a filter of its dead letters, once all are
/// dead-lettered and indexed.
async fn dead_letter_many(
    app: &TestApp,
    receiver: &TestReceiver,
    events: usize,
) -> (String, DeadLetterFilter) {
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let sub = created["id"].as_str().expect("id").to_owned();
    publish_many(app, "order.created", events).await;
    let of_sub = DeadLetterFilter {
        subscription_id: Some(SubscriptionId::parse(&sub).expect("sub id")),
        ..Default::default()
    };
    eventually("every delivery dead-lettered and indexed", DEADLINE, || async {
        let (count, _) = app.store.count_dead_letters(&of_sub).await.expect("count");
        (count == events as u64).then_some(())
    })
    .await;
    (sub, of_sub)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_replay_finishes_after_the_process_running_it_is_killed() {
    const EVENTS: usize = 2_000;
    let app = TestApp::spawn_with("dl-kill", |config| config.dispatcher = None).await;
    let dispatcher_config = DispatcherConfig {
        retry_schedule: RetrySchedule(vec![Duration::from_millis(300)]),
        ..DispatcherConfig::for_tests()
    };
    let mut first = DispatcherProcess::start(&app.config, &dispatcher_config);
    let (receiver, broken) = fixable_receiver(400).await;
    let (sub, of_sub) = dead_letter_many(&app, &receiver, EVENTS).await;
    let before = receiver.received().len();

    broken.store(false, Ordering::SeqCst);
    let (status, job) =
        post(&app, "/v1/replays", Some(json!({"subscription_id": sub, "rate_per_second": 200})))
            .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    eventually("the replay part-way", DEADLINE, || async {
        let (_, replay) = get(&app, &format!("/v1/replays/{id}")).await;
        (replay["done"].as_u64() >= Some(300)).then_some(())
    })
    .await;
    first.kill().await;
    let (_, at_kill) = get(&app, &format!("/v1/replays/{id}")).await;
    assert_eq!(at_kill["status"], "running");
    assert!(at_kill["done"].as_u64() < Some(EVENTS as u64), "killed part-way: {at_kill}");

    let _second = DispatcherProcess::start(&app.config, &dispatcher_config);
    let (replay, _) = wait_for_replay(&app, &id).await;
    assert_eq!(replay["done"].as_u64(), Some(EVENTS as u64), "{replay}");
    assert_eq!((replay["failed"].as_u64(), replay["skipped"].as_u64()), (Some(0), Some(0)));
    let delivered = eventually("every dead letter delivered again", DEADLINE, || async {
        let mut ids: Vec<String> = receiver.received()[before..]
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        (ids.len() == EVENTS).then_some(total)
    })
    .await;
    println!("deliveries after the kill: {delivered} for {EVENTS} dead letters");
    let pending = DeadLetterFilter { status: Some(DeadLetterStatus::Pending), ..of_sub };
    assert_eq!(app.store.count_dead_letters(&pending).await.expect("count").0, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bulk_replays_of_the_same_dead_letters_on_two_dispatchers_send_each_once() {
    const EVENTS: usize = 600;
    let app = TestApp::spawn_with("dl-two-jobs", |config| config.dispatcher = None).await;
    let dispatcher_config = crate::harness::process_dispatcher(Duration::from_secs(5));
    let _dispatchers: Vec<DispatcherProcess> =
        (0..2).map(|_| DispatcherProcess::start(&app.config, &dispatcher_config)).collect();
    let group = format!("{}.deliveries", app.topics.group_id);
    wait_for_group(&app.kafka.brokers, &group, 2, DEADLINE).await;
    let (receiver, broken) = fixable_receiver(400).await;
    let (sub, of_sub) = dead_letter_many(&app, &receiver, EVENTS).await;
    let before = receiver.received().len();

    // Two admins replay the same dead letters at once; each dispatcher's
    // runner takes one of the jobs.
    broken.store(false, Ordering::SeqCst);
    let request = json!({"subscription_id": sub, "rate_per_second": 200});
    let jobs =
        futures::future::join_all((0..2).map(|_| post(&app, "/v1/replays", Some(request.clone()))))
            .await;
    let mut done = 0;
    for (status, job) in &jobs {
        assert_eq!(*status, 202, "{job}");
        let (replay, _) = wait_for_replay(&app, job["id"].as_str().expect("id")).await;
        done += replay["done"].as_u64().expect("done");
    }
    assert_eq!(done, EVENTS as u64, "the two jobs sent {done} for {EVENTS} dead letters");
    let mut per_webhook: HashMap<String, usize> = HashMap::new();
    for request in receiver.wait_for(before + EVENTS, DEADLINE).await[before..].iter() {
        *per_webhook.entry(request.header("webhook-id").to_owned()).or_default() += 1;
    }
    assert_eq!(per_webhook.len(), EVENTS, "every dead letter delivered again");
    let twice = per_webhook.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} dead letters delivered more than once");
    let pending = DeadLetterFilter { status: Some(DeadLetterStatus::Pending), ..of_sub };
    assert_eq!(app.store.count_dead_letters(&pending).await.expect("count").0, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_are_validated_and_tenants_see_only_their_own_dead_letters() {
    let app = TestApp::spawn("dl-tenants").await;
    let receiver = TestReceiver::answering(|_, _| Reply::status(400)).await;
    let (tenant_a, key_a) = app.tenant_with_key("a").await;
    let (tenant_b, key_b) = app.tenant_with_key("b").await;
    for key in [&key_a, &key_b] {
        let (status, sub) = app
            .call(
                Method::POST,
                "/v1/subscriptions",
                key,
                Some(json!({"url": receiver.url, "event_types": ["*"]})),
            )
            .await;
        assert_eq!(status, 201, "{sub}");
        let (status, _) = app
            .call(Method::POST, "/v1/events", key, Some(json!({"type": "a.b", "data": {}})))
            .await;
        assert_eq!(status, 202);
    }
    let all = wait_for_dead_letters(&app, "", 2).await;
    let of = |tenant: &str| {
        all.iter().find(|d| d["tenant_id"] == tenant).expect("a dead letter")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let (a_dead, b_dead) = (of(&tenant_a), of(&tenant_b));

    let (status, page) = app.call(Method::GET, "/v1/dead-letters", &key_a, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        page["data"].as_array().expect("data").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, [a_dead.as_str()], "a tenant lists only its own");
    for (method, path) in [
        (Method::GET, format!("/v1/dead-letters/{b_dead}")),
        (Method::POST, format!("/v1/dead-letters/{b_dead}/replay")),
        (Method::POST, format!("/v1/dead-letters/{b_dead}/discard")),
        (Method::GET, format!("/v1/dead-letters?tenant_id={tenant_b}")),
    ] {
        let (status, problem) = app.call(method.clone(), &path, &key_a, None).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
    }
    let (status, dry) =
        app.call(Method::POST, "/v1/replays", &key_a, Some(json!({"dry_run": true}))).await;
    assert_eq!((status, dry["total"].as_u64()), (200, Some(1)), "{dry}");
    let (status, job) = app.call(Method::POST, "/v1/replays", &key_b, Some(json!({}))).await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/v1/replays/{}", job["id"].as_str().expect("id"));
    let (status, _) = app.call(Method::GET, &job_path, &key_a, None).await;
    assert_eq!(status, 404, "another tenant's replay is not found");
    let (status, _) = app.call(Method::POST, &format!("{job_path}/cancel"), &key_a, None).await;
    assert_eq!(status, 404);
    let (status, mine) = app.call(Method::GET, &job_path, &key_b, None).await;
    assert_eq!((status, mine["tenant_id"].as_str()), (200, Some(tenant_b.as_str())));
    let (status, a_detail) =
        app.call(Method::GET, &format!("/v1/dead-letters/{a_dead}"), &key_a, None).await;
    assert_eq!(
        (status, a_detail["status"].as_str()),
        (200, Some("pending")),
        "B's replay left A's alone"
    );
    // B's replay fails again (400): one more dead letter, linked to the first.
    let after_replay = wait_for_dead_letters(&app, "", 3).await;
    assert!(after_replay.iter().any(|d| d["replay_of"] == b_dead.as_str()), "{after_replay:?}");

    // Bad filters: a clear problem naming each field, and nothing created.
    for (query, fields) in [
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", vec!["to"]),
        ("status=lost", vec!["status"]),
        ("from=yesterday&subscription_id=nope", vec!["subscription_id", "from"]),
        ("tenant_id=acme", vec!["tenant_id"]),
        ("limit=0&status=x", vec!["limit", "status"]),
    ] {
        let (status, problem) = get(&app, &format!("/v1/dead-letters?{query}")).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_query")),
            "{query}: {problem}"
        );
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(named, fields, "{query}");
    }
    for body in [
        json!({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        json!({"rate_per_second": 0}),
        json!({"url": "ftp://example.com"}),
    ] {
        let (status, problem) = post(&app, "/v1/replays", Some(body.clone())).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("validation")),
            "{body}: {problem}"
        );
    }
    let (status, _) = post(&app, "/v1/replays", Some(json!({"status": "pending"}))).await;
    assert!(matches!(status, 400 | 422), "an unknown field is refused");
    for missing in ["/v1/replays/rpl_nope", "/v1/dead-letters/dl_nope", "/v1/dead-letters/sub_1"] {
        let (status, _) = get(&app, missing).await;
        assert_eq!(status, 404, "{missing}");
    }
    let (status, _) = get(&app, &job_path).await;
    assert_eq!(status, 200, "an admin sees every tenant's replay");
    let page = Page { after: None, limit: 10 };
    let jobs_pending =
        app.store.list_dead_letters(&DeadLetterFilter::default(), page).await.expect("list");
    assert_eq!(jobs_pending.len(), 3, "no dead letter came or went through bad requests");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_poison_record_shows_no_other_tenant_anything() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let app = TestApp::spawn("dl-forged").await;
    let receiver = TestReceiver::start().await;
    let (victim, victim_key) = app.tenant_with_key("victim").await;
    let (attacker, attacker_key) = app.tenant_with_key("attacker").await;
    let (status, sub) = app
        .call(
            Method::POST,
            "/v1/subscriptions",
            &victim_key,
            Some(json!({"url": receiver.url, "event_types": ["*"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let (status, event) = app
        .call(Method::POST, "/v1/events", &victim_key, Some(json!({"type": "a.b", "data": {}})))
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(1, DEADLINE).await;
    let sub_id = sub["id"].as_str().expect("id");
    let event_id = event["id"].as_str().expect("id");
    app.attempts_for(event_id, DEADLINE).await;

    // Unreadable (no type), naming the victim's subscription, tenant and event.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some(event_id) })
        .insert(Header { key: "ce_tenantid", value: Some(attacker.as_str()) })
        .insert(Header { key: "hookgate_subscription", value: Some(sub_id) })
        .insert(Header { key: "hookgate_tenant", value: Some(victim.as_str()) })
        .insert(Header { key: "hookgate_reason", value: Some("exhausted") });
    producer
        .send(
            FutureRecord::to(&app.topics.publish).key("k").payload("{}").headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("forged record written");

    let listed = eventually("the forged record indexed", DEADLINE, || async {
        let (_, page) = app.call(Method::GET, "/v1/dead-letters", &attacker_key, None).await;
        page["data"].as_array().filter(|d| !d.is_empty()).cloned()
    })
    .await;
    let forged = &listed[0];
    assert_eq!(forged["reason"], "poison", "hookgate's own reason wins: {forged}");
    assert_eq!(forged["subscription_id"], Value::Null, "{forged}");
    assert_eq!(forged["replayable"], false);
    let path = format!("/v1/dead-letters/{}", forged["id"].as_str().expect("id"));
    let (status, detail) = app.call(Method::GET, &path, &attacker_key, None).await;
    assert_eq!(status, 200);
    assert_eq!(detail["attempt_log"], json!([]), "no attempt of the victim's shows: {detail}");
    let (_, victims) = app.call(Method::GET, "/v1/dead-letters", &victim_key, None).await;
    assert_eq!(victims["data"], json!([]), "nothing is put on the victim's account");
    app.stop().await;
}
