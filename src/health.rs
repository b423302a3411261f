//! Health, as every role answers it: live (the process runs, and its
//! dispatcher stages make progress: `Liveness`, which the stages' watchdogs
//! report to) and ready (its database and Kafka answer, so it can take
//! traffic). The API's `/healthz` and `/readyz` and the dispatcher's probe
//! server (`ops`) answer from here.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::kafka::Producer;
use crate::server::problem;
use crate::store::Store;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a stage stopped being healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    pub stage: &'static str,
    pub reason: String,
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dispatcher stage {} {}", self.stage, self.reason)
    }
}

/// What the process knows of its stages' health; `/healthz` answers it.
/// The first report stays: the process is on its way out.
#[derive(Debug, Default)]
pub struct Liveness {
    unhealthy: Mutex<Option<Unhealthy>>,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn unhealthy(&self) -> Option<Unhealthy> {
        self.unhealthy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers whether this is the first report (the one to act on).
    pub fn report(&self, unhealthy: Unhealthy) -> bool {
        let mut slot = self.unhealthy.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(unhealthy);
        true
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    status: &'static str,
}

/// Not live or not ready: a 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Down {
    pub detail: String,
    pub retry_after_secs: u32,
}

/// Live unless a dispatcher stage of this process is stuck or failed.
pub fn check_live(liveness: &Liveness) -> Result<Health, Down> {
    match liveness.unhealthy() {
        None => Ok(Health { status: "ok" }),
        Some(unhealthy) => Err(Down {
            detail: format!("{unhealthy}; the process is exiting to be restarted"),
            retry_after_secs: 5,
        }),
    }
}

/// Ready when the database and Kafka answer.
pub async fn check_ready(store: &dyn Store, producer: &Producer) -> Result<Health, Down> {
    let unready =
        |what: &str| Down { detail: format!("{what} is not reachable"), retry_after_secs: 1 };
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
    Ok(Health { status: "ready" })
}

impl Down {
    /// As the probe server answers it: 503 problem+json with `Retry-After`.
    pub fn problem(&self) -> Response {
        let (status, retry_after) = (StatusCode::SERVICE_UNAVAILABLE, Some(self.retry_after_secs));
        problem(status, "unavailable", "Service unavailable", &self.detail, retry_after)
    }
}

/// The probe server's answer to any other path.
pub fn no_such_route() -> Response {
    problem(StatusCode::NOT_FOUND, "not_found", "Not found", "no such route", None)
}

#[cfg(test)]
mod tests {
    use http::header;

    use super::*;

    #[test]
    fn the_first_report_stays() {
        let liveness = Liveness::default();
        assert_eq!(liveness.unhealthy(), None);
        let first = Unhealthy { stage: "deliver", reason: "is stuck".to_owned() };
        assert!(liveness.report(first.clone()));
        assert!(!liveness.report(Unhealthy { stage: "retry", reason: "too".to_owned() }));
        assert_eq!(liveness.unhealthy(), Some(first));
    }

    #[test]
    fn live_until_a_stage_is_reported_and_then_down_naming_it() {
        let liveness = Liveness::default();
        assert!(check_live(&liveness).is_ok());
        liveness.report(Unhealthy { stage: "deliver", reason: "is stuck".to_owned() });
        let down = check_live(&liveness).expect_err("a stuck stage");
        assert_eq!(down.retry_after_secs, 5);
        assert!(down.detail.starts_with("dispatcher stage deliver is stuck"), "{}", down.detail);
    }

    #[tokio::test]
    async fn the_probe_problems_are_problem_json_in_the_api_shape() {
        let down = Down { detail: "Kafka is not reachable".to_owned(), retry_after_secs: 1 };
        let response = down.problem();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("a body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            problem,
            serde_json::json!({
                "type": "urn:hookgate:problem:unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": "Kafka is not reachable",
                "code": "unavailable",
            })
        );
        assert_eq!(no_such_route().status(), StatusCode::NOT_FOUND);
    }
}
