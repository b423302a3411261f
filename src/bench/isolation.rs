//! The isolation figure, measured the way an operator meets the problem:
//! a sustained stream (a fixed rate over a fixed window) to tenant A's
//! healthy subscriptions, first alone (the baseline), then, with the same
//! stream, beside tenant B's tarpit (an endpoint that answers 200 just
//! under the request timeout, at the largest `max_in_flight` accepted, sent
//! more than the deliver stage's budget) and one of A's endpoints that
//! hangs (never answers within the timeout).
//!
//! stream (events straight to Kafka, healthy and tarpit types interleaved)
//!   → app (API + dispatcher, budgets of `Plan`) → receiver (healthy: record;
//!   tarpit: wait, 200; hang: never in time)
//!   → per phase: healthy deliveries/s kept up, p50/p99, and the deltas of
//!   the app's own `/metrics` (parked by reason, retried, attempts, …).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use futures::StreamExt as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Env, Figure, REQUEST_TIMEOUT};
use crate::config::DeliveryBudgets;
use crate::domain::{
    Audience, Event, ParkReason, Subscription, SubscriptionId, SubscriptionStatus, Tenant, TenantId,
};
use crate::kafka::Producer;
use crate::store::Store;

/// Healthy events a second, in both phases.
const HEALTHY_RATE: f64 = 400.0;
/// Tenant A's healthy subscriptions; each is sent every healthy event.
const HEALTHY_SUBSCRIPTIONS: usize = 10;
/// The stream's window at scale 1 (scaled, at least `MIN_WINDOW`).
const FULL_WINDOW: f64 = 20.0;
const MIN_WINDOW: f64 = 4.0;
/// What the tarpit is sent over a window, in stage budgets.
const TARPIT_BUDGETS: f64 = 1.5;
/// How late a healthy delivery may arrive after the stream and still count
/// as kept up.
const GRACE: Duration = Duration::from_secs(1);
/// The publisher's tick.
const TICK: Duration = Duration::from_millis(10);
/// Bounds on every wait, so that a broken dispatcher cannot hold the bench.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);
const PUBLISH_LIMIT: Duration = Duration::from_secs(30);
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(15);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The hanging endpoint answers long after hookgate gave up.
const HANG: Duration = Duration::from_secs(60);

const HEALTHY_TYPE: &str = "bench.iso.healthy";
const TARPIT_TYPE: &str = "bench.iso.tarpit";

/// What the two phases run with, from the bench's scale.
pub(super) struct Plan {
    /// The isolation app's budgets: the defaults at scale 1 and above;
    /// below, the stage budget scales down with the window (at least
    /// 1,024), so that the tarpit is still sent more than the stage holds.
    /// A tenant's stays the default (at most the stage's): a quarter of a
    /// small stage would be less than tenant A's healthy subscriptions may
    /// have in flight (10 × 64), and measure that instead.
    pub budgets: DeliveryBudgets,
    window: Duration,
    tarpit_rate: f64,
    tarpit_delay: Duration,
    tarpit_max_in_flight: u32,
}

impl Plan {
    pub fn at(scale: f64) -> Self {
        let full = DeliveryBudgets::default();
        let stage = if scale >= 1.0 {
            full.stage
        } else {
            ((full.stage as f64 * scale).round() as usize).max(1_024)
        };
        let budgets = DeliveryBudgets { stage, tenant: full.tenant.min(stage), ..full };
        let window = Duration::from_secs_f64((FULL_WINDOW * scale).max(MIN_WINDOW));
        Self {
            budgets,
            window,
            tarpit_rate: TARPIT_BUDGETS * stage as f64 / window.as_secs_f64(),
            tarpit_delay: REQUEST_TIMEOUT.mul_f64(0.9),
            tarpit_max_in_flight: crate::config::SubscriptionLimits::default().max_in_flight,
        }
    }

    fn healthy_events(&self) -> u64 {
        (HEALTHY_RATE * self.window.as_secs_f64()).round() as u64
    }

    fn tarpit_events(&self) -> u64 {
        (self.tarpit_rate * self.window.as_secs_f64()).round() as u64
    }
}

/// The receiver of both phases.
struct Receiver {
    /// (phase, sent µs, received µs) of every healthy delivery.
    healthy: Mutex<Vec<(u64, i64, i64)>>,
    tarpit: AtomicU64,
    hanging: AtomicU64,
    tarpit_delay: Duration,
}

