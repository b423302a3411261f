//! Who is looking: a session cookie (`hookgate_portal`) opened by a
//! one-time link (a tenant) or an admin token (the admin view), kept in the
//! store by its hash. Every change is a form post that carries the
//! session's CSRF token and comes from the portal's own pages
//! (`Sec-Fetch-Site`, `Origin`); the cookie is `SameSite=Strict` besides.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{COOKIE, HOST, REFERRER_POLICY, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::bridge::Api;
use super::page::{self, PortalError};
use super::PortalState;
use crate::api::auth::Caller;
use crate::domain::portal::{hash_secret, random_hex, PortalScope, PortalSecret, PortalSession};
use crate::domain::TenantId;

const COOKIE_NAME: &str = "hookgate_portal";
/// How long a session lasts, however it is used.
const SESSION_HOURS: i64 = 8;
/// The largest form the portal reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in viewer: the session, and the API as its caller.
#[derive(Debug)]
pub(super) struct Viewer {
    pub(super) scope: PortalScope,
    pub(super) csrf: String,
    pub(super) api: Api,
    session_hash: String,
}

impl Viewer {
    pub(super) fn tenant(&self) -> Option<&TenantId> {
        match &self.scope {
            PortalScope::Tenant { tenant, .. } => Some(tenant),
            PortalScope::Admin { .. } => None,
        }
    }

    pub(super) fn is_admin(&self) -> bool {
        matches!(self.scope, PortalScope::Admin { .. })
    }

    pub(super) fn read_only(&self) -> bool {
        matches!(self.scope, PortalScope::Tenant { read_only: true, .. })
    }
}

/// The one cookie of that name; two (one planted by a sibling domain, say)
/// count as none, so that nobody can choose the session a browser uses.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Whether `token` is one of the configured admin tokens, compared by their
/// SHA-256 so that neither their text nor their length shows in the timing.
pub(super) fn is_admin_token(known: &[String], token: &str) -> bool {
    let sent = Sha256::digest(token.as_bytes());
    known.iter().fold(false, |found, known| {
        found | bool::from(Sha256::digest(known.as_bytes()).ct_eq(&sent))
    })
}

impl FromRequestParts<PortalState> for Viewer {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, PortalError> {
        let cookie = cookie_value(&parts.headers, COOKIE_NAME).ok_or(PortalError::SignedOut)?;
        let session_hash = hash_secret(cookie);
        let session = state
            .app
            .store
            .portal_session(&session_hash, Utc::now())
            .await
            .map_err(PortalError::store)?
            .ok_or(PortalError::SignedOut)?;
        let caller = match &session.scope {
            PortalScope::Tenant { tenant, .. } => Caller::Tenant(tenant.clone()),
            // An admin session lasts while its token is configured.
            PortalScope::Admin { token_hash } => {
                let configured =
                    state.app.admin_tokens.iter().any(|t| hash_secret(t) == *token_hash);
                if !configured {
                    return Err(PortalError::SignedOut);
                }
                Caller::Admin
            }
        };
        Ok(Self {
            scope: session.scope,
            csrf: session.csrf_token,
            api: Api::new(state.api.clone(), caller, parts.headers.get(HOST).cloned()),
            session_hash,
        })
    }
}

/// The fields of a posted form, in order (a name may repeat).
#[derive(Debug, Default)]
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    #[cfg(test)]
    pub(super) fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The first value of `name`, trimmed; empty counts as absent.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    pub(super) fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Refuses a request another site made the browser send: browsers say so
/// in `Sec-Fetch-Site`, and older ones in `Origin`.
fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> Result<(), PortalError> {
    let refused = || {
        PortalError::Forbidden("This form was sent from another site, so it was refused. Open the portal and send it from there.".to_owned())
    };
    // What the browser says of the request's origin decides, when it says.
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok("same-origin" | "none") => Ok(()),
            _ => Err(refused()),
        };
    }
    if let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) {
        let expected = match public_url {
            Some(url) => url::Url::parse(url).ok().map(|u| u.origin().ascii_serialization()),
            // Behind a TLS proxy the browser's origin is https.
            None => headers.get(HOST).and_then(|h| h.to_str().ok()).and_then(|host| {
                [format!("http://{host}"), format!("https://{host}")]
                    .into_iter()
                    .find(|expected| expected == origin)
            }),
        };
        if expected.as_deref() != Some(origin) {
            return Err(refused());
        }
    }
    Ok(())
}

async fn read_form(body: axum::body::Body) -> Result<Form, PortalError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PortalError::BadForm("The form is too large.".to_owned()))?;
    serde_urlencoded::from_bytes(&bytes)
        .map(Form)
        .map_err(|_| PortalError::BadForm("The form could not be read.".to_owned()))
}

