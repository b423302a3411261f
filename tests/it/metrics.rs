//! `GET /metrics` after real deliveries: the counters and histograms move by
//! what happened, and no label carries a URL or an id.

use std::collections::BTreeMap;
use std::time::Duration;

use hookgate::config::RetrySchedule;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::harness::{eventually, Reply, TestApp, TestReceiver};

const DEADLINE: Duration = Duration::from_secs(60);

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample { name: name.to_owned(), labels, value: value.parse().expect("a number") }
        })
        .collect()
}

struct Scrape(Vec<Sample>);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let response = app.client.get(app.url("/metrics")).send().await.expect("scrape");
        assert_eq!(response.status(), 200);
        Self(parse(&response.text().await.expect("text")))
    }

    /// The value of the series with these labels (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map_or(0.0, |s| s.value)
    }

    fn outcome(&self, outcome: &str) -> f64 {
        self.value("hookgate_deliveries_total", &[("outcome", outcome)])
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_move_the_counters_and_histograms() {
    let app = TestApp::spawn_with("metrics", |config| {
        if let Some(dispatcher) = &mut config.dispatcher {
            // One quick retry, then the dead-letter topic.
            dispatcher.retry_schedule = RetrySchedule(vec![Duration::from_millis(300)]);
        }
    })
    .await;
    let healthy = TestReceiver::start().await;
    let failing = TestReceiver::answering(|_, _| Reply::status(500)).await;
    let limited = TestReceiver::start().await;
    let filter = json!(["metric.tested"]);
    app.subscribe(json!({"url": healthy.url, "event_types": filter})).await;
    app.subscribe(json!({"url": failing.url, "event_types": filter})).await;
    app.subscribe(json!({"url": limited.url, "event_types": filter,
        "rate_limit": {"per_second": 1, "burst": 1}}))
        .await;

    let events: Vec<_> =
        (0..3).map(|n| json!({"type": "metric.tested", "data": {"n": n}})).collect();
    let response = app.post_json("/v1/events/batch", json!({ "events": events })).await;
    assert_eq!(response.status(), 202);
    let refused =
        app.post_json("/v1/events", json!({"type": "no spaces allowed", "data": {}})).await;
    assert_eq!(refused.status(), 422);
    // A record no one can read, from another producer: a dead letter, no delivery.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    producer
        .send(
            FutureRecord::<str, str>::to(&app.topics.publish).payload("not json at all"),
            Duration::from_secs(10),
        )
        .await
        .expect("poison written");

    // 3 events × 3 subscriptions: 6 delivered; the failing endpoint's 3
    // fail twice each (one retry) and are dead-lettered, beside the poison.
    let scrape = eventually("every delivery accounted for", DEADLINE, || async {
        let scrape = Scrape::of(&app).await;
        let poison = scrape.value("hookgate_dead_letters_total", &[("reason", "poison")]);
        (scrape.outcome("success") >= 6.0
            && scrape.outcome("dead_lettered") >= 3.0
            && poison >= 1.0)
            .then_some(scrape)
    })
    .await;
    assert_eq!(scrape.outcome("success"), 6.0);
    assert_eq!(scrape.outcome("failed"), 6.0);
    assert_eq!(scrape.outcome("retried"), 3.0);
    assert_eq!(scrape.outcome("dead_lettered"), 3.0);
    // A batch reaches the limited endpoint at once: at 1/s with a burst of
    // 1, the second and third wait for the rate limit.
    let held_back = scrape.outcome("rate_limited");
    assert!((1.0..=2.0).contains(&held_back), "rate_limited = {held_back}");
    assert_eq!(scrape.value("hookgate_delivery_attempt_duration_seconds_count", &[]), 12.0);
    assert_eq!(scrape.value("hookgate_delivery_lag_seconds_count", &[]), 6.0);
    assert!(scrape.value("hookgate_delivery_lag_seconds_sum", &[]) > 0.0);
    assert_eq!(scrape.value("hookgate_dead_letters_total", &[("reason", "exhausted")]), 3.0);
    assert_eq!(scrape.value("hookgate_dead_letters_total", &[("reason", "poison")]), 1.0);
    assert_eq!(scrape.value("hookgate_dead_letters_total", &[("reason", "expired")]), 0.0);
    assert_eq!(scrape.value("hookgate_deliveries_in_flight", &[]), 0.0);
    assert_eq!(scrape.value("hookgate_publish_requests_total", &[("status", "202")]), 1.0);
    assert_eq!(scrape.value("hookgate_publish_requests_total", &[("status", "422")]), 1.0);
    assert_eq!(scrape.value("hookgate_published_events_total", &[]), 3.0);
    assert!(scrape.value("process_resident_memory_bytes", &[]) > 0.0);
    for process in ["process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"] {
        assert!(scrape.0.iter().any(|s| s.name == process), "{process} is reported");
    }
    assert_eq!(app.records_on(&app.topics.dlq).await, 4);

    // Lag is measured every few seconds: once everything is committed, each
    // assigned partition of each stage reports 0 and the retry tier is empty.
    let source = app.topics.publish.clone();
    let scrape = eventually("consumer lag of every source partition at 0", DEADLINE, || async {
        let scrape = Scrape::of(&app).await;
        let partitions: Vec<&Sample> = scrape
            .0
            .iter()
            .filter(|s| s.name == "hookgate_consumer_lag" && s.labels["topic"] == source)
            .collect();
        let tier_reported = scrape.0.iter().any(|s| s.name == "hookgate_retry_backlog");
        (partitions.len() == 3 && partitions.iter().all(|s| s.value == 0.0) && tier_reported)
            .then_some(scrape)
    })
    .await;
    let lag = scrape.0.iter().find(|s| s.name == "hookgate_consumer_lag").expect("lag");
    assert_eq!(lag.labels["group"], app.topics.group_id);
    let tier = scrape
        .0
        .iter()
        .find(|s| s.name == "hookgate_retry_backlog")
        .expect("the retry tier's backlog is reported");
    assert_eq!(tier.labels["tier"], "300ms");

    // Labels: a small fixed set of names, never a URL or an id.
    let allowed =
        ["outcome", "reason", "status", "tier", "group", "topic", "partition", "le", "stage", "to"];
    for sample in &scrape.0 {
        for (name, value) in &sample.labels {
            assert!(allowed.contains(&name.as_str()), "label {name} on {sample:?}");
            for forbidden in ["://", "127.0.0.1", "sub_", "evt_", "ten_", "msg_", "/hook"] {
                assert!(!value.contains(forbidden), "{name}={value} on {}", sample.name);
            }
        }
    }
    app.stop().await;
}