impl Receiver {
    fn healthy_of(&self, phase: u64) -> Vec<(i64, i64)> {
        self.healthy
            .lock()
            .map(|all| {
                all.iter().filter(|s| s.0 == phase).map(|&(_, sent, at)| (sent, at)).collect()
            })
            .unwrap_or_default()
    }

    fn count_of(&self, phase: u64) -> u64 {
        self.healthy.lock().map(|all| all.iter().filter(|s| s.0 == phase).count()).unwrap_or(0)
            as u64
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    match path.as_str() {
        "tarpit" => {
            receiver.tarpit.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(receiver.tarpit_delay).await;
            StatusCode::OK
        }
        "hang" => {
            receiver.hanging.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(HANG).await;
            StatusCode::OK
        }
        _ => {
            let at = Utc::now().timestamp_micros();
            if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) {
                let data = &body["data"];
                if let (Some(phase), Some(sent)) =
                    (data["phase"].as_u64(), data["sent_us"].as_i64())
                {
                    if let Ok(mut samples) = receiver.healthy.lock() {
                        samples.push((phase, sent, at));
                    }
                }
            }
            StatusCode::NO_CONTENT
        }
    }
}

/// Both phases, their report and the figures.
#[derive(Debug, Serialize)]
pub(super) struct Isolation {
    plan: PlanReport,
    baseline: PhaseReport,
    isolation: PhaseReport,
    /// Isolation-phase healthy deliveries/s kept up ÷ the baseline's, in %.
    throughput_percent: f64,
    /// Healthy p99 beside the tarpit ÷ the baseline's.
    p99_ratio: f64,
    /// From deleting the tarpit and hanging subscriptions to no request
    /// under way.
    clean_up_s: f64,
}

#[derive(Debug, Serialize)]
struct PlanReport {
    window_s: f64,
    healthy_rate: f64,
    healthy_subscriptions: usize,
    offered_healthy_deliveries_per_s: f64,
    tarpit_rate: f64,
    tarpit_events: u64,
    tarpit_delay_ms: u128,
    tarpit_max_in_flight: u32,
    request_timeout_ms: u128,
    stage_budget: usize,
    tenant_budget: usize,
}

#[derive(Debug, Serialize)]
struct PhaseReport {
    name: &'static str,
    published_healthy: u64,
    published_tarpit: u64,
    publish_failures: u64,
    /// Healthy deliveries owed: published healthy events × subscriptions.
    healthy_expected: u64,
    /// Received by the end of the stream and `GRACE`.
    healthy_in_time: u64,
    /// Received by the end of the drain (at most `drain_limit_s`).
    healthy_delivered: u64,
    /// `healthy_in_time` over the window: the figure.
    healthy_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// From the end of the stream until every healthy delivery arrived
    /// (`None`: not within the limit).
    drain_s: Option<f64>,
    drain_limit_s: f64,
    /// Requests the tarpit and the hanging endpoint received.
    tarpit_requests: u64,
    hanging_requests: u64,
    metrics: MetricsReport,
}

/// The app's own counters over the phase (end − start), and the highest
/// gauges seen, sampled every `SAMPLE_EVERY`.
#[derive(Debug, Default, Serialize)]
struct MetricsReport {
    parked: BTreeMap<&'static str, f64>,
    parked_total: f64,
    /// `hookgate_deliveries_total` by outcome (`retried`: failed attempts
    /// handed to a retry tier).
    deliveries: BTreeMap<&'static str, f64>,
    attempts: f64,
    dead_letters: BTreeMap<String, f64>,
    circuits_opened: f64,
    circuits_closed: f64,
    circuits_open_at_end: f64,
    peak_in_flight: f64,
    peak_paused_partitions: f64,
    peak_retry_backlog: f64,
    peak_consumer_lag: f64,
}

