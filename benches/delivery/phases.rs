//! The ceiling (nothing of hookgate running yet), then on one app with the
//! default budgets, in order: the publish API one event a request and in
//! batches, sustained deliveries, latency at 1,000, 400 and 200 events/s,
//! fan-out to 10,000 subscriptions, and the memory with 100,000
//! subscriptions cached (taken before the isolation phases start, in an app
//! of their own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{StreamExt as _, TryStreamExt as _};
use hookgate::config::DeliveryBudgets;
use hookgate::delivery::Target;
use hookgate::dispatcher::gate::DEFAULT_MAX_IN_FLIGHT;
use hookgate::domain::filter::Filter;
use hookgate::domain::{Audience, Event, Subscription, TenantId};
use hookgate::kafka::Producer;
use tokio::time::Instant;

use crate::env::{subscription, Env, Services, TOKEN};
use crate::harness::{kafka, Reply, TestReceiver};
use crate::report::{percentile_ms, resident_mib, Figure};
use crate::{ceiling, stages};

/// Events of the sustained phase at scale 1; each goes to 5 subscriptions.
const SUSTAINED_EVENTS: f64 = 10_000.0;
const SUSTAINED_SUBSCRIPTIONS: u64 = 5;
const FAN_OUT: u64 = 10_000;
/// Events to each set of the fan-out phase, the sets in turn.
const FAN_OUT_ROUNDS: u64 = 4;
/// Subscriptions cached when the memory is read.
const CACHED: usize = 100_000;
/// Events a batch request of the batch phase carries (the API's most).
const BATCH: usize = 1_000;
/// Batch requests under way at once.
const BATCHES_AT_ONCE: usize = 8;
/// Subscriptions created at once (the app's store pool is shared).
const CREATES_AT_ONCE: usize = 32;

/// Runs the phases on an app of their own and answers their figures.
pub(crate) async fn run(
    services: &Services,
    run_id: &str,
    scale: f64,
    sustained_only: bool,
) -> anyhow::Result<Vec<Figure>> {
    let receiver = Deliveries::start().await;
    // The most the sustained phase may have under way: its subscriptions at
    // their default in-flight cap.
    let concurrency = (SUSTAINED_SUBSCRIPTIONS * u64::from(DEFAULT_MAX_IN_FLIGHT)) as usize;
    let requests = (SUSTAINED_SUBSCRIPTIONS as f64 * SUSTAINED_EVENTS * scale).round() as usize;
    let ceiling = ceiling::measure(&receiver, requests.max(1), concurrency).await?;
    let env = Env::start(services, run_id, DeliveryBudgets::default()).await?;
    let phases = Phases {
        env: &env,
        receiver: &receiver,
        client: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        scale,
        ceiling,
    };
    let figures = match sustained_only {
        true => phases.ceiling_and_sustained().await,
        false => phases.all().await,
    };
    // The receiver outlives the app: its drain may still deliver.
    env.stop().await?;
    drop(receiver);
    figures
}

/// The receiver of these phases (the harness's, counting): deliveries by
/// event type, and the latency of every one whose data carries `sent_us`.
pub(crate) struct Deliveries {
    receiver: TestReceiver,
    tally: Arc<Tally>,
}

#[derive(Default)]
struct Tally {
    by_type: Mutex<HashMap<String, u64>>,
    latencies_us: Mutex<Vec<i64>>,
    /// When each event of a latency phase arrived (µs), by type and `n`.
    arrivals: Mutex<HashMap<String, HashMap<u64, i64>>>,
}

impl Deliveries {
    pub(crate) async fn start() -> Self {
        let tally = Arc::new(Tally::default());
        let receiver = TestReceiver::counting({
            let tally = Arc::clone(&tally);
            move |_, body| {
                tally.record(body);
                Reply::status(204)
            }
        })
        .await;
        Self { receiver, tally }
    }

    pub(crate) fn url(&self) -> &str {
        &self.receiver.url
    }