/// A form posted from the portal's pages in this session, whatever the
/// session may change (signing out is such a post).
#[derive(Debug)]
pub(super) struct Posted {
    pub(super) viewer: Viewer,
    pub(super) form: Form,
}

impl FromRequest<PortalState> for Posted {
    type Rejection = PortalError;

    async fn from_request(request: Request, state: &PortalState) -> Result<Self, PortalError> {
        let (mut parts, body) = request.into_parts();
        same_origin(&parts.headers, state.app.public_url.as_deref())?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let form = read_form(body).await?;
        let sent = form.get("_csrf").unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
            return Err(PortalError::Forbidden(
                "This form has expired or did not come from this portal. Reload the page and try again."
                    .to_owned(),
            ));
        }
        Ok(Self { viewer, form })
    }
}

/// A change: a `Posted` form of a session that may change things.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) viewer: Viewer,
    pub(super) form: Form,
}

impl FromRequest<PortalState> for Change {
    type Rejection = PortalError;

    async fn from_request(request: Request, state: &PortalState) -> Result<Self, PortalError> {
        let Posted { viewer, form } = Posted::from_request(request, state).await?;
        if viewer.read_only() {
            return Err(PortalError::Forbidden(
                "This portal link is read-only: ask for a link that may make changes.".to_owned(),
            ));
        }
        Ok(Self { viewer, form })
    }
}

/// The hidden field every form of the session carries.
pub(super) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(viewer.csrf); }
}

#[derive(Debug, Deserialize)]
pub(super) struct LinkQuery {
    token: Option<String>,
}

/// `GET /portal/login?token=…`: a button that opens the session. The
/// token is used up only by the post, so that a mail scanner or a preview
/// that fetches the link does not spend it.
pub(super) async fn login_page(Query(query): Query<LinkQuery>) -> Response {
    let Some(token) = query.token.filter(|t| !t.is_empty() && t.len() <= 128) else {
        return PortalError::BadLink.into_response();
    };
    let page = page::bare(
        "Open your webhook portal",
        html! {
            p { "This link opens your webhook portal once. It cannot be used again." }
            form method="post" action="/portal/login" {
                input type="hidden" name="token" value=(token);
                button type="submit" class="primary" { "Open the portal" }
            }
        },
    );
    // The token is in this page's URL: its stylesheet is not told it.
    ([(REFERRER_POLICY, "no-referrer")], page).into_response()
}

