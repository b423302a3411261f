//! `hookgate bench`: the design's performance figures, measured on this
//! machine against the real broker and database of the test environment
//! (`scripts/test-env`). Everything runs in this one process, as `serve`
//! would, with the receiver beside it. Prints one table and writes JSON.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use serde::Serialize;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod isolation;

use crate::app;
use crate::config::{
    ApiConfig, AppConfig, DeliveryBudgets, DispatcherConfig, EgressRules, RetrySchedule, Topics,
};
use crate::domain::TenantId;
use crate::kafka::KafkaConfig;

const TOKEN: &str = "bench-admin-token-0123456789";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// PostgreSQL server to make a scratch database on.
    #[arg(
        long,
        env = "HOOKGATE_TEST_DATABASE_URL",
        default_value = "postgres://hookgate:hookgate@127.0.0.1:5432/hookgate"
    )]
    database_url: String,
    /// Kafka brokers.
    #[arg(long, env = "HOOKGATE_TEST_KAFKA", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Scale of the runs (1 = the full figures; smaller is quicker).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

#[derive(Debug, Serialize)]
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    target: &'static str,
    met: bool,
}

/// The receiver: counts deliveries per path and keeps each latency sample.
#[derive(Default)]
struct Receiver {
    counts: Mutex<HashMap<String, u64>>,
    latencies_us: Mutex<Vec<i64>>,
    total: AtomicU64,
}

