//! The app's own view of a phase: its `/metrics` scraped before and after
//! (counters as deltas) and sampled in between (the highest gauges).

use std::collections::BTreeMap;
use std::time::Duration;

use hookgate::domain::ParkReason;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The app's own counters over the phase (end − start), and the highest
/// gauges seen, sampled every `SAMPLE_EVERY`.
#[derive(Debug, Default, Serialize)]
pub(super) struct MetricsReport {
    pub(super) parked: BTreeMap<&'static str, f64>,
    pub(super) parked_total: f64,
    /// `hookgate_deliveries_total` by outcome (`retried`: failed attempts
    /// handed to a retry tier).
    pub(super) deliveries: BTreeMap<&'static str, f64>,
    pub(super) attempts: f64,
    pub(super) dead_letters: BTreeMap<String, f64>,
    pub(super) circuits_opened: f64,
    pub(super) circuits_closed: f64,
    pub(super) circuits_open_at_end: f64,
    pub(super) peak_in_flight: f64,
    pub(super) peak_paused_partitions: f64,
    pub(super) peak_retry_backlog: f64,
    pub(super) peak_consumer_lag: f64,
}

pub(super) const OUTCOMES: [&str; 5] =
    ["success", "failed", "retried", "dead_lettered", "rate_limited"];
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Reads the app's `/metrics`.
#[derive(Clone)]
pub(crate) struct Scraper {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
}

pub(crate) type Scrape = BTreeMap<String, f64>;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Peaks {
    in_flight: f64,
    paused_partitions: f64,
    retry_backlog: f64,
    consumer_lag: f64,
}

impl Scraper {
    /// Every sample of the text format, by name and labels.
    pub(crate) async fn scrape(&self) -> Option<Scrape> {
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
    pub(super) async fn peaks(self, stop: CancellationToken) -> Peaks {
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
pub(crate) fn sum(scrape: &Scrape, name: &str) -> f64 {
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
    pub(super) fn between(before: &Scrape, after: &Scrape, peaks: Peaks) -> Self {
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
