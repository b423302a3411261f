//! The dispatcher's HTTP endpoint (it serves no API): `GET /healthz` (live:
//! 503 once a stage is stuck or failed), `GET /readyz` (the database and
//! Kafka answer) and `GET /metrics`, for probes and scraping.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServerLimits;
use crate::health::{self, Liveness};
use crate::kafka::Producer;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Ops {
    pub store: Arc<dyn Store>,
    pub producer: Producer,
    pub metrics: Arc<Metrics>,
    pub liveness: Arc<Liveness>,
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { health::no_such_route() })
        .with_state(ops)
}

async fn healthz(State(ops): State<Ops>) -> Response {
    answer(health::check_live(&ops.liveness))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    answer(health::check_ready(ops.store.as_ref(), &ops.producer).await)
}

fn answer(checked: Result<health::Health, health::Down>) -> Response {
    match checked {
        Ok(healthy) => axum::Json(healthy).into_response(),
        Err(down) => down.problem(),
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    ops.metrics.response()
}

/// Serves until `shutdown` within the default limits, then for at most
/// their drain.
pub async fn serve(
    listener: TcpListener,
    ops: Ops,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_within(listener, ops, ServerLimits::default(), shutdown).await
}

/// Serves until `shutdown` within `limits` (the API's code path,
/// `server::serve`), then for at most `limits.drain`.
pub async fn serve_within(
    listener: TcpListener,
    ops: Ops,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::server::serve(listener, router(ops), limits, shutdown).await
}
