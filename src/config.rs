//! Configuration: clap flags with `HOOKGATE_*` environment fallbacks, turned
//! into the typed `AppConfig` the roles run with. Values are checked while
//! parsing, so a bad one stops the process at start with one clear line.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use ipnet::IpNet;

pub use crate::delivery::EgressRules;
use crate::delivery::Excerpts;
use crate::kafka::KafkaConfig;
use crate::store::SecretKeys;

/// Environment variables under this prefix are librdkafka properties
/// (`HOOKGATE_KAFKA_SASL_MECHANISMS` → `sasl.mechanisms`).
const KAFKA_PROPERTY_PREFIX: &str = "HOOKGATE_KAFKA_";
const KAFKA_OWN_VARIABLES: &[&str] = &["HOOKGATE_KAFKA_BROKERS"];

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite:…`) URL.
    #[arg(long, env = "HOOKGATE_DATABASE_URL", hide_env_values = true, value_parser = non_empty)]
    pub database_url: String,
}

/// The keys that encrypt secrets at rest (store/sealing.rs). Every role
/// that reads or writes subscriptions takes it: the API seals what it
/// writes and opens secrets for test sends, dispatchers open them to sign
/// and to send headers, `secrets re-encrypt` does both.
#[derive(Clone, Args)]
pub struct SecretKeyArgs {
    /// Keys that encrypt signing secrets and secret header values at rest:
    /// `id:base64key` entries (32 random bytes each, e.g. `openssl rand
    /// -base64 32`), comma-separated; the first encrypts, every one
    /// decrypts. A single key may leave out its id (it is then `default`).
    /// Unset: secrets are stored in clear.
    // Parsed after clap (`SecretKeyArgs::keys`): clap's own error would
    // print the rejected value, which is the key.
    #[arg(long, env = "HOOKGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
}

impl std::fmt::Debug for SecretKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.secret_key.as_ref().map(|_| "***");
        f.debug_struct("SecretKeyArgs").field("secret_key", &shown).finish()
    }
}

impl SecretKeyArgs {
    /// The keys, checked; the error is one line and never repeats a key.
    pub fn keys(&self) -> Result<SecretKeys, String> {
        match self.secret_key.as_deref().map(str::trim) {
            None | Some("") => Ok(SecretKeys::none()),
            Some(text) => SecretKeys::parse(text)
                .map_err(|e| format!("invalid --secret-key (HOOKGATE_SECRET_KEY): {e}")),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "HOOKGATE_KAFKA_BROKERS", value_parser = broker_list)]
    pub kafka_brokers: String,
    #[command(flatten)]
    pub topics: TopicArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Source topics, comma-separated; an entry starting with `^` is a regex.
    #[arg(long, env = "HOOKGATE_TOPICS", default_value = "hookgate.events", value_delimiter = ',', value_parser = non_empty)]
    pub topics: Vec<String>,
    /// Topic that `POST /v1/events` writes to (default: the first source topic that is not a regex).
    #[arg(long, env = "HOOKGATE_PUBLISH_TOPIC")]
    pub publish_topic: Option<String>,
    /// Topic of delivery records (one per event and subscription).
    #[arg(long, env = "HOOKGATE_DELIVERIES_TOPIC", default_value = "hookgate.deliveries", value_parser = non_empty)]
    pub deliveries_topic: String,
    /// Prefix of the retry tier topics (one per delay: `hookgate.retry.5s`, …).
    #[arg(long, env = "HOOKGATE_RETRY_TOPIC_PREFIX", default_value = "hookgate.retry.", value_parser = non_empty)]
    pub retry_topic_prefix: String,
    /// Dead-letter topic.
    #[arg(long, env = "HOOKGATE_DLQ_TOPIC", default_value = "hookgate.dlq", value_parser = non_empty)]
    pub dlq_topic: String,
    /// Topic of operational events (`hookgate.subscription.disabled`, …), for operators; the
    /// dispatchers also deliver them to the tenants' subscriptions that ask for `hookgate.*` types.
    #[arg(long, env = "HOOKGATE_OPERATIONAL_TOPIC", default_value = "hookgate.operational", value_parser = non_empty)]
    pub operational_topic: String,
    /// Partitions of the topics hookgate creates.
    #[arg(long, env = "HOOKGATE_PARTITIONS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor of the topics hookgate creates (-1: the broker's default).
    #[arg(long, env = "HOOKGATE_REPLICATION_FACTOR", default_value_t = -1, value_parser = clap::value_parser!(i32).range(-1..=32))]
    pub replication_factor: i32,
    /// Consumer group of the dispatchers.
    #[arg(long, env = "HOOKGATE_GROUP_ID", default_value = "hookgate-dispatcher", value_parser = non_empty)]
    pub group_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address the REST API listens on.
    #[arg(long, env = "HOOKGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin bearer token(s), comma-separated, at least 16 characters each.
    // Checked after parsing (`ApiArgs::admin_tokens`): clap's own error
    // would print the rejected token.
    #[arg(
        long,
        env = "HOOKGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub admin_token: Vec<String>,
    /// Where clients reach the API (`https://hooks.example.com`), for the
    /// portal links it hands out; unset: the host the admin's request named.
    #[arg(long, env = "HOOKGATE_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<url::Url>,
}

