//! hookgate's binary as a separate process, for the tests that kill it.

use std::process::Stdio;

use hookgate::config::{AppConfig, DispatcherConfig};
use tokio::process::{Child, Command};

pub struct DispatcherProcess {
    pub child: Child,
}

impl DispatcherProcess {
    /// `hookgate dispatcher` with the same topics, group and database as the app.
    pub fn start(config: &AppConfig, dispatcher: &DispatcherConfig) -> Self {
        let topics = &config.topics;
        let schedule: Vec<String> =
            dispatcher.retry_schedule.0.iter().map(|d| format!("{}ms", d.as_millis())).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("dispatcher")
            .env("HOOKGATE_DATABASE_URL", &config.database_url)
            .env("HOOKGATE_KAFKA_BROKERS", &config.kafka.brokers)
            .env("HOOKGATE_TOPICS", topics.source.join(","))
            .env("HOOKGATE_DELIVERIES_TOPIC", &topics.deliveries)
            .env("HOOKGATE_RETRY_TOPIC_PREFIX", &topics.retry_prefix)
            .env("HOOKGATE_DLQ_TOPIC", &topics.dlq)
            .env("HOOKGATE_GROUP_ID", &topics.group_id)
            .env("HOOKGATE_PARTITIONS", topics.partitions.to_string())
            .env("HOOKGATE_REPLICATION_FACTOR", topics.replication.to_string())
            .env("HOOKGATE_ALLOW_PRIVATE_TARGETS", dispatcher.allow_private_targets.to_string())
            .env(
                "HOOKGATE_REQUEST_TIMEOUT",
                format!("{}ms", dispatcher.request_timeout.as_millis()),
            )
            .env("HOOKGATE_RETRY_SCHEDULE", schedule.join(","))
            .env("HOOKGATE_MAX_DELIVERY_AGE", format!("{}s", dispatcher.max_delivery_age.as_secs()))
            .env(
                "RUST_LOG",
                std::env::var("HOOKGATE_TEST_DISPATCHER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start hookgate dispatcher");
        Self { child }
    }

    /// SIGTERM: the graceful stop an orchestrator sends.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
