//! The deployment files agree with the binary they deploy: the Helm chart's
//! roles, environment variables, ports and probes exist in `hookgate <role>
//! --help` and answer when the real binary runs with the chart's settings;
//! the Dockerfile builds with the suite's cargo flags and runs the binary the
//! way the chart expects.
//!
//! Rendering needs helm: `scripts/chart-check` installs it (scripts/test runs
//! it before cargo test); `HOOKGATE_HELM` names another one.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_norway::Value;

use crate::harness::{self, eventually, TestDb};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The container port of every role (the shared telemetry contract).
const CONTAINER_PORT: u16 = 8080;
/// Variables the chart passes for a feature of the design that the binary
/// does not read yet. An entry here must not be in `--help`: once the binary
/// reads it, the entry goes.
const NOT_YET_READ: &[&str] = &[];
/// `HOOKGATE_SECRET_KEY` as the chart's values document it: `id:base64key`
/// (URL-safe base64 of 32 bytes, which `--set` takes as it is).
const DEPLOY_SECRET_KEY: &str = "deploy:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKGATE_HELM") {
        return PathBuf::from(path);
    }
    let cached =
        Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cache/hookgate/bin/helm");
    if cached.exists() {
        return cached;
    }
    match Command::new("helm").arg("version").output() {
        Ok(output) if output.status.success() => PathBuf::from("helm"),
        _ => panic!(
            "helm not found: run scripts/chart-check (it installs helm into ~/.cache/hookgate/bin), or set HOOKGATE_HELM"
        ),
    }
}

/// `helm template` of the chart, as YAML documents; `sets` are `--set`
/// (typed: numbers and booleans stay so), without commas in values.
fn render(values: &[&str], sets: &[(&str, &str)]) -> Vec<Value> {
    let chart = Path::new(ROOT).join("helm/hookgate");
    let mut command = Command::new(helm());
    command.args(["template", "hookgate"]).arg(&chart).args(["--kube-version", "1.30.0"]);
    for file in values {
        command.arg("-f").arg(chart.join(file));
    }
    for (key, value) in sets {
        assert!(!value.contains(','), "--set splits {value} at its commas");
        command.arg("--set").arg(format!("{key}={value}"));
    }
    let output = command.output().expect("run helm");
    assert!(output.status.success(), "helm template: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    text.split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Value>(doc).ok())
        .filter(|doc| doc.get("kind").is_some())
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(*key))?.as_str()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            str_at(d, &["kind"]) == Some(kind) && str_at(d, &["metadata", "name"]) == Some(name)
        })
        .unwrap_or_else(|| panic!("{kind}/{name} is not rendered"))
}

/// A workload of the chart: its name, pod spec and single container.
struct Workload<'a> {
    name: String,
    pod: &'a Value,
    container: &'a Value,
}

fn workloads(docs: &[Value]) -> Vec<Workload<'_>> {
    docs.iter()
        .filter(|d| matches!(str_at(d, &["kind"]), Some("Deployment" | "Job")))
        .map(|d| {
            let pod = &d["spec"]["template"]["spec"];
            let containers = pod["containers"].as_sequence().expect("containers");
            assert_eq!(containers.len(), 1, "one container per pod");
            Workload {
                name: str_at(d, &["metadata", "name"]).expect("name").to_owned(),
                pod,
                container: &containers[0],
            }
        })
        .collect()
}

fn role(container: &Value) -> String {
    let args = container["args"].as_sequence().expect("the role is the container's argument");
    assert!(container.get("command").is_none(), "the image's entrypoint (hookgate) runs the role");
    args[0].as_str().expect("role").to_owned()
}

/// Every environment variable a container gets, with its value: literal, or
/// read from the rendered Secret (`None` when the Secret is not the chart's).
fn environment(docs: &[Value], container: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for source in container.get("envFrom").and_then(Value::as_sequence).into_iter().flatten() {
        let name = str_at(source, &["configMapRef", "name"]).expect("envFrom a ConfigMap");
        let map = find(docs, "ConfigMap", name);
        for (key, value) in map["data"].as_mapping().expect("ConfigMap data") {
            env.insert(key.as_str().expect("key").to_owned(), value.as_str().map(str::to_owned));
        }
    }
    for entry in container.get("env").and_then(Value::as_sequence).into_iter().flatten() {
        let name = str_at(entry, &["name"]).expect("env name").to_owned();
        let value = match entry.get("value") {
            Some(value) => value.as_str().map(str::to_owned),
            None => {
                let secret =
                    str_at(entry, &["valueFrom", "secretKeyRef", "name"]).expect("from a Secret");
                let key = str_at(entry, &["valueFrom", "secretKeyRef", "key"]).expect("key");
                docs.iter()
                    .find(|d| {
                        str_at(d, &["kind"]) == Some("Secret")
                            && str_at(d, &["metadata", "name"]) == Some(secret)
                    })
                    .and_then(|s| str_at(s, &["data", key]))
                    .map(|b64| {
                        let bytes =
                            base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
                        String::from_utf8(bytes).expect("UTF-8 secret")
                    })
            }
        };
        env.insert(name, value);
    }
    env
}