/// Where webhooks (deliveries and test sends) may go: for the API and
/// dispatchers alike.
#[derive(Debug, Clone, Args)]
pub struct EgressArgs {
    /// Deliver to loopback, private, link-local and metadata addresses too
    /// (default: false; `hookgate dev`: true).
    #[arg(long, env = "HOOKGATE_ALLOW_PRIVATE_TARGETS", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_targets: Option<bool>,
    /// Networks (CIDR, comma-separated) deliveries may go to even when
    /// otherwise refused. The most specific matching network, allowed or
    /// denied, decides; a deny wins a tie.
    #[arg(long, env = "HOOKGATE_EGRESS_ALLOWED_NETWORKS", value_delimiter = ',', value_parser = network)]
    pub egress_allowed_networks: Vec<IpNet>,
    /// Networks (CIDR, comma-separated) deliveries never go to.
    #[arg(long, env = "HOOKGATE_EGRESS_DENIED_NETWORKS", value_delimiter = ',', value_parser = network)]
    pub egress_denied_networks: Vec<IpNet>,
    /// Ports deliveries may use (`443,8000-8999`; default: any).
    #[arg(long, env = "HOOKGATE_EGRESS_ALLOWED_PORTS", value_delimiter = ',', value_parser = port_range)]
    pub egress_allowed_ports: Vec<RangeInclusive<u16>>,
    /// Send every webhook through this HTTP(S) proxy, which must then enforce
    /// the egress rules itself (it resolves the names). `HTTP_PROXY` and the
    /// like are ignored.
    // Checked after parsing (`EgressArgs::rules`): clap's own error would
    // print the value, credentials included.
    #[arg(long, env = "HOOKGATE_EGRESS_PROXY", hide_env_values = true)]
    pub egress_proxy: Option<String>,
}

impl EgressArgs {
    /// The rules; `private_by_default` when the role allows private targets
    /// unless told otherwise (`hookgate dev`).
    pub fn rules(&self, private_by_default: bool) -> Result<EgressRules, String> {
        let proxy = self
            .egress_proxy
            .as_deref()
            .map(|p| {
                proxy_url(p)
                    .map_err(|e| format!("invalid --egress-proxy (HOOKGATE_EGRESS_PROXY): {e}"))
            })
            .transpose()?;
        Ok(EgressRules {
            allow_private: self.allow_private_targets.unwrap_or(private_by_default),
            allowed_networks: self.egress_allowed_networks.clone(),
            denied_networks: self.egress_denied_networks.clone(),
            allowed_ports: self.egress_allowed_ports.clone(),
            proxy,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Time limit of one webhook request.
    #[arg(long, env = "HOOKGATE_REQUEST_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Delays between attempts, comma-separated.
    #[arg(long, env = "HOOKGATE_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = retry_schedule)]
    pub retry_schedule: RetrySchedule,
    /// Age after which a delivery that still fails goes to the dead-letter topic.
    #[arg(long, env = "HOOKGATE_MAX_DELIVERY_AGE", default_value = "3d", value_parser = duration)]
    pub max_delivery_age: Duration,
    /// Keep the start of a successful attempt's response body in the
    /// attempt log too (default: false; failed attempts' are always kept).
    #[arg(long, env = "HOOKGATE_KEEP_SUCCESS_RESPONSES", value_parser = BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub keep_success_responses: Option<bool>,
    /// How long delivery attempts, dead letters and finished replays are kept.
    #[arg(long, env = "HOOKGATE_RETENTION", default_value = "30d", value_parser = duration)]
    pub retention: Duration,
    /// How long a deleted subscription's row is kept before it is purged
    /// (dispatchers see the delete within a second; the rest is margin for
    /// one that lost the database for a while).
    #[arg(long, env = "HOOKGATE_DELETED_SUBSCRIPTION_RETENTION", default_value = "1d", value_parser = deleted_retention)]
    pub deleted_subscription_retention: Duration,
    /// Deliveries a dispatcher holds at once in every state (waiting, in
    /// flight); beyond it, its partitions pause until there is room.
    #[arg(long, env = "HOOKGATE_DELIVERY_BUDGET", default_value_t = DeliveryBudgets::default().stage, value_parser = stage_budget)]
    pub delivery_budget: usize,
    /// Deliveries one tenant's subscriptions may hold together (default: a
    /// quarter of the delivery budget).
    #[arg(long, env = "HOOKGATE_TENANT_BUDGET", value_parser = tenant_budget)]
    pub tenant_budget: Option<usize>,
    /// Failed attempts in a row that open a subscription's circuit.
    #[arg(long, env = "HOOKGATE_CIRCUIT_FAILURES", default_value_t = CircuitPolicy::default().consecutive_failures, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub circuit_failures: u32,
    /// Or: the percentage of about the last `HOOKGATE_CIRCUIT_WINDOW`
    /// attempts failing that opens it.
    #[arg(long, env = "HOOKGATE_CIRCUIT_FAILURE_RATE", default_value_t = CircuitPolicy::default().failure_share / 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub circuit_failure_rate: u32,
    /// How many recent attempts the failure rate looks at (and needs).
    #[arg(long, env = "HOOKGATE_CIRCUIT_WINDOW", default_value_t = CircuitPolicy::default().window, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub circuit_window: u32,
    /// How long an open circuit waits before its probe; each failed probe
    /// doubles it, up to `HOOKGATE_CIRCUIT_MAX_COOL_DOWN`.
    #[arg(long, env = "HOOKGATE_CIRCUIT_COOL_DOWN", default_value = "5s", value_parser = duration)]
    pub circuit_cool_down: Duration,
    #[arg(long, env = "HOOKGATE_CIRCUIT_MAX_COOL_DOWN", default_value = "5m", value_parser = duration)]
    pub circuit_max_cool_down: Duration,
    /// Failed attempts of one delivery after which `hookgate.delivery.failing`
    /// is sent; also the failures in a row after which a subscription's first
    /// success is `hookgate.subscription.recovered`.
    #[arg(long, env = "HOOKGATE_FAILING_AFTER", default_value_t = LifecyclePolicy::default().failing_after, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub failing_after: u32,
    /// A subscription whose every attempt failed for this long is disabled
    /// (`0s`: never; Svix's default is five days).
    #[arg(long, env = "HOOKGATE_DISABLE_AFTER", default_value = "5d", value_parser = duration_or_zero)]
    pub disable_after: Duration,
    /// ... and only after at least this many failed attempts in a row.
    #[arg(long, env = "HOOKGATE_DISABLE_MIN_FAILURES", default_value_t = LifecyclePolicy::default().disable_min_failures, value_parser = clap::value_parser!(u64).range(1..))]
    pub disable_min_failures: u64,
}

/// What a receiver's failures lead to beyond retries: operational events,
/// and disabling a subscription that fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    pub failing_after: u32,
    /// `None`: never disabled for failing.
    pub disable_after: Option<Duration>,
    pub disable_min_failures: u64,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            failing_after: 3,
            disable_after: Some(Duration::from_secs(5 * 24 * 3600)),
            disable_min_failures: 10,
        }
    }
}