impl Receiver {
    fn count(&self, path: &str) -> u64 {
        self.counts.lock().map(|c| c.get(path).copied().unwrap_or(0)).unwrap_or(0)
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    if path == "hang" {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(sent) = body["data"]["sent_us"].as_i64() {
            let latency = Utc::now().timestamp_micros() - sent;
            if let Ok(mut samples) = receiver.latencies_us.lock() {
                samples.push(latency);
            }
        }
    }
    if let Ok(mut counts) = receiver.counts.lock() {
        *counts.entry(path).or_insert(0) += 1;
    }
    receiver.total.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scale = args.scale.clamp(0.01, 10.0);
    let scaled = |n: f64| ((n * scale).round() as usize).max(1);
    let run_id = ulid::Ulid::new().to_string().to_lowercase();

    let mut admin = sqlx::PgConnection::connect(&args.database_url).await?;

    let receiver = Arc::new(Receiver::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = listener.local_addr()?;
    let server = tokio::spawn({
        let app =
            Router::new().route("/hook/{path}", post(receive)).with_state(Arc::clone(&receiver));
        async move { axum::serve(listener, app).await }
    });

    // Phases 1 to 4 and the memory figure share one app, with the default
    // budgets; the isolation phases get an app of their own (below).
    let env = Env::start(&args, &mut admin, &run_id, DeliveryBudgets::default()).await?;
    let (config, api) = (&env.config, env.api.as_str());
    let store = Arc::clone(&env.running.store);
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let hook = |path: &str| format!("http://{receiver_addr}/hook/{path}");
    let subscribe = |url: String, event_type: &str| {
        isolation::subscription(&TenantId::default_tenant(), url, event_type, None)
    };
    let publish = |event_type: &'static str, n: usize| {
        let client = client.clone();
        let url = format!("{api}/v1/events");
        async move {
            let body = serde_json::json!({"type": event_type, "data": {"n": n, "sent_us": Utc::now().timestamp_micros()}});
            client
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let wait_until = |path: &'static str, n: u64, limit: Duration| {
        let receiver = Arc::clone(&receiver);
        async move {
            let end = Instant::now() + limit;
            while receiver.count(path) < n && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            receiver.count(path)
        }
    };
    let mut figures = Vec::new();

    // 1. Publish API, one event a request, 64 at a time.
    let requests = scaled(20_000.0);
    let started = Instant::now();
    let accepted = run_concurrently(64, requests, |n| publish("bench.unrouted", n)).await;
    let per_second = accepted as f64 / started.elapsed().as_secs_f64();
    figures.push(Figure {
        name: "publish API, POST /v1/events (requests/s)",
        value: per_second,
        unit: "req/s",
        target: ">= 5,000",
        met: per_second >= 5_000.0,
    });

    // 2. Sustained deliveries: events straight to the topic, 5 subscriptions.
    for _ in 0..5 {
        store.create_subscription(&subscribe(hook("sustained"), "bench.sustained")).await?;
    }
    // Straight to Kafka, so the figure is the dispatcher's, not the API's.
    let events = scaled(10_000.0);
    let producer = crate::kafka::Producer::new(&config.kafka)?;
    let started = Instant::now();
    let writes = (0..events).map(|n| {
        let producer = producer.clone();
        let topic = config.topics.publish.clone();
        async move {
            let event = crate::domain::Event {
                id: format!("evt_sustained_{n}").into(),
                event_type: "bench.sustained".to_owned(),
                source: "bench".to_owned(),
                time: Utc::now(),
                key: Some(n.to_string().into_bytes()),
                data: serde_json::value::RawValue::from_string(format!("{{\"n\":{n}}}"))
                    .expect("valid JSON"),
                audience: crate::domain::Audience::Tenant(TenantId::default_tenant()),
            };
            producer.publish(&topic, &event).await
        }
    });
    futures::future::try_join_all(writes).await?;
    let delivered = wait_until("sustained", 5 * events as u64, Duration::from_secs(300)).await;
    let per_second = delivered as f64 / started.elapsed().as_secs_f64();
    figures.push(Figure {
        name: "sustained deliveries/s, one process",
        value: per_second,
        unit: "deliveries/s",
        target: ">= 10,000",
        met: per_second >= 10_000.0,
    });

    // 3. Latency publish → receiver at 1,000 events/s.
    store.create_subscription(&subscribe(hook("latency"), "bench.latency")).await?;
    receiver.latencies_us.lock().map(|mut l| l.clear()).ok();
    let events = scaled(5_000.0);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..events {
        ticker.tick().await;
        sends.spawn(publish("bench.latency", n));
    }
    while sends.join_next().await.is_some() {}
    wait_until("latency", events as u64, Duration::from_secs(60)).await;
    let mut samples = receiver.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    samples.sort_unstable();
    let percentile = |p: f64| percentile_ms(&samples, p);
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    figures.push(Figure {
        name: "latency publish → receiver at 1,000/s, p50",
        value: p50,
        unit: "ms",
        target: "<= 10",
        met: p50 <= 10.0,
    });
    figures.push(Figure {
        name: "latency publish → receiver at 1,000/s, p99",
        value: p99,
        unit: "ms",
        target: "<= 25",
        met: p99 <= 25.0,
    });

    // 4. Fan-out: one event to 1,000 subscriptions.
    for _ in 0..1_000 {
        store.create_subscription(&subscribe(hook("fanout"), "bench.fanout")).await?;
    }
    let started = Instant::now();
    publish("bench.fanout", 0).await;
    let reached = wait_until("fanout", 1_000, Duration::from_secs(60)).await;
    let seconds = started.elapsed().as_secs_f64();
    figures.push(Figure {
        name: "fan-out 1 event → 1,000 subscriptions, all delivered",
        value: seconds,
        unit: "s",
        target: "<= 1",
        met: reached == 1_000 && seconds <= 1.0,
    });

    // 5. Memory with 10,000 subscriptions cached (as many as before the
    // isolation phases moved to an app of their own).
    let extra = 10_000usize.saturating_sub(1_000 + 5 + 1);
    for _ in 0..extra {
        store.create_subscription(&subscribe(hook("idle"), "bench.idle")).await?;
    }
    publish("bench.sustained", 0).await;
    wait_until("sustained", 5 * events_sustained(scale) as u64 + 5, Duration::from_secs(30)).await;
    let rss = resident_mib();
    figures.push(Figure {
        name: "process memory at 10,000 subscriptions (API, dispatcher and receiver)",
        value: rss,
        unit: "MiB RSS",
        target: "<= 256",
        met: rss <= 256.0,
    });

    env.stop(&mut admin).await?;
    server.abort();

    // 6. Isolation: a sustained stream to healthy endpoints, alone and then
    // beside a tarpit tenant and a hanging endpoint (`bench/isolation.rs`).
    let plan = isolation::Plan::at(scale);
    let env = Env::start(&args, &mut admin, &format!("{run_id}_iso"), plan.budgets).await?;
    let isolated = isolation::run(&env, &plan).await;
    env.stop(&mut admin).await?;
    let isolated = isolated?;
    figures.extend(isolated.figures());

    print_table(&figures);
    isolated.print();
    let report = serde_json::json!({
        "when": Utc::now().to_rfc3339(),
        "scale": scale,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "figures": figures,
        "isolation": isolated,
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    println!("\nresults written to {}", args.out.display());
    Ok(())
}

/// One app (API and dispatcher, as `serve` runs them) on a scratch
/// database and topics of its own.
struct Env {
    config: AppConfig,
    running: app::Running,
    shutdown: CancellationToken,
    api: String,
    db_name: String,
}

impl Env {
    async fn start(
        args: &BenchArgs,
        admin: &mut sqlx::PgConnection,
        run_id: &str,
        budgets: DeliveryBudgets,
    ) -> anyhow::Result<Self> {
        let db_name = format!("hg_bench_{run_id}");
        sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut *admin).await?;
        let mut db_url = url::Url::parse(&args.database_url)?;
        db_url.set_path(&db_name);
        let prefix = format!("bench-{run_id}");
        let config = AppConfig {
            database_url: db_url.to_string(),
            kafka: KafkaConfig { brokers: args.kafka_brokers.clone(), properties: Vec::new() },
            topics: Topics::under_prefix(&prefix, 6, 1),
            api: Some(ApiConfig { admin_tokens: vec![TOKEN.to_owned()] }),
            dispatcher: Some(DispatcherConfig {
                request_timeout: REQUEST_TIMEOUT,
                retry_schedule: RetrySchedule(vec![Duration::from_secs(30)]),
                max_delivery_age: Duration::from_secs(3600),
                response_body_cap: 4096,
                retention: Duration::from_secs(30 * 24 * 3600),
                deleted_retention: Duration::from_secs(24 * 3600),
                budgets,
                circuit: Default::default(),
            }),
            limits: Default::default(),
            egress: EgressRules::private_allowed(),
            quotas: Default::default(),
            server: Default::default(),
            secret_keys: Default::default(),
            migrate: true,
            create_topics: true,
        };
        let shutdown = CancellationToken::new();
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let running =
            app::start(&config, api_listener.local_addr()?, Some(api_listener), shutdown.clone())
                .await?;
        let api = format!(
            "http://{}",
            running.api_addr.ok_or_else(|| anyhow::anyhow!("API did not start"))?
        );
        Ok(Self { config, running, shutdown, api, db_name })
    }

    /// Shuts the app down (within its own deadline) and drops its database.
    async fn stop(self, admin: &mut sqlx::PgConnection) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let stopped = self.running.wait().await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
            .execute(&mut *admin)
            .await;
        stopped
    }
}

/// Every app's webhook time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The `p` quantile (0 to 1) of latencies sorted in microseconds, in ms.
fn percentile_ms(sorted_us: &[i64], p: f64) -> f64 {
    let at = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
    sorted_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

fn events_sustained(scale: f64) -> usize {
    ((10_000.0 * scale).round() as usize).max(1)
}

/// Runs `total` calls of `call`, `width` at a time; answers how many got 202.
async fn run_concurrently<F, Fut>(width: usize, total: usize, call: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    use futures::stream::StreamExt;
    futures::stream::iter(0..total)
        .map(call)
        .buffer_unordered(width)
        .filter(|s| std::future::ready(*s == 202))
        .count()
        .await
}

fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn print_table(figures: &[Figure]) {
    println!("\n{:<72} {:>12}  {:<16} {:<10} met", "figure", "value", "unit", "target");
    for f in figures {
        println!(
            "{:<72} {:>12.1}  {:<16} {:<10} {}",
            f.name,
            f.value,
            f.unit,
            f.target,
            if f.met { "yes" } else { "NO" }
        );
    }
}
