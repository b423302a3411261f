//! The isolation figure, measured the way an operator meets the problem:
//! a sustained stream (a fixed rate over a fixed window) to tenant A's
//! healthy subscriptions, first alone (the baseline), then, with the same
//! stream, beside tenant B's tarpit (an endpoint that answers 200 just
//! under the request timeout, at the largest `max_in_flight` accepted, sent
//! more than the deliver stage's budget) and one of A's endpoints that
//! hangs (never answers within the timeout).
//!
//! stream (`stream.rs`: events straight to Kafka, healthy and tarpit types
//!   interleaved) → app (API + dispatcher, budgets of `Plan`) → endpoints
//!   (healthy: record; tarpit: wait, 200; hang: never in time)
//!   → per phase (`report.rs`): healthy deliveries/s kept up, p50/p99, and
//!   the deltas of the app's own `/metrics` (`metrics.rs`: parked by
//!   reason, retried, attempts, …).

pub(crate) mod metrics;
mod report;
mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hookgate::config::{DeliveryBudgets, SubscriptionLimits};
use hookgate::domain::{Scope, Subscription, Tenant, TenantId};
use hookgate::kafka::Producer;
use hookgate::store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::metrics::{sum, MetricsReport, Scraper};
pub(crate) use self::report::Isolation;
use self::report::{ratio, PhaseReport, PlanReport};
use self::stream::Stream;
use crate::env::{subscription, Env, Services, REQUEST_TIMEOUT};
use crate::harness::{Reply, TestReceiver};
use crate::report::percentile_ms;

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
struct Plan {
    /// The isolation app's budgets: the defaults at scale 1 and above;
    /// below, the stage budget scales down with the window (at least
    /// 1,024), so that the tarpit is still sent more than the stage holds.
    /// A tenant's stays the default (at most the stage's): a quarter of a
    /// small stage would be less than tenant A's healthy subscriptions may
    /// have in flight (10 × 64), and measure that instead.
    budgets: DeliveryBudgets,
    window: Duration,
    tarpit_rate: f64,
    tarpit_delay: Duration,
    tarpit_max_in_flight: u32,
}

impl Plan {
    fn at(scale: f64) -> Self {
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
            tarpit_max_in_flight: SubscriptionLimits::default().max_in_flight,
        }
    }

    fn healthy_events(&self) -> u64 {
        (HEALTHY_RATE * self.window.as_secs_f64()).round() as u64
    }

    fn tarpit_events(&self) -> u64 {
        (self.tarpit_rate * self.window.as_secs_f64()).round() as u64
    }

    fn report(&self) -> PlanReport {
        PlanReport {
            window_s: self.window.as_secs_f64(),
            healthy_rate: HEALTHY_RATE,
            healthy_subscriptions: HEALTHY_SUBSCRIPTIONS,
            offered_healthy_deliveries_per_s: HEALTHY_RATE * HEALTHY_SUBSCRIPTIONS as f64,
            tarpit_rate: self.tarpit_rate,
            tarpit_events: self.tarpit_events(),
            tarpit_delay_ms: self.tarpit_delay.as_millis(),
            tarpit_max_in_flight: self.tarpit_max_in_flight,
            request_timeout_ms: REQUEST_TIMEOUT.as_millis(),
            stage_budget: self.budgets.stage,
            tenant_budget: self.budgets.tenant,
        }
    }
}

/// Both phases, on an app of their own (a fresh database and topics, the
/// plan's budgets), so that nothing left from the other phases disturbs them.
pub(crate) async fn run(
    services: &Services,
    run_id: &str,
    scale: f64,
) -> anyhow::Result<Isolation> {
    let plan = Plan::at(scale);
    let endpoints = Endpoints::start(&plan).await;
    let env = Env::start(services, run_id, plan.budgets).await?;
    let isolated = match Phases::prepare(&env, &plan, &endpoints).await {
        Ok(phases) => phases.run().await,
        Err(error) => Err(error),
    };
    env.stop().await?;
    isolated
}

/// The endpoints, each the harness's receiver (counting, on a port of its
/// own): tenant A's healthy ones record every delivery; B's tarpit answers
/// 200 just under the request timeout; A's hanging one long after it.
struct Endpoints {
    healthy: TestReceiver,
    samples: Arc<Samples>,
    tarpit: TestReceiver,
    hanging: TestReceiver,
}