/// Limits of the HTTP servers (the API and the dispatcher's ops endpoint)
/// and of the database sessions, so that slow or many clients cannot hold
/// the process: every role flattens them.
#[derive(Debug, Clone, Args)]
pub struct ServerLimitsArgs {
    /// How long a client may take to send a request's headers; also how long
    /// an idle keep-alive connection stays open. The connection is closed
    /// beyond it.
    #[arg(long, env = "HOOKGATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = server_timeout)]
    pub header_read_timeout: Duration,
    /// Time limit of a whole API request, its handler included (503 beyond it).
    #[arg(long, env = "HOOKGATE_API_REQUEST_TIMEOUT", default_value = "30s", value_parser = server_timeout)]
    pub api_request_timeout: Duration,
    /// How long a request body may take to arrive once its headers have (408 beyond it).
    #[arg(long, env = "HOOKGATE_BODY_TIMEOUT", default_value = "10s", value_parser = server_timeout)]
    pub body_timeout: Duration,
    /// Connections served at once; beyond it new ones wait in the listen backlog.
    #[arg(long, env = "HOOKGATE_MAX_CONNECTIONS", default_value_t = ServerLimits::default().max_connections, value_parser = max_connections)]
    pub max_connections: usize,
    /// At shutdown, how long open connections may finish their requests;
    /// those still open after it are dropped.
    #[arg(long, env = "HOOKGATE_CONNECTION_DRAIN_TIMEOUT", default_value = "11s", value_parser = server_timeout)]
    pub connection_drain_timeout: Duration,
    /// PostgreSQL `statement_timeout` of every pooled connection (not
    /// `hookgate migrate`'s, nor migrations at start); SQLite has none.
    #[arg(long, env = "HOOKGATE_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = statement_timeout)]
    pub db_statement_timeout: Duration,
}

/// What `ServerLimitsArgs` configures, as the roles use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// How long connections may finish at shutdown before they are dropped.
    pub drain: Duration,
    pub statement_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_connections: 4096,
            drain: crate::api::DRAIN,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl From<&ServerLimitsArgs> for ServerLimits {
    fn from(args: &ServerLimitsArgs) -> Self {
        Self {
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.api_request_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.max_connections,
            drain: args.connection_drain_timeout,
            statement_timeout: args.db_statement_timeout,
        }
    }
}

/// Limits on what a subscription may ask for, for the API and dispatchers alike.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// The highest `max_in_flight` a subscription may set (the API refuses
    /// more; dispatchers cap older subscriptions at it).
    #[arg(long, env = "HOOKGATE_MAX_IN_FLIGHT_LIMIT", default_value_t = SubscriptionLimits::default().max_in_flight, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight_limit: u32,
}

/// What one tenant (or one caller) may take of the API: counts answer 422
/// `quota_exceeded`, rates 429 `rate_limited` with `Retry-After`. Admin
/// tokens are trusted and not limited by the per-tenant rates.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// Live subscriptions one tenant may have.
    #[arg(long, env = "HOOKGATE_MAX_SUBSCRIPTIONS_PER_TENANT", default_value_t = Quotas::default().subscriptions_per_tenant, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_subscriptions_per_tenant: u32,
    /// Events a second one tenant API key may publish (a batch counts each event).
    #[arg(long, env = "HOOKGATE_PUBLISH_RATE_PER_KEY", default_value_t = Quotas::default().publish_per_key.per_second, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub publish_rate_per_key: u32,
    /// Events one key may publish at once above its rate.
    #[arg(long, env = "HOOKGATE_PUBLISH_BURST_PER_KEY", default_value_t = Quotas::default().publish_per_key.burst, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub publish_burst_per_key: u32,
    /// Events a second all keys of one tenant may publish together.
    #[arg(long, env = "HOOKGATE_PUBLISH_RATE_PER_TENANT", default_value_t = Quotas::default().publish_per_tenant.per_second, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub publish_rate_per_tenant: u32,
    /// Events one tenant may publish at once above its rate.
    #[arg(long, env = "HOOKGATE_PUBLISH_BURST_PER_TENANT", default_value_t = Quotas::default().publish_per_tenant.burst, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub publish_burst_per_tenant: u32,
    /// Bytes of custom header names and values one subscription may carry.
    #[arg(long, env = "HOOKGATE_MAX_HEADER_BYTES", default_value_t = Quotas::default().header_bytes, value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub max_header_bytes: u32,
    /// Bytes of metadata keys and values one subscription may carry.
    #[arg(long, env = "HOOKGATE_MAX_METADATA_BYTES", default_value_t = Quotas::default().metadata_bytes, value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub max_metadata_bytes: u32,
    /// Bulk replays one tenant may have running at once.
    #[arg(long, env = "HOOKGATE_MAX_RUNNING_REPLAYS_PER_TENANT", default_value_t = Quotas::default().running_replays_per_tenant, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub max_running_replays_per_tenant: u32,
    /// Test sends (`POST /v1/subscriptions/{id}/test`) one tenant may make a minute.
    #[arg(long, env = "HOOKGATE_TEST_SENDS_PER_MINUTE", default_value_t = Quotas::default().test_sends_per_minute, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub test_sends_per_minute: u32,
    /// Failed authentications a minute from one client address (the TCP
    /// peer; X-Forwarded-For is not trusted); past it, requests with a
    /// tenant key answer 429 without a database lookup.
    #[arg(long, env = "HOOKGATE_AUTH_FAILURES_PER_MINUTE", default_value_t = Quotas::default().auth_failures_per_minute, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub auth_failures_per_minute: u32,
}