/// `POST /portal/login`: uses the link up and starts the session.
pub(super) async fn login(
    State(state): State<PortalState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    match redeem(&state, &headers, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn redeem(
    state: &PortalState,
    headers: &HeaderMap,
    request: Request,
) -> Result<Response, PortalError> {
    same_origin(headers, state.app.public_url.as_deref())?;
    let form = read_form(request.into_body()).await?;
    let token = form.get("token").ok_or(PortalError::BadLink)?;
    // A session already in this browser ends: one browser, one session.
    if let Some(cookie) = cookie_value(headers, COOKIE_NAME) {
        state
            .app
            .store
            .end_portal_session(&hash_secret(cookie))
            .await
            .map_err(PortalError::store)?;
    }
    let now = Utc::now();
    let secret = PortalSecret::session();
    let expires_at = now + chrono::Duration::hours(SESSION_HOURS);
    let session = state
        .app
        .store
        .open_portal_session(&hash_secret(token), now, &secret.hash, &random_hex(), expires_at)
        .await
        .map_err(PortalError::store)?
        .ok_or(PortalError::BadLink)?;
    if let PortalScope::Tenant { tenant, read_only } = &session.scope {
        tracing::info!(tenant_id = %tenant, read_only, "portal link used");
    }
    Ok(session_cookie(state, headers, &secret, "/portal/subscriptions"))
}

async fn start_session(
    state: &PortalState,
    headers: &HeaderMap,
    scope: PortalScope,
    to: &str,
) -> Result<Response, PortalError> {
    let now = Utc::now();
    let secret = PortalSecret::session();
    let session = PortalSession {
        scope,
        csrf_token: random_hex(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(SESSION_HOURS),
    };
    state
        .app
        .store
        .create_portal_session(&secret.hash, &session)
        .await
        .map_err(PortalError::store)?;
    Ok(session_cookie(state, headers, &secret, to))
}

/// Sets the session's cookie, and sends the browser on to `to`.
fn session_cookie(
    state: &PortalState,
    headers: &HeaderMap,
    secret: &PortalSecret,
    to: &str,
) -> Response {
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={}{}",
        secret.text,
        SESSION_HOURS * 3600,
        if state.secure_cookies || behind_tls(headers) { "; Secure" } else { "" },
    );
    see_other_with_cookie(to, &cookie)
}

/// A proxy says the browser came over TLS (whoever else says so only makes
/// their own cookie stricter).
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn see_other_with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = page::see_other(to);
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// `POST /portal/logout`: ends the session.
pub(super) async fn logout(State(state): State<PortalState>, posted: Posted) -> Response {
    if let Err(error) = state.app.store.end_portal_session(&posted.viewer.session_hash).await {
        return PortalError::store(error).into_response();
    }
    let cookie = format!("{COOKIE_NAME}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other_with_cookie("/portal/signed-out", &cookie)
}

pub(super) async fn signed_out() -> Markup {
    page::bare(
        "Signed out",
        html! { p { "You have left the portal. Open a new portal link to come back." } },
    )
}

/// `GET /portal/admin/login`: the admin view opens with an admin token.
pub(super) async fn admin_login_page() -> Markup {
    admin_login_form(None)
}

fn admin_login_form(error: Option<&str>) -> Markup {
    page::bare(
        "Admin sign-in",
        html! {
            @if let Some(error) = error {
                div class="alert" role="alert" { p { (error) } }
            }
            form method="post" action="/portal/admin/login" {
                label for="admin-token" { "Admin token" }
                input type="password" id="admin-token" name="token" required autocomplete="off";
                button type="submit" class="primary" { "Sign in" }
            }
        },
    )
}

/// `POST /portal/admin/login`: checks the token as the API does (in
/// constant time, failures rate limited by address).
pub(super) async fn admin_login(State(state): State<PortalState>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |info| info.0.ip());
    let (parts, body) = request.into_parts();
    if let Err(error) = same_origin(&parts.headers, state.app.public_url.as_deref()) {
        return error.into_response();
    }
    if state.app.limiters.auth_allowed(peer).is_err() {
        let page = admin_login_form(Some("Too many failed sign-ins from here: wait a minute."));
        return (StatusCode::TOO_MANY_REQUESTS, page).into_response();
    }
    let form = match read_form(body).await {
        Ok(form) => form,
        Err(error) => return error.into_response(),
    };
    let token = form.get("token").unwrap_or_default();
    if !is_admin_token(&state.app.admin_tokens, token) {
        state.app.limiters.auth_failed(peer);
        let page = admin_login_form(Some("That is not an admin token."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    tracing::info!("portal admin session started");
    let scope = PortalScope::Admin { token_hash: hash_secret(token) };
    match start_session(&state, &parts.headers, scope, "/portal/admin").await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=1; hookgate_portal=hgs_x; b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie_value(&map, COOKIE_NAME), Some("hgs_x"));
        assert_eq!(cookie_value(&map, "c"), Some("3"));
        assert_eq!(cookie_value(&headers(&[("cookie", "hookgate_portalx=1")]), COOKIE_NAME), None);
        let planted =
            headers(&[("cookie", "hookgate_portal=hgs_mine; hookgate_portal=hgs_theirs")]);
        assert_eq!(cookie_value(&planted, COOKIE_NAME), None, "two are none");
    }

    #[test]
    fn admin_tokens_match_exactly() {
        let known = ["a-token-of-sixteen".to_owned(), "another-admin-token".to_owned()];
        assert!(is_admin_token(&known, "another-admin-token"));
        assert!(!is_admin_token(&known, "another-admin-toke"));
        assert!(!is_admin_token(&known, ""));
        assert!(!is_admin_token(&[], "a-token-of-sixteen"));
    }

    #[test]
    fn only_the_portals_own_pages_may_post() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[host]), None).is_ok(), "no header: an old client");
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")]), None).is_ok());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")]), None).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-site")]), None).is_err());
        let null = ("origin", "null");
        assert!(
            same_origin(&headers(&[host, ("sec-fetch-site", "same-origin"), null]), None).is_ok(),
            "Sec-Fetch-Site decides when it is there"
        );
        let own = ("origin", "http://127.0.0.1:8080");
        assert!(same_origin(&headers(&[host, own]), None).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9999")]), None).is_err());
        let tls = ("origin", "https://127.0.0.1:8080");
        assert!(same_origin(&headers(&[host, tls]), None).is_ok(), "behind a TLS proxy");
        assert!(same_origin(&headers(&[host, ("origin", "null")]), None).is_err());
        let public = Some("https://hooks.example.com/");
        assert!(same_origin(&headers(&[("origin", "https://hooks.example.com")]), public).is_ok());
        assert!(same_origin(&headers(&[("origin", "http://hooks.example.com")]), public).is_err());
    }
}
