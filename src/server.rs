//! Serving a router over HTTP/1.1 within `ServerLimits`, for the API and
//! the dispatcher's ops endpoint: a connection permit → accept → hyper
//! connection with a header-read timeout → `bound` (request timeout, body
//! deadline) → the router. At shutdown: stop accepting, let connections
//! finish for `drain`, drop the rest.
//!
//! `axum::serve` hides hyper's connection builder, so it can neither set
//! the header-read timeout nor cap connections; this is its accept loop
//! with both. HTTP/1.1 only: hyper's header-read timeout guards HTTP/1
//! alone, and a cleartext HTTP/2 connection would slip past it (an ingress
//! in front still speaks HTTP/2 to clients).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::ServerLimits;

/// When the body of a request must have arrived: set by `bound`, kept to by
/// the body extractors (`api::extract`).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    pub at: Instant,
    pub limit: Duration,
}

/// Serves `app` on `listener` until `shutdown`, within `limits`; then lets
/// the requests under way finish for at most `limits.drain` and drops the
/// connections still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(limits, bound));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropping the set aborts what is left in it: nothing outlives `serve`.
    let mut connections = JoinSet::new();
    loop {
        // The permit first: beyond the cap, connections wait in the
        // kernel's listen backlog instead of taking memory and tasks here.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |mut request: Request<Incoming>| {
                // As `axum::serve(…into_make_service_with_connect_info)` would.
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(request.map(axum::body::Body::new))
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    // Finish the request under way, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // A client's doing (a header-read timeout, a reset): not ours to log loudly.
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    // New connections are refused from here on.
    drop(listener);
    let drained = tokio::time::timeout(limits.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout = ?limits.drain,
            "connections still open at the drain deadline; they are dropped"
        );
        connections.abort_all();
    }
    Ok(())
}

/// A connection that failed before it was accepted is the client's; any
/// other error (out of file descriptors) waits a moment, so that the loop
/// does not spin while it lasts.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Bounds a request: its body must arrive within `body_timeout` (408, from
/// the extractors), the whole of it, handler included, within
/// `request_timeout` (503). Our own middleware rather than tower-http's
/// timeout layers: those answer an empty body instead of problem+json, and
/// time a body between frames, which a client sending a byte a second never
/// trips.
async fn bound(State(limits): State<ServerLimits>, mut request: Request, next: Next) -> Response {
    let deadline =
        BodyDeadline { at: Instant::now() + limits.body_timeout, limit: limits.body_timeout };
    request.extensions_mut().insert(deadline);
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let took = humantime::format_duration(limits.request_timeout);
            let detail = format!("the request took longer than {took}; try again");
            let status = StatusCode::SERVICE_UNAVAILABLE;
            problem(status, "unavailable", "Service unavailable", &detail, Some(1))
        }
    }
}

/// A problem+json answer (RFC 9457) in the API's shape (`type`, `title`,
/// `status`, `detail`, `code`), for what is answered outside any API
/// handler: this server's timeouts, the dispatcher's probe server.
pub fn problem(
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: &str,
    retry_after_secs: Option<u32>,
) -> Response {
    #[derive(serde::Serialize)]
    struct Problem<'a> {
        #[serde(rename = "type")]
        kind: String,
        title: &'static str,
        status: u16,
        detail: &'a str,
        code: &'static str,
    }
    let kind = format!("urn:hookgate:problem:{code}");
    let body = Problem { kind, title, status: status.as_u16(), detail, code };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Some(seconds) = retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