    fn count(&self, event_type: &str) -> u64 {
        self.tally.by_type.lock().map(|c| c.get(event_type).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Waits until `n` deliveries of `event_type` arrived, at most `limit`;
    /// answers how many did.
    pub(crate) async fn wait_until(&self, event_type: &str, n: u64, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        while self.count(event_type) < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.count(event_type)
    }

    /// The latencies so far, sorted, in µs.
    fn latencies_us(&self) -> Vec<i64> {
        let mut samples = self.tally.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
        samples.sort_unstable();
        samples
    }

    /// When each event of the latency phases arrived, by type and `n`.
    fn arrivals(&self) -> HashMap<String, HashMap<u64, i64>> {
        self.tally.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The latencies since the last call, sorted, in µs; forgets them.
    pub(crate) fn take_latencies_us(&self) -> Vec<i64> {
        let mut samples =
            self.tally.latencies_us.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        samples.sort_unstable();
        samples
    }

    fn clear_latencies(&self) {
        self.tally.latencies_us.lock().map(|mut l| l.clear()).ok();
    }
}

impl Tally {
    fn record(&self, body: &serde_json::Value) {
        let now_us = Utc::now().timestamp_micros();
        if let Some(sent) = body["data"]["sent_us"].as_i64() {
            if let Ok(mut samples) = self.latencies_us.lock() {
                samples.push(now_us - sent);
            }
        }
        let latency_phase = body["type"].as_str().filter(|t| t.starts_with(LATENCY_TYPE));
        if let (Some(event_type), Some(n)) = (latency_phase, body["data"]["n"].as_u64()) {
            if let Ok(mut arrivals) = self.arrivals.lock() {
                arrivals.entry(event_type.to_owned()).or_default().entry(n).or_insert(now_us);
            }
        }
        if let (Some(event_type), Ok(mut counts)) = (body["type"].as_str(), self.by_type.lock()) {
            *counts.entry(event_type.to_owned()).or_insert(0) += 1;
        }
    }
}

struct Phases<'a> {
    env: &'a Env,
    receiver: &'a Deliveries,
    client: reqwest::Client,
    scale: f64,
    /// Deliveries/s of the minimal sender (`ceiling`).
    ceiling: f64,
}

impl Phases<'_> {
    fn ceiling(&self) -> Figure {
        let ceiling = "ceiling: a minimal signing sender to the same receiver";
        Figure::new(ceiling, self.ceiling, "deliveries/s", "-", true)
    }

    async fn ceiling_and_sustained(&self) -> anyhow::Result<Vec<Figure>> {
        Ok(vec![self.ceiling(), self.sustained().await?])
    }

    async fn all(&self) -> anyhow::Result<Vec<Figure>> {
        let mut figures = vec![self.ceiling()];
        figures.push(self.publish_api().await);
        figures.push(self.publish_batches().await?);
        figures.push(self.sustained().await?);
        let mut latencies = Vec::new();
        for (rate, seconds, p50, p99) in LATENCIES {
            latencies.push((rate, self.latency(rate, seconds, p50, p99).await?));
        }
        // Once for every latency phase: each reads both topics whole.
        let config = &self.env.config;
        let (brokers, topics) = (&config.kafka.brokers, &config.topics);
        let arrived = self.receiver.arrivals();
        let stages =
            stages::measure(brokers, &topics.publish, &topics.deliveries, &arrived).await?;
        for (rate, latency) in latencies {
            figures.extend(latency);
            let Some(stages) = stages.get(&latency_type(rate)) else { continue };
            for (stage, ms) in [
                ("API (request → publish record)", stages.api),
                ("fan-out (publish record → delivery record)", stages.fan_out),
                ("delivery (delivery record → receiver)", stages.deliver),
            ] {
                let name = format!("  at {}/s, p50 of the stage {stage}", rate_text(rate));
                figures.push(Figure::new(name, ms, "ms", "-", true));
            }
        }
        figures.extend(self.fan_out().await?);
        figures.push(self.memory().await?);
        Ok(figures)
    }

    /// The publish API, one event a request, 64 at a time.
    async fn publish_api(&self) -> Figure {
        let requests = self.scaled(20_000.0);
        let started = Instant::now();
        let accepted = futures::stream::iter(0..requests)
            .map(|n| self.publish("bench.unrouted", n))
            .buffer_unordered(64)
            .filter(|status| std::future::ready(*status == 202))
            .count()
            .await;
        let per_second = accepted as f64 / started.elapsed().as_secs_f64();
        let name = "publish API, POST /v1/events (requests/s)";
        Figure::new(name, per_second, "req/s", ">= 10,000", per_second >= 10_000.0)
    }

    /// The batch API, `BATCH` events a request; then waits until the
    /// dispatcher read them all, so that they weigh on no later phase.
    async fn publish_batches(&self) -> anyhow::Result<Figure> {
        let requests = self.scaled(100.0);
        let url = format!("{}/v1/events/batch", self.env.api);
        let started = Instant::now();
        let accepted: usize = futures::stream::iter(0..requests)
            .map(|_| {
                let events: Vec<_> = (0..BATCH)
                    .map(|n| serde_json::json!({"type": "bench.unrouted", "data": {"n": n}}))
                    .collect();
                let request = self.client.post(&url).bearer_auth(TOKEN);
                async move {
                    let sent = request.json(&serde_json::json!({ "events": events })).send().await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(202) => BATCH,
                        _ => 0,
                    }
                }
            })
            .buffer_unordered(BATCHES_AT_ONCE)
            .fold(0, |sum, n| std::future::ready(sum + n))
            .await;
        let per_second = accepted as f64 / started.elapsed().as_secs_f64();
        self.settle().await?;
        let name = "publish API, POST /v1/events/batch of 1,000 (events/s)";
        Ok(Figure::new(name, per_second, "events/s", ">= 50,000", per_second >= 50_000.0))
    }

