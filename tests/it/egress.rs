//! Egress rules, end to end: where deliveries may go whatever the process's
//! environment says, what an operator's networks change, and what the API
//! refuses at once. Only loopback is ever contacted: refused destinations
//! are names that resolve to loopback, or literal addresses refused before
//! any connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate::config::EgressRules;
use hookgate::delivery::egress::REFUSED;
use hookgate::domain::Outcome;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::kafka::{headers_of, read_topic};
use crate::harness::process::command;
use crate::harness::{error_fields, process_dispatcher, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

/// A loopback listener standing in for a proxy: counts connections and, when
/// `answer`, reads each request head and answers 200.
struct FakeProxy {
    url: String,
    connections: Arc<AtomicUsize>,
    request_lines: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    async fn start(answer: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let request_lines = Arc::new(Mutex::new(Vec::new()));
        let (count, lines) = (Arc::clone(&connections), Arc::clone(&request_lines));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if !answer {
                    continue; // dropped: the connection closes at once
                }
                let lines = Arc::clone(&lines);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    lines.lock().expect("lock").push(text.lines().next().unwrap_or("").to_owned());
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Self { url, connections, request_lines }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn port_of(url: &str) -> &str {
    url.rsplit(':').next().expect("a port")
}

#[tokio::test(flavor = "multi_thread")]
async fn literal_refused_addresses_and_proxy_headers_are_refused_at_creation() {
    let app =
        // No dispatcher: even if a refusal broke, nothing would be sent.
        TestApp::spawn_with("egress-422", |config| {
            config.egress = EgressRules::default();
            config.dispatcher = None;
        })
        .await;
    // Loopback forms only: the other classes are checked without
    // connecting (`hookgate::delivery::egress` unit tests).
    let refused = [
        "http://127.0.0.1:8080/",
        "http://127.9.9.9/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
    ];
    for url in refused {
        let response =
            app.post_json("/v1/subscriptions", json!({"url": url, "event_types": ["*"]})).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let problem: serde_json::Value = response.json().await.expect("problem");
        assert_eq!(error_fields(&problem), ["url"], "{url}: {problem}");
        // The same words whatever the class: nothing maps the network.
        assert_eq!(problem["errors"][0]["message"], REFUSED, "{url}: {problem}");
    }
    for header in ["Proxy-Authorization", "Connection", "Keep-Alive", "X-Forwarded-For", "Via"] {
        let body = json!({"url": "https://example.com/hook", "event_types": ["*"], "headers": {header: "x"}});
        let response = app.post_json("/v1/subscriptions", body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{header}");
    }

    // A PATCH to a refused address is refused too, and changes nothing.
    let created =
        app.subscribe(json!({"url": "https://example.com/hook", "event_types": ["*"]})).await;
    let id = created["id"].as_str().expect("id");
    let path = format!("/v1/subscriptions/{id}");
    let patch = Some(json!({"url": "http://127.0.0.2/"}));
    let (status, problem) = app.call(reqwest::Method::PATCH, &path, ADMIN_TOKEN, patch).await;
    assert_eq!(status, 422, "{problem}");
    let (_, now) = app.call(reqwest::Method::GET, &path, ADMIN_TOKEN, None).await;
    assert_eq!(now["url"], "https://example.com/hook");
    let (_, list) = app.call(reqwest::Method::GET, "/v1/subscriptions", ADMIN_TOKEN, None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "only the allowed one: {list}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_resolve_to_refused_addresses_are_dead_lettered() {
    let app =
        TestApp::spawn_with("egress-names", |config| config.egress = EgressRules::default()).await;
    let receiver = TestReceiver::start().await;
    let port = port_of(&receiver.url).to_owned();
    let targets = [format!("http://localhost:{port}/"), format!("https://localhost:{port}/")];
    for url in &targets {
        app.subscribe(json!({"url": url, "event_types": ["*"]})).await;
    }
    let event = app.publish(json!({"type": "a.b", "data": {}})).await;
    let dead = read_topic(&app.kafka.brokers, &app.topics.dlq, targets.len(), DEADLINE).await;
    for record in &dead {
        let headers = headers_of(record);
        assert_eq!(headers["hookgate_reason"], "forbidden_destination", "{headers:?}");
        assert_eq!(headers["hookgate_error"], REFUSED, "{headers:?}");
    }
    let attempts = app.attempts_for(&event, DEADLINE).await;
    assert!(attempts.iter().all(|a| a.error.as_deref() == Some(REFUSED)), "{attempts:?}");
    assert!(receiver.received().is_empty(), "nothing reached the loopback receiver");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_from_the_environment_are_ignored() {
    // The API in process, the dispatcher as a process of its own with every
    // proxy variable pointing at a loopback listener.
    let app = TestApp::spawn_with("egress-env-proxy", |config| {
        config.dispatcher = None;
        config.egress = EgressRules::default();
    })
    .await;
    let proxy = FakeProxy::start(false).await;
    let receiver = TestReceiver::start().await;
    let port = port_of(&receiver.url).to_owned();
    let targets = [format!("http://localhost:{port}/"), format!("https://localhost:{port}/")];
    for url in &targets {
        app.subscribe(json!({"url": url, "event_types": ["*"]})).await;
    }
    let mut dispatcher =
        command("dispatcher", &app.config, &process_dispatcher(Duration::from_secs(5)));
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
    {
        dispatcher.env(name, &proxy.url);
    }
    let mut dispatcher =
        dispatcher.env_remove("NO_PROXY").env_remove("no_proxy").spawn().expect("start");
    app.publish(json!({"type": "a.b", "data": {}})).await;
    let dead = read_topic(&app.kafka.brokers, &app.topics.dlq, targets.len(), DEADLINE).await;
    for record in &dead {
        let headers = headers_of(record);
        assert_eq!(headers["hookgate_reason"], "forbidden_destination", "{headers:?}");
    }
    assert_eq!(proxy.connections(), 0, "nothing went to the environment's proxy");
    assert!(receiver.received().is_empty(), "nothing reached the receiver");
    let _ = dispatcher.kill().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_deny_rule_refuses_what_private_targets_would_allow() {
    let app = TestApp::spawn_with("egress-deny", |config| {
        config.egress = EgressRules {
            allow_private: true,
            denied_networks: vec![
                "127.0.0.0/8".parse().expect("net"),
                "::1/128".parse().expect("net"),
            ],
            ..EgressRules::default()
        };
    })
    .await;
    let receiver = TestReceiver::start().await;
    let response = app
        .post_json("/v1/subscriptions", json!({"url": receiver.url, "event_types": ["*"]}))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "a literal denied address");

    let named = format!("http://localhost:{}/", port_of(&receiver.url));
    app.subscribe(json!({"url": named, "event_types": ["*"]})).await;
    app.publish(json!({"type": "a.b", "data": {}})).await;
    let dead = read_topic(&app.kafka.brokers, &app.topics.dlq, 1, DEADLINE).await;
    assert_eq!(headers_of(&dead[0])["hookgate_reason"], "forbidden_destination");
    assert!(receiver.received().is_empty(), "the denied loopback receiver got nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_egress_proxy_carries_every_delivery_unresolved() {
    let proxy = FakeProxy::start(true).await;
    let proxy_url = url::Url::parse(&proxy.url).expect("url");
    let app = TestApp::spawn_with("egress-proxy", |config| {
        config.egress = EgressRules { proxy: Some(proxy_url), ..EgressRules::default() };
    })
    .await;
    // A name nobody resolves here: only the proxy would.
    app.subscribe(json!({"url": "http://receiver.example/hook", "event_types": ["*"]})).await;
    let event = app.publish(json!({"type": "a.b", "data": {}})).await;
    let attempts = app.attempts_for(&event, DEADLINE).await;
    assert_eq!(attempts[0].outcome, Outcome::Success, "{attempts:?}");
    let lines = proxy.request_lines.lock().expect("lock").clone();
    assert_eq!(
        lines,
        ["POST http://receiver.example/hook HTTP/1.1"],
        "absolute form, to the proxy"
    );
    app.stop().await;
}