/// A token bucket: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// See `QuotaArgs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub subscriptions_per_tenant: u32,
    pub publish_per_key: Rate,
    pub publish_per_tenant: Rate,
    pub header_bytes: u32,
    pub metadata_bytes: u32,
    pub running_replays_per_tenant: u32,
    pub test_sends_per_minute: u32,
    pub auth_failures_per_minute: u32,
}

impl Default for Quotas {
    /// Generous for one integration, small enough that one tenant cannot
    /// take a dispatcher's memory or the API's database.
    fn default() -> Self {
        Self {
            subscriptions_per_tenant: 1_000,
            publish_per_key: Rate { per_second: 1_000, burst: 2_000 },
            publish_per_tenant: Rate { per_second: 2_000, burst: 4_000 },
            header_bytes: 8 << 10,
            metadata_bytes: 16 << 10,
            running_replays_per_tenant: 5,
            test_sends_per_minute: 10,
            auth_failures_per_minute: 60,
        }
    }
}

impl From<&QuotaArgs> for Quotas {
    fn from(args: &QuotaArgs) -> Self {
        Self {
            subscriptions_per_tenant: args.max_subscriptions_per_tenant,
            publish_per_key: Rate {
                per_second: args.publish_rate_per_key,
                burst: args.publish_burst_per_key,
            },
            publish_per_tenant: Rate {
                per_second: args.publish_rate_per_tenant,
                burst: args.publish_burst_per_tenant,
            },
            header_bytes: args.max_header_bytes,
            metadata_bytes: args.max_metadata_bytes,
            running_replays_per_tenant: args.max_running_replays_per_tenant,
            test_sends_per_minute: args.test_sends_per_minute,
            auth_failures_per_minute: args.auth_failures_per_minute,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimits {
    pub max_in_flight: u32,
}

impl Default for SubscriptionLimits {
    /// Well below a stage's budget: one subscription's requests under way
    /// stay a small share of what a dispatcher holds.
    fn default() -> Self {
        Self { max_in_flight: 256 }
    }
}

impl From<&LimitsArgs> for SubscriptionLimits {
    fn from(args: &LimitsArgs) -> Self {
        Self { max_in_flight: args.max_in_flight_limit }
    }
}

/// What a dispatcher's stages hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryBudgets {
    /// Deliveries the deliver stage holds in every state.
    pub stage: usize,
    /// Their bytes (records carry the event's data).
    pub stage_bytes: usize,
    /// Deliveries one tenant's subscriptions hold together.
    pub tenant: usize,
    /// Records each retry tier holds while they wait for their time.
    pub retry_tier: usize,
}

impl Default for DeliveryBudgets {
    fn default() -> Self {
        Self { stage: 8_192, stage_bytes: 256 << 20, tenant: 2_048, retry_tier: 4_096 }
    }
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "HOOKGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// The wait after attempt `attempt` (from 1) failed; `None` once the
    /// schedule is used up.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        self.0.get(usize::try_from(attempt).ok()?.checked_sub(1)?).copied()
    }

    /// The distinct delays: one retry topic each.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut tiers = self.0.clone();
        tiers.sort();
        tiers.dedup();
        tiers
    }
}

/// Everything the roles of one process need, whatever started it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub database_url: String,
    pub kafka: KafkaConfig,
    pub topics: Topics,
    /// Run the REST API with these admin tokens.
    pub api: Option<ApiConfig>,
    /// Run the dispatcher.
    pub dispatcher: Option<DispatcherConfig>,
    pub limits: SubscriptionLimits,
    /// Where deliveries and test sends may go.
    pub egress: EgressRules,
    /// What one tenant may take of the API.
    pub quotas: Quotas,
    /// Timeouts and the connection cap of the HTTP servers, the database's
    /// statement timeout.
    pub server: ServerLimits,
    /// Seal secrets at rest with these (none: in clear).
    pub secret_keys: SecretKeys,
    /// Apply migrations at start (single-node roles; the chart runs `migrate`).
    pub migrate: bool,
    /// Create missing topics with the admin API (the in-process broker of
    /// `hookgate dev` has none: it creates its topics itself).
    pub create_topics: bool,
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub source: Vec<String>,
    pub publish: String,
    pub deliveries: String,
    pub retry_prefix: String,
    pub dlq: String,
    pub operational: String,
    pub partitions: i32,
    pub replication: i32,
    pub group_id: String,
}

