//! The dispatcher's promises, against the real broker: retries, dead
//! letters, 410, Retry-After, rate limits and in-flight caps across two
//! processes, isolation, ordering, graceful shutdown and
//! subscription changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookgate::config::RetrySchedule;
use hookgate::domain::{Outcome, Scope, SubscriptionId, SubscriptionStatus};
use serde_json::json;
use tokio::time::Instant;

use crate::harness::kafka::{headers_of, read_topic, wait_for_group};
use crate::harness::process::DispatcherProcess;
use crate::harness::{eventually, process_dispatcher, Reply, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

fn fast_retries(config: &mut hookgate::config::AppConfig) {
    if let Some(dispatcher) = &mut config.dispatcher {
        dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(300); 3]);
    }
}

fn subscription_id(created: &serde_json::Value) -> SubscriptionId {
    SubscriptionId::parse(created["id"].as_str().expect("id")).expect("a subscription id")
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_twice_then_succeeding_takes_three_attempts_with_one_webhook_id() {
    let app = TestApp::spawn_with("retry", fast_retries).await;
    let receiver =
        TestReceiver::answering(|n, _| Reply::status(if n < 2 { 500 } else { 200 })).await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let event_id = app.publish(json!({"type": "order.created", "data": {"n": 1}})).await;

    let received = receiver.wait_for(3, DEADLINE).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == ids[0] && id.starts_with("msg_")), "{ids:?}");
    let attempts = eventually("three logged attempts", DEADLINE, || async {
        let attempts = app.store.attempts_for_event(Scope::All, &event_id).await.expect("list");
        (attempts.len() >= 3).then_some(attempts)
    })
    .await;
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(attempts[0].outcome, Outcome::Failed);
    assert_eq!(attempts[0].status_code, Some(500));
    assert_eq!(attempts[2].outcome, Outcome::Success);
    assert_eq!(receiver.received().len(), 3, "no attempt after the success");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn always_failing_ends_in_the_dead_letter_topic_with_reasons() {
    let app = TestApp::spawn_with("dlq", fast_retries).await;
    let receiver = TestReceiver::answering(|_, _| Reply::status(503)).await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let event_id = app.publish(json!({"type": "order.created", "data": {"n": 1}})).await;

    let dead = read_topic(&app.kafka.brokers, &app.topics.dlq, 1, DEADLINE).await;
    let headers = headers_of(&dead[0]);
    assert_eq!(headers["hookgate_reason"], "exhausted");
    assert_eq!(headers["hookgate_attempts"], "4", "the first try and three retries");
    assert_eq!(headers["hookgate_last_status"], "503");
    assert!(headers["hookgate_error"].contains("503"));
    assert_eq!(headers["hookgate_subscription"], created["id"].as_str().expect("id"));
    assert_eq!(headers["hookgate_tenant"], "ten_default");
    assert_eq!(headers["ce_id"], event_id);
    for time in ["hookgate_first_attempt_at", "hookgate_last_attempt_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(&headers[time]).is_ok(), "{time}");
    }
    assert_eq!(rdkafka::Message::payload(&dead[0]), Some(&br#"{"n":1}"#[..]));
    assert_eq!(receiver.received().len(), 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_subscription() {
    let app = TestApp::spawn_with("gone", fast_retries).await;
    let receiver = TestReceiver::answering(|_, _| Reply::status(410)).await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {}})).await;

    let dead = read_topic(&app.kafka.brokers, &app.topics.dlq, 1, DEADLINE).await;
    assert_eq!(headers_of(&dead[0])["hookgate_reason"], "gone");
    let subscription = app
        .store
        .get_subscription(Scope::All, &subscription_id(&created))
        .await
        .expect("get")
        .expect("found");
    assert_eq!(subscription.status, SubscriptionStatus::Disabled);
    assert!(subscription.disabled_reason.as_deref().is_some_and(|r| r.contains("410")));
    assert_eq!(receiver.received().len(), 1, "no retry after 410");

    // Later events are not sent to a disabled subscription.
    let later = app.publish(json!({"type": "a.b", "data": {}})).await;
    let marker = TestReceiver::start().await;
    app.subscribe(json!({"url": marker.url, "event_types": ["*"]})).await;
    let after = app.publish(json!({"type": "a.b", "data": {}})).await;
    app.attempts_for(&after, DEADLINE).await;
    let disabled = subscription_id(&created);
    let later_attempts = app.store.attempts_for_event(Scope::All, &later).await.expect("list");
    assert!(later_attempts.iter().all(|a| a.subscription_id != disabled), "{later_attempts:?}");
    assert_eq!(receiver.received().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn_with("retry-after", fast_retries).await;
    let receiver = TestReceiver::answering(|n, _| {
        if n == 0 {
            Reply { status: 429, retry_after_secs: Some(2), delay: Duration::ZERO }
        } else {
            Reply::status(200)
        }
    })
    .await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {}})).await;

    let received = receiver.wait_for(2, DEADLINE).await;
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_secs(2),
        "the retry came after {waited:?}, before Retry-After"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_and_in_flight_cap_hold_with_two_dispatchers() {
    let dispatcher_config = process_dispatcher(Duration::from_secs(5));
    let app = TestApp::spawn_with("limits", |config| config.dispatcher = None).await;
    let mut dispatchers: Vec<DispatcherProcess> =
        (0..2).map(|_| DispatcherProcess::start(&app.config, &dispatcher_config)).collect();
    let group = format!("{}.deliveries", app.topics.group_id);
    wait_for_group(&app.kafka.brokers, &group, 2, DEADLINE).await;

    const PER_SECOND: usize = 20;
    const BURST: usize = 5;
    const MAX_IN_FLIGHT: usize = 3;
    const EVENTS: usize = 60;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let receiver = TestReceiver::answering(|_, _| Reply {
            status: 200,
            retry_after_secs: None,
            delay: Duration::from_millis(40),
        })
        .await;
        app.subscribe(json!({"url": receiver.url, "event_types": ["*"],
            "rate_limit": {"per_second": PER_SECOND, "burst": BURST}, "max_in_flight": MAX_IN_FLIGHT}))
            .await;
        receivers.push(receiver);
    }
    for n in 0..EVENTS {
        app.publish(json!({"type": "load.test", "data": {"n": n}})).await;
    }
    for receiver in &receivers {
        let received = receiver.wait_for(EVENTS, DEADLINE).await;
        let times: Vec<Instant> = received.iter().map(|r| r.at).collect();
        for (i, start) in times.iter().enumerate() {
            let in_window =
                times[i..].iter().take_while(|t| **t - *start < Duration::from_secs(1)).count();
            assert!(in_window <= PER_SECOND + BURST, "{in_window} requests in one second");
        }
        assert!(
            receiver.max_concurrency() <= MAX_IN_FLIGHT,
            "{} at once",
            receiver.max_concurrency()
        );
    }
    for dispatcher in &mut dispatchers {
        dispatcher.kill().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_endpoint_does_not_slow_the_others() {
    async fn healthy_latency(hanging: bool) -> Duration {
        let app = TestApp::spawn_with("isolation", |config| {
            if let Some(dispatcher) = &mut config.dispatcher {
                dispatcher.request_timeout = Duration::from_secs(3);
            }
        })
        .await;
        let hang = TestReceiver::answering(|_, _| Reply {
            status: 200,
            retry_after_secs: None,
            delay: Duration::from_secs(30),
        })
        .await;
        if hanging {
            app.subscribe(json!({"url": hang.url, "event_types": ["*"]})).await;
        }
        let healthy = TestReceiver::start().await;
        app.subscribe(json!({"url": healthy.url, "event_types": ["*"]})).await;
        let mut latencies = Vec::new();
        for n in 0..30 {
            let sent = Instant::now();
            app.publish(json!({"type": "a.b", "data": {"n": n}})).await;
            let received = healthy.wait_for(n + 1, DEADLINE).await;
            latencies.push(received[n].at - sent);
        }
        latencies.sort();
        app.stop().await;
        latencies[latencies.len() / 2]
    }
    let baseline = healthy_latency(false).await;
    let with_hanging = healthy_latency(true).await;
    assert!(
        with_hanging <= baseline * 3 + Duration::from_millis(100),
        "median latency {with_hanging:?} with a hanging endpoint vs {baseline:?} without"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ordered_subscription_keeps_each_keys_order_through_failures() {
    // Ten quick retries: with three keys interleaving, a head may meet the
    // failing third request on every attempt; after `fast_retries`' four it
    // would be dead-lettered, and its event never arrive.
    let app = TestApp::spawn_with("ordered", |config| {
        if let Some(dispatcher) = &mut config.dispatcher {
            dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(300); 10]);
        }
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    // Every third request fails: each failure must hold back its key only.
    let receiver = TestReceiver::answering(move |_, _| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Reply::status(if n % 3 == 1 { 500 } else { 200 })
    })
    .await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"], "ordered": true})).await;
    const PER_KEY: usize = 15;
    for n in 0..PER_KEY {
        for key in ["alpha", "beta", "gamma"] {
            app.publish(json!({"type": "seq.step", "key": key, "data": {"key": key, "n": n}}))
                .await;
        }
    }
    let delivered = || receiver.received().iter().filter(|r| r.status == 200).count();
    let end = Instant::now() + DEADLINE;
    while delivered() < PER_KEY * 3 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if delivered() < PER_KEY * 3 {
        let (_, dead) = app.call(reqwest::Method::GET, "/v1/dead-letters", ADMIN_TOKEN, None).await;
        panic!(
            "{} of {} delivered in {DEADLINE:?}; dead letters: {dead}",
            delivered(),
            PER_KEY * 3
        );
    }
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for request in receiver.received() {
        let data = &request.json()["data"];
        let key = data["key"].as_str().expect("key").to_owned();
        seen.entry(key).or_default().push(data["n"].as_u64().expect("n"));
    }
    for (key, sequence) in seen {
        // Failed attempts repeat an n; none may come after a later one.
        assert!(sequence.windows(2).all(|w| w[0] <= w[1]), "{key}: {sequence:?}");
        let mut distinct = sequence.clone();
        distinct.dedup();
        assert_eq!(distinct, (0..PER_KEY as u64).collect::<Vec<_>>(), "{key}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_deliveries_and_exits_cleanly() {
    let dispatcher_config = process_dispatcher(Duration::from_secs(10));
    let app = TestApp::spawn_with("drain", |config| config.dispatcher = None).await;
    let receiver = TestReceiver::answering(|_, _| Reply {
        status: 200,
        retry_after_secs: None,
        delay: Duration::from_millis(500),
    })
    .await;
    // One request at a time: most deliveries are still waiting at SIGTERM.
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"], "max_in_flight": 1})).await;
    let mut first = DispatcherProcess::start(&app.config, &dispatcher_config);
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        app.publish(json!({"type": "a.b", "data": {"n": n}})).await;
    }
    receiver.wait_for(2, DEADLINE).await;
    first.terminate();
    let status = tokio::time::timeout(Duration::from_secs(30), first.child.wait())
        .await
        .expect("the dispatcher exits within its drain deadline")
        .expect("exit status");
    assert!(status.success(), "exit status {status}");
    let during = receiver.received().len();
    assert!(during < EVENTS, "deliveries were still waiting at SIGTERM");
    // The waiting ones were handed on: a new dispatcher delivers every event.
    let mut second = DispatcherProcess::start(&app.config, &dispatcher_config);
    eventually("every event delivered after the restart", DEADLINE, || async {
        let mut seen: Vec<u64> = receiver
            .received()
            .iter()
            .map(|r| r.json()["data"]["n"].as_u64().unwrap_or(0))
            .collect();
        seen.sort();
        seen.dedup();
        (seen.len() == EVENTS).then_some(())
    })
    .await;
    second.kill().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_and_resuming_reaches_the_dispatcher_within_a_second() {
    let app = TestApp::spawn("propagation").await;
    let receiver = TestReceiver::start().await;
    let created = app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;
    let id = subscription_id(&created);
    let first = app.publish(json!({"type": "a.b", "data": {"n": 0}})).await;
    app.attempts_for(&first, DEADLINE).await;

    app.store.set_subscription_status(&id, SubscriptionStatus::Paused, None).await.expect("pause");
    let paused_at = Instant::now();
    let marker = TestReceiver::start().await;
    app.subscribe(json!({"url": marker.url, "event_types": ["*"]})).await;
    // Events published a second after the pause are not sent to it.
    tokio::time::sleep_until(paused_at + Duration::from_secs(1)).await;
    let during_pause = app.publish(json!({"type": "a.b", "data": {"n": 1}})).await;
    marker.wait_for(1, DEADLINE).await;
    app.attempts_for(&during_pause, DEADLINE).await;
    assert_eq!(receiver.received().len(), 1, "nothing delivered while paused");

    app.store.set_subscription_status(&id, SubscriptionStatus::Active, None).await.expect("resume");
    let resumed_at = Instant::now();
    tokio::time::sleep_until(resumed_at + Duration::from_secs(1)).await;
    app.publish(json!({"type": "a.b", "data": {"n": 2}})).await;
    receiver.wait_for(2, DEADLINE).await;
    app.stop().await;
}
