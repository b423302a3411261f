//! hookgate's binary as a separate process, for the tests that kill it or
//! read what it logs.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use hookgate::config::{AppConfig, DispatcherConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

pub struct DispatcherProcess {
    pub child: Child,
}

/// `hookgate <role>` configured like the app (database, brokers, topics,
/// group) and `dispatcher`, listening on a free port; not started yet.
pub fn command(role: &str, config: &AppConfig, dispatcher: &DispatcherConfig) -> Command {
    let topics = &config.topics;
    let schedule: Vec<String> =
        dispatcher.retry_schedule.0.iter().map(|d| format!("{}ms", d.as_millis())).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .arg(role)
        .env("HOOKGATE_LISTEN", "127.0.0.1:0")
        .env("HOOKGATE_DATABASE_URL", &config.database_url)
        .env("HOOKGATE_KAFKA_BROKERS", &config.kafka.brokers)
        .env("HOOKGATE_TOPICS", topics.source.join(","))
        .env("HOOKGATE_DELIVERIES_TOPIC", &topics.deliveries)
        .env("HOOKGATE_RETRY_TOPIC_PREFIX", &topics.retry_prefix)
        .env("HOOKGATE_DLQ_TOPIC", &topics.dlq)
        .env("HOOKGATE_GROUP_ID", &topics.group_id)
        .env("HOOKGATE_PARTITIONS", topics.partitions.to_string())
        .env("HOOKGATE_REPLICATION_FACTOR", topics.replication.to_string())
        .env("HOOKGATE_ALLOW_PRIVATE_TARGETS", config.egress.allow_private.to_string())
        .env("HOOKGATE_REQUEST_TIMEOUT", format!("{}ms", dispatcher.request_timeout.as_millis()))
        .env("HOOKGATE_RETRY_SCHEDULE", schedule.join(","))
        .env("HOOKGATE_MAX_DELIVERY_AGE", format!("{}s", dispatcher.max_delivery_age.as_secs()))
        .env(
            "RUST_LOG",
            std::env::var("HOOKGATE_TEST_DISPATCHER_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Reads the process's stdout up to its `listening on http://…` line and
/// answers that base URL.
pub async fn listening_on(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(60), stdout.read_line(&mut line))
                .await
                .expect("the process says where it listens within a minute")
                .expect("read stdout");
        assert!(read > 0, "the process ended before it listened");
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            return url.to_owned();
        }
    }
}

impl DispatcherProcess {
    /// `hookgate dispatcher` with the same topics, group and database as the app.
    pub fn start(config: &AppConfig, dispatcher: &DispatcherConfig) -> Self {
        let child =
            command("dispatcher", config, dispatcher).spawn().expect("start hookgate dispatcher");
        Self { child }
    }

    /// SIGTERM: the graceful stop an orchestrator sends.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// Starts it again if it exited, as a supervisor would; answers whether
    /// it had (for `tests/chaos.rs`).
    pub fn restart_if_exited(&mut self, config: &AppConfig, dispatcher: &DispatcherConfig) -> bool {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        *self = Self::start(config, dispatcher);
        true
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// `hookgate serve` on the app's database, brokers, topics and group, with
/// everything it prints (stdout and stderr) kept for the test to read.
pub struct ServeProcess {
    pub child: Child,
    /// `http://127.0.0.1:port` of its API.
    pub base_url: String,
    output: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ServeProcess {
    pub async fn start(
        config: &AppConfig,
        dispatcher: &DispatcherConfig,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = command("serve", config, dispatcher);
        command.env("HOOKGATE_ADMIN_TOKEN", super::ADMIN_TOKEN);
        for (name, value) in env {
            command.env(name, value);
        }
        Self::spawn(command).await
    }

    /// Starts `command` (`hookgate serve`, or `dev`), keeping what it
    /// prints; answers once it says where it listens.
    pub async fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start hookgate serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let readers = vec![
            tokio::spawn(keep_lines(stdout, Arc::clone(&output), Some(url_tx))),
            tokio::spawn(keep_lines(stderr, Arc::clone(&output), None)),
        ];
        let base_url = tokio::time::timeout(std::time::Duration::from_secs(60), url_rx)
            .await
            .expect("hookgate serve listens within a minute")
            .unwrap_or_else(|_| {
                panic!("hookgate serve ended early: {}", output.lock().expect("lock"))
            });
        Self { child, base_url, output, readers }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `signal` (`TERM`, `INT`) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("lock").clone()
    }

    /// Waits up to `limit` for the process to exit; answers its status
    /// (`None`: still running at `limit`, then killed) and all it printed.
    pub async fn exited_within(
        mut self,
        limit: std::time::Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Some(status.expect("wait for hookgate")),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        (status, self.output())
    }

    /// SIGTERM, then waits for the exit; answers all it printed.
    pub async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("hookgate serve stops within a minute")
            .expect("wait for hookgate serve");
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        let output = self.output.lock().expect("lock").clone();
        assert!(status.success(), "hookgate serve exited with {status}: {output}");
        output
    }
}

async fn keep_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    output: Arc<Mutex<String>>,
    mut url: Option<tokio::sync::oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(found) = line.trim().strip_prefix("listening on ") {
            if let Some(url) = url.take() {
                let _ = url.send(found.to_owned());
            }
        }
        let mut output = output.lock().expect("lock");
        output.push_str(&line);
        output.push('\n');
    }
}