    /// Sustained deliveries: events straight to the topic (so that the
    /// figure is the dispatcher's, not the API's), 5 subscriptions.
    async fn sustained(&self) -> anyhow::Result<Figure> {
        self.subscribe("bench.sustained", SUSTAINED_SUBSCRIPTIONS as usize).await?;
        let events = self.scaled(SUSTAINED_EVENTS);
        let producer = Producer::new(&self.env.config.kafka)?;
        let topic = &self.env.config.topics.publish;
        let started = Instant::now();
        let writes = (0..events).map(|n| {
            let producer = producer.clone();
            async move { producer.publish(topic, &sustained_event(n)).await }
        });
        futures::future::try_join_all(writes).await?;
        let owed = SUSTAINED_SUBSCRIPTIONS * events as u64;
        let delivered =
            self.receiver.wait_until("bench.sustained", owed, Duration::from_secs(300)).await;
        let per_second = delivered as f64 / started.elapsed().as_secs_f64();
        let share = 100.0 * per_second / self.ceiling;
        Ok(Figure {
            name: "sustained deliveries/s, one process".into(),
            value: per_second,
            unit: "deliveries/s",
            target: ">= 50 % of ceiling".into(),
            met: share >= 50.0,
            of_ceiling: Some(share),
        })
    }

    /// Latency publish → receiver at `rate` events/s for `seconds` × scale,
    /// one a request.
    async fn latency(
        &self,
        rate: u64,
        seconds: f64,
        p50_target: f64,
        p99_target: f64,
    ) -> anyhow::Result<Vec<Figure>> {
        let event_type = latency_type(rate);
        let event_type = event_type.as_str();
        self.subscribe(event_type, 1).await?;
        self.receiver.clear_latencies();
        let events = self.scaled(seconds * rate as f64);
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut sends = tokio::task::JoinSet::new();
        for n in 0..events {
            ticker.tick().await;
            sends.spawn(self.publish(event_type, n));
        }
        while sends.join_next().await.is_some() {}
        self.receiver.wait_until(event_type, events as u64, Duration::from_secs(60)).await;
        let samples = self.receiver.latencies_us();
        let (p50, p99) = (percentile_ms(&samples, 0.50), percentile_ms(&samples, 0.99));
        let name = |p: &str| format!("latency publish → receiver at {}/s, {p}", rate_text(rate));
        let figures = vec![
            Figure::new(name("p50"), p50, "ms", format!("<= {p50_target}"), p50 <= p50_target),
            Figure::new(name("p99"), p99, "ms", format!("<= {p99_target}"), p99 <= p99_target),
        ];
        Ok(figures)
    }