#[derive(Clone)]
pub struct ApiConfig {
    pub admin_tokens: Vec<String>,
    pub public_url: Option<url::Url>,
}

impl ApiConfig {
    /// The given admin tokens, and no public URL.
    pub fn with_admin_tokens(admin_tokens: Vec<String>) -> Self {
        Self { admin_tokens, public_url: None }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("admin_tokens", &"***")
            .field("public_url", &self.public_url)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    pub request_timeout: Duration,
    pub retry_schedule: RetrySchedule,
    pub max_delivery_age: Duration,
    /// How much of a response body the attempt log keeps, and of which.
    pub excerpts: Excerpts,
    /// How long attempts, dead letters and finished replays are kept.
    pub retention: Duration,
    /// How long deleted subscriptions are kept before they are purged.
    pub deleted_retention: Duration,
    pub budgets: DeliveryBudgets,
    pub circuit: CircuitPolicy,
    pub lifecycle: LifecyclePolicy,
}

/// When a circuit opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Failed attempts in a row that open the circuit.
    pub consecutive_failures: u32,
    /// Or: at least this share of the recent attempts failed (thousandths,
    /// an exponentially weighted average over about `window` attempts)...
    pub failure_share: u32,
    /// ...once this many attempts were made.
    pub window: u32,
    /// The first cool-down; each failed probe doubles it, up to `max_open`.
    pub open_for: Duration,
    pub max_open: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_share: 800,
            window: 20,
            open_for: Duration::from_secs(5),
            max_open: Duration::from_secs(300),
        }
    }
}

/// The command line's defaults (a unit test holds the two together), for
/// callers that build a configuration in code.
impl Default for DispatcherConfig {
    fn default() -> Self {
        const HOUR: u64 = 3600;
        let schedule = [5, 5 * 60, 30 * 60, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR];
        Self {
            request_timeout: Duration::from_secs(15),
            retry_schedule: RetrySchedule(schedule.map(Duration::from_secs).to_vec()),
            max_delivery_age: Duration::from_secs(3 * 24 * HOUR),
            excerpts: Excerpts { cap: RESPONSE_BODY_CAP, of_successes: false },
            retention: Duration::from_secs(30 * 24 * HOUR),
            deleted_retention: Duration::from_secs(24 * HOUR),
            budgets: DeliveryBudgets::default(),
            circuit: CircuitPolicy::default(),
            lifecycle: LifecyclePolicy::default(),
        }
    }
}

/// How much of a response body the attempt log keeps.
const RESPONSE_BODY_CAP: usize = 4096;

