//! Shutdown ends within its deadline, whatever the broker does (guarantee
//! 8): `hookgate dev` and `hookgate serve`, as processes, with deliveries
//! under way, a broker that died, a client that never finishes its request,
//! and a second signal.

use std::process::ExitStatus;
use std::time::Duration;

use hookgate::config::{AppConfig, DispatcherConfig, Topics};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::harness::broker::PrivateBroker;
use crate::harness::process::ServeProcess;
use crate::harness::{eventually, kafka_brokers, unique, Reply, TestDb, TestReceiver, ADMIN_TOKEN};

/// A short request timeout keeps the drain deadline small.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// What the process promises: the longest drain of its roles (the API's,
/// `hookgate::api::DRAIN`, here) plus the grace.
fn deadline() -> Duration {
    hookgate::api::DRAIN.max(hookgate::dispatcher::drain_deadline(REQUEST_TIMEOUT))
        + hookgate::shutdown::GRACE
}
/// Between the signal sent and the exit seen: process scheduling.
const SLACK: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(60);

fn dispatcher_config(request_timeout: Duration) -> DispatcherConfig {
    crate::harness::process_dispatcher(request_timeout)
}

/// An app configuration for `hookgate serve` on its own database and topics.
fn serve_config(name: &str, db: &TestDb, brokers: String) -> AppConfig {
    let mut config = crate::harness::app_config(&db.url, Topics::under_prefix(&unique(name), 3, 1));
    config.kafka.brokers = brokers;
    config
}

/// A receiver that answers 200 after `delay`, and one that answers 400 (a
/// dead letter at once).
async fn receivers(delay: Duration) -> (TestReceiver, TestReceiver) {
    let slow =
        TestReceiver::answering(move |_, _| Reply { status: 200, retry_after_secs: None, delay })
            .await;
    (slow, TestReceiver::answering(|_, _| Reply::status(400)).await)
}

async fn call(base_url: &str, path: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{base_url}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the API answers")
        .status()
        .as_u16()
}

/// Subscribes both receivers and publishes `events` events (`data.n`).
async fn start_deliveries(base_url: &str, slow: &TestReceiver, bad: &TestReceiver, events: usize) {
    for url in [&slow.url, &bad.url] {
        let created =
            call(base_url, "/v1/subscriptions", json!({"url": url, "event_types": ["*"]})).await;
        assert_eq!(created, 201, "subscription created");
    }
    let batch: Vec<_> = (0..events).map(|n| json!({"type": "a.b", "data": {"n": n}})).collect();
    assert_eq!(call(base_url, "/v1/events/batch", json!({ "events": batch })).await, 202);
}

/// Sends SIGTERM and waits (at most a minute) for the exit: its status
/// (`None`: it did not exit) and how long it took.
async fn terminate(process: ServeProcess) -> (Option<ExitStatus>, Duration, String) {
    let started = Instant::now();
    process.signal("TERM");
    let (status, output) = process.exited_within(DEADLINE).await;
    (status, started.elapsed(), output)
}