const OUTCOMES: [&str; 5] = ["success", "failed", "retried", "dead_lettered", "rate_limited"];
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Isolation> {
    let receiver = Arc::new(Receiver {
        healthy: Mutex::new(Vec::new()),
        tarpit: AtomicU64::new(0),
        hanging: AtomicU64::new(0),
        tarpit_delay: plan.tarpit_delay,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn({
        let app =
            Router::new().route("/iso/{path}", post(receive)).with_state(Arc::clone(&receiver));
        async move { axum::serve(listener, app).await }
    });
    let result = phases(env, plan, &receiver, &format!("http://{addr}/iso")).await;
    server.abort();
    result
}

async fn phases(
    env: &Env,
    plan: &Plan,
    receiver: &Arc<Receiver>,
    hooks: &str,
) -> anyhow::Result<Isolation> {
    let store = Arc::clone(&env.running.store);
    let producer = Producer::new(&env.config.kafka)?;
    let client = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build()?;
    let scraper = Scraper { client, url: format!("{}/metrics", env.api) };
    let stream = Stream {
        producer,
        topic: env.config.topics.publish.clone(),
        healthy_tenant: tenant(store.as_ref(), "bench healthy").await?,
        tarpit_tenant: tenant(store.as_ref(), "bench tarpit").await?,
    };
    for _ in 0..HEALTHY_SUBSCRIPTIONS {
        let healthy =
            subscription(&stream.healthy_tenant, format!("{hooks}/healthy"), HEALTHY_TYPE, None);
        store.create_subscription(&healthy).await?;
    }
    // Warm up (connections, caches), then the baseline.
    let warm_up = stream.burst(0, 100).await;
    wait_for(receiver, 0, warm_up * HEALTHY_SUBSCRIPTIONS as u64, WARM_UP_LIMIT).await;
    let baseline = measure("baseline", 1, plan, &stream, receiver, &scraper).await;

    // The same stream beside B's tarpit and A's hanging endpoint.
    let tarpit = subscription(
        &stream.tarpit_tenant,
        format!("{hooks}/tarpit"),
        TARPIT_TYPE,
        Some(plan.tarpit_max_in_flight),
    );
    let hanging = subscription(&stream.healthy_tenant, format!("{hooks}/hang"), HEALTHY_TYPE, None);
    for subscription in [&tarpit, &hanging] {
        store.create_subscription(subscription).await?;
    }
    let isolation = measure("isolation", 2, plan, &stream, receiver, &scraper).await;

    // Clean up: their deliveries stop, and so do the requests under way.
    let started = Instant::now();
    for subscription in [&tarpit, &hanging] {
        store.delete_subscription(None, &subscription.id, None, Utc::now()).await?;
    }
    let end = started + CLEAN_UP_LIMIT;
    while Instant::now() < end {
        let in_flight = scraper.scrape().await.map(|m| sum(&m, "hookgate_deliveries_in_flight"));
        if in_flight == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clean_up_s = started.elapsed().as_secs_f64();

    Ok(Isolation {
        plan: PlanReport {
            window_s: plan.window.as_secs_f64(),
            healthy_rate: HEALTHY_RATE,
            healthy_subscriptions: HEALTHY_SUBSCRIPTIONS,
            offered_healthy_deliveries_per_s: HEALTHY_RATE * HEALTHY_SUBSCRIPTIONS as f64,
            tarpit_rate: plan.tarpit_rate,
            tarpit_events: plan.tarpit_events(),
            tarpit_delay_ms: plan.tarpit_delay.as_millis(),
            tarpit_max_in_flight: plan.tarpit_max_in_flight,
            request_timeout_ms: REQUEST_TIMEOUT.as_millis(),
            stage_budget: plan.budgets.stage,
            tenant_budget: plan.budgets.tenant,
        },
        throughput_percent: ratio(isolation.healthy_per_s, baseline.healthy_per_s) * 100.0,
        p99_ratio: ratio(isolation.p99_ms, baseline.p99_ms),
        baseline,
        isolation,
        clean_up_s,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

async fn tenant(store: &dyn Store, name: &str) -> anyhow::Result<TenantId> {
    let tenant = Tenant { id: TenantId::generate(), name: name.to_owned(), created_at: Utc::now() };
    store.create_tenant(&tenant).await?;
    Ok(tenant.id)
}

/// An active subscription of `tenant` to `event_type` at `url`.
pub(super) fn subscription(
    tenant: &TenantId,
    url: String,
    event_type: &str,
    max_in_flight: Option<u32>,
) -> Subscription {
    let now = Utc::now();
    Subscription {
        id: SubscriptionId::generate(),
        tenant_id: tenant.clone(),
        url,
        event_types: vec![event_type.to_owned()],
        secret: crate::domain::SigningSecret::generate().expose().to_owned(),
        previous_secrets: Vec::new(),
        rate_limit: None,
        max_in_flight,
        ordered: false,
        headers: Default::default(),
        secret_headers: Vec::new(),
        status: SubscriptionStatus::Active,
        disabled_reason: None,
        description: None,
        metadata: Default::default(),
        created_at: now,
        updated_at: now,
        version: 0,
        unreadable: None,
    }
}

/// Waits until `n` healthy deliveries of `phase` arrived, at most `limit`;
/// answers how many did.
async fn wait_for(receiver: &Receiver, phase: u64, n: u64, limit: Duration) -> u64 {
    let end = Instant::now() + limit;
    loop {
        let count = receiver.count_of(phase);
        if count >= n || Instant::now() >= end {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One phase: the stream, then the drain, with the app's metrics around it.
async fn measure(
    name: &'static str,
    phase: u64,
    plan: &Plan,
    stream: &Stream,
    receiver: &Receiver,
    scraper: &Scraper,
) -> PhaseReport {
    let before = scraper.scrape().await.unwrap_or_default();
    let (tarpit_before, hanging_before) =
        (receiver.tarpit.load(Ordering::Relaxed), receiver.hanging.load(Ordering::Relaxed));
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(scraper.clone().peaks(sampling.clone()));

    let started = Instant::now();
    let published = stream.sustained(phase, plan).await;
    // Kept up: what arrived by the end of the window and the grace (the
    // publisher may have run late: then from its actual end).
    let stream_end = (started + plan.window).max(published.ended);
    let (end_us, in_time_us) = (wall_clock_us(stream_end), wall_clock_us(stream_end + GRACE));
    tokio::time::sleep_until((stream_end + GRACE).into()).await;
    let expected = published.healthy * HEALTHY_SUBSCRIPTIONS as u64;
    let drain_limit = plan.window.max(Duration::from_secs(30));
    let delivered = wait_for(receiver, phase, expected, drain_limit).await;

    sampling.cancel();
    let peaks = sampler.await.unwrap_or_default();
    let after = scraper.scrape().await.unwrap_or_default();
    let samples = receiver.healthy_of(phase);
    let in_time = samples.iter().filter(|&&(_, at)| at <= in_time_us).count() as u64;
    // From the end of the stream to the last healthy delivery's arrival.
    let last_us = samples.iter().map(|&(_, at)| at).max().unwrap_or(end_us);
    let drain_s = (delivered >= expected).then(|| (last_us - end_us).max(0) as f64 / 1e6);
    let mut latencies: Vec<i64> = samples.iter().map(|&(sent, at)| at - sent).collect();
    latencies.sort_unstable();
    let percentile = |p: f64| super::percentile_ms(&latencies, p);
    PhaseReport {
        name,
        published_healthy: published.healthy,
        published_tarpit: published.tarpit,
        publish_failures: published.failed,
        healthy_expected: expected,
        healthy_in_time: in_time,
        healthy_delivered: delivered,
        healthy_per_s: in_time as f64 / plan.window.as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        drain_s,
        drain_limit_s: drain_limit.as_secs_f64(),
        tarpit_requests: receiver.tarpit.load(Ordering::Relaxed) - tarpit_before,
        hanging_requests: receiver.hanging.load(Ordering::Relaxed) - hanging_before,
        metrics: MetricsReport::between(&before, &after, peaks),
    }
}

/// `at` on the wall clock the receiver stamps deliveries with, in µs.
fn wall_clock_us(at: Instant) -> i64 {
    let (now, wall) = (Instant::now(), Utc::now().timestamp_micros());
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if at >= now {
        wall.saturating_add(micros(at - now))
    } else {
        wall.saturating_sub(micros(now - at))
    }
}

/// The publisher: events straight to the source topic, so that the figure
/// is the dispatcher's, not the API's.
struct Stream {
    producer: Producer,
    topic: String,
    healthy_tenant: TenantId,
    tarpit_tenant: TenantId,
}

struct Published {
    healthy: u64,
    tarpit: u64,
    failed: u64,
    ended: Instant,
}

impl Stream {
    fn event(&self, phase: u64, tarpit: bool, n: u64) -> Event {
        let (kind, event_type, tenant) = if tarpit {
            ("t", TARPIT_TYPE, &self.tarpit_tenant)
        } else {
            ("h", HEALTHY_TYPE, &self.healthy_tenant)
        };
        let data = format!(
            "{{\"phase\":{phase},\"n\":{n},\"sent_us\":{}}}",
            Utc::now().timestamp_micros()
        );
        Event {
            id: format!("evt_iso_{phase}_{kind}_{n}"),
            event_type: event_type.to_owned(),
            source: "bench".to_owned(),
            time: Utc::now(),
            key: Some(format!("{kind}{n}").into_bytes()),
            data: serde_json::value::RawValue::from_string(data).expect("valid JSON"),
            audience: Audience::Tenant(tenant.clone()),
        }
    }

    /// Publishes `events` (healthy, interleaved as given) and waits for the
    /// broker, at most `PUBLISH_LIMIT`; answers how many of each went.
    async fn publish(&self, events: Vec<Event>) -> (u64, u64) {
        let writes = events.iter().map(|event| async move {
            (event.event_type == TARPIT_TYPE, self.producer.publish(&self.topic, event).await)
        });
        let Ok(results) =
            tokio::time::timeout(PUBLISH_LIMIT, futures::future::join_all(writes)).await
        else {
            return (0, 0);
        };
        results.iter().fold((0, 0), |(h, t), (tarpit, result)| match (tarpit, result) {
            (false, Ok(())) => (h + 1, t),
            (true, Ok(())) => (h, t + 1),
            _ => (h, t),
        })
    }

    /// `n` healthy events at once (the warm-up).
    async fn burst(&self, phase: u64, n: u64) -> u64 {
        self.publish((0..n).map(|i| self.event(phase, false, i)).collect()).await.0
    }

    /// The plan's stream: healthy and tarpit events at their rates over the
    /// window, interleaved, sent each `TICK`, every tick's writes awaited
    /// beside the next ones.
    async fn sustained(&self, phase: u64, plan: &Plan) -> Published {
        let (healthy_total, tarpit_total) = (plan.healthy_events(), plan.tarpit_events());
        let window = plan.window.as_secs_f64();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut writes = futures::stream::FuturesUnordered::new();
        let (mut published, mut tarpit_published) = (0u64, 0u64);
        let (mut healthy_sent, mut tarpit_sent) = (0u64, 0u64);
        let mut ended = started;
        while healthy_sent < healthy_total || tarpit_sent < tarpit_total {
            tokio::select! {
                _ = ticker.tick() => {}
                Some((h, t)) = writes.next() => {
                    published += h;
                    tarpit_published += t;
                    continue;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let due = |total: u64| {
                if elapsed >= window {
                    total
                } else {
                    ((total as f64 * elapsed / window) as u64).min(total)
                }
            };
            let (healthy_due, tarpit_due) = (due(healthy_total), due(tarpit_total));
            let events = interleave(
                (healthy_sent..healthy_due).map(|n| self.event(phase, false, n)).collect(),
                (tarpit_sent..tarpit_due).map(|n| self.event(phase, true, n)).collect(),
            );
            (healthy_sent, tarpit_sent) = (healthy_due, tarpit_due);
            ended = Instant::now();
            writes.push(self.publish(events));
        }
        while let Some((h, t)) = writes.next().await {
            published += h;
            tarpit_published += t;
        }
        Published {
            healthy: published,
            tarpit: tarpit_published,
            failed: (healthy_total + tarpit_total) - (published + tarpit_published),
            ended,
        }
    }
}

/// `a` and `b` merged evenly, in order.
fn interleave(a: Vec<Event>, b: Vec<Event>) -> Vec<Event> {
    let (len_a, len_b) = (a.len(), b.len());
    let mut merged = Vec::with_capacity(len_a + len_b);
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    let (mut taken_a, mut taken_b) = (0usize, 0usize);
    while a.peek().is_some() || b.peek().is_some() {
        // From `a` while it is behind its share (or `b` is done).
        let from_a =
            b.peek().is_none() || (a.peek().is_some() && taken_a * len_b <= taken_b * len_a);
        if from_a {
            merged.extend(a.next());
            taken_a += 1;
        } else {
            merged.extend(b.next());
            taken_b += 1;
        }
    }
    merged
}

/// Reads the app's `/metrics`.
#[derive(Clone)]
struct Scraper {
    client: reqwest::Client,
    url: String,
}

type Scrape = BTreeMap<String, f64>;

#[derive(Debug, Default, Clone, Copy)]
struct Peaks {
    in_flight: f64,
    paused_partitions: f64,
    retry_backlog: f64,
    consumer_lag: f64,
}

impl Scraper {
    /// Every sample of the text format, by name and labels.
    async fn scrape(&self) -> Option<Scrape> {
        let text = self.client.get(&self.url).send().await.ok()?.text().await.ok()?;
        Some(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (key, value) = line.rsplit_once(' ')?;
                    Some((key.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The highest gauges, sampled until `stop`.
    async fn peaks(self, stop: CancellationToken) -> Peaks {
        let mut peaks = Peaks::default();
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return peaks,
                _ = ticker.tick() => {}
            }
            let Some(m) = self.scrape().await else { continue };
            peaks.in_flight = peaks.in_flight.max(sum(&m, "hookgate_deliveries_in_flight"));
            peaks.paused_partitions =
                peaks.paused_partitions.max(sum(&m, "hookgate_paused_partitions"));
            peaks.retry_backlog = peaks.retry_backlog.max(sum(&m, "hookgate_retry_backlog"));
            peaks.consumer_lag = peaks.consumer_lag.max(sum(&m, "hookgate_consumer_lag"));
        }
    }
}

/// The sum of every sample of `name` (any labels).
fn sum(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .iter()
        .filter(|(key, _)| {
            key.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .map(|(_, value)| value)
        .sum()
}

fn get(scrape: &Scrape, key: &str) -> f64 {
    scrape.get(key).copied().unwrap_or(0.0)
}

impl MetricsReport {
    fn between(before: &Scrape, after: &Scrape, peaks: Peaks) -> Self {
        let delta = |key: &str| get(after, key) - get(before, key);
        let parked: BTreeMap<&'static str, f64> = ParkReason::ALL
            .iter()
            .map(|reason| {
                let name = reason.as_str();
                (name, delta(&format!("hookgate_parked_total{{reason=\"{name}\"}}")))
            })
            .collect();
        let dead_letters = after
            .keys()
            .filter_map(|key| key.strip_prefix("hookgate_dead_letters_total{reason=\""))
            .filter_map(|rest| rest.strip_suffix("\"}"))
            .map(|reason| {
                (
                    reason.to_owned(),
                    delta(&format!("hookgate_dead_letters_total{{reason=\"{reason}\"}}")),
                )
            })
            .filter(|(_, n)| *n > 0.0)
            .collect();
        Self {
            parked_total: parked.values().sum(),
            parked,
            deliveries: OUTCOMES
                .iter()
                .map(|&o| (o, delta(&format!("hookgate_deliveries_total{{outcome=\"{o}\"}}"))))
                .collect(),
            attempts: delta("hookgate_delivery_attempt_duration_seconds_count"),
            dead_letters,
            circuits_opened: delta("hookgate_circuit_transitions_total{to=\"opened\"}"),
            circuits_closed: delta("hookgate_circuit_transitions_total{to=\"closed\"}"),
            circuits_open_at_end: get(after, "hookgate_circuits_open"),
            peak_in_flight: peaks.in_flight,
            peak_paused_partitions: peaks.paused_partitions,
            peak_retry_backlog: peaks.retry_backlog,
            peak_consumer_lag: peaks.consumer_lag,
        }
    }
}

impl Isolation {
    pub fn figures(&self) -> Vec<Figure> {
        // The integration test's bound: twice the baseline, 10 ms at least.
        let p99_bound = 2.0 * self.baseline.p99_ms.max(10.0);
        vec![
            Figure {
                name: "healthy throughput beside a tarpit and a hanging endpoint (> stage budget)",
                value: self.throughput_percent,
                unit: "% of all-healthy",
                target: ">= 90 %",
                met: self.throughput_percent >= 90.0,
            },
            Figure {
                name: "healthy p99 beside a tarpit and a hanging endpoint",
                value: self.isolation.p99_ms,
                unit: "ms",
                target: "<= 2× base",
                met: self.isolation.p99_ms <= p99_bound,
            },
        ]
    }

    /// The two phases side by side.
    pub fn print(&self) {
        let plan = &self.plan;
        println!(
            "\nisolation: {} healthy events/s × {} subscriptions (tenant A) for {:.0} s; \
             beside it, tenant B's tarpit ({} events, {:.0}/s, answers after {} ms, max_in_flight {}) \
             and one of A's endpoints hanging; timeout {} ms, stage budget {}, tenant budget {}",
            plan.healthy_rate,
            plan.healthy_subscriptions,
            plan.window_s,
            plan.tarpit_events,
            plan.tarpit_rate,
            plan.tarpit_delay_ms,
            plan.tarpit_max_in_flight,
            plan.request_timeout_ms,
            plan.stage_budget,
            plan.tenant_budget,
        );
        let (b, i) = (&self.baseline, &self.isolation);
        let (bm, im) = (&b.metrics, &i.metrics);
        let drain = |d: Option<f64>| d.map_or_else(|| "not all".to_owned(), |d| format!("{d:.2}"));
        let mut rows: Vec<(String, String, String)> = vec![
            row("healthy deliveries/s kept up", b.healthy_per_s, i.healthy_per_s, 0),
            row("healthy p50 (ms)", b.p50_ms, i.p50_ms, 1),
            row("healthy p99 (ms)", b.p99_ms, i.p99_ms, 1),
            row("healthy max (ms)", b.max_ms, i.max_ms, 1),
            (
                "healthy delivered / owed".to_owned(),
                format!("{}/{}", b.healthy_delivered, b.healthy_expected),
                format!("{}/{}", i.healthy_delivered, i.healthy_expected),
            ),
            ("drain after the stream (s)".to_owned(), drain(b.drain_s), drain(i.drain_s)),
            row("tarpit events published", b.published_tarpit as f64, i.published_tarpit as f64, 0),
            row("publish failures", b.publish_failures as f64, i.publish_failures as f64, 0),
            row("tarpit requests received", b.tarpit_requests as f64, i.tarpit_requests as f64, 0),
            row(
                "hanging requests received",
                b.hanging_requests as f64,
                i.hanging_requests as f64,
                0,
            ),
            row("attempts", bm.attempts, im.attempts, 0),
        ];
        for outcome in OUTCOMES {
            let get = |m: &MetricsReport| m.deliveries.get(outcome).copied().unwrap_or(0.0);
            rows.push(row(&format!("deliveries {outcome}"), get(bm), get(im), 0));
        }
        rows.push(row("parked", bm.parked_total, im.parked_total, 0));
        for reason in ParkReason::ALL {
            let get = |m: &MetricsReport| m.parked.get(reason.as_str()).copied().unwrap_or(0.0);
            rows.push(row(&format!("  parked {}", reason.as_str()), get(bm), get(im), 0));
        }
        let dead = |m: &MetricsReport| {
            m.dead_letters.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
        };
        rows.extend([
            ("dead letters".to_owned(), dead(bm), dead(im)),
            row("circuits opened", bm.circuits_opened, im.circuits_opened, 0),
            row("circuits open at the end", bm.circuits_open_at_end, im.circuits_open_at_end, 0),
            row("peak requests in flight", bm.peak_in_flight, im.peak_in_flight, 0),
            row("peak paused partitions", bm.peak_paused_partitions, im.peak_paused_partitions, 0),
            row("peak retry backlog", bm.peak_retry_backlog, im.peak_retry_backlog, 0),
            row("peak consumer lag", bm.peak_consumer_lag, im.peak_consumer_lag, 0),
        ]);
        println!("{:<34} {:>14} {:>14}", "", "baseline", "isolation");
        for (name, b, i) in rows {
            println!("{name:<34} {b:>14} {i:>14}");
        }
        println!(
            "isolation figure {:.1} % (healthy p99 ×{:.2}); clean-up {:.1} s",
            self.throughput_percent, self.p99_ratio, self.clean_up_s
        );
        let offered = plan.offered_healthy_deliveries_per_s;
        if b.healthy_per_s < 0.9 * offered {
            println!(
                "note: the baseline kept up with {:.0} % of the {offered:.0} deliveries/s offered: \
                 this machine is below the offered rate, so both phases measure capacity \
                 (a loaded machine, or a slow dispatcher), not keeping up",
                b.healthy_per_s / offered * 100.0
            );
        }
    }
}

fn row(name: &str, b: f64, i: f64, decimals: usize) -> (String, String, String) {
    (name.to_owned(), format!("{b:.decimals$}"), format!("{i:.decimals$}"))
}