fn hookgate_help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("run hookgate --help");
    assert!(output.status.success(), "hookgate {args:?} --help fails");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The subcommands `hookgate --help` lists.
fn subcommands() -> Vec<String> {
    let help = hookgate_help(&[]);
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Roles, flags and variables of every rendered workload exist in the binary.
fn check_against_binary(docs: &[Value]) {
    let commands = subcommands();
    for workload in workloads(docs) {
        let role = role(workload.container);
        assert!(
            commands.contains(&role),
            "{}: `{role}` is not a hookgate subcommand {commands:?}",
            workload.name
        );
        let help = hookgate_help(&[&role]);
        let args = workload.container["args"].as_sequence().expect("args");
        for flag in args.iter().skip(1).filter_map(Value::as_str).filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                help.contains(&format!("{flag} ")),
                "{}: `hookgate {role}` has no {flag}",
                workload.name
            );
        }
        for name in environment(docs, workload.container).keys() {
            let listed = help.contains(&format!("[env: {name}="))
                || help.contains(&format!("[env: {name}]"));
            if NOT_YET_READ.contains(&name.as_str()) {
                assert!(!listed, "hookgate reads {name} now: remove it from NOT_YET_READ");
            } else if name.starts_with("HOOKGATE_KAFKA_") && name != "HOOKGATE_KAFKA_BROKERS" {
                // librdkafka properties pass through (config::KafkaConfig::from_env),
                // for the roles that talk to Kafka.
                assert!(
                    help.contains("[env: HOOKGATE_KAFKA_BROKERS="),
                    "{}: {name} goes to `hookgate {role}`, which has no Kafka client",
                    workload.name
                );
            } else if name.starts_with("HOOKGATE_") {
                assert!(
                    listed,
                    "{}: the chart sets {name}, which `hookgate {role} --help` does not list",
                    workload.name
                );
            } else {
                assert!(
                    matches!(
                        name.as_str(),
                        "RUST_LOG" | "OTEL_EXPORTER_OTLP_ENDPOINT" | "OTEL_SERVICE_NAME"
                    ),
                    "{}: the chart sets {name}, which hookgate does not read",
                    workload.name
                );
            }
        }
        if workload.container.get("ports").is_some() {
            check_ports_and_probes(docs, &workload, &help);
        }
    }
}

/// The port the pods expose is the one the role listens on, and the probes
/// ask for paths the binary serves there.
fn check_ports_and_probes(docs: &[Value], workload: &Workload<'_>, help: &str) {
    let ports = workload.container["ports"].as_sequence().expect("ports");
    let http = ports.iter().find(|p| str_at(p, &["name"]) == Some("http")).expect("an http port");
    assert_eq!(
        http["containerPort"].as_u64(),
        Some(u64::from(CONTAINER_PORT)),
        "{}",
        workload.name
    );
    assert!(help.contains("[env: HOOKGATE_LISTEN="), "{}: the role has no --listen", workload.name);
    let env = environment(docs, workload.container);
    let listen =
        env.get("HOOKGATE_LISTEN").cloned().flatten().expect("the chart sets HOOKGATE_LISTEN");
    let addr: std::net::SocketAddr = listen.parse().expect("HOOKGATE_LISTEN is an address");
    assert_eq!(
        addr.port(),
        CONTAINER_PORT,
        "{}: listens on {addr}, exposes {CONTAINER_PORT}",
        workload.name
    );
    assert!(
        addr.ip().is_unspecified(),
        "{}: listens on {addr}, unreachable from the kubelet",
        workload.name
    );
    for (probe, path) in probes(workload.container) {
        assert!(
            matches!(path.as_str(), "/healthz" | "/readyz"),
            "{}: {probe} on {path}",
            workload.name
        );
    }
}

