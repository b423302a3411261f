//! The servers' limits (issue 11): slow clients are cut off (headers, body,
//! whole request), connections are capped, shutdown does not wait for a
//! slow client longer than its drain, and the database cancels statements
//! that outlast `statement_timeout`.

use std::time::Duration;

use hookgate::store::PgStore;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::process::{command, ServeProcess};
use crate::harness::{
    process_dispatcher, unique, Reply, TestApp, TestDb, TestReceiver, ADMIN_TOKEN,
};

/// Room for scheduling on a busy machine, on top of a configured limit.
const SLACK: Duration = Duration::from_secs(3);

fn addr_of(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Writes `bytes` one at a time, `every` apart, until done or the server
/// closes the connection: a slow client.
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        // Keep the connection open: the server is the one to end it.
        std::future::pending::<()>().await;
    })
}

/// Reads until the server closes the connection (or resets it), at most
/// `limit`; answers what came and when the connection ended (`None`: still
/// open at `limit`).
async fn read_until_closed(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, reader.read(&mut buffer)).await {
            Err(_) => return (received, None),
            Ok(Ok(0) | Err(_)) => return (received, Some(started.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length` (the API sends one):
/// its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("a content length"))
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                return (status, body.into_owned());
            }
        }
        let n = stream.read(&mut buffer).await.expect("read the response");
        assert!(n > 0, "connection closed before a whole response: {received:?}");
        received.extend_from_slice(&buffer[..n]);
    }
}

fn healthz(addr: &str) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_sending_its_headers_a_byte_a_second_is_cut_off_at_the_header_read_timeout() {
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let app = TestApp::spawn_with("slow-headers", |config| {
        config.server.header_read_timeout = HEADER_READ_TIMEOUT;
    })
    .await;
    let addr = addr_of(&app);
    let (mut reader, writer) =
        TcpStream::connect(&addr).await.expect("connect to the API").into_split();
    let started = Instant::now();
    // Thirty seconds' worth of headers, were it let through.
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nx-slow: aaaaaaaaaa\r\n\r\n");
    let slow = trickle(writer, request.into_bytes(), Duration::from_secs(1));

    let (received, closed) = read_until_closed(&mut reader, HEADER_READ_TIMEOUT + SLACK).await;
    let closed = closed.unwrap_or_else(|| {
        panic!("still open {:?} after connecting", started.elapsed());
    });
    assert!(closed >= HEADER_READ_TIMEOUT / 2, "cut off at once ({closed:?}), not by the timeout");
    let answer = String::from_utf8_lossy(&received);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "closed without an answer, or with 408: {answer}"
    );
    slow.abort();

    // Everyone else is still served.
    let health = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_sent_a_byte_at_a_time_is_answered_408_at_the_body_timeout() {
    const BODY_TIMEOUT: Duration = Duration::from_secs(1);
    let app = TestApp::spawn_with("slow-body", |config| {
        config.server.body_timeout = BODY_TIMEOUT;
    })
    .await;
    let addr = addr_of(&app);
    let (mut reader, mut writer) =
        TcpStream::connect(&addr).await.expect("connect to the API").into_split();
    let body = json!({"type": "order.created", "data": {"pad": "x".repeat(200)}}).to_string();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.expect("send the headers");
    let started = Instant::now();
    // Every frame comes in time (a third of the limit apart), the whole
    // body never does: a timeout between frames would never fire.
    let slow = trickle(writer, body.into_bytes(), BODY_TIMEOUT / 3);

    let (received, closed) = read_until_closed(&mut reader, BODY_TIMEOUT + SLACK).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "408 after {took:?}: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(closed.is_some(), "the connection is closed after the 408: {answer}");
    slow.abort();
    // Nothing was published.
    assert_eq!(app.records_on(&app.topics.publish).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_longer_than_the_api_request_timeout_is_answered_503_problem_json() {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    let app = TestApp::spawn_with("slow-handler", |config| {
        config.server.request_timeout = REQUEST_TIMEOUT;
    })
    .await;
    // A test send waits for the receiver, which takes longer than the limit
    // (and than the test send's own 10 s).
    let receiver = TestReceiver::answering(|_, _| Reply {
        status: 204,
        retry_after_secs: None,
        delay: Duration::from_secs(30),
    })
    .await;
    let sub = app.subscribe(json!({"url": receiver.url, "event_types": ["order.*"]})).await;
    let id = sub["id"].as_str().expect("id");

    let started = Instant::now();
    let response = app
        .admin(app.client.post(app.url(&format!("/v1/subscriptions/{id}/test"))))
        .send()
        .await
        .expect("the API answers");
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(took < REQUEST_TIMEOUT + SLACK, "answered after {took:?}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(problem["code"], "unavailable");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("2s")), "{problem}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_connection_cap_a_new_connection_is_served_only_once_another_closes() {
    const CAP: usize = 2;
    let app = TestApp::spawn_with("connection-cap", |config| {
        config.server.max_connections = CAP;
        // Idle keep-alive connections stay for the length of the test.
        config.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = addr_of(&app);
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(&healthz(&addr)).await.expect("send");
        assert_eq!(read_response(&mut stream).await.0, 200, "served below the cap");
        held.push(stream);
    }

    // The kernel accepts it, the server does not serve it yet.
    let mut extra = TcpStream::connect(&addr).await.expect("connect (listen backlog)");
    extra.write_all(&healthz(&addr)).await.expect("send");
    let waiting = tokio::time::timeout(Duration::from_secs(1), read_response(&mut extra)).await;
    assert!(waiting.is_err(), "served over the cap: {waiting:?}");
    // Nor is a client like any other.
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        app.client.get(app.url("/healthz")).send(),
    )
    .await;
    assert!(blocked.is_err(), "a further client is served over the cap: {blocked:?}");

    // One connection closes: the waiting one is served.
    drop(held.pop());
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut extra))
        .await
        .expect("served once a connection closed");
    assert_eq!(status, 200, "answered after {:?}", started.elapsed());
    drop(held);
    drop(extra);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_within_the_drain_while_a_client_sends_its_headers_a_byte_a_second() {
    const DRAIN: Duration = Duration::from_secs(1);
    let db = TestDb::postgres().await;
    let topics = hookgate::config::Topics::under_prefix(&unique("slow-shutdown"), 1, 1);
    let config =
        hookgate::config::AppConfig { api: None, ..crate::harness::app_config(&db.url, topics) };
    // The API alone: its drain is the whole of the process's.
    let mut api = command("api", &config, &process_dispatcher(Duration::from_secs(2)));
    api.env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("HOOKGATE_CONNECTION_DRAIN_TIMEOUT", format!("{}ms", DRAIN.as_millis()))
        // Far longer than the test: only the drain can end the slow client.
        .env("HOOKGATE_HEADER_READ_TIMEOUT", "10m");
    let migrated = db.store().await;
    drop(migrated);
    let process = ServeProcess::spawn(api).await;
    let addr = process.base_url.trim_start_matches("http://").to_owned();
    let (mut reader, writer) = TcpStream::connect(&addr).await.expect("connect").into_split();
    let slow = trickle(writer, healthz(&addr), Duration::from_secs(1));
    // Connections are accepted in order: once a later one is answered, the
    // slow one is being served.
    let health = reqwest::get(process.url("/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 200);

    let started = Instant::now();
    process.signal("TERM");
    let promised = DRAIN + hookgate::shutdown::GRACE;
    let (status, output) = process.exited_within(promised + SLACK).await;
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM: {output}"));
    assert!(status.success(), "a slow client is no work left: {status}: {output}");
    assert!(took <= promised + Duration::from_secs(1), "exited after {took:?}: {output}");
    let (_, closed) = read_until_closed(&mut reader, Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the slow client's connection is closed: {output}");
    slow.abort();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_longer_than_the_database_statement_timeout_is_cancelled() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let db = TestDb::postgres().await;
    let store = PgStore::connect_with(&db.url, Some(TIMEOUT), hookgate::store::SecretKeys::none())
        .await
        .expect("connect");
    let shown: String =
        sqlx::query_scalar("SHOW statement_timeout").fetch_one(store.pool()).await.expect("SHOW");
    assert_eq!(shown, "200ms");

    let started = Instant::now();
    let error = sqlx::query("SELECT pg_sleep(5)")
        .execute(store.pool())
        .await
        .expect_err("cancelled at the timeout");
    let took = started.elapsed();
    let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("57014"), "query_canceled: {error}");
    assert!(took < Duration::from_secs(3), "cancelled after {took:?}");

    // Migrations run without it, on a connection that does not go back to
    // the pool: every pooled connection still has the timeout.
    hookgate::store::Backend::migrate(&store).await.expect("migrations");
    for _ in 0..3 {
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(store.pool())
            .await
            .expect("SHOW");
        assert_eq!(shown, "200ms", "after the migrations");
    }
    // A store without one (as `hookgate migrate` opens) lets it run.
    let plain =
        PgStore::connect(&db.url, hookgate::store::SecretKeys::none()).await.expect("connect");
    let shown: String =
        sqlx::query_scalar("SHOW statement_timeout").fetch_one(plain.pool()).await.expect("SHOW");
    assert_ne!(shown, "200ms");
    drop((store, plain));
    db.drop_db().await;
}

#[test]
fn a_bad_server_limit_stops_the_process_with_one_line_and_exit_2() {
    for (variable, value, mentions) in [
        ("HOOKGATE_MAX_CONNECTIONS", "0", "--max-connections"),
        ("HOOKGATE_HEADER_READ_TIMEOUT", "0s", "--header-read-timeout"),
        ("HOOKGATE_DB_STATEMENT_TIMEOUT", "ten seconds", "--db-statement-timeout"),
        ("HOOKGATE_BODY_TIMEOUT", "2h", "--body-timeout"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["api", "--database-url=postgres://x/y", "--kafka-brokers=k:9092"])
            .env_clear()
            .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(variable, value)
            .output()
            .expect("run hookgate");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(mentions), "{variable}={value}: {stderr}");
    }
}
