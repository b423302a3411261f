//! A webhook receiver that records every request (with its arrival time and
//! how many were under way) and answers as the test tells it. The benchmark
//! (`benches/delivery/`) shares it, counting instead of recording.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The answer this request got.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// What the receiver answers, and after how long.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, retry_after_secs: None, delay: Duration::ZERO }
    }
}

type Responder = dyn Fn(usize, &serde_json::Value) -> Reply + Send + Sync;

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Whether requests are kept in `received` (else only counted).
    keep: bool,
    count: AtomicUsize,
    responder: Box<Responder>,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

pub struct TestReceiver {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TestReceiver {
    /// Answers 204 to everything.
    pub async fn start() -> Self {
        Self::answering(|_, _| Reply::status(204)).await
    }

    /// Answers request number `n` (from 0) with `body` as `responder` says.
    pub async fn answering(
        responder: impl Fn(usize, &serde_json::Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Box::new(responder), true).await
    }

    /// Like `answering`, but keeps no request, only their number (`count`):
    /// under load, where kept requests would be most of the memory measured.
    pub async fn counting(
        responder: impl Fn(usize, &serde_json::Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::serve(Box::new(responder), false).await
    }

    async fn serve(responder: Box<Responder>, keep: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            keep,
            count: AtomicUsize::new(0),
            responder,
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(record).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    /// How many requests came in (kept or not).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// The most requests that were under way at once.
    pub fn max_concurrency(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests came in and answers them all.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        super::eventually(&format!("{n} webhook(s) at the receiver"), deadline, || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_active.fetch_max(active, Ordering::SeqCst);
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let counted = shared.count.fetch_add(1, Ordering::SeqCst);
    let index = if shared.keep {
        let mut received = shared.received.lock().expect("lock");
        received.push(Received { headers, body, at, status: 0 });
        received.len() - 1
    } else {
        counted
    };
    let reply = (shared.responder)(index, &json);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if shared.keep {
        shared.received.lock().expect("lock")[index].status = reply.status;
    }
    shared.active.fetch_sub(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = (status, "receiver says hi").into_response();
    if let Some(seconds) = reply.retry_after_secs {
        response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
    }
    response
}