fn probes(container: &Value) -> Vec<(&'static str, String)> {
    ["startupProbe", "livenessProbe", "readinessProbe"]
        .into_iter()
        .map(|probe| {
            let get = &container[probe]["httpGet"];
            let port = &get["port"];
            assert!(
                port.as_str() == Some("http") || port.as_u64() == Some(u64::from(CONTAINER_PORT))
            );
            (
                probe,
                str_at(get, &["path"])
                    .unwrap_or_else(|| panic!("{probe} is an HTTP GET"))
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn chart_roles_variables_and_ports_exist_in_the_binary() {
    check_against_binary(&render(&[], &[]));
    check_against_binary(&render(&["values-production.yaml"], &[]));
    // The chart's own Secret with every credential, SASL, and traces.
    check_against_binary(&render(
        &[],
        &[
            ("secret.adminToken", "0123456789abcdef0123"),
            ("secret.secretKey", DEPLOY_SECRET_KEY),
            ("kafka.sasl.enabled", "true"),
            ("kafka.securityProtocol", "SASL_SSL"),
            ("secret.kafkaSaslUsername", "u"),
            ("secret.kafkaSaslPassword", "p"),
            ("tracing.otlpEndpoint", "http://collector:4317"),
            ("logging.level", "debug"),
        ],
    ));
}

/// A running child process, killed when the test ends however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn command_for(role: &str, env: &BTreeMap<String, Option<String>>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command.arg(role).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value.as_deref().expect("a value for every variable"));
    }
    command
}

/// The chart's settings, as rendered, start every role of the real binary
/// against the test environment's PostgreSQL and Kafka: the migration Job
/// succeeds, and each Deployment's probes answer 200 where the chart points
/// them.
#[tokio::test]
async fn the_chart_s_settings_start_every_role_and_its_probes_answer() {
    let db = TestDb::postgres().await;
    let prefix = harness::unique("deploy");
    let brokers = harness::kafka_brokers();
    let topics = [
        ("topics.source[0]", format!("{prefix}.events")),
        ("topics.deliveries", format!("{prefix}.deliveries")),
        ("topics.retryPrefix", format!("{prefix}.retry.")),
        ("topics.dlq", format!("{prefix}.dlq")),
        ("topics.groupId", format!("{prefix}.dispatcher")),
        ("delivery.retrySchedule", "1s".to_owned()),
    ];
    let mut sets: Vec<(&str, &str)> = topics.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sets.extend([
        ("kafka.brokers", brokers.as_str()),
        ("secret.databaseUrl", db.url.as_str()),
        // The roles start with the chart's key, in its documented form.
        ("secret.secretKey", DEPLOY_SECRET_KEY),
        ("topics.partitions", "1"),
        ("topics.replicationFactor", "1"),
        ("dispatcher.replicas", "1"),
        ("logging.format", "json"),
    ]);
    let docs = render(&[], &sets);

    let job =
        workloads(&docs).into_iter().find(|w| w.name == "hookgate-migrate").expect("migration Job");
    let migrated = command_for(&role(job.container), &environment(&docs, job.container))
        .stderr(Stdio::piped())
        .output()
        .expect("run the migration Job's command");
    assert!(
        migrated.status.success(),
        "the migration Job's command fails: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let mut running = Vec::new();
    for name in ["hookgate-api", "hookgate-dispatcher"] {
        let workload = workloads(&docs).into_iter().find(|w| w.name == name).expect("Deployment");
        let mut env = environment(&docs, workload.container);
        // The kubelet reaches 0.0.0.0:8080 in the pod; here, a free loopback port.
        let port = free_port();
        env.insert("HOOKGATE_LISTEN".to_owned(), Some(format!("127.0.0.1:{port}")));
        let child =
            Child(command_for(&role(workload.container), &env).spawn().expect("start the role"));
        running.push((name, child, port, probes(workload.container)));
    }
    let client = reqwest::Client::new();
    for (name, child, port, probes) in &mut running {
        for (probe, path) in probes.iter() {
            let url = format!("http://127.0.0.1:{port}{path}");
            eventually(&format!("{name}'s {probe} ({url}) to answer 200"), Duration::from_secs(60), || {
                let request = client.get(&url).send();
                async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
            })
            .await;
            assert!(child.0.try_wait().expect("child status").is_none(), "{name} exited");
        }
    }

    // What the ServiceMonitor scrapes, once an event was published, has every
    // series the dashboard queries.
    let api_port = running[0].2;
    let token = environment(
        &docs,
        workloads(&docs).iter().find(|w| w.name == "hookgate-api").expect("api").container,
    )["HOOKGATE_ADMIN_TOKEN"]
        .clone()
        .expect("the chart's admin token");
    let published = client
        .post(format!("http://127.0.0.1:{api_port}/v1/events"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"type": "deploy.checked", "data": {}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(
        published.status(),
        reqwest::StatusCode::ACCEPTED,
        "publishing with the chart's admin token"
    );
    let monitor = render(&[], &[("serviceMonitor.enabled", "true")]);
    let scraped = find(&monitor, "ServiceMonitor", "hookgate")["spec"]["endpoints"][0].clone();
    let path = str_at(&scraped, &["path"]).expect("scrape path").to_owned();
    let wanted = dashboard_series();
    let ports: Vec<u16> = running.iter().map(|r| r.2).collect();
    eventually("every series of the dashboard on /metrics", Duration::from_secs(60), || {
        let requests: Vec<_> = ports
            .iter()
            .map(|port| client.get(format!("http://127.0.0.1:{port}{path}")).send())
            .collect();
        let wanted = wanted.clone();
        async move {
            let mut text = String::new();
            for request in requests {
                text += &request.await.ok()?.text().await.ok()?;
            }
            let exported: std::collections::BTreeSet<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .collect();
            wanted.iter().all(|name| exported.contains(name.as_str())).then_some(())
        }
    })
    .await;
    drop(running);
    harness::kafka::delete_topics(&brokers, &format!("{prefix}.")).await;
    db.drop_db().await;
}

/// The series names the Grafana dashboard's queries read.
fn dashboard_series() -> Vec<String> {
    let path = Path::new(ROOT).join("helm/hookgate/dashboards/hookgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("hookgate_") || w.starts_with("process_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "the dashboard queries {names:?}");
    names
}

/// A Dockerfile instruction's arguments, continuation lines joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') && current.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    joined
        .into_iter()
        .filter_map(|line| {
            let (op, rest) = line.trim().split_once(char::is_whitespace)?;
            Some((op.to_ascii_uppercase(), rest.trim().to_owned()))
        })
        .collect()
}

/// The flags of a `cargo <subcommand>` invocation in a shell line, without
/// those that only choose targets or the profile.
fn cargo_flags(line: &str, subcommand: &str) -> Vec<String> {
    let start = line
        .find(&format!("cargo {subcommand} "))
        .unwrap_or_else(|| panic!("no cargo {subcommand} in {line}"));
    let words: Vec<&str> = line[start..]
        .split_whitespace()
        .skip(2)
        .take_while(|w| !matches!(*w, "&&" | "|" | "||" | ";" | "2>&1"))
        .collect();
    let mut flags = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        match word {
            "--release" | "--all-targets" | "--quiet" | "-q" => {}
            "--bin" | "--profile" | "--test" => {
                words.next();
            }
            w if w.starts_with("--bin=") || w.starts_with("--profile=") => {}
            w => flags.push(w.to_owned()),
        }
    }
    flags.sort();
    flags
}

fn version_tuple(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().expect("numeric version"));
    (parts.next().expect("major"), parts.next().unwrap_or(0))
}

#[test]
fn dockerfile_builds_like_the_suite_and_runs_as_the_chart_expects() {
    let instructions = dockerfile_instructions();
    let runs: Vec<&str> =
        instructions.iter().filter(|(op, _)| op == "RUN").map(|(_, rest)| rest.as_str()).collect();
    let build =
        runs.iter().find(|r| r.contains("cargo build")).expect("the Dockerfile runs cargo build");
    let suite =
        std::fs::read_to_string(Path::new(ROOT).join("scripts/test")).expect("scripts/test");
    let suite_test = suite
        .lines()
        .find(|l| l.trim_start().starts_with("cargo test "))
        .expect("scripts/test runs cargo test");
    // Same lock and features; only the profile and the targets differ.
    assert_eq!(
        cargo_flags(build, "build"),
        cargo_flags(suite_test, "test"),
        "Dockerfile: {build}\nscripts/test: {suite_test}"
    );
    for line in [*build, suite_test] {
        assert!(line.contains("--locked"), "{line} does not build from Cargo.lock");
    }
    assert!(
        build.contains("--bin hookgate") && build.contains("target/release/hookgate"),
        "{build}"
    );

    let args: BTreeMap<&str, &str> = instructions
        .iter()
        .filter(|(op, _)| op == "ARG")
        .filter_map(|(_, rest)| rest.split_once('='))
        .collect();
    let rust = args.get("RUST_VERSION").expect("ARG RUST_VERSION=…");
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).expect("Cargo.toml");
    let minimum = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("rust-version");
    assert!(
        version_tuple(rust) >= version_tuple(minimum),
        "rust {rust} is older than rust-version {minimum}"
    );

    let last = |op: &str| {
        instructions
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, rest)| rest.clone())
            .unwrap_or_default()
    };
    assert_eq!(last("ENTRYPOINT"), r#"["hookgate"]"#, "the chart passes only the role as argument");
    assert_eq!(last("USER"), "10001:10001", "the chart's runAsUser");
    assert_eq!(last("EXPOSE"), CONTAINER_PORT.to_string());
    assert!(
        instructions
            .iter()
            .any(|(op, rest)| op == "COPY" && rest.ends_with("/usr/local/bin/hookgate")),
        "the binary goes to /usr/local/bin/hookgate, on PATH"
    );
    // sqlx::migrate! embeds migrations/ at build time.
    assert!(instructions.iter().any(|(op, rest)| op == "COPY" && rest.starts_with("migrations")));
    let chart = render(&[], &[]);
    for workload in workloads(&chart) {
        let run_as = &workload.pod["securityContext"]["runAsUser"];
        assert_eq!(run_as.as_u64(), Some(10001), "{}: runAsUser", workload.name);
    }
}
