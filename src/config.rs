//! Configuration: clap flags with `HOOKGATE_*` environment fallbacks, turned
//! into the typed `AppConfig` the roles run with. Values are checked while
//! parsing, so a bad one stops the process at start with one clear line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

use crate::kafka::KafkaConfig;

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
    /// Dead-letter topic.
    #[arg(long, env = "HOOKGATE_DLQ_TOPIC", default_value = "hookgate.dlq", value_parser = non_empty)]
    pub dlq_topic: String,
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
    #[arg(long, env = "HOOKGATE_ADMIN_TOKEN", hide_env_values = true, value_delimiter = ',', value_parser = admin_token, required = true)]
    pub admin_token: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Deliver to loopback, private, link-local and metadata addresses too.
    #[arg(long, env = "HOOKGATE_ALLOW_PRIVATE_TARGETS", value_parser = BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_targets: bool,
    /// Time limit of one webhook request.
    #[arg(long, env = "HOOKGATE_REQUEST_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Delays between attempts, comma-separated.
    #[arg(long, env = "HOOKGATE_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_parser = retry_schedule)]
    pub retry_schedule: RetrySchedule,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

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
    pub dlq: String,
    pub partitions: i32,
    pub replication: i32,
    pub group_id: String,
}

#[derive(Clone)]
pub struct ApiConfig {
    pub admin_tokens: Vec<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig").field("admin_tokens", &"***").finish()
    }
}

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub allow_private_targets: bool,
    pub request_timeout: Duration,
    pub retry_schedule: RetrySchedule,
    /// How much of a response body is kept in the attempt log.
    pub response_body_cap: usize,
}

impl DispatcherConfig {
    pub fn from_args(args: &DeliveryArgs) -> Self {
        Self {
            allow_private_targets: args.allow_private_targets,
            request_timeout: args.request_timeout,
            retry_schedule: args.retry_schedule.clone(),
            response_body_cap: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no publish topic: every source topic is a regex, so set HOOKGATE_PUBLISH_TOPIC")]
    NoPublishTopic,
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
            dlq: args.dlq_topic.clone(),
            partitions: args.partitions,
            replication: args.replication_factor,
            group_id: args.group_id.clone(),
        })
    }

    /// The topics to create at start: the named (not regex) ones.
    pub fn to_create(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.source.iter().filter(|t| !t.starts_with('^')).cloned().collect();
        for extra in [&self.publish, &self.dlq] {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
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

fn admin_token(value: &str) -> Result<String, String> {
    let token = value.trim();
    if token.len() < 16 {
        return Err("an admin token has at least 16 characters".to_owned());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an admin token is printable ASCII without spaces".to_owned());
    }
    Ok(token.to_owned())
}

fn duration(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
    if parsed.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(parsed)
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
    fn broker_lists_are_trimmed_and_never_empty() {
        assert_eq!(broker_list(" a:1, b:2 ,").expect("valid"), "a:1,b:2");
        assert!(broker_list(" , ").is_err());
    }

    #[test]
    fn publish_topic_defaults_to_first_named_source() {
        let args = TopicArgs {
            topics: vec!["^events\\..*".into(), "orders".into()],
            publish_topic: None,
            dlq_topic: "dlq".into(),
            partitions: 3,
            replication_factor: -1,
            group_id: "g".into(),
        };
        let topics = Topics::from_args(&args).expect("valid");
        assert_eq!(topics.publish, "orders");
        assert_eq!(topics.to_create(), vec!["orders".to_owned(), "dlq".to_owned()]);
        let only_regex = TopicArgs { topics: vec!["^x".into()], ..args };
        assert!(Topics::from_args(&only_regex).is_err());
    }
}
