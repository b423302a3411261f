//! The binary's start-up: a bad configuration ends it with one line and exit 2.

use std::process::Command;

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run hookgate")
}

fn assert_config_error(args: &[&str], mentions: &str) {
    let output = hookgate(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "exit code for {args:?}; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(mentions), "{stderr:?} mentions {mentions:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

const TOKEN: &str = "--admin-token=0123456789abcdef0123";

#[test]
fn bad_configuration_exits_2_with_one_line() {
    assert_config_error(
        &[
            "serve",
            "--listen",
            "not-an-address",
            "--database-url",
            "postgres://x/y",
            "--kafka-brokers",
            "k:9092",
            TOKEN,
        ],
        "--listen",
    );
    assert_config_error(
        &["serve", "--database-url", "postgres://x/y", "--kafka-brokers", " , ", TOKEN],
        "broker list is empty",
    );
    assert_config_error(&["api", "--kafka-brokers", "k:9092", TOKEN], "--database-url");
    assert_config_error(
        &[
            "serve",
            "--database-url",
            "postgres://x/y",
            "--kafka-brokers",
            "k:9092",
            "--admin-token",
            "sh0rt-s3cret",
        ],
        "at least 16",
    );
    let output = hookgate(&[
        "serve",
        "--database-url",
        "postgres://x/y",
        "--kafka-brokers",
        "k:9092",
        "--admin-token",
        "sh0rt-s3cret",
    ]);
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("sh0rt-s3cret"),
        "a rejected token is not echoed"
    );
    assert_config_error(
        &[
            "dispatcher",
            "--database-url",
            "postgres://x/y",
            "--kafka-brokers",
            "k:9092",
            "--retry-schedule",
            "5s,soon",
        ],
        "soon",
    );
    assert_config_error(&["listen", "--secret", "whsec_!!"], "--secret");
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["dispatcher", "--database-url", "postgres://x/y", "--kafka-brokers", "k:9092"])
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
        .output()
        .expect("run hookgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a bad OTLP endpoint: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
}

#[test]
fn unreachable_database_exits_2_without_leaking_the_password() {
    let output = hookgate(&[
        "serve",
        "--database-url",
        "postgres://user:hunter2secret@127.0.0.1:1/db",
        "--kafka-brokers",
        "127.0.0.1:1",
        TOKEN,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.contains("cannot connect to the database"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "the password is not shown: {stderr}");
}

#[test]
fn a_bad_secret_key_exits_2_with_one_line_that_does_not_repeat_it() {
    // Base64 of 16 bytes: a key is 32.
    let short = "c2hvcnQta2V5LXNlY3JldA==";
    for role in ["serve", "api", "dispatcher"] {
        let key = format!("--secret-key=a:{short}");
        let mut args =
            vec![role, "--database-url", "postgres://x/y", "--kafka-brokers", "k:9092", &key];
        if role != "dispatcher" {
            args.push(TOKEN);
        }
        assert_config_error(&args, "HOOKGATE_SECRET_KEY");
        assert!(!String::from_utf8_lossy(&hookgate(&args).stderr).contains(short), "{role}");
    }
    assert_config_error(
        &["secrets", "re-encrypt", "--database-url", "postgres://x/y"],
        "HOOKGATE_SECRET_KEY is not set",
    );
}

#[test]
fn the_shipped_binary_has_no_bench_subcommand() {
    // The benchmark is `cargo bench --bench delivery`, not an operator's command.
    let output = hookgate(&["--help"]);
    assert!(output.status.success(), "hookgate --help");
    let help = String::from_utf8_lossy(&output.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"serve"), "the command list is read: {help}");
    assert!(!commands.contains(&"bench"), "no bench in {commands:?}");
    assert_config_error(&["bench"], "unrecognized subcommand 'bench'");
}