impl DispatcherConfig {
    pub fn from_args(args: &DeliveryArgs) -> Self {
        Self {
            request_timeout: args.request_timeout,
            retry_schedule: args.retry_schedule.clone(),
            max_delivery_age: args.max_delivery_age,
            excerpts: Excerpts {
                cap: RESPONSE_BODY_CAP,
                of_successes: args.keep_success_responses.unwrap_or(false),
            },
            retention: args.retention,
            deleted_retention: args.deleted_subscription_retention,
            budgets: DeliveryBudgets {
                stage: args.delivery_budget,
                tenant: args.tenant_budget.unwrap_or(args.delivery_budget / 4).max(1),
                ..DeliveryBudgets::default()
            },
            circuit: CircuitPolicy {
                consecutive_failures: args.circuit_failures,
                failure_share: args.circuit_failure_rate * 10,
                window: args.circuit_window,
                open_for: args.circuit_cool_down,
                // A longest cool-down below the first is the first.
                max_open: args.circuit_max_cool_down.max(args.circuit_cool_down),
            },
            lifecycle: LifecyclePolicy {
                failing_after: args.failing_after,
                disable_after: (!args.disable_after.is_zero()).then_some(args.disable_after),
                disable_min_failures: args.disable_min_failures,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no publish topic: every source topic is a regex, so set HOOKGATE_PUBLISH_TOPIC")]
    NoPublishTopic,
}

impl AppConfig {
    /// No role yet and the built-in defaults for the rest (egress rules that
    /// refuse private targets, no quotas' overrides, secrets in clear, no
    /// migrations at start): callers add the roles and what they configure.
    pub fn new(database_url: String, kafka: KafkaConfig, topics: Topics) -> Self {
        Self {
            database_url,
            kafka,
            topics,
            api: None,
            dispatcher: None,
            limits: SubscriptionLimits::default(),
            egress: EgressRules::default(),
            quotas: Quotas::default(),
            server: ServerLimits::default(),
            secret_keys: SecretKeys::default(),
            migrate: false,
            create_topics: true,
        }
    }
}

impl Topics {
    pub fn from_args(args: &TopicArgs) -> Result<Self, Error> {
        let publish = match &args.publish_topic {
            Some(topic) => topic.clone(),
            None => args
                .topics
                .iter()
                .find(|t| !t.starts_with('^'))
                .cloned()
                .ok_or(Error::NoPublishTopic)?,
        };
        Ok(Self {
            source: args.topics.clone(),
            publish,
            deliveries: args.deliveries_topic.clone(),
            retry_prefix: args.retry_topic_prefix.clone(),
            dlq: args.dlq_topic.clone(),
            operational: args.operational_topic.clone(),
            partitions: args.partitions,
            replication: args.replication_factor,
            group_id: args.group_id.clone(),
        })
    }

    /// Every topic and the group under one prefix (`{prefix}.events`,
    /// `{prefix}.deliveries`, …): a namespace of its own, for tests and
    /// benchmarks.
    pub fn under_prefix(prefix: &str, partitions: i32, replication: i32) -> Self {
        Self {
            source: vec![format!("{prefix}.events")],
            publish: format!("{prefix}.events"),
            deliveries: format!("{prefix}.deliveries"),
            retry_prefix: format!("{prefix}.retry."),
            dlq: format!("{prefix}.dlq"),
            operational: format!("{prefix}.operational"),
            partitions,
            replication,
            group_id: format!("{prefix}.dispatcher"),
        }
    }

    /// The topics to create at start: the named (not regex) source topics,
    /// the deliveries, dead-letter and operational topics, and a retry
    /// topic per tier.
    pub fn to_create(&self, schedule: &RetrySchedule) -> Vec<String> {
        let mut names: Vec<String> =
            self.source.iter().filter(|t| !t.starts_with('^')).cloned().collect();
        let retries = schedule.tiers().into_iter().map(|d| self.retry_topic(d));
        let own = [
            self.publish.clone(),
            self.deliveries.clone(),
            self.dlq.clone(),
            self.operational.clone(),
        ];
        for extra in own.into_iter().chain(retries) {
            if !names.contains(&extra) {
                names.push(extra);
            }
        }
        names
    }

    /// What the fan-out stage reads: the source topics and the operational
    /// topic (whose events go to the tenants' `hookgate.*` subscriptions).
    pub fn fan_out_topics(&self) -> Vec<String> {
        let mut topics = self.source.clone();
        if !topics.contains(&self.operational) {
            topics.push(self.operational.clone());
        }
        topics
    }

    /// The retry topic of a delay: `hookgate.retry.5s`, `hookgate.retry.2h`.
    pub fn retry_topic(&self, delay: Duration) -> String {
        let ms = delay.as_millis();
        let label = match ms {
            ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
            ms => format!("{ms}ms"),
        };
        format!("{}{label}", self.retry_prefix)
    }
}

impl KafkaConfig {
    /// The brokers plus every `HOOKGATE_KAFKA_*` variable as a librdkafka property.
    pub fn from_env(brokers: String) -> Self {
        let properties = std::env::vars()
            .filter(|(name, _)| !KAFKA_OWN_VARIABLES.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(KAFKA_PROPERTY_PREFIX)?;
                Some((key.to_ascii_lowercase().replace('_', "."), value))
            })
            .collect();
        Self { brokers, properties }
    }
}

/// An http(s) URL with nothing after its path: what links are made from.
fn public_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("an http:// or https:// URL with a host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("a URL without credentials, query or fragment".to_owned());
    }
    Ok(url)
}

fn non_empty(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(trimmed.to_owned())
    }
}

fn broker_list(value: &str) -> Result<String, String> {
    let brokers: Vec<&str> = value.split(',').map(str::trim).filter(|b| !b.is_empty()).collect();
    if brokers.is_empty() {
        return Err("the broker list is empty".to_owned());
    }
    Ok(brokers.join(","))
}

impl ApiArgs {
    /// The admin tokens, checked; the error never repeats a token.
    pub fn admin_tokens(&self) -> Result<Vec<String>, String> {
        self.admin_token
            .iter()
            .map(|value| {
                let token = value.trim();
                if token.len() < 16 {
                    return Err("invalid --admin-token (HOOKGATE_ADMIN_TOKEN): an admin token has at least 16 characters".to_owned());
                }
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("invalid --admin-token (HOOKGATE_ADMIN_TOKEN): an admin token is printable ASCII without spaces".to_owned());
                }
                Ok(token.to_owned())
            })
            .collect()
    }
}

fn duration(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
    if parsed.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(parsed)
}

/// A duration where `0s` means "never".
fn duration_or_zero(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| e.to_string())
}

/// A deleted subscription's row outlives the dispatchers' next refresh
/// (every half second) by a wide margin.
fn deleted_retention(value: &str) -> Result<Duration, String> {
    let parsed = duration(value)?;
    if parsed < Duration::from_secs(60) {
        return Err("at least 1m, so that every dispatcher sees the delete first".to_owned());
    }
    Ok(parsed)
}

/// A timeout of the servers: at least a millisecond, at most an hour (a
/// larger one guards nothing, and overflows timers).
fn server_timeout(value: &str) -> Result<Duration, String> {
    duration_in(value, Duration::from_secs(3600))
}

/// PostgreSQL counts in milliseconds, up to about 24 days; 0 would turn the
/// limit off, so it is refused like every zero.
fn statement_timeout(value: &str) -> Result<Duration, String> {
    duration_in(value, Duration::from_secs(24 * 3600))
}

fn duration_in(value: &str, max: Duration) -> Result<Duration, String> {
    let parsed = duration(value)?;
    if parsed < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    if parsed > max {
        return Err(format!("must be at most {}", humantime::format_duration(max)));
    }
    Ok(parsed)
}

fn max_connections(value: &str) -> Result<usize, String> {
    count_in(value, 1..=1_000_000)
}

fn stage_budget(value: &str) -> Result<usize, String> {
    count_in(value, 16..=1_000_000)
}

fn tenant_budget(value: &str) -> Result<usize, String> {
    count_in(value, 1..=1_000_000)
}

fn count_in(value: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("a whole number from {} to {}", range.start(), range.end())),
    }
}