    /// Fan-out: one event to 10,000 subscriptions, then one to 10,000 that
    /// each filter on its content (the filter passes), in turn
    /// `FAN_OUT_ROUNDS` times: the median time until all were delivered,
    /// each way. What the filters add is measured apart, in this process:
    /// the matching of one event against 10,000 subscriptions with and
    /// without them (the event's data parsed each time), as a share of the
    /// fan-out's time. End to end, the ±30 % the deliveries move between
    /// runs would drown it.
    async fn fan_out(&self) -> anyhow::Result<Vec<Figure>> {
        const PLAIN: &str = "bench.fanout";
        const FILTERED: &str = "bench.fanout.filtered";
        self.subscribe(PLAIN, FAN_OUT as usize).await?;
        self.subscribe_filtered(FILTERED, FAN_OUT as usize).await?;
        let (mut plain, mut filtered) = (Vec::new(), Vec::new());
        let mut all_reached = true;
        for round in 1..=FAN_OUT_ROUNDS {
            // In turn first: the second of a pair meets the first's attempt
            // log still being written.
            let mut pair = [(PLAIN, &mut plain), (FILTERED, &mut filtered)];
            if round % 2 == 0 {
                pair.reverse();
            }
            for (event_type, took) in pair {
                let started = Instant::now();
                self.publish(event_type, round as usize).await;
                let owed = FAN_OUT * round;
                let reached =
                    self.receiver.wait_until(event_type, owed, Duration::from_secs(60)).await;
                // At least once: a retried delivery may arrive twice.
                all_reached &= reached >= owed;
                took.push(started.elapsed().as_secs_f64());
            }
        }
        let (plain, filtered) = (median(&mut plain), median(&mut filtered));
        let added_ms = tokio::task::spawn_blocking(|| filter_cost_ms(FAN_OUT as usize)).await??;
        let share = 100.0 * added_ms / (plain * 1000.0);
        Ok(vec![
            Figure {
                name: "fan-out 1 event → 10,000 subscriptions, all delivered".into(),
                value: plain,
                unit: "s",
                target: "<= 2".into(),
                met: all_reached && plain <= 2.0,
                of_ceiling: Some(100.0 * FAN_OUT as f64 / plain / self.ceiling),
            },
            Figure::new(
                "  the same, each subscription with a content filter",
                filtered,
                "s",
                "-",
                all_reached,
            ),
            Figure::new(
                "  what matching against 10,000 filters adds to an event (ms)",
                added_ms,
                "ms",
                "-",
                true,
            ),
            Figure::new(
                "  … as a share of the fan-out's time without filters",
                share,
                "%",
                "<= 10",
                share <= 10.0,
            ),
        ])
    }

    /// Memory with 100,000 subscriptions cached, once one more event went
    /// through (the cache holds them all).
    async fn memory(&self) -> anyhow::Result<Figure> {
        let so_far = 2 * FAN_OUT as usize + SUSTAINED_SUBSCRIPTIONS as usize + LATENCIES.len();
        self.subscribe("bench.idle", CACHED.saturating_sub(so_far)).await?;
        self.publish("bench.sustained", 0).await;
        let owed = SUSTAINED_SUBSCRIPTIONS * (self.scaled(SUSTAINED_EVENTS) as u64 + 1);
        self.receiver.wait_until("bench.sustained", owed, Duration::from_secs(30)).await;
        let rss = resident_mib();
        let name = "process memory at 100,000 subscriptions (API, dispatcher and receiver)";
        Ok(Figure::new(name, rss, "MiB RSS", "<= 512", rss <= 512.0))
    }

