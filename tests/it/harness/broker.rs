//! A private, throwaway Kafka broker (KRaft, one JVM) on free ports with its
//! own data dir, for tests that kill the broker: the shared one on 9092 is
//! used by every other test and must stay up. It uses the jars that
//! `scripts/test-env` cached.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::eventually;

const CLUSTER_ID: &str = "aG9va2dhdGUtcHJpdmF0ZQ";
const START_DEADLINE: Duration = Duration::from_secs(120);

pub struct PrivateBroker {
    dir: tempfile::TempDir,
    libs: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// The cached Kafka jars: `HOOKGATE_TEST_KAFKA_LIBS`, else the newest
/// `~/.cache/hookgate/kafka-*/libs`.
fn kafka_libs() -> PathBuf {
    if let Ok(libs) = std::env::var("HOOKGATE_TEST_KAFKA_LIBS") {
        return PathBuf::from(libs);
    }
    let cache = std::env::var("HOOKGATE_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hookgate")
    });
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .expect("~/.cache/hookgate exists: run scripts/test-env start")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("kafka-"))
                && p.join("libs").is_dir()
        })
        .map(|p| p.join("libs"))
        .collect();
    found.sort();
    found.pop().expect("cached Kafka jars: run scripts/test-env start")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PrivateBroker {
    /// Formats storage and starts the broker; returns once it accepts
    /// connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, controller) = (free_port(), free_port());
        let data = dir.path().join("data");
        let props = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=2\n\
             transaction.state.log.num.partitions=2\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             min.insync.replicas=1\n\
             default.replication.factor=1\n\
             group.initial.rebalance.delay.ms=0\n",
            data.display()
        );
        std::fs::write(dir.path().join("server.properties"), props).expect("write config");
        std::fs::write(
            dir.path().join("log4j2.properties"),
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n\
             appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n\
             rootLogger.level = warn\nrootLogger.appenderRef.out.ref = OUT\n",
        )
        .expect("write log config");
        let mut broker = Self { libs: kafka_libs(), dir, port, child: None };
        let format = broker
            .java("kafka.tools.StorageTool")
            .args(["format", "-t", CLUSTER_ID, "-c"])
            .arg(broker.dir.path().join("server.properties"))
            .arg("--standalone")
            .output()
            .await
            .expect("run the storage tool");
        assert!(
            format.status.success(),
            "kafka storage format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        broker.restart().await;
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn java(&self, class: &str) -> Command {
        let mut command = Command::new("java");
        command
            .arg("-Xms128m")
            .arg("-Xmx512m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(class)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts the broker on its data, ports unchanged; waits until it
    /// accepts connections.
    pub async fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("log file");
        let child = self
            .java("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start the private broker (java)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually("the private broker to accept connections", START_DEADLINE, || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// SIGKILLs the broker, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}
