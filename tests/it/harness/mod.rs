//! Shared test parts: a database per test, topics per test, the app started
//! in-process on port 0, a recording webhook receiver, and polling helpers.

pub mod answers;
pub mod broker;
pub mod kafka;
pub mod process;
pub mod proxy;
pub mod receiver;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hookgate::app::{self, Running};
use hookgate::config::{
    ApiConfig, AppConfig, DispatcherConfig, EgressRules, RetrySchedule, Topics,
};
use hookgate::domain::Scope;
use hookgate::kafka::KafkaConfig;
use hookgate::store::Store;
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use receiver::{Reply, TestReceiver};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn database_url() -> String {
    std::env::var("HOOKGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hookgate:hookgate@127.0.0.1:5432/hookgate".to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("HOOKGATE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub fn unique(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Configurations the tests start from.
pub trait ForTests {
    fn for_tests() -> Self;
}

/// Quick to fail and to retry once; a delivery expires after an hour.
impl ForTests for DispatcherConfig {
    fn for_tests() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            retry_schedule: RetrySchedule(vec![Duration::from_secs(1)]),
            max_delivery_age: Duration::from_secs(3600),
            ..Self::default()
        }
    }
}

/// The API with `ADMIN_TOKEN` on `url` and `topics`, no dispatcher, egress
/// rules that allow the loopback receivers, migrations at start.
pub fn app_config(database_url: &str, topics: Topics) -> AppConfig {
    let kafka = KafkaConfig { brokers: kafka_brokers(), properties: Vec::new() };
    AppConfig {
        api: Some(ApiConfig::with_admin_tokens(vec![ADMIN_TOKEN.to_owned()])),
        egress: EgressRules::private_allowed(),
        migrate: true,
        ..AppConfig::new(database_url.to_owned(), kafka, topics)
    }
}

/// Settings of a `hookgate dispatcher` process started by a test.
pub fn process_dispatcher(request_timeout: Duration) -> DispatcherConfig {
    DispatcherConfig {
        request_timeout,
        retry_schedule: RetrySchedule(vec![Duration::from_millis(300)]),
        ..DispatcherConfig::for_tests()
    }
}

/// The `field` of each error in a validation problem, in order.
pub fn error_fields(problem: &serde_json::Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

/// Polls `check` until it answers `Some`, or fails the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A database of its own for one test: a fresh PostgreSQL database, or an
/// SQLite file in a temporary directory. Dropped, it takes the database
/// with it, whether the test passed or failed.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn postgres() -> Self {
        let name = format!("hg_test_{}", uuid::Uuid::new_v4().simple());
        let admin_url = database_url();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL from scripts/test-env is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("valid database URL");
        url.set_path(&name);
        Self { url: url.to_string(), pg_name: Some(name), _dir: None }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("hookgate.db").display());
        Self { url, pg_name: None, _dir: Some(dir) }
    }

    /// A fresh database of the backend given.
    pub async fn on(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::postgres().await,
            Backend::Sqlite => Self::sqlite(),
        }
    }

    /// A fresh, migrated store of the backend given, and its database
    /// (keep it: dropping it drops the database).
    pub async fn with_store(backend: Backend) -> (Self, Arc<dyn Store>) {
        let db = Self::on(backend).await;
        let store = db.store().await;
        (db, store)
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        let store = hookgate::store::connect(&self.url).await.expect("connect test store");
        store.migrate().await.expect("migrate test store");
        store
    }

    /// Drops the PostgreSQL database now (dropping the `TestDb` does it too).
    pub async fn drop_db(mut self) {
        if let Some(name) = self.pg_name.take() {
            drop_pg_database(&name).await;
        }
    }
}

