//! `/healthz` (the process runs, and its dispatcher stages make progress) and
//! `/readyz` (it can reach its database and Kafka, so it can take traffic).

use std::time::Duration;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{ApiError, Problem};
use super::AppState;
use crate::dispatcher::watchdog::Liveness;
use crate::kafka::Producer;
use crate::store::Store;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "The process runs", body = Health),
        (status = 503, description = "A dispatcher stage of this process is stuck or failed (named in `detail`); the process is exiting", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn healthz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    check_live(&state.liveness)
}

/// Live unless a dispatcher stage of this process is stuck or failed; the
/// dispatcher's `/healthz` too.
pub fn check_live(liveness: &Liveness) -> Result<axum::Json<Health>, ApiError> {
    match liveness.unhealthy() {
        None => Ok(axum::Json(Health { status: "ok" })),
        Some(unhealthy) => Err(ApiError::Unavailable {
            detail: format!("{unhealthy}; the process is exiting to be restarted"),
            retry_after_secs: 5,
        }),
    }
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The database and Kafka are reachable", body = Health),
        (status = 503, description = "The database or Kafka is not reachable", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    check_ready(state.store.as_ref(), &state.producer).await
}

/// Ready when the database and Kafka answer; the dispatcher's `/readyz` too.
pub async fn check_ready(
    store: &dyn Store,
    producer: &Producer,
) -> Result<axum::Json<Health>, ApiError> {
    let unready = |what: &str| ApiError::Unavailable {
        detail: format!("{what} is not reachable"),
        retry_after_secs: 1,
    };
    match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            return Err(unready("the database"));
        }
        Err(_) => return Err(unready("the database")),
    }
    if let Err(error) = producer.check_connection(CHECK_TIMEOUT).await {
        tracing::warn!(%error, "readiness: kafka check failed");
        return Err(unready("Kafka"));
    }
    Ok(axum::Json(Health { status: "ready" }))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}
