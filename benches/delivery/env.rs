//! Where the bench runs: the test environment's PostgreSQL and Kafka (from
//! the variables the integration tests read, or flags), and on them one
//! app (API and dispatcher, as `hookgate serve` runs them) with a scratch
//! database and topics of its own.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use hookgate::app;
use hookgate::config::{
    ApiConfig, AppConfig, DeliveryBudgets, DispatcherConfig, EgressRules, RetrySchedule, Topics,
};
use hookgate::domain::{SigningSecret, Subscription, TenantId};
use hookgate::kafka::KafkaConfig;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) const TOKEN: &str = "bench-admin-token-0123456789";

/// Every app's webhook time limit.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The test environment's services (`eval "$(scripts/test-env env)"`).
#[derive(Debug)]
pub(crate) struct Services {
    /// A PostgreSQL server the bench may create databases on.
    database_url: String,
    kafka_brokers: String,
}

impl Services {
    /// Both are required; the message says how to get them.
    pub(crate) fn new(
        database_url: Option<String>,
        kafka_brokers: Option<String>,
    ) -> Result<Self, String> {
        let missing = |what: &str, var: &str, flag: &str| {
            format!(
                "no {what}: set {var} or pass {flag} (`eval \"$(scripts/test-env env)\"` sets both)"
            )
        };
        Ok(Self {
            database_url: database_url.ok_or_else(|| {
                missing("PostgreSQL server", "HOOKGATE_TEST_DATABASE_URL", "--database-url")
            })?,
            kafka_brokers: kafka_brokers
                .ok_or_else(|| missing("Kafka broker", "HOOKGATE_TEST_KAFKA", "--kafka-brokers"))?,
        })
    }
}

/// One app on a scratch database and topics under `bench-{run_id}`.
pub(crate) struct Env {
    pub(crate) config: AppConfig,
    pub(crate) running: app::Running,
    /// The API's base URL.
    pub(crate) api: String,
    shutdown: CancellationToken,
    /// On the server's maintenance database: creates and drops the scratch one.
    admin: sqlx::PgConnection,
    db_name: String,
}

impl Env {
    pub(crate) async fn start(
        services: &Services,
        run_id: &str,
        budgets: DeliveryBudgets,
    ) -> anyhow::Result<Self> {
        // The URL is not in the message: it may hold a password.
        let mut admin = sqlx::PgConnection::connect(&services.database_url)
            .await
            .context("cannot connect to PostgreSQL (HOOKGATE_TEST_DATABASE_URL)")?;
        let db_name = format!("hg_bench_{run_id}");
        sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(&mut admin).await?;
        let mut db_url = url::Url::parse(&services.database_url)?;
        db_url.set_path(&db_name);
        let config = config(db_url.to_string(), services, run_id, budgets);
        let shutdown = CancellationToken::new();
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let running =
            app::start(&config, api_listener.local_addr()?, Some(api_listener), shutdown.clone())
                .await?;
        let api = format!(
            "http://{}",
            running.api_addr.ok_or_else(|| anyhow::anyhow!("API did not start"))?
        );
        Ok(Self { config, running, api, shutdown, admin, db_name })
    }

    /// Shuts the app down (within its own deadline) and drops its database.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let stopped = self.running.wait().await;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
            .execute(&mut self.admin)
            .await;
        stopped
    }
}

/// `serve`'s configuration: both roles, private targets allowed (the
/// receiver is on loopback), one retry tier of 30 s.
fn config(
    database_url: String,
    services: &Services,
    run_id: &str,
    budgets: DeliveryBudgets,
) -> AppConfig {
    // `HOOKGATE_KAFKA_*` tune it as they tune `hookgate serve`.
    let kafka = KafkaConfig::from_env(services.kafka_brokers.clone());
    let topics = Topics::under_prefix(&format!("bench-{run_id}"), 6, 1);
    AppConfig {
        api: Some(ApiConfig::with_admin_tokens(vec![TOKEN.to_owned()])),
        dispatcher: Some(DispatcherConfig {
            request_timeout: REQUEST_TIMEOUT,
            retry_schedule: RetrySchedule(vec![Duration::from_secs(30)]),
            max_delivery_age: Duration::from_secs(3600),
            budgets,
            ..DispatcherConfig::default()
        }),
        egress: EgressRules::private_allowed(),
        migrate: true,
        ..AppConfig::new(database_url, kafka, topics)
    }
}

/// An active subscription of `tenant` to `event_type` at `url`.
pub(crate) fn subscription(
    tenant: &TenantId,
    url: String,
    event_type: &str,
    max_in_flight: Option<u32>,
) -> Subscription {
    Subscription {
        max_in_flight,
        ..Subscription::new(
            tenant.clone(),
            url,
            vec![event_type.to_owned()],
            SigningSecret::generate().expose().to_owned(),
            Utc::now(),
        )
    }
}
