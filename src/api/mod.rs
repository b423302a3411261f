//! The REST API (axum): requests → `auth::Caller` → handlers per resource →
//! store (subscriptions) or Kafka producer (events). Errors leave as
//! problem+json through `problem::ApiError`.

pub mod auth;
pub mod events;
pub mod extract;
pub mod health;
pub mod problem;
pub mod subscriptions;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kafka::Producer;
use crate::store::Store;
use problem::ApiError;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub producer: Producer,
    pub admin_tokens: Arc<[String]>,
    pub publish_topic: Arc<str>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/subscriptions", post(subscriptions::create))
        .route("/v1/subscriptions/{id}", get(subscriptions::get))
        .route("/v1/events", post(events::publish))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves until `shutdown` is cancelled, then finishes the requests under way.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
