//! `/healthz` (the process runs, and its dispatcher stages make progress) and
//! `/readyz` (it can reach its database and Kafka, so it can take traffic):
//! the checks of `crate::health`, which the dispatcher's probe server
//! answers too, as API errors.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::ApiError;
use super::responses::problems;
use super::AppState;
use crate::health::{self, Down, Health};

problems! {
    NotLive: 503 "A dispatcher stage of this process is stuck or failed (named in `detail`); the process is exiting",
        header "Retry-After": u32 = "Seconds to wait";
    NotReady: 503 "The database or Kafka is not reachable",
        header "Retry-After": u32 = "Seconds to wait";
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "The process runs", body = Health),
        NotLive,
    ))]
pub async fn healthz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    health::check_live(&state.liveness).map(axum::Json).map_err(unavailable)
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database and Kafka are reachable", body = Health),
        NotReady,
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    let ready = health::check_ready(state.store.as_ref(), &state.producer).await;
    ready.map(axum::Json).map_err(unavailable)
}

fn unavailable(down: Down) -> ApiError {
    ApiError::Unavailable { detail: down.detail, retry_after_secs: down.retry_after_secs }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}