/// `DROP DATABASE`, forcing out connections a test left open; a failure
/// leaves a database behind and fails nothing.
async fn drop_pg_database(name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&database_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

impl Drop for TestDb {
    /// On a thread of its own with its own runtime: a test's runtime may
    /// be single-threaded (or unwinding), and cannot be blocked on.
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(drop_pg_database(&name));
            }
        });
        let _ = dropped.join();
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The same story on both store backends: `both_backends!(name)` defines
/// the tests `name_on_postgres` and `name_on_sqlite`, which run
/// `name(Backend::Postgres)` and `name(Backend::Sqlite)`;
/// `both_backends!(multi_thread name)` runs them on tokio's multi-thread
/// runtime.
// The chaos and isolation binaries share the harness but not the macro.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($name:ident) => {
        $crate::harness::both_backends!(@tests [] $name);
    };
    (multi_thread $name:ident) => {
        $crate::harness::both_backends!(@tests [(flavor = "multi_thread")] $name);
    };
    (@tests [$($flavor:tt)*] $name:ident) => {
        pastey::paste! {
            #[tokio::test $($flavor)*]
            async fn [<$name _on_postgres>]() {
                $name($crate::harness::Backend::Postgres).await;
            }

            #[tokio::test $($flavor)*]
            async fn [<$name _on_sqlite>]() {
                $name($crate::harness::Backend::Sqlite).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_backends;

/// hookgate's API and dispatcher, in-process, on its own database, topics
/// and consumer group.
pub struct TestApp {
    pub config: AppConfig,
    /// Every topic of this app starts with it.
    topic_prefix: String,
    pub base_url: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub topics: Topics,
    pub kafka: KafkaConfig,
    shutdown: CancellationToken,
    running: Option<Running>,
    db: Option<TestDb>,
}

impl TestApp {
    pub async fn spawn(name: &str) -> Self {
        Self::spawn_with(name, |_| {}).await
    }

    /// Like `spawn`, against the Kafka brokers given.
    pub async fn spawn_on(name: &str, brokers: String) -> Self {
        Self::spawn_with(name, |config| config.kafka.brokers = brokers).await
    }

    /// Starts the app with a configuration the test adjusts first.
    pub async fn spawn_with(name: &str, adjust: impl FnOnce(&mut AppConfig)) -> Self {
        Self::spawn_on_db(name, TestDb::postgres().await, adjust).await
    }

    /// Like `spawn`, on the store backend given (for API tests that must
    /// hold on both).
    pub async fn spawn_on_backend(name: &str, backend: Backend) -> Self {
        Self::spawn_on_backend_with(name, backend, |_| {}).await
    }

    /// Like `spawn_on_backend`, with a configuration the test adjusts first.
    pub async fn spawn_on_backend_with(
        name: &str,
        backend: Backend,
        adjust: impl FnOnce(&mut AppConfig),
    ) -> Self {
        Self::spawn_on_db(name, TestDb::on(backend).await, adjust).await
    }

    async fn spawn_on_db(name: &str, db: TestDb, adjust: impl FnOnce(&mut AppConfig)) -> Self {
        let prefix = unique(name);
        let topics = Topics::under_prefix(&prefix, 3, 1);
        let mut config = AppConfig {
            dispatcher: Some(DispatcherConfig::for_tests()),
            ..app_config(&db.url, topics)
        };
        adjust(&mut config);
        Self::start_config(config, format!("{prefix}."), db).await
    }

    async fn start_config(config: AppConfig, topic_prefix: String, db: TestDb) -> Self {
        let topics = config.topics.clone();
        let kafka = config.kafka.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let shutdown = CancellationToken::new();
        let running = app::start(
            &config,
            listener.local_addr().expect("addr"),
            Some(listener),
            shutdown.clone(),
        )
        .await
        .expect("app starts");
        let addr = running.api_addr.expect("API runs");
        Self {
            config,
            topic_prefix,
            base_url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store: Arc::clone(&running.store),
            topics,
            kafka,
            shutdown,
            running: Some(running),
            db: Some(db),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn admin(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.bearer_auth(ADMIN_TOKEN)
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.admin(self.client.post(self.url(path)))
            .json(&body)
            .send()
            .await
            .expect("request reaches the API")
    }

    /// Creates a subscription and answers its JSON (with the secret).
    pub async fn subscribe(&self, body: serde_json::Value) -> serde_json::Value {
        let response = self.post_json("/v1/subscriptions", body).await;
        assert_eq!(response.status(), 201, "subscription created");
        response.json().await.expect("JSON answer")
    }

    pub async fn publish(&self, body: serde_json::Value) -> String {
        let response = self.post_json("/v1/events", body).await;
        assert_eq!(response.status(), 202, "event accepted");
        let answer: serde_json::Value = response.json().await.expect("JSON answer");
        answer["id"].as_str().expect("event id").to_owned()
    }

    /// Sends a request with `token`; answers the status and the JSON body
    /// (`Null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the API");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("read body");
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON answer")
        };
        (status, json)
    }

    /// A new tenant and an API key for it: `(tenant_id, key)`.
    pub async fn tenant_with_key(&self, name: &str) -> (String, String) {
        let (status, tenant) = self
            .call(
                reqwest::Method::POST,
                "/v1/tenants",
                ADMIN_TOKEN,
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "tenant created: {tenant}");
        let id = tenant["id"].as_str().expect("tenant id").to_owned();
        let (status, key) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/tenants/{id}/keys"),
                ADMIN_TOKEN,
                Some(serde_json::json!({ "name": "test" })),
            )
            .await;
        assert_eq!(status, 201, "key created: {key}");
        (id, key["key"].as_str().expect("key shown once").to_owned())
    }

    /// How many records the topic holds (sum of high - low watermarks).
    pub async fn records_on(&self, topic: &str) -> i64 {
        let brokers = self.kafka.brokers.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .expect("consumer");
            let timeout = Duration::from_secs(10);
            let metadata = consumer.fetch_metadata(Some(&topic), timeout).expect("topic metadata");
            metadata.topics()[0]
                .partitions()
                .iter()
                .map(|p| {
                    let (low, high) =
                        consumer.fetch_watermarks(&topic, p.id(), timeout).expect("watermarks");
                    high - low
                })
                .sum()
        })
        .await
        .expect("count records")
    }

    /// Waits until the store lists at least one attempt for the event.
    pub async fn attempts_for(
        &self,
        event_id: &str,
        deadline: Duration,
    ) -> Vec<hookgate::domain::Attempt> {
        eventually(&format!("an attempt for {event_id} in the store"), deadline, || async {
            let attempts =
                self.store.attempts_for_event(Scope::All, event_id).await.expect("list attempts");
            (!attempts.is_empty()).then_some(attempts)
        })
        .await
    }

    /// Stops the app (draining) and starts it again on the same database,
    /// topics and group, with its configuration adjusted first.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut AppConfig)) -> Self {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.expect("app stops cleanly");
        }
        let mut config = self.config.clone();
        adjust(&mut config);
        let db = self.db.take().expect("the app's database");
        Self::start_config(config, self.topic_prefix.clone(), db).await
    }

    /// Records of the group `group` not yet committed on `topic` (high
    /// watermark less committed offset, over all partitions).
    pub async fn uncommitted(&self, group: &str, topic: &str) -> i64 {
        kafka::uncommitted(&self.kafka.brokers, group, topic).await
    }

    /// Stops the app (draining), then drops its database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await.expect("app stops cleanly");
        }
        if let Some(db) = self.db.take() {
            db.drop_db().await;
        }
        kafka::delete_topics(&self.kafka.brokers, &self.topic_prefix).await;
    }
}