/// (phase, sent µs, received µs) of every healthy delivery.
#[derive(Default)]
struct Samples(Mutex<Vec<(u64, i64, i64)>>);

impl Endpoints {
    async fn start(plan: &Plan) -> Self {
        let samples = Arc::new(Samples::default());
        let healthy = TestReceiver::counting({
            let samples = Arc::clone(&samples);
            move |_, body| {
                samples.record(body);
                Reply::status(204)
            }
        })
        .await;
        let answer_after = |delay| Reply { status: 200, retry_after_secs: None, delay };
        let tarpit_delay = plan.tarpit_delay;
        let tarpit = TestReceiver::counting(move |_, _| answer_after(tarpit_delay)).await;
        let hanging = TestReceiver::counting(move |_, _| answer_after(HANG)).await;
        Self { healthy, samples, tarpit, hanging }
    }

    /// Requests the tarpit and the hanging endpoint received so far.
    fn troubled(&self) -> (u64, u64) {
        (self.tarpit.count() as u64, self.hanging.count() as u64)
    }

    /// Waits until `n` healthy deliveries of `phase` arrived, at most
    /// `limit`; answers how many did.
    async fn wait_for(&self, phase: u64, n: u64, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        loop {
            let count = self.samples.count_of(phase);
            if count >= n || Instant::now() >= end {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Samples {
    fn record(&self, body: &serde_json::Value) {
        let at = Utc::now().timestamp_micros();
        let data = &body["data"];
        if let (Some(phase), Some(sent)) = (data["phase"].as_u64(), data["sent_us"].as_i64()) {
            if let Ok(mut samples) = self.0.lock() {
                samples.push((phase, sent, at));
            }
        }
    }

    /// (sent µs, received µs) of the healthy deliveries of `phase`.
    fn of(&self, phase: u64) -> Vec<(i64, i64)> {
        self.0
            .lock()
            .map(|all| {
                all.iter().filter(|s| s.0 == phase).map(|&(_, sent, at)| (sent, at)).collect()
            })
            .unwrap_or_default()
    }

    fn count_of(&self, phase: u64) -> u64 {
        self.0.lock().map(|all| all.iter().filter(|s| s.0 == phase).count()).unwrap_or(0) as u64
    }
}

struct Phases<'a> {
    env: &'a Env,
    plan: &'a Plan,
    endpoints: &'a Endpoints,
    stream: Stream,
    scraper: Scraper,
}

impl<'a> Phases<'a> {
    /// Tenants A (healthy) and B (tarpit), the publisher and the scraper.
    async fn prepare(
        env: &'a Env,
        plan: &'a Plan,
        endpoints: &'a Endpoints,
    ) -> anyhow::Result<Self> {
        let store = env.running.store.as_ref();
        let stream = Stream {
            producer: Producer::new(&env.config.kafka)?,
            topic: env.config.topics.publish.clone(),
            healthy_tenant: tenant(store, "bench healthy").await?,
            tarpit_tenant: tenant(store, "bench tarpit").await?,
        };
        let client = reqwest::Client::builder().timeout(SCRAPE_TIMEOUT).build()?;
        let scraper = Scraper { client, url: format!("{}/metrics", env.api) };
        Ok(Self { env, plan, endpoints, stream, scraper })
    }

    async fn run(&self) -> anyhow::Result<Isolation> {
        self.warm_up().await?;
        let baseline = self.measure("baseline", 1).await;
        let trouble = self.add_trouble().await?;
        let isolation = self.measure("isolation", 2).await;
        let clean_up_s = self.clean_up(&trouble).await?;
        Ok(Isolation {
            plan: self.plan.report(),
            throughput_percent: ratio(isolation.healthy_per_s, baseline.healthy_per_s) * 100.0,
            p99_ratio: ratio(isolation.p99_ms, baseline.p99_ms),
            baseline,
            isolation,
            clean_up_s,
        })
    }

    /// A's healthy subscriptions, and a burst to them (connections, caches).
    async fn warm_up(&self) -> anyhow::Result<()> {
        for _ in 0..HEALTHY_SUBSCRIPTIONS {
            let url = self.endpoints.healthy.url.clone();
            let healthy = subscription(&self.stream.healthy_tenant, url, HEALTHY_TYPE, None);
            self.env.running.store.create_subscription(&healthy).await?;
        }
        let warm_up = self.stream.burst(0, 100).await;
        let owed = warm_up * HEALTHY_SUBSCRIPTIONS as u64;
        self.endpoints.wait_for(0, owed, WARM_UP_LIMIT).await;
        Ok(())
    }

    /// B's tarpit and A's hanging endpoint, beside the same stream.
    async fn add_trouble(&self) -> anyhow::Result<[Subscription; 2]> {
        let tarpit = subscription(
            &self.stream.tarpit_tenant,
            self.endpoints.tarpit.url.clone(),
            TARPIT_TYPE,
            Some(self.plan.tarpit_max_in_flight),
        );
        let hanging = subscription(
            &self.stream.healthy_tenant,
            self.endpoints.hanging.url.clone(),
            HEALTHY_TYPE,
            None,
        );
        for subscription in [&tarpit, &hanging] {
            self.env.running.store.create_subscription(subscription).await?;
        }
        Ok([tarpit, hanging])
    }

    /// Deletes them: their deliveries stop, and so do the requests under
    /// way. Answers how long until none was, in s (at most `CLEAN_UP_LIMIT`).
    async fn clean_up(&self, trouble: &[Subscription]) -> anyhow::Result<f64> {
        let started = Instant::now();
        for subscription in trouble {
            self.env
                .running
                .store
                .delete_subscription(Scope::All, &subscription.id, None, Utc::now())
                .await?;
        }
        let end = started + CLEAN_UP_LIMIT;
        while Instant::now() < end {
            let scrape = self.scraper.scrape().await;
            let in_flight = scrape.map(|m| sum(&m, "hookgate_deliveries_in_flight"));
            if in_flight == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// One phase: the stream, then the drain, with the app's metrics around it.
    async fn measure(&self, name: &'static str, phase: u64) -> PhaseReport {
        let (plan, endpoints, scraper) = (self.plan, self.endpoints, &self.scraper);
        let before = scraper.scrape().await.unwrap_or_default();
        let (tarpit_before, hanging_before) = endpoints.troubled();
        let sampling = CancellationToken::new();
        let sampler = tokio::spawn(scraper.clone().peaks(sampling.clone()));

        let started = Instant::now();
        let published = self.stream.sustained(phase, plan).await;
        // Kept up: what arrived by the end of the window and the grace (the
        // publisher may have run late: then from its actual end).
        let stream_end = (started + plan.window).max(published.ended);
        let (end_us, in_time_us) = (wall_clock_us(stream_end), wall_clock_us(stream_end + GRACE));
        tokio::time::sleep_until(stream_end + GRACE).await;
        let expected = published.healthy * HEALTHY_SUBSCRIPTIONS as u64;
        let drain_limit = plan.window.max(Duration::from_secs(30));
        let delivered = endpoints.wait_for(phase, expected, drain_limit).await;

        sampling.cancel();
        let peaks = sampler.await.unwrap_or_default();
        let after = scraper.scrape().await.unwrap_or_default();
        let (tarpit_after, hanging_after) = endpoints.troubled();
        let samples = endpoints.samples.of(phase);
        let in_time = samples.iter().filter(|&&(_, at)| at <= in_time_us).count() as u64;
        // From the end of the stream to the last healthy delivery's arrival.
        let last_us = samples.iter().map(|&(_, at)| at).max().unwrap_or(end_us);
        let drain_s = (delivered >= expected).then(|| (last_us - end_us).max(0) as f64 / 1e6);
        let mut latencies: Vec<i64> = samples.iter().map(|&(sent, at)| at - sent).collect();
        latencies.sort_unstable();
        PhaseReport {
            name,
            published_healthy: published.healthy,
            published_tarpit: published.tarpit,
            publish_failures: published.failed,
            healthy_expected: expected,
            healthy_in_time: in_time,
            healthy_delivered: delivered,
            healthy_per_s: in_time as f64 / plan.window.as_secs_f64(),
            p50_ms: percentile_ms(&latencies, 0.50),
            p99_ms: percentile_ms(&latencies, 0.99),
            max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
            drain_s,
            drain_limit_s: drain_limit.as_secs_f64(),
            tarpit_requests: tarpit_after - tarpit_before,
            hanging_requests: hanging_after - hanging_before,
            metrics: MetricsReport::between(&before, &after, peaks),
        }
    }
}

async fn tenant(store: &dyn Store, name: &str) -> anyhow::Result<TenantId> {
    let tenant = Tenant { id: TenantId::generate(), name: name.to_owned(), created_at: Utc::now() };
    store.create_tenant(&tenant).await?;
    Ok(tenant.id)
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
