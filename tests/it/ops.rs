//! `hookgate dispatcher` serves probes and metrics on `HOOKGATE_LISTEN`.

use std::process::Stdio;
use std::time::Duration;

use hookgate::config::{DispatcherConfig, RetrySchedule};
use tokio::io::BufReader;

use crate::harness::process::{command, listening_on};
use crate::harness::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn dispatcher_serves_health_readiness_and_metrics() {
    let app = TestApp::spawn_with("ops", |config| config.dispatcher = None).await;
    let dispatcher = DispatcherConfig {
        allow_private_targets: true,
        request_timeout: Duration::from_secs(5),
        retry_schedule: RetrySchedule(vec![Duration::from_secs(1)]),
        max_delivery_age: Duration::from_secs(3600),
        response_body_cap: 4096,
    };
    let mut child = command("dispatcher", &app.config, &dispatcher)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hookgate dispatcher");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let base = listening_on(&mut stdout).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let live = get("/healthz").await.expect("healthz answers");
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<serde_json::Value>().await.expect("JSON")["status"], "ok");
    let ready = get("/readyz").await.expect("readyz answers");
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await.expect("JSON")["status"], "ready");

    let metrics = get("/metrics").await.expect("metrics answer");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    let text = metrics.text().await.expect("text");
    for name in [
        "hookgate_deliveries_total{outcome=\"success\"} 0",
        "hookgate_deliveries_in_flight 0",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
    // Only the ops endpoints: the REST API runs elsewhere.
    assert_eq!(get("/v1/subscriptions").await.expect("answers").status(), 404);

    let _ = child.kill().await;
    app.stop().await;
}
