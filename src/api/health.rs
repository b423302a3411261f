//! `/healthz` (the process runs) and `/readyz` (it can reach its database and
//! Kafka, so it can take traffic).

use std::time::Duration;

use axum::extract::State;
use serde::Serialize;

use super::problem::ApiError;
use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
}

pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Health>, ApiError> {
    let unready = |what: &str| ApiError::Unavailable {
        detail: format!("{what} is not reachable"),
        retry_after_secs: 1,
    };
    match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            return Err(unready("the database"));
        }
        Err(_) => return Err(unready("the database")),
    }
    if let Err(error) = state.producer.check_connection(CHECK_TIMEOUT).await {
        tracing::warn!(%error, "readiness: kafka check failed");
        return Err(unready("Kafka"));
    }
    Ok(axum::Json(Health { status: "ready" }))
}
