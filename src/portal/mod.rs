//! The consumer portal, served by the API role under `/portal`: tenants
//! manage their webhooks in a browser, without curl.
//!
//! An admin's `POST /v1/tenants/{id}/portal-links` (or the admin view) →
//! a one-time link → `session::login` swaps it for a session cookie → each
//! page checks the session (`session::Viewer`; a change also its CSRF token
//! and origin, `session::Change`) → calls the REST API in-process as the
//! session's caller (`bridge::Api`), so that the portal can do nothing the
//! tenant's API key could not → renders HTML (maud, `page`), the API's
//! problems as readable messages. Pages: `subscriptions` (with attempts,
//! health, tests and secrets), `catalogue`, `dead_letters` (with bulk
//! replays), `admin`.
//!
//! No script: plain forms and links, so every page works without
//! JavaScript and the Content-Security-Policy allows none.

mod admin;
mod bridge;
mod catalogue;
mod dead_letters;
mod page;
mod session;
mod subscriptions;

use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use crate::api::AppState;
use page::PortalError;

/// What every portal handler has: the API's state (store, limits) and the
/// API's router, which the pages call (`bridge`).
#[derive(Debug, Clone)]
pub struct PortalState {
    pub app: AppState,
    pub api: Router,
    /// Cookies are `Secure` when the public URL is `https://`.
    pub secure_cookies: bool,
}

const CSS: &str = include_str!("assets/portal.css");
const ICON: &str = include_str!("assets/icon.svg");

/// No script, no inline style, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The REST API and, under `/portal`, the portal that calls it.
pub fn with_api(state: AppState) -> Router {
    let api = crate::api::router(state.clone());
    api.clone().merge(router(state, api))
}

fn router(app: AppState, api: Router) -> Router {
    let secure_cookies = app.public_url.as_deref().is_some_and(|url| url.starts_with("https://"));
    let state = PortalState { app, api, secure_cookies };
    Router::new()
        .route("/portal", get(home))
        .route("/portal/", get(home))
        .route("/portal/assets/portal.css", get(css))
        .route("/portal/assets/icon.svg", get(icon))
        .route("/portal/login", get(session::login_page).post(session::login))
        .route("/portal/logout", post(session::logout))
        .route("/portal/signed-out", get(session::signed_out))
        .route("/portal/admin/login", get(session::admin_login_page).post(session::admin_login))
        .merge(subscriptions::routes())
        .merge(catalogue::routes())
        .merge(dead_letters::routes())
        .merge(admin::routes())
        .route("/portal/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

async fn home(viewer: Result<session::Viewer, PortalError>) -> Response {
    match viewer {
        Ok(viewer) if viewer.is_admin() => page::see_other("/portal/admin"),
        Ok(_) => page::see_other("/portal/subscriptions"),
        Err(error) => error.into_response(),
    }
}

async fn css() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

async fn icon() -> impl IntoResponse {
    ([(CONTENT_TYPE, "image/svg+xml")], ICON)
}

async fn not_found() -> Response {
    let body = html! {
        p { "There is no such page in the portal." }
        p { a href="/portal" { "Back to the portal" } }
    };
    (axum::http::StatusCode::NOT_FOUND, page::bare("Page not found", body)).into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Links carry one-time tokens: they are not passed on to other sites.
    // (`no-referrer` would make the browser send `Origin: null` with forms.)
    headers.entry(REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
