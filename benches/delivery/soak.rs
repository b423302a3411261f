//! The soak (`--soak 10m`): 2,000 events/s through the publish API, one a
//! request, to one subscription, for the whole duration, on an app of its
//! own. Each minute it samples the process's memory, the app's consumer lag
//! (its `/metrics`) and the minute's p99 publish → receiver; the figures say
//! whether they stayed flat.

use std::time::Duration;

use chrono::Utc;
use hookgate::config::DeliveryBudgets;
use hookgate::domain::TenantId;
use tokio::time::Instant;

use crate::env::{subscription, Env, Services, TOKEN};
use crate::isolation::metrics::{sum, Scraper};
use crate::phases::Deliveries;
use crate::report::{percentile_ms, resident_mib, Figure};

const RATE: u64 = 2_000;
const EVENT_TYPE: &str = "bench.soak";
/// Sent every `TICK`: `RATE` spread evenly at a granularity a timer keeps.
const TICK: Duration = Duration::from_millis(10);
/// Memory may grow this much from the first minute to the last.
const RSS_GROWTH_BOUND: f64 = 1.25;
/// Records not yet committed at a sample: about a second of the stream.
const LAG_BOUND: f64 = RATE as f64;
const P99_BOUND_MS: f64 = 25.0;

/// One minute of the soak.
#[derive(Debug)]
struct Sample {
    rss_mib: f64,
    lag: f64,
    p99_ms: f64,
}

pub(crate) async fn run(
    services: &Services,
    run_id: &str,
    duration: Duration,
) -> anyhow::Result<Vec<Figure>> {
    let receiver = Deliveries::start().await;
    let env = Env::start(services, run_id, DeliveryBudgets::default()).await?;
    let tenant = TenantId::default_tenant();
    let row = subscription(&tenant, receiver.url().to_owned(), EVENT_TYPE, None);
    env.running.store.create_subscription(&row).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let scraper = Scraper { client: client.clone(), url: format!("{}/metrics", env.api) };
    let url = format!("{}/v1/events", env.api);
    let per_tick = (RATE as f64 * TICK.as_secs_f64()).round() as u64;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    let mut next_sample = started + Duration::from_secs(60);
    let mut samples = Vec::new();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        ticker.tick().await;
        for _ in 0..per_tick {
            let request = client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({
                "type": EVENT_TYPE,
                "data": {"n": sent, "sent_us": Utc::now().timestamp_micros()},
            }));
            sent += 1;
            // Answers are not waited for: a slow API shows as latency.
            tokio::spawn(async move { request.send().await.map(|r| r.status()) });
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(60);
            let latencies = receiver.take_latencies_us();
            let lag = scraper.scrape().await.map_or(f64::NAN, |m| sum(&m, "hookgate_consumer_lag"));
            let sample =
                Sample { rss_mib: resident_mib(), lag, p99_ms: percentile_ms(&latencies, 0.99) };
            println!("soak minute {}: {sample:?}", samples.len() + 1);
            samples.push(sample);
        }
    }
    let delivered = receiver.wait_until(EVENT_TYPE, sent, Duration::from_secs(60)).await;
    env.stop().await?;
    Ok(figures(&samples, sent, delivered))
}

fn figures(samples: &[Sample], sent: u64, delivered: u64) -> Vec<Figure> {
    let worst = |pick: fn(&Sample) -> f64| samples.iter().map(pick).fold(f64::NAN, f64::max);
    let first_rss = samples.first().map_or(f64::NAN, |s| s.rss_mib);
    let last_rss = samples.last().map_or(f64::NAN, |s| s.rss_mib);
    let p99 = worst(|s| s.p99_ms);
    let lag = worst(|s| s.lag);
    let growth = last_rss / first_rss;
    vec![
        Figure::new(
            format!("soak at {RATE}/s: worst minute's p99"),
            p99,
            "ms",
            format!("<= {P99_BOUND_MS}"),
            p99 <= P99_BOUND_MS,
        ),
        Figure::new(
            format!("soak at {RATE}/s: RSS last minute / first minute"),
            growth,
            "×",
            format!("<= {RSS_GROWTH_BOUND}"),
            growth <= RSS_GROWTH_BOUND,
        ),
        Figure::new(
            format!("soak at {RATE}/s: highest consumer lag sampled"),
            lag,
            "records",
            format!("<= {LAG_BOUND}"),
            lag <= LAG_BOUND,
        ),
        Figure::new(
            format!("soak at {RATE}/s: delivered of sent"),
            100.0 * delivered as f64 / sent.max(1) as f64,
            "%",
            ">= 100",
            delivered >= sent,
        ),
    ]
}