    /// Waits (at most a minute) until the dispatcher committed all it was
    /// sent on the publish topic.
    async fn settle(&self) -> anyhow::Result<()> {
        let (brokers, topics) = (&self.env.config.kafka.brokers, &self.env.config.topics);
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let behind = kafka::uncommitted(brokers, &topics.group_id, &topics.publish).await;
            if behind == 0 {
                return Ok(());
            }
            if Instant::now() >= end {
                anyhow::bail!("the dispatcher is still {behind} records behind after a minute");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `n` at scale 1, scaled (at least 1).
    fn scaled(&self, n: f64) -> usize {
        ((n * self.scale).round() as usize).max(1)
    }

    /// `n` subscriptions of the default tenant to `event_type`, at the receiver.
    async fn subscribe(&self, event_type: &str, n: usize) -> anyhow::Result<()> {
        self.subscribe_with(event_type, n, None).await
    }

    /// As `subscribe`, each with a filter of three conditions that the
    /// events of `publish` pass.
    async fn subscribe_filtered(&self, event_type: &str, n: usize) -> anyhow::Result<()> {
        let filter = Filter::parse(bench_filter()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.subscribe_with(event_type, n, Some(Arc::new(filter))).await
    }

    async fn subscribe_with(
        &self,
        event_type: &str,
        n: usize,
        filter: Option<Arc<Filter>>,
    ) -> anyhow::Result<()> {
        let store = &self.env.running.store;
        futures::stream::iter(0..n)
            .map(|_| {
                let url = self.receiver.url().to_owned();
                let subscription = Subscription {
                    filter: filter.clone(),
                    ..subscription(&TenantId::default_tenant(), url, event_type, None)
                };
                async move { store.create_subscription(&subscription).await }
            })
            .buffer_unordered(CREATES_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Publishes one event through the API (stamped when the request goes)
    /// and answers the status (0: no answer).
    fn publish(
        &self,
        event_type: &str,
        n: usize,
    ) -> impl std::future::Future<Output = u16> + Send + 'static {
        let event_type = event_type.to_owned();
        let request = self.client.post(format!("{}/v1/events", self.env.api)).bearer_auth(TOKEN);
        async move {
            let body = serde_json::json!({
                "type": event_type,
                "data": {"n": n, "sent_us": Utc::now().timestamp_micros()},
            });
            request.json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    }
}

/// The latency phases' event types: this, then the rate.
const LATENCY_TYPE: &str = "bench.latency.";

fn latency_type(rate: u64) -> String {
    format!("{LATENCY_TYPE}{rate}")
}

/// `1,000`, `400`: as the figures' names have it.
fn rate_text(rate: u64) -> String {
    match rate {
        1_000.. => format!("{},{:03}", rate / 1_000, rate % 1_000),
        _ => rate.to_string(),
    }
}

/// The latency phases: rate (events/s), seconds at scale 1, and the p50
/// and p99 targets (ms).
const LATENCIES: [(u64, f64, f64, f64); 3] =
    [(1_000, 5.0, 10.0, 25.0), (400, 10.0, 2.0, 8.0), (200, 10.0, 2.0, 8.0)];

/// Event `n` of the sustained phase, for the default tenant.
fn sustained_event(n: usize) -> Event {
    Event {
        id: format!("evt_sustained_{n}").into(),
        event_type: "bench.sustained".to_owned(),
        source: "bench".to_owned(),
        time: Utc::now(),
        key: Some(n.to_string().into_bytes()),
        data: serde_json::value::RawValue::from_string(format!("{{\"n\":{n}}}"))
            .expect("valid JSON")
            .into(),
        audience: Audience::Tenant(TenantId::default_tenant()),
    }
}

/// What a filter on each of `n` subscriptions adds to matching one event
/// (ms, the median of blocks taken in turn with and without).
fn filter_cost_ms(n: usize) -> anyhow::Result<f64> {
    const EVENTS: usize = 20;
    const BLOCKS: usize = 5;
    let filter = Arc::new(Filter::parse(bench_filter()).map_err(|e| anyhow::anyhow!("{e:?}"))?);
    let targets = |filter: Option<Arc<Filter>>| -> anyhow::Result<Vec<Target>> {
        (0..n)
            .map(|_| {
                let url = "http://127.0.0.1:1/".to_owned();
                let subscription = Subscription {
                    filter: filter.clone(),
                    ..subscription(&TenantId::default_tenant(), url, "bench.fanout", None)
                };
                Target::new(subscription).map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect()
    };
    let (plain, filtered) = (targets(None)?, targets(Some(filter))?);
    let event = |n: usize| Event {
        data: serde_json::value::RawValue::from_string(format!(
            "{{\"n\":{n},\"sent_us\":{}}}",
            Utc::now().timestamp_micros()
        ))
        .expect("valid JSON")
        .into(),
        event_type: "bench.fanout".to_owned(),
        ..sustained_event(n)
    };
    let events: Vec<Event> = (0..EVENTS).map(event).collect();
    let per_event_ms = |targets: &[Target]| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut matched = 0;
        for event in &events {
            let data = std::cell::OnceCell::new();
            matched += targets
                .iter()
                .filter(|t| t.wants_event(event, None) && t.passes(event, &data))
                .count();
        }
        anyhow::ensure!(matched == EVENTS * targets.len(), "every event passes the filters");
        Ok(started.elapsed().as_secs_f64() * 1000.0 / EVENTS as f64)
    };
    let mut added = Vec::new();
    for _ in 0..BLOCKS {
        let without = per_event_ms(&plain)?;
        added.push(per_event_ms(&filtered)? - without);
    }
    Ok(median(&mut added).max(0.0))
}

/// Three conditions that the events of `publish` pass.
fn bench_filter() -> serde_json::Value {
    serde_json::json!({
        "type": {"$prefix": "bench."},
        "data.n": {"$gte": 0},
        "$not": {"data.sent_us": {"$exists": false}},
    })
}

/// The middle value (of an odd count; the upper middle of an even one).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
