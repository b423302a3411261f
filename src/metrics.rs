//! Prometheus metrics, served as text at `GET /metrics` by every role.
//!
//! One `Metrics` per process (no global registry: tests run several apps in
//! one process). The delivery path only touches handles made here at start
//! (atomic counters, gauges and lock-free histograms), never a label lookup.
//! No label carries a URL, an id, a tenant or another unbounded value.

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::domain::{DeadReason, ParkReason};

/// Attempt latency: from a fast local receiver to the default 15 s timeout.
const ATTEMPT_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0];
/// Publish → delivery: milliseconds when healthy, hours through the retry tiers.
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0, 7200.0, 18000.0, 36000.0, 86400.0,
];

/// `hookgate_deliveries_total` by outcome.
#[derive(Debug)]
pub struct Outcomes {
    pub success: IntCounter,
    /// An attempt that failed (whatever came next).
    pub failed: IntCounter,
    /// Handed to a retry tier.
    pub retried: IntCounter,
    pub dead_lettered: IntCounter,
    /// Held back by the subscription's rate limit.
    pub rate_limited: IntCounter,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub deliveries: Outcomes,
    /// One observation per HTTP attempt.
    pub attempt_duration: Histogram,
    /// Event time → successful delivery.
    pub delivery_lag: Histogram,
    /// Webhook requests under way.
    pub in_flight: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub retry_backlog: IntGaugeVec,
    dead_letters: IntCounterVec,
    parked: IntCounterVec,
    circuits_open: IntGauge,
    circuit_transitions: IntCounterVec,
    /// Partitions a stage paused for lack of room, by stage.
    pub paused_partitions: IntGaugeVec,
    /// The stage watchdog's signals, by stage (see `dispatcher::watchdog`).
    pub stage_last_read: GaugeVec,
    pub stage_oldest_in_flight: GaugeVec,
    pub stalled_partitions: IntGaugeVec,
    pub stage_stuck: IntGaugeVec,
    publish_requests: IntCounterVec,
    pub published_events: IntCounter,
    auth_failures: IntCounterVec,
    /// Database lookups of tenant API keys.
    pub api_key_lookups: IntCounter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let deliveries = register(
            &registry,
            IntCounterVec::new(
                Opts::new("hookgate_deliveries_total", "Delivery outcomes"),
                &["outcome"],
            ),
        );
        let outcome = |name: &str| deliveries.with_label_values(&[name]);
        let dead_letters = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "hookgate_dead_letters_total",
                    "Records written to the dead-letter topic, by reason",
                ),
                &["reason"],
            ),
        );
        // `Unknown` is only ever read back from the topic, never counted.
        for reason in DeadReason::ALL.iter().filter(|r| **r != DeadReason::Unknown) {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        let metrics = Self {
            deliveries: Outcomes {
                success: outcome("success"),
                failed: outcome("failed"),
                retried: outcome("retried"),
                dead_lettered: outcome("dead_lettered"),
                rate_limited: outcome("rate_limited"),
            },
            attempt_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hookgate_delivery_attempt_duration_seconds",
                        "Duration of webhook attempts",
                    )
                    .buckets(ATTEMPT_BUCKETS.to_vec()),
                ),
            ),
            delivery_lag: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hookgate_delivery_lag_seconds",
                        "Time from an event's publication to its successful delivery",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                ),
            ),
            in_flight: register(
                &registry,
                IntGauge::new("hookgate_deliveries_in_flight", "Webhook requests under way"),
            ),
            consumer_lag: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookgate_consumer_lag",
                        "Records not yet committed per assigned partition",
                    ),
                    &["group", "topic", "partition"],
                ),
            ),
            retry_backlog: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookgate_retry_backlog",
                        "Deliveries waiting in a retry tier (partitions this process owns)",
                    ),
                    &["tier"],
                ),
            ),
            dead_letters,
            parked: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "hookgate_parked_total",
                        "Deliveries moved to a retry tier without an attempt, by reason",
                    ),
                    &["reason"],
                ),
            ),
            circuits_open: register(
                &registry,
                IntGauge::new(
                    "hookgate_circuits_open",
                    "Subscriptions whose circuit is open or half open, on this process",
                ),
            ),
            circuit_transitions: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("hookgate_circuit_transitions_total", "Circuits opened and closed"),
                    &["to"],
                ),
            ),
            paused_partitions: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookgate_paused_partitions",
                        "Partitions a stage paused until it has room again",
                    ),
                    &["stage"],
                ),
            ),
            stage_last_read: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "hookgate_stage_last_read_seconds",
                        "Seconds since the stage's consumer last handed it a record or an error",
                    ),
                    &["stage"],
                ),
            ),
            stage_oldest_in_flight: register(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "hookgate_stage_oldest_in_flight_seconds",
                        "Age of the oldest record the stage has in flight (0: none)",
                    ),
                    &["stage"],
                ),
            ),
            stalled_partitions: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookgate_stalled_partitions",
                        "Assigned, unpaused partitions with unread records and nothing read for the stall bound",
                    ),
                    &["stage"],
                ),
            ),
            stage_stuck: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "hookgate_stage_stuck",
                        "1 when the watchdog found the stage stuck (the process then exits)",
                    ),
                    &["stage"],
                ),
            ),
            publish_requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "hookgate_publish_requests_total",
                        "Publish requests (POST /v1/events and /v1/events/batch) by status",
                    ),
                    &["status"],
                ),
            ),
            published_events: register(
                &registry,
                IntCounter::new("hookgate_published_events_total", "Events written to Kafka"),
            ),
            auth_failures: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "hookgate_api_auth_failures_total",
                        "Refused bearer tokens: malformed and limited cost no database lookup",
                    ),
                    &["outcome"],
                ),
            ),
            api_key_lookups: register(
                &registry,
                IntCounter::new(
                    "hookgate_api_key_lookups_total",
                    "Database lookups of tenant API keys",
                ),
            ),
            registry,
        };
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(error) = metrics.registry.register(Box::new(process)) {
                tracing::warn!(%error, "process metrics unavailable");
            }
        }
        for to in ["opened", "closed"] {
            metrics.circuit_transitions.with_label_values(&[to]);
        }
        for reason in ParkReason::ALL {
            metrics.parked.with_label_values(&[reason.as_str()]);
        }
        for outcome in ["malformed", "unknown_key", "limited"] {
            metrics.auth_failures.with_label_values(&[outcome]);
        }
        Arc::new(metrics)
    }

    /// Parking is not the hot path: a label lookup is fine.
    pub fn parked(&self, reason: ParkReason) {
        self.parked.with_label_values(&[reason.as_str()]).inc();
    }

    /// `again`: its probe failed; it was open already (counted, not added).
    pub fn circuit_opened(&self, again: bool) {
        self.circuit_transitions.with_label_values(&["opened"]).inc();
        if !again {
            self.circuits_open.inc();
        }
    }

    pub fn circuit_closed(&self) {
        self.circuit_transitions.with_label_values(&["closed"]).inc();
        self.circuits_open.dec();
    }

    pub fn dead_letter(&self, reason: DeadReason) {
        self.dead_letters.with_label_values(&[reason.as_str()]).inc();
    }

    /// Publish requests are not the delivery hot path: a label lookup is fine.
    pub fn publish_request(&self, status: u16) {
        self.publish_requests.with_label_values(&[status.to_string().as_str()]).inc();
    }

    /// `outcome`: `malformed`, `unknown_key` or `limited`.
    pub fn auth_failure(&self, outcome: &str) {
        self.auth_failures.with_label_values(&[outcome]).inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// Registers a metric made from constant, valid options.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    // Names and labels are constants above: failing here is a bug caught by
    // every test that starts the app.
    #[allow(clippy::expect_used)]
    let metric = metric.expect("valid metric options");
    #[allow(clippy::expect_used)]
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    /// The answer to `GET /metrics`.
    pub fn response(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        ([(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], self.render()).into_response()
    }
}

/// Counts a webhook request under way until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    pub fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
