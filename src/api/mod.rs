//! The REST API (axum): requests → `auth::Caller` (admin token or tenant
//! key) → handlers per resource → store (tenants, subscriptions, event types,
//! idempotency records, attempts, dead letters, replay jobs) or Kafka
//! producer (events, single replays). Errors leave as problem+json through
//! `problem::ApiError`, their 5xx causes logged once by `problem::log_causes`.
//!
//! Each resource file ends with its `router()`: its routes with their
//! OpenAPI operations (utoipa-axum). `resources` merges them, the one list
//! of resources; `openapi` adds what they share.

pub mod auth;
pub mod dead_letters;
pub mod event_types;
pub mod events;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod openapi;
pub mod pagination;
pub mod portal_links;
pub mod precondition;
pub mod problem;
pub mod quota;
pub mod replays;
pub mod responses;
mod schemas;
pub mod subscription_actions;
pub mod subscriptions;
pub mod tenants;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{EgressRules, Quotas, ServerLimits, SubscriptionLimits, Topics};
use crate::delivery;
use crate::health::Liveness;
use crate::kafka::operational::OperationalEvents;
use crate::kafka::Producer;
use crate::metrics::Metrics;
use crate::store::Store;
use problem::ApiError;

/// The largest request body accepted (a batch of events included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time limit of a `POST /v1/subscriptions/{id}/test` webhook.
const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long requests under way may take to finish, unless
/// configured (`HOOKGATE_CONNECTION_DRAIN_TIMEOUT`): the longest a handler
/// takes (a test send); a client slower than that loses its connection.
pub const DRAIN: Duration = Duration::from_secs(TEST_REQUEST_TIMEOUT.as_secs() + 1);
/// A test send shows its answer, whatever it was.
const TEST_EXCERPTS: delivery::Excerpts = delivery::Excerpts { cap: 4096, of_successes: true };

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub producer: Producer,
    pub admin_tokens: Arc<[String]>,
    pub publish_topic: Arc<str>,
    /// Where replayed dead letters go.
    pub deliveries_topic: Arc<str>,
    /// Tells tenants of the status changes their API calls make.
    pub operational: OperationalEvents,
    pub schemas: Arc<event_types::SchemaCache>,
    /// Sends test webhooks, as the dispatcher sends them; the test send
    /// writes its attempt itself.
    pub test_client: Arc<delivery::Client>,
    pub egress: Arc<EgressRules>,
    pub metrics: Arc<Metrics>,
    pub limits: SubscriptionLimits,
    /// What one tenant may take; the rate quotas' buckets.
    pub limiters: Arc<quota::Limiters>,
    /// The health of the dispatcher stages run beside the API (`serve`).
    pub liveness: Arc<Liveness>,
    /// Where clients reach this API (`HOOKGATE_PUBLIC_URL`), for the links
    /// it hands out; unset: the host a request named.
    pub public_url: Option<Arc<str>>,
}

impl AppState {
    /// `egress` as for the dispatcher: test sends go where deliveries may
    /// go, and subscriptions name no address the rules refuse.
    pub fn new(
        store: Arc<dyn Store>,
        producer: Producer,
        admin_tokens: Vec<String>,
        topics: &Topics,
        egress: Arc<EgressRules>,
        metrics: Arc<Metrics>,
    ) -> reqwest::Result<Self> {
        let test_client =
            delivery::Client::new(Arc::clone(&egress), TEST_REQUEST_TIMEOUT, TEST_EXCERPTS)?;
        Ok(Self {
            store,
            operational: OperationalEvents::new(producer.clone(), &topics.operational),
            producer,
            admin_tokens: admin_tokens.into(),
            publish_topic: topics.publish.as_str().into(),
            deliveries_topic: topics.deliveries.as_str().into(),
            schemas: Arc::default(),
            test_client: Arc::new(test_client),
            egress,
            metrics,
            limits: SubscriptionLimits::default(),
            limiters: quota::Limiters::new(Quotas::default()),
            liveness: Liveness::new(),
            public_url: None,
        })
    }

    pub fn with_quotas(self, quotas: Quotas) -> Self {
        Self { limiters: quota::Limiters::new(quotas), ..self }
    }

    pub fn quotas(&self) -> &Quotas {
        &self.limiters.quotas
    }

    pub fn with_limits(self, limits: SubscriptionLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn with_liveness(self, liveness: Arc<Liveness>) -> Self {
        Self { liveness, ..self }
    }

    pub fn with_public_url(self, public_url: Option<&url::Url>) -> Self {
        Self { public_url: public_url.map(|url| url.as_str().trim_end_matches('/').into()), ..self }
    }
}

/// Every resource's routes and operations: a new resource is its file's
/// `router()` and one line here.
fn resources() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(tenants::router())
        .merge(portal_links::router())
        .merge(subscriptions::router())
        .merge(subscription_actions::router())
        .merge(event_types::router())
        .merge(events::router())
        .merge(dead_letters::router())
        .merge(replays::router())
}

/// The documented routes, and the document they make (`openapi::ApiDoc`).
pub(crate) fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = resources().split_for_parts();
    openapi::secure_v1(&mut doc);
    (routes, doc)
}

pub fn router(state: AppState) -> Router {
    let (routes, doc) = documented();
    // Rendered once: the document is the same for every request.
    let doc = bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    let openapi_json = move || {
        let doc = doc.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }
    };
    routes
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // For `events::observe_publish`, a layer that cannot see the state.
        .layer(Extension(Arc::clone(&state.metrics)))
        .layer(axum::middleware::from_fn(problem::log_causes))
        .with_state(state)
}

/// The current time at the database's precision (microseconds), so that an
/// answer shows the same timestamps as a later read.
pub(crate) fn now() -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    state.metrics.response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves `app` (this API's `router`, with what else the role serves
/// beside it: `crate::portal::with_api`) until `shutdown` is cancelled within
/// `limits` (`server::serve`), then finishes the requests under way. Purges expired idempotency keys,
/// portal links and sessions, and idle rate buckets meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let purge = tokio::spawn(purge_expired(Arc::clone(&state.store), shutdown.clone()));
    let clean_up = tokio::spawn(Arc::clone(&state.limiters).clean_up(shutdown.clone()));
    let served = crate::server::serve(listener, app, limits, shutdown).await;
    purge.abort();
    clean_up.abort();
    served
}

async fn purge_expired(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(idempotency::PURGE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match store.purge_idempotency(Utc::now() - idempotency::RETENTION).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(%error, "idempotency key purge failed"),
        }
        match store.purge_portal(Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired portal links and sessions purged"),
            Err(error) => tracing::warn!(%error, "portal link and session purge failed"),
        }
    }
}
