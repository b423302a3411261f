//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, `hookgate serve` exports
//! the publish, fan-out and delivery spans of an event in the trace of the
//! publishing request, and the webhook carries a `traceparent` of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::process::ServeProcess;
use crate::harness::{eventually, TestApp, TestReceiver, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP collector stub: keeps the spans of every export.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/v1/traces", post(export)).with_state(Arc::clone(&spans));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, spans, task }
    }

    fn spans_of(&self, trace_id: &str) -> Vec<ExportedSpan> {
        let spans = self.spans.lock().expect("lock");
        spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export(State(spans): State<Arc<Mutex<Vec<ExportedSpan>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut spans = spans.lock().expect("lock");
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    ""
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..bytes * 2].to_owned()
}

/// `00-<trace id>-<span id>-<flags>` → (trace id, span id).
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "traceparent {value:?}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// `hookgate serve` with `env`, beside the harness's app (its database and
/// topics; the dispatcher runs in the process under test), and a receiver
/// subscribed to every event.
async fn serve_to_a_receiver(
    name: &str,
    env: &[(&str, &str)],
) -> (TestApp, ServeProcess, TestReceiver) {
    let mut settings = None;
    let app = TestApp::spawn_with(name, |config| settings = config.dispatcher.take()).await;
    let dispatcher = settings.expect("the harness's dispatcher settings");
    let serve = ServeProcess::start(&app.config, &dispatcher, env).await;
    let receiver = TestReceiver::start().await;
    let created = reqwest::Client::new()
        .post(serve.url("/v1/subscriptions"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": receiver.url, "event_types": ["*"]}))
        .send()
        .await
        .expect("create subscription");
    assert_eq!(created.status(), 201);
    (app, serve, receiver)
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_delivery_spans_are_one_trace_that_reaches_the_receiver() {
    let collector = Collector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_SERVICE_NAME", "hookgate-under-test"),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (app, serve, receiver) = serve_to_a_receiver("traces", &env).await;
    let client = reqwest::Client::new();

    // The publisher's own trace: hookgate's spans continue it.
    let (trace_id, publisher_span) = (random_hex(16), random_hex(8));
    let published = client
        .post(serve.url("/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("traceparent", format!("00-{trace_id}-{publisher_span}-01"))
        .json(&json!({"type": "order.created", "data": {"n": 1}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);
    let webhook = receiver.wait_for(1, DEADLINE).await.remove(0);
    let (webhook_trace, webhook_parent) = parse_traceparent(webhook.header("traceparent"));
    assert_eq!(webhook_trace, trace_id, "the webhook continues the publisher's trace");

    let spans = eventually("publish, fan-out and delivery spans exported", DEADLINE, || async {
        let spans = collector.spans_of(&trace_id);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        ["publish", "fan-out", "deliver"].iter().all(|n| names.contains(n)).then_some(spans)
    })
    .await;
    let span = |name: &str| spans.iter().find(|s| s.name == name).expect("span").clone();
    let (publish, fan_out, deliver) = (span("publish"), span("fan-out"), span("deliver"));
    assert_eq!(publish.parent_span_id, publisher_span);
    assert_eq!(fan_out.parent_span_id, publish.span_id);
    assert_eq!(deliver.parent_span_id, fan_out.span_id);
    assert_eq!(webhook_parent, deliver.span_id, "the receiver's parent is the attempt span");
    assert!(publish.service.contains("hookgate-under-test"), "{publish:?}");

    // A malformed traceparent is no error: a new trace starts.
    let published = client
        .post(serve.url("/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("traceparent", format!("00-{trace_id}-not-a-span-id"))
        .json(&json!({"type": "order.created", "data": {"n": 2}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);
    let second = receiver.wait_for(2, DEADLINE).await.remove(1);
    let (second_trace, _) = parse_traceparent(second.header("traceparent"));
    assert_ne!(second_trace, trace_id);
    assert_ne!(second_trace, "0".repeat(32));

    serve.stop().await;
    app.stop().await;
}

/// Without an exporter there are no OpenTelemetry spans: hookgate passes the
/// publisher's trace context on unchanged, and starts one when there is none
/// (or it is malformed), so every webhook still carries a `traceparent`.
#[tokio::test(flavor = "multi_thread")]
async fn without_an_exporter_the_webhook_carries_the_publishers_traceparent_unchanged() {
    let (app, serve, receiver) = serve_to_a_receiver("traces_off", &[]).await;
    let client = reqwest::Client::new();

    let publisher = format!("00-{}-{}-01", random_hex(16), random_hex(8));
    let publishes = [Some(publisher.clone()), None, Some(format!("00-{}-zz-01", random_hex(16)))];
    for (n, traceparent) in publishes.iter().enumerate() {
        let mut request = client
            .post(serve.url("/v1/events"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"type": "order.created", "key": "one", "data": {"n": n}}));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        assert_eq!(request.send().await.expect("publish").status(), 202);
    }
    let webhooks = receiver.wait_for(3, DEADLINE).await;
    let by_n = |n: u64| {
        let webhook = webhooks
            .iter()
            .find(|w| w.json()["data"]["n"] == n)
            .unwrap_or_else(|| panic!("webhook {n}"));
        webhook.header("traceparent").to_owned()
    };
    assert_eq!(by_n(0), publisher, "passed on unchanged");
    let (fresh, _) = parse_traceparent(&by_n(1));
    let (replaced, _) = parse_traceparent(&by_n(2));
    assert_ne!(fresh, "0".repeat(32));
    assert_ne!(fresh, replaced, "a trace of its own for each event");
    assert!(!publishes[2].as_deref().unwrap_or_default().contains(&replaced));

    serve.stop().await;
    app.stop().await;
}