fn assert_within_deadline(took: Duration, status: Option<ExitStatus>, output: &str) {
    let limit = deadline() + SLACK;
    assert!(status.is_some(), "still running {DEADLINE:?} after SIGTERM: {output}");
    assert!(took <= limit, "exited after {took:?}, over its deadline {limit:?}: {output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_exits_within_its_deadline_while_delivering_and_dead_lettering() {
    for run in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
        command
            .args(["dev", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("HOOKGATE_DATABASE_URL")
            .env_remove("HOOKGATE_KAFKA_BROKERS")
            .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HOOKGATE_REQUEST_TIMEOUT", format!("{}s", REQUEST_TIMEOUT.as_secs()))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let dev = ServeProcess::spawn(command).await;
        let (slow, bad) = receivers(Duration::from_millis(1_500)).await;
        start_deliveries(&dev.base_url, &slow, &bad, 200).await;
        slow.wait_for(1, DEADLINE).await;
        bad.wait_for(3, DEADLINE).await;

        let (status, took, output) = terminate(dev).await;
        assert_within_deadline(took, status, &output);
        let status = status.expect("exited");
        assert!(status.success(), "run {run}: a clean drain exits 0, not {status}: {output}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exits_within_its_deadline_after_the_broker_died_and_loses_nothing() {
    let mut broker = PrivateBroker::start().await;
    let db = TestDb::postgres().await;
    let config = serve_config("broker-gone", &db, broker.bootstrap());
    let dispatcher = dispatcher_config(REQUEST_TIMEOUT);
    let serve = ServeProcess::start(&config, &dispatcher, &[]).await;
    let (slow, bad) = receivers(Duration::from_millis(1_000)).await;
    const EVENTS: usize = 30;
    start_deliveries(&serve.base_url, &slow, &bad, EVENTS).await;
    slow.wait_for(2, DEADLINE).await;
    bad.wait_for(2, DEADLINE).await;

    broker.kill().await;
    let (status, took, output) = terminate(serve).await;
    // Non-zero is fair (work could not be handed on); hanging is not.
    assert_within_deadline(took, status, &output);
    if status.is_some_and(|s| !s.success()) {
        assert!(
            output.lines().any(|l| l.starts_with("hookgate: ") && l.contains("unfinished")),
            "a non-zero exit says what was left, in one line: {output}"
        );
    }

    // What was not done is read again: every event reaches the receiver.
    broker.restart().await;
    let again = ServeProcess::start(&config, &dispatcher, &[]).await;
    eventually("every event delivered after the restart", DEADLINE * 2, || async {
        let mut seen: Vec<u64> =
            slow.received().iter().filter_map(|r| r.json()["data"]["n"].as_u64()).collect();
        seen.sort();
        seen.dedup();
        (seen.len() == EVENTS).then_some(())
    })
    .await;
    let (status, _, output) = terminate(again).await;
    assert!(status.is_some_and(|s| s.success()), "clean exit with the broker up: {output}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exits_0_within_its_deadline_while_a_client_never_finishes_its_request() {
    let db = TestDb::postgres().await;
    let config = serve_config("stalled-client", &db, kafka_brokers());
    let serve = ServeProcess::start(&config, &dispatcher_config(REQUEST_TIMEOUT), &[]).await;
    let (slow, bad) = receivers(Duration::from_millis(1_500)).await;
    start_deliveries(&serve.base_url, &slow, &bad, 20).await;
    slow.wait_for(1, DEADLINE).await;
    // A request whose body never comes: the API must not wait for it forever.
    let addr = serve.base_url.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.expect("connect to the API");
    stalled
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"type\""
            )
            .as_bytes(),
        )
        .await
        .expect("send the start of a request");
    // The server has read the head (the handler waits for the body) once a
    // later request on another connection is answered.
    assert_eq!(call(&serve.base_url, "/v1/events", json!({"type": "a.b", "data": {}})).await, 202);

    let (status, took, output) = terminate(serve).await;
    assert_within_deadline(took, status, &output);
    let status = status.expect("exited");
    assert!(status.success(), "a stalled client is no work left: {status}: {output}");
    drop(stalled);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_during_the_drain_exits_at_once() {
    let db = TestDb::postgres().await;
    let config = serve_config("second-signal", &db, kafka_brokers());
    // Requests that take long: the drain would last about 40 s.
    let dispatcher = dispatcher_config(Duration::from_secs(30));
    let serve = ServeProcess::start(&config, &dispatcher, &[("RUST_LOG", "info")]).await;
    let (slow, bad) = receivers(Duration::from_secs(25)).await;
    start_deliveries(&serve.base_url, &slow, &bad, 5).await;
    slow.wait_for(1, DEADLINE).await;

    serve.signal("TERM");
    eventually("the drain to start", DEADLINE, || async {
        serve.output().contains("shutdown signal received").then_some(())
    })
    .await;
    let started = Instant::now();
    serve.signal("INT");
    let (status, output) = serve.exited_within(Duration::from_secs(5)).await;
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("still draining after a second signal: {output}"));
    assert!(took < Duration::from_secs(2), "exited {took:?} after the second signal: {output}");
    assert!(!status.success(), "a cut drain is not a clean exit: {output}");
    db.drop_db().await;
}