fn network(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    // A bare address is the network of just that address.
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{value}` is not a network (CIDR such as 10.0.0.0/8) or an address"))
}

fn port_range(value: &str) -> Result<RangeInclusive<u16>, String> {
    let value = value.trim();
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let range = match value.split_once('-') {
        Some((low, high)) => port(low).zip(port(high)).map(|(l, h)| l..=h),
        None => port(value).map(|p| p..=p),
    };
    range
        .filter(|r| r.start() <= r.end())
        .ok_or_else(|| format!("`{value}` is not a port (1-65535) or a range such as 8000-8999"))
}

fn proxy_url(value: &str) -> Result<url::Url, String> {
    // The value may carry credentials: the error does not repeat it.
    let url = url::Url::parse(value.trim())
        .map_err(|_| "not a URL (http://host:port or https://host:port)".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("the proxy is an http:// or https:// URL with a host".to_owned());
    }
    Ok(url)
}

fn retry_schedule(value: &str) -> Result<RetrySchedule, String> {
    let delays = value
        .split(',')
        .map(|d| duration(d).map_err(|e| format!("`{}`: {e}", d.trim())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RetrySchedule(delays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatcher_defaults_in_code_are_the_command_lines() {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            delivery: DeliveryArgs,
        }
        let parsed = <Defaults as clap::Parser>::try_parse_from(["hookgate"]).expect("defaults");
        assert_eq!(DispatcherConfig::from_args(&parsed.delivery), DispatcherConfig::default());
    }

    #[test]
    fn retry_schedules_parse_and_refuse_nonsense() {
        assert_eq!(
            retry_schedule("5s, 5m,2h").expect("valid"),
            RetrySchedule(vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200)
            ])
        );
        assert!(retry_schedule("5s,,5m").is_err());
        assert!(retry_schedule("5 parsecs").is_err());
        assert!(retry_schedule("0s").is_err());
    }

    #[test]
    fn schedule_gives_the_delay_after_each_attempt() {
        let schedule = retry_schedule("5s,5m").expect("valid");
        assert_eq!(schedule.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(schedule.delay_after(2), Some(Duration::from_secs(300)));
        assert_eq!(schedule.delay_after(3), None);
        assert_eq!(schedule.delay_after(0), None);
    }

    #[test]
    fn circuit_settings_reach_the_policy_and_nonsense_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            delivery: DeliveryArgs,
        }
        let parsed = Cli::try_parse_from([
            "hookgate",
            "--circuit-failures=3",
            "--circuit-failure-rate=50",
            "--circuit-window=40",
            "--circuit-cool-down=2s",
            "--circuit-max-cool-down=1s",
        ])
        .expect("valid settings");
        let circuit = DispatcherConfig::from_args(&parsed.delivery).circuit;
        assert_eq!(
            circuit,
            CircuitPolicy {
                consecutive_failures: 3,
                failure_share: 500,
                window: 40,
                open_for: Duration::from_secs(2),
                max_open: Duration::from_secs(2),
            },
            "a longest cool-down below the first is the first"
        );
        let defaults = Cli::try_parse_from(["hookgate"]).expect("defaults");
        assert_eq!(
            DispatcherConfig::from_args(&defaults.delivery).circuit,
            CircuitPolicy::default()
        );
        for bad in ["--circuit-failures=0", "--circuit-failure-rate=101", "--circuit-window=1"] {
            let error = Cli::try_parse_from(["hookgate", bad]).err().expect(bad).to_string();
            assert!(error.contains("circuit"), "{bad}: {error}");
        }
    }

    #[test]
    fn egress_rules_parse_and_nonsense_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            egress: EgressArgs,
        }
        let parsed = Cli::try_parse_from([
            "hookgate",
            "--egress-allowed-networks=10.1.0.0/16, 192.168.1.7",
            "--egress-denied-networks=0.0.0.0/0,::/0",
            "--egress-allowed-ports=443,8000-8999",
            "--egress-proxy=http://proxy.internal:3128",
        ])
        .expect("valid rules");
        let rules = parsed.egress.rules(false).expect("valid rules");
        assert!(!rules.allow_private);
        assert_eq!(rules.allowed_networks.len(), 2);
        assert!(rules.allows_ip("192.168.1.7".parse().expect("ip")));
        assert!(!rules.allows_ip("192.168.1.8".parse().expect("ip")));
        assert_eq!(rules.allowed_ports, vec![443..=443, 8000..=8999]);
        assert_eq!(rules.proxy.as_ref().and_then(url::Url::host_str), Some("proxy.internal"));

        let dev = Cli::try_parse_from(["hookgate"]).expect("defaults").egress;
        assert!(dev.rules(true).expect("valid").allow_private, "dev allows private by default");
        assert!(!dev.rules(false).expect("valid").allow_private);
        let refused = Cli::try_parse_from(["hookgate", "--allow-private-targets=false"])
            .expect("explicit false")
            .egress;
        assert!(!refused.rules(true).expect("valid").allow_private, "explicit false holds in dev");

        for bad in [
            "--egress-allowed-networks=10.0.0.0/33",
            "--egress-denied-networks=internal",
            "--egress-allowed-ports=0",
            "--egress-allowed-ports=9000-8000",
            "--egress-allowed-ports=70000",
        ] {
            let error = Cli::try_parse_from(["hookgate", bad]).err().expect(bad).to_string();
            assert!(error.contains("egress"), "{bad}: {error}");
        }
        let proxy =
            Cli::try_parse_from(["hookgate", "--egress-proxy=socks5://u:hunter2@127.0.0.1"])
                .expect("checked later")
                .egress;
        let error = proxy.rules(false).expect_err("not an http proxy");
        assert!(error.contains("HOOKGATE_EGRESS_PROXY") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn quotas_default_as_documented_and_refuse_nonsense() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            quotas: QuotaArgs,
            #[command(flatten)]
            delivery: DeliveryArgs,
        }
        let defaults = Cli::try_parse_from(["hookgate"]).expect("defaults");
        assert_eq!(Quotas::from(&defaults.quotas), Quotas::default());
        assert_eq!(
            DispatcherConfig::from_args(&defaults.delivery).deleted_retention,
            Duration::from_secs(24 * 3600)
        );
        let set = Cli::try_parse_from([
            "hookgate",
            "--max-subscriptions-per-tenant=3",
            "--publish-rate-per-key=5",
            "--publish-burst-per-key=7",
            "--test-sends-per-minute=2",
            "--deleted-subscription-retention=2h",
        ])
        .expect("valid quotas");
        let quotas = Quotas::from(&set.quotas);
        assert_eq!(quotas.subscriptions_per_tenant, 3);
        assert_eq!(quotas.publish_per_key, Rate { per_second: 5, burst: 7 });
        assert_eq!(quotas.test_sends_per_minute, 2);
        assert_eq!(
            DispatcherConfig::from_args(&set.delivery).deleted_retention,
            Duration::from_secs(7200)
        );
        for bad in [
            "--max-subscriptions-per-tenant=0",
            "--publish-rate-per-tenant=0",
            "--max-header-bytes=10",
            "--auth-failures-per-minute=-1",
            "--deleted-subscription-retention=5s",
        ] {
            assert!(Cli::try_parse_from(["hookgate", bad]).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn server_limits_parse_with_defaults_and_refuse_nonsense() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            limits: ServerLimitsArgs,
        }
        let defaults = Cli::try_parse_from(["hookgate"]).expect("defaults");
        assert_eq!(ServerLimits::from(&defaults.limits), ServerLimits::default());
        let parsed = Cli::try_parse_from([
            "hookgate",
            "--header-read-timeout=1s",
            "--api-request-timeout=2s",
            "--body-timeout=500ms",
            "--max-connections=2",
            "--connection-drain-timeout=3s",
            "--db-statement-timeout=200ms",
        ])
        .expect("valid settings");
        assert_eq!(
            ServerLimits::from(&parsed.limits),
            ServerLimits {
                header_read_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(2),
                body_timeout: Duration::from_millis(500),
                max_connections: 2,
                drain: Duration::from_secs(3),
                statement_timeout: Duration::from_millis(200),
            }
        );
        for (bad, says) in [
            ("--header-read-timeout=0s", "greater than zero"),
            ("--header-read-timeout=soon", "header-read-timeout"),
            ("--api-request-timeout=500us", "at least 1ms"),
            ("--body-timeout=1000years", "at most 1h"),
            ("--max-connections=0", "from 1 to 1000000"),
            ("--max-connections=-3", "max-connections"),
            ("--connection-drain-timeout=2h", "at most 1h"),
            ("--db-statement-timeout=0", "db-statement-timeout"),
            ("--db-statement-timeout=30d", "at most 1day"),
        ] {
            let error = Cli::try_parse_from(["hookgate", bad]).err().expect(bad).to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn secret_keys_parse_and_a_bad_one_is_named_but_never_printed() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            keys: SecretKeyArgs,
        }
        let a = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let parsed = Cli::try_parse_from(["hookgate", &format!("--secret-key=b:{a},a:{a}")])
            .expect("parses");
        let keys = parsed.keys.keys().expect("valid keys");
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["b", "a"]);
        assert!(!format!("{:?}", parsed.keys).contains(a));
        let unset = Cli::try_parse_from(["hookgate"]).expect("parses");
        assert!(!unset.keys.keys().expect("no key").is_set());
        let bad = "c2hvcnQta2V5";
        let error = Cli::try_parse_from(["hookgate", &format!("--secret-key=x:{bad}")])
            .expect("parses")
            .keys
            .keys()
            .expect_err("a short key");
        assert!(error.contains("HOOKGATE_SECRET_KEY") && !error.contains(bad), "{error}");
        assert_eq!(error.lines().count(), 1);
    }

    #[test]
    fn broker_lists_are_trimmed_and_never_empty() {
        assert_eq!(broker_list(" a:1, b:2 ,").expect("valid"), "a:1,b:2");
        assert!(broker_list(" , ").is_err());
    }

    #[test]
    fn publish_topic_defaults_to_first_named_source() {
        let args = TopicArgs {
            topics: vec!["^events\\..*".into(), "orders".into()],
            publish_topic: None,
            deliveries_topic: "deliveries".into(),
            retry_topic_prefix: "retry.".into(),
            dlq_topic: "dlq".into(),
            operational_topic: "ops".into(),
            partitions: 3,
            replication_factor: -1,
            group_id: "g".into(),
        };
        let topics = Topics::from_args(&args).expect("valid");
        assert_eq!(topics.publish, "orders");
        let schedule = retry_schedule("5s,500ms,2h,5s,90s").expect("valid");
        assert_eq!(
            topics.to_create(&schedule),
            [
                "orders",
                "deliveries",
                "dlq",
                "ops",
                "retry.500ms",
                "retry.5s",
                "retry.90s",
                "retry.2h"
            ]
        );
        let only_regex = TopicArgs { topics: vec!["^x".into()], ..args };
        assert!(Topics::from_args(&only_regex).is_err());
    }
}
