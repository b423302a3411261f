//! The page around every view (landmarks, navigation, sign-out), the
//! portal's errors as pages, and small pieces that views share.

use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use super::bridge::Problem;
use super::session::{csrf_field, Viewer};

/// Which part of the portal a page belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Subscriptions,
    EventTypes,
    DeadLetters,
    Admin,
}

fn document(title: &str, header: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hookgate" }
                link rel="stylesheet" href="/portal/assets/portal.css";
                link rel="icon" href="/portal/assets/icon.svg" type="image/svg+xml";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                // Moved in: the parts are used once.
                (PreEscaped(header.0))
                main id="main" {
                    h1 { (title) }
                    (PreEscaped(body.0))
                }
            }
        }
    }
}

/// A page outside a session (sign-in, errors).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    document(title, html! { header class="top" { p class="brand" { "hookgate" } } }, body)
}

/// A page of a session: its navigation, who is signed in, sign-out.
pub(super) fn page(viewer: &Viewer, section: Section, title: &str, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            li {
                @if this == section {
                    a href=(href) aria-current="page" { (label) }
                } @else {
                    a href=(href) { (label) }
                }
            }
        }
    };
    let header = html! {
        header class="top" {
            p class="brand" { "hookgate" }
            nav aria-label="Portal" {
                ul {
                    @if viewer.is_admin() {
                        (link("/portal/admin", "Tenants", Section::Admin))
                        (link("/portal/admin/event-types", "Event types", Section::EventTypes))
                        (link("/portal/admin/replays", "Replays", Section::DeadLetters))
                    } @else {
                        (link("/portal/subscriptions", "Subscriptions", Section::Subscriptions))
                        (link("/portal/event-types", "Event types", Section::EventTypes))
                        (link("/portal/dead-letters", "Dead letters", Section::DeadLetters))
                    }
                }
            }
            div class="who" {
                @match viewer.tenant() {
                    Some(tenant) => span { "Tenant " code { (tenant.as_str()) } },
                    None => span { "Admin" },
                }
                @if viewer.read_only() { " " span class="badge" { "read-only" } }
                form method="post" action="/portal/logout" class="inline" {
                    (csrf_field(viewer))
                    button type="submit" { "Sign out" }
                }
            }
        }
    };
    document(title, header, body)
}

/// What the API refused, for people: its title, detail and each field.
pub(super) fn problem(problem: &Problem) -> Markup {
    html! {
        div class="alert" role="alert" {
            p { strong { (problem.title) } }
            @if !problem.detail.is_empty() { p { (problem.detail) } }
            @if !problem.errors.is_empty() {
                ul {
                    @for error in &problem.errors {
                        li { code { (error.field) } ": " (error.message) }
                    }
                }
            }
        }
    }
}

/// A line that tells what was just done.
pub(super) fn notice(text: &str) -> Markup {
    html! { div class="notice" role="status" { p { (text) } } }
}

/// A button that posts one action (with the session's CSRF token).
pub(super) fn action(viewer: &Viewer, to: &str, label: &str, class: &str) -> Markup {
    html! {
        form method="post" action=(to) class="inline" {
            (csrf_field(viewer))
            button type="submit" class=(class) disabled[viewer.read_only()] { (label) }
        }
    }
}

/// An RFC 3339 time from the API, shown to the second in UTC.
pub(super) fn time(value: &Value) -> Markup {
    match value.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => {
            let utc = t.with_timezone(&chrono::Utc);
            html! { time datetime=(utc.to_rfc3339()) { (utc.format("%Y-%m-%d %H:%M:%S UTC")) } }
        }
        None => html! { "—" },
    }
}

/// A value from the API as text ("—" for none).
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON, indented, in a block.
pub(super) fn json_block(value: &Value, label: &str) -> Markup {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre class="json" tabindex="0" aria-label=(label) { code { (pretty) } } }
}

pub(super) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

/// What the portal answers when it cannot show the page asked for.
#[derive(Debug)]
pub(super) enum PortalError {
    /// No session, or an ended one.
    SignedOut,
    /// A used, expired or unknown link.
    BadLink,
    Forbidden(String),
    BadForm(String),
    /// The API's problem, on a page of its own.
    Api(Problem),
    /// The store failed; logged when answered.
    Store(crate::store::Error),
}

impl PortalError {
    pub(super) fn store(error: crate::store::Error) -> Self {
        Self::Store(error)
    }
}

impl From<Problem> for PortalError {
    fn from(problem: Problem) -> Self {
        if problem.status >= 500 {
            tracing::error!(status = problem.status, detail = %problem.detail, "portal: API call failed");
        }
        Self::Api(problem)
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let (status, title, body) = match self {
            Self::SignedOut => (
                StatusCode::UNAUTHORIZED,
                "Please open your portal link",
                html! { p { "You are not signed in, or your session has ended. Open a new portal link to sign in." } },
            ),
            Self::BadLink => (
                StatusCode::FORBIDDEN,
                "This link cannot be used",
                html! { p { "This portal link was used already, has expired, or is not a link we made. Ask for a new one." } },
            ),
            Self::Forbidden(detail) => {
                (StatusCode::FORBIDDEN, "Not allowed", html! { p { (detail) } })
            }
            Self::BadForm(detail) => {
                (StatusCode::BAD_REQUEST, "The form could not be read", html! { p { (detail) } })
            }
            Self::Api(problem) => {
                let status = StatusCode::from_u16(problem.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, "That did not work", self::problem(&problem))
            }
            Self::Store(error) => {
                tracing::error!(%error, "portal: store call failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    html! { p { "The portal could not do that just now. Try again in a moment." } },
                )
            }
        };
        let body = html! { (body) p { a href="/portal" { "Back to the portal" } } };
        (status, bare(title, body)).into_response()
    }
}

/// A `<select>` option, selected when it is the current value.
pub(super) fn option(value: &str, label: &str, current: Option<&str>) -> Markup {
    html! { option value=(value) selected[current == Some(value)] { (label) } }
}

/// Nothing: an empty fragment.
pub(super) fn nothing() -> Markup {
    PreEscaped(String::new())
}
