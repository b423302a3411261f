//! A tenant's subscriptions: list, create, edit, pause and resume, delete,
//! rotate the secret (a new one is shown once), send a test and see its
//! result, the attempts with filters, and the health stats.

use axum::extract::{Path, Query};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::bridge::{with_query, FieldProblem, Problem};
use super::page::{self, action, json_block, notice, option, page, problem, text, time, Section};
use super::session::{csrf_field, Change, Form, Viewer};
use super::{PortalError, PortalState};
use crate::domain::SubscriptionId;

pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/subscriptions", get(list).post(create))
        .route("/portal/subscriptions/new", get(new))
        .route("/portal/subscriptions/{id}", get(detail).post(update))
        .route("/portal/subscriptions/{id}/edit", get(edit))
        .route("/portal/subscriptions/{id}/pause", post(pause))
        .route("/portal/subscriptions/{id}/resume", post(resume))
        .route("/portal/subscriptions/{id}/delete", post(delete))
        .route("/portal/subscriptions/{id}/rotate", post(rotate))
        .route("/portal/subscriptions/{id}/test", post(test))
        .route("/portal/subscriptions/{id}/attempts", get(attempts))
}

/// A subscription id from the URL; anything else names nothing.
fn parse_id(raw: &str) -> Result<SubscriptionId, PortalError> {
    SubscriptionId::parse(raw).ok_or_else(|| PortalError::Api(Problem::not_found("subscription")))
}

fn path_of(id: &SubscriptionId) -> String {
    format!("/portal/subscriptions/{}", id.as_str())
}

fn api_path(id: &SubscriptionId) -> String {
    format!("/v1/subscriptions/{}", id.as_str())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// What a `done=` code after a redirect says.
fn done_message(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "The subscription was created.",
        "saved" => "Your changes were saved.",
        "paused" => "The subscription is paused: its events wait until you resume it.",
        "resumed" => "The subscription is active again.",
        "deleted" => "The subscription was deleted.",
        _ => return None,
    })
}

fn status_badge(status: &Value) -> Markup {
    let status = status.as_str().unwrap_or("unknown");
    html! { span class={ "status status-" (status) } { (status) } }
}

async fn list(viewer: Viewer, Query(query): Query<ListQuery>) -> Result<Markup, PortalError> {
    let cursor = query.cursor.unwrap_or_default();
    let answer = viewer
        .api
        .get(&with_query("/v1/subscriptions", &[("limit", "50"), ("cursor", &cursor)]))
        .await?;
    let rows = answer["data"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if let Some(message) = done_message(query.done.as_deref()) { (notice(message)) }
        p class="actions" {
            @if !viewer.read_only() {
                a class="button primary" href="/portal/subscriptions/new" { "New subscription" }
            }
        }
        @if rows.is_empty() {
            p { "No subscriptions yet." }
        } @else {
            table {
                caption { "Your subscriptions" }
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Event types" } th scope="col" { "Status" } th scope="col" { "Circuit" } th scope="col" { "Created" } } }
                tbody {
                    @for row in &rows {
                        tr {
                            td {
                                a href={ "/portal/subscriptions/" (text(&row["id"])) } { (text(&row["url"])) }
                                @if let Some(description) = row["description"].as_str() { br; small { (description) } }
                            }
                            td { (event_types_text(&row["event_types"])) }
                            td { (status_badge(&row["status"])) }
                            td { (row["circuit"]["state"].as_str().unwrap_or("closed")) }
                            td { (time(&row["created_at"])) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = answer["next_cursor"].as_str() {
            p { a href=(with_query("/portal/subscriptions", &[("cursor", next)])) { "More subscriptions" } }
        }
    };
    Ok(page(&viewer, Section::Subscriptions, "Subscriptions", body))
}

fn event_types_text(types: &Value) -> String {
    types
        .as_array()
        .map(|types| types.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The catalogue's names, for the form's checkboxes.
async fn catalogue_names(viewer: &Viewer) -> Vec<String> {
    match viewer.api.get("/v1/event-types?limit=200").await {
        Ok(answer) => answer["data"]
            .as_array()
            .map(|types| {
                types.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn new(viewer: Viewer) -> Result<Markup, PortalError> {
    let names = catalogue_names(&viewer).await;
    let body = settings_form(&viewer, "/portal/subscriptions", &json!({}), &names, None, "Create");
    Ok(page(&viewer, Section::Subscriptions, "New subscription", body))
}

/// The form of a subscription's settings, filled from `values` (the API's
/// shape), with the API's complaints beside their fields.
fn settings_form(
    viewer: &Viewer,
    to: &str,
    values: &Value,
    names: &[String],
    refused: Option<&Problem>,
    submit: &str,
) -> Markup {
    let chosen: Vec<&str> = values["event_types"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let patterns: Vec<&str> =
        chosen.iter().copied().filter(|t| !names.iter().any(|n| n == t)).collect();
    let about = |field: &str| refused.and_then(|p| p.about(field)).map(str::to_owned);
    let field_error = |id: &str, field: &str| {
        html! { @if let Some(message) = about(field) { p class="field-error" id={ (id) "-error" } { (message) } } }
    };
    let filter = match &values["filter"] {
        Value::Null => String::new(),
        Value::String(raw) => raw.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let number = |value: &Value| match value {
        Value::Null => String::new(),
        other => text(other),
    };
    html! {
        @if let Some(refused) = refused { (problem(refused)) }
        form method="post" action=(to) class="settings" {
            (csrf_field(viewer))
            @if let Some(version) = values["version"].as_i64() {
                input type="hidden" name="version" value=(version);
            }
            label for="url" { "Endpoint URL" }
            input type="url" id="url" name="url" required value=(values["url"].as_str().unwrap_or_default())
                aria-describedby="url-error";
            (field_error("url", "url"))
            fieldset {
                legend { "Event types" }
                @if names.is_empty() { p { "No event types are registered yet; name them below." } }
                @for (i, name) in names.iter().enumerate() {
                    div class="check" {
                        input type="checkbox" id={ "type-" (i) } name="event_type" value=(name) checked[chosen.contains(&name.as_str())];
                        label for={ "type-" (i) } { (name) }
                    }
                }
                label for="patterns" { "Other types or patterns (comma-separated, e.g. " code { "order.*" } ")" }
                input type="text" id="patterns" name="patterns" value=(patterns.join(", ")) aria-describedby="event_types-error";
                (field_error("event_types", "event_types"))
            }
            label for="description" { "Description" }
            input type="text" id="description" name="description" value=(values["description"].as_str().unwrap_or_default());
            (field_error("description", "description"))
            fieldset {
                legend { "Limits" }
                label for="per_second" { "Deliveries per second (empty: unlimited)" }
                input type="number" id="per_second" name="per_second" min="1" value=(number(&values["rate_limit"]["per_second"]));
                label for="burst" { "Burst" }
                input type="number" id="burst" name="burst" min="1" value=(number(&values["rate_limit"]["burst"]));
                (field_error("rate_limit", "rate_limit"))
                label for="max_in_flight" { "Requests in flight at most (empty: the default)" }
                input type="number" id="max_in_flight" name="max_in_flight" min="1" value=(number(&values["max_in_flight"]));
                (field_error("max_in_flight", "max_in_flight"))
                div class="check" {
                    input type="checkbox" id="ordered" name="ordered" value="on" checked[values["ordered"].as_bool().unwrap_or(false)];
                    label for="ordered" { "Ordered: events of one key arrive in order" }
                }
            }
            @if values.get("id").is_none() {
                label for="signature_scheme" { "Signatures" }
                select id="signature_scheme" name="signature_scheme" {
                    (option("hmac-sha256", "HMAC-SHA256 (a shared secret)", values["signature_scheme"].as_str()))
                    (option("ed25519", "Ed25519 (a public key to verify with)", values["signature_scheme"].as_str()))
                }
            }
            label for="filter" { "Content filter (JSON, optional)" }
            textarea id="filter" name="filter" rows="4" aria-describedby="filter-error" { (filter) }
            (field_error("filter", "filter"))
            button type="submit" class="primary" { (submit) }
        }
    }
}

/// The body of a create or update from the form; `None` fields are left
/// out of an update (and cleared with `null` where the form was emptied).
fn settings_body(form: &Form, update: bool) -> Result<Value, Problem> {
    let mut errors = Vec::new();
    let mut body = Map::new();
    body.insert("url".to_owned(), json!(form.get("url").unwrap_or_default()));
    let mut types: Vec<String> = form.all("event_type").map(str::to_owned).collect();
    for pattern in form.get("patterns").unwrap_or_default().split([',', ' ', '\n']) {
        let pattern = pattern.trim();
        if !pattern.is_empty() && !types.iter().any(|t| t == pattern) {
            types.push(pattern.to_owned());
        }
    }
    body.insert("event_types".to_owned(), json!(types));
    let description = form.get("description");
    if description.is_some() || update {
        body.insert("description".to_owned(), json!(description));
    }
    let mut number = |field: &str, name: &str| -> Option<u32> {
        let raw = form.get(name)?;
        match raw.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(FieldProblem {
                    field: field.to_owned(),
                    message: format!("`{raw}` is not a whole number"),
                });
                None
            }
        }
    };
    let per_second = number("rate_limit", "per_second");
    let burst = number("rate_limit", "burst");
    let max_in_flight = number("max_in_flight", "max_in_flight");
    if per_second.is_none() && burst.is_some() {
        errors.push(FieldProblem {
            field: "rate_limit".to_owned(),
            message: "a burst needs a rate: give deliveries per second too".to_owned(),
        });
    }
    match per_second {
        Some(per_second) => {
            body.insert(
                "rate_limit".to_owned(),
                json!({"per_second": per_second, "burst": burst.unwrap_or(per_second)}),
            );
        }
        None if update => {
            body.insert("rate_limit".to_owned(), Value::Null);
        }
        None => {}
    }
    if max_in_flight.is_some() || update {
        body.insert("max_in_flight".to_owned(), json!(max_in_flight));
    }
    body.insert("ordered".to_owned(), json!(form.checked("ordered")));
    if !update {
        if let Some(scheme) = form.get("signature_scheme") {
            body.insert("signature_scheme".to_owned(), json!(scheme));
        }
    }
    match form.get("filter") {
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(filter) => {
                body.insert("filter".to_owned(), filter);
            }
            Err(e) => errors.push(FieldProblem {
                field: "filter".to_owned(),
                message: format!("not JSON: {e}"),
            }),
        },
        None if update => {
            body.insert("filter".to_owned(), Value::Null);
        }
        None => {}
    }
    if errors.is_empty() {
        Ok(Value::Object(body))
    } else {
        Err(Problem {
            status: 422,
            title: "Some fields are not valid".to_owned(),
            detail: "Correct the fields named below and send the form again.".to_owned(),
            code: "validation".to_owned(),
            errors,
        })
    }
}

/// What was typed, in the API's shape, to show the form again.
fn entered(form: &Form) -> Value {
    let mut types: Vec<&str> = form.all("event_type").collect();
    types.extend(
        form.get("patterns")
            .unwrap_or_default()
            .split([',', ' '])
            .map(str::trim)
            .filter(|t| !t.is_empty()),
    );
    json!({
        "url": form.get("url"),
        "event_types": types,
        "description": form.get("description"),
        "rate_limit": {"per_second": form.get("per_second"), "burst": form.get("burst")},
        "max_in_flight": form.get("max_in_flight"),
        "ordered": form.checked("ordered"),
        "signature_scheme": form.get("signature_scheme"),
        "filter": form.get("filter"),
        "version": form.get("version").and_then(|v| v.parse::<i64>().ok()),
    })
}

async fn create(Change { viewer, form }: Change) -> Result<Response, PortalError> {
    let outcome = match settings_body(&form, false) {
        Ok(body) => viewer.api.post("/v1/subscriptions", body).await,
        Err(refused) => Err(refused),
    };
    match outcome {
        Ok(created) => Ok(created_page(&viewer, &created).into_response()),
        Err(refused) if refused.status < 500 && refused.status != 404 => {
            let names = catalogue_names(&viewer).await;
            let body = settings_form(
                &viewer,
                "/portal/subscriptions",
                &entered(&form),
                &names,
                Some(&refused),
                "Create",
            );
            let status = axum::http::StatusCode::from_u16(refused.status)
                .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            Ok((status, page(&viewer, Section::Subscriptions, "New subscription", body))
                .into_response())
        }
        Err(refused) => Err(refused.into()),
    }
}

/// The one time a new secret is shown.
fn secret_panel(answer: &Value) -> Markup {
    html! {
        @if let Some(secret) = answer["secret"].as_str() {
            div class="secret" {
                h2 { "Signing secret" }
                p { "Copy it now: it is shown only this once. Your endpoint verifies each webhook's signature with it." }
                p { code id="secret" { (secret) } }
            }
        }
        @if let Some(key) = answer["public_key"].as_str() {
            div class="secret" {
                h2 { "Public key" }
                p { "Your endpoint verifies each webhook's Ed25519 signature with this key." }
                p { code id="public-key" { (key) } }
            }
        }
    }
}

fn created_page(viewer: &Viewer, created: &Value) -> Markup {
    let id = text(&created["id"]);
    let body = html! {
        (notice("The subscription was created."))
        (secret_panel(created))
        p { a href={ "/portal/subscriptions/" (id) } { "Go to the subscription" } }
    };
    page(viewer, Section::Subscriptions, "Subscription created", body)
}

async fn detail(
    viewer: Viewer,
    Path(raw): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Markup, PortalError> {
    let id = parse_id(&raw)?;
    let extra = done_message(query.done.as_deref()).map(notice).unwrap_or_else(page::nothing);
    detail_page(&viewer, &id, extra).await
}

/// A subscription's page, with `extra` (a notice, a test's result) on top.
async fn detail_page(
    viewer: &Viewer,
    id: &SubscriptionId,
    extra: Markup,
) -> Result<Markup, PortalError> {
    let subscription = viewer.api.get(&api_path(id)).await?;
    let stats = viewer.api.get(&format!("{}/stats?window=24h", api_path(id))).await.ok();
    let here = path_of(id);
    let status = subscription["status"].as_str().unwrap_or_default();
    let title = subscription["description"].as_str().unwrap_or("Subscription").to_owned();
    let body = html! {
        (extra)
        dl class="facts" {
            dt { "Id" } dd { code { (id.as_str()) } }
            dt { "Endpoint" } dd { (text(&subscription["url"])) }
            dt { "Status" } dd {
                (status_badge(&subscription["status"]))
                @if let Some(reason) = subscription["disabled_reason"].as_str() { " — " (reason) }
            }
            dt { "Event types" } dd { (event_types_text(&subscription["event_types"])) }
            dt { "Signatures" } dd { (text(&subscription["signature_scheme"])) }
            @if let Some(key) = subscription["public_key"].as_str() { dt { "Public key" } dd { code { (key) } } }
            dt { "Rate limit" } dd {
                @match subscription["rate_limit"]["per_second"].as_u64() {
                    Some(n) => { (n) " a second, burst " (text(&subscription["rate_limit"]["burst"])) }
                    None => "unlimited",
                }
            }
            dt { "In flight at most" } dd { (text(&subscription["max_in_flight"])) }
            dt { "Ordered" } dd { @if subscription["ordered"].as_bool().unwrap_or(false) { "yes" } @else { "no" } }
            dt { "Content filter" } dd {
                @if subscription["filter"].is_null() { "none" } @else { (json_block(&subscription["filter"], "Content filter")) }
            }
            dt { "Created" } dd { (time(&subscription["created_at"])) }
            dt { "Updated" } dd { (time(&subscription["updated_at"])) }
        }
        div class="actions" {
            @if !viewer.read_only() { a class="button" href={ (here) "/edit" } { "Edit" } }
            @if status == "active" {
                (action(viewer, &format!("{here}/pause"), "Pause", ""))
            } @else if status == "paused" || status == "disabled" {
                (action(viewer, &format!("{here}/resume"), "Resume", ""))
            }
            (action(viewer, &format!("{here}/test"), "Send a test event", "primary"))
            a class="button" href={ (here) "/attempts" } { "Attempts" }
            a class="button" href=(with_query("/portal/dead-letters", &[("subscription_id", id.as_str())])) { "Dead letters" }
        }
        @if let Some(stats) = &stats { (health(stats)) }
        section aria-labelledby="rotate-title" {
            h2 id="rotate-title" { "Rotate the secret" }
            p { "A new secret signs every webhook from now on. During the grace period, webhooks carry both signatures, so your endpoint can switch over." }
            form method="post" action={ (here) "/rotate" } class="inline" {
                (csrf_field(viewer))
                label for="grace" { "Grace period" }
                select id="grace" name="grace_period_seconds" {
                    (option("0", "none", None))
                    (option("3600", "1 hour", None))
                    (option("86400", "24 hours", Some("86400")))
                    (option("604800", "7 days", None))
                }
                button type="submit" disabled[viewer.read_only()] { "Rotate the secret" }
            }
        }
        section aria-labelledby="delete-title" {
            h2 id="delete-title" { "Delete" }
            details {
                summary { "Delete this subscription" }
                p { "Its pending deliveries are dropped and it receives nothing more. This cannot be undone." }
                (action(viewer, &format!("{here}/delete"), "Delete the subscription", "danger"))
            }
        }
    };
    Ok(page(viewer, Section::Subscriptions, &title, body))
}

/// The health stats of the last 24 hours.
fn health(stats: &Value) -> Markup {
    let rate = stats["failure_rate"].as_f64().map(|r| format!("{:.1} %", r * 100.0));
    html! {
        section aria-labelledby="health-title" {
            h2 id="health-title" { "Health, last 24 hours" }
            dl class="facts" {
                dt { "Attempts" } dd { (text(&stats["attempts"])) }
                dt { "Succeeded" } dd { (text(&stats["successes"])) }
                dt { "Failed" } dd { (text(&stats["failures"])) }
                dt { "Failure rate" } dd { (rate.unwrap_or_else(|| "—".to_owned())) }
                dt { "Latency p50 / p99" } dd { (text(&stats["latency_ms"]["p50"])) " / " (text(&stats["latency_ms"]["p99"])) " ms" }
                dt { "Last success" } dd { (time(&stats["last_success"]["at"])) }
                dt { "Last failure" } dd {
                    (time(&stats["last_failure"]["at"]))
                    @if let Some(error) = stats["last_failure"]["error"].as_str() { " — " (error) }
                }
                dt { "Failures in a row" } dd { (text(&stats["consecutive_failures"])) }
                dt { "Circuit" } dd { (text(&stats["circuit"]["state"])) }
                dt { "Pending dead letters" } dd { (text(&stats["pending_dead_letters"])) }
            }
        }
    }
}

async fn edit(viewer: Viewer, Path(raw): Path<String>) -> Result<Markup, PortalError> {
    let id = parse_id(&raw)?;
    let subscription = viewer.api.get(&api_path(&id)).await?;
    let names = catalogue_names(&viewer).await;
    let body = settings_form(&viewer, &path_of(&id), &subscription, &names, None, "Save");
    Ok(page(&viewer, Section::Subscriptions, "Edit subscription", body))
}

fn version_of(form: &Form) -> Option<i64> {
    form.get("version").and_then(|v| v.parse().ok())
}

async fn update(
    Path(raw): Path<String>,
    Change { viewer, form }: Change,
) -> Result<Response, PortalError> {
    let id = parse_id(&raw)?;
    let outcome = match settings_body(&form, true) {
        Ok(body) => {
            viewer.api.call(Method::PATCH, &api_path(&id), Some(body), version_of(&form)).await
        }
        Err(refused) => Err(refused),
    };
    match outcome {
        Ok(_) => Ok(page::see_other(&format!("{}?done=saved", path_of(&id)))),
        Err(refused) if refused.status < 500 && refused.status != 404 => {
            let names = catalogue_names(&viewer).await;
            let mut values = entered(&form);
            values["id"] = json!(id.as_str());
            let refused = if refused.code == "precondition_failed" {
                Problem { detail: "Someone changed this subscription since you opened the form. Open it again to see the changes.".to_owned(), ..refused }
            } else {
                refused
            };
            let body =
                settings_form(&viewer, &path_of(&id), &values, &names, Some(&refused), "Save");
            let status = axum::http::StatusCode::from_u16(refused.status)
                .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            Ok((status, page(&viewer, Section::Subscriptions, "Edit subscription", body))
                .into_response())
        }
        Err(refused) => Err(refused.into()),
    }
}

async fn set_status(
    viewer: &Viewer,
    raw: &str,
    status: &str,
    done: &str,
) -> Result<Response, PortalError> {
    let id = parse_id(raw)?;
    viewer.api.call(Method::PATCH, &api_path(&id), Some(json!({"status": status})), None).await?;
    Ok(page::see_other(&format!("{}?done={done}", path_of(&id))))
}

async fn pause(Path(raw): Path<String>, change: Change) -> Result<Response, PortalError> {
    set_status(&change.viewer, &raw, "paused", "paused").await
}

async fn resume(Path(raw): Path<String>, change: Change) -> Result<Response, PortalError> {
    set_status(&change.viewer, &raw, "active", "resumed").await
}

async fn delete(Path(raw): Path<String>, change: Change) -> Result<Response, PortalError> {
    let id = parse_id(&raw)?;
    change.viewer.api.delete(&api_path(&id)).await?;
    Ok(page::see_other("/portal/subscriptions?done=deleted"))
}

async fn rotate(
    Path(raw): Path<String>,
    Change { viewer, form }: Change,
) -> Result<Markup, PortalError> {
    let id = parse_id(&raw)?;
    let grace: u64 =
        form.get("grace_period_seconds").and_then(|g| g.parse().ok()).unwrap_or(86_400);
    let rotated = viewer
        .api
        .post(&format!("{}/rotate-secret", api_path(&id)), json!({"grace_period_seconds": grace}))
        .await?;
    let body = html! {
        (notice("The secret was rotated."))
        (secret_panel(&rotated))
        @if !rotated["previous_secret_expires_at"].is_null() {
            p { "Until " (time(&rotated["previous_secret_expires_at"])) ", webhooks carry a signature made with the previous secret too." }
        }
        p { a href=(path_of(&id)) { "Back to the subscription" } }
    };
    Ok(page(&viewer, Section::Subscriptions, "New signing secret", body))
}

async fn test(Path(raw): Path<String>, change: Change) -> Result<Markup, PortalError> {
    let viewer = change.viewer;
    let id = parse_id(&raw)?;
    let result = match viewer.api.post(&format!("{}/test", api_path(&id)), json!({})).await {
        Ok(attempt) => {
            let succeeded = attempt["outcome"] == "success";
            html! {
                section class={ "result " @if succeeded { "ok" } @else { "failed" } } role="status" aria-labelledby="test-title" {
                    h2 id="test-title" { "Test event: " @if succeeded { "delivered" } @else { "failed" } }
                    dl class="facts" {
                        dt { "HTTP status" } dd { (text(&attempt["status_code"])) }
                        dt { "Latency" } dd { (text(&attempt["latency_ms"])) " ms" }
                        @if !attempt["error"].is_null() { dt { "Error" } dd { (text(&attempt["error"])) } }
                        @if let Some(excerpt) = attempt["response_excerpt"].as_str() {
                            dt { "Response" } dd { pre { code { (excerpt) } } }
                        }
                    }
                }
            }
        }
        Err(refused) if refused.status < 500 => problem(&refused),
        Err(refused) => return Err(refused.into()),
    };
    detail_page(&viewer, &id, result).await
}

#[derive(Debug, Deserialize)]
pub(super) struct AttemptsQuery {
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

/// A `datetime-local` value (no zone) read as UTC, or an RFC 3339 time.
pub(super) fn as_rfc3339(input: &str) -> String {
    let input = input.trim();
    if input.is_empty() || chrono::DateTime::parse_from_rfc3339(input).is_ok() {
        return input.to_owned();
    }
    match input.len() {
        16 => format!("{input}:00Z"),
        19 => format!("{input}Z"),
        _ => input.to_owned(),
    }
}

async fn attempts(
    viewer: Viewer,
    Path(raw): Path<String>,
    Query(query): Query<AttemptsQuery>,
) -> Result<Response, PortalError> {
    let id = parse_id(&raw)?;
    let subscription = viewer.api.get(&api_path(&id)).await?;
    let outcome = query.outcome.clone().unwrap_or_default();
    let (from, to) = (query.from.clone().unwrap_or_default(), query.to.clone().unwrap_or_default());
    let cursor = query.cursor.clone().unwrap_or_default();
    let path = with_query(
        &format!("{}/attempts", api_path(&id)),
        &[
            ("order", "newest"),
            ("limit", "50"),
            ("outcome", &outcome),
            ("from", &as_rfc3339(&from)),
            ("to", &as_rfc3339(&to)),
            ("cursor", &cursor),
        ],
    );
    let (rows, next, refused) = match viewer.api.get(&path).await {
        Ok(answer) => (
            answer["data"].as_array().cloned().unwrap_or_default(),
            answer["next_cursor"].as_str().map(str::to_owned),
            None,
        ),
        Err(refused) if refused.status < 500 && refused.status != 404 => {
            (Vec::new(), None, Some(refused))
        }
        Err(refused) => return Err(refused.into()),
    };
    let here = format!("{}/attempts", path_of(&id));
    let body = html! {
        p { a href=(path_of(&id)) { "Back to the subscription" } " · " (text(&subscription["url"])) }
        form method="get" action=(here) class="filters" {
            label for="outcome" { "Outcome" }
            select id="outcome" name="outcome" {
                (option("", "any", Some(outcome.as_str())))
                (option("success", "succeeded", Some(outcome.as_str())))
                (option("failed", "failed", Some(outcome.as_str())))
            }
            label for="from" { "From (UTC)" }
            input type="datetime-local" id="from" name="from" value=(from);
            label for="to" { "Until (UTC)" }
            input type="datetime-local" id="to" name="to" value=(to);
            button type="submit" { "Filter" }
        }
        @if let Some(refused) = &refused { (problem(refused)) }
        @if rows.is_empty() && refused.is_none() {
            p { "No attempts match." }
        } @else if !rows.is_empty() {
            table class="attempts" {
                caption { "Attempts, newest first" }
                thead { tr { th scope="col" { "Time" } th scope="col" { "Event" } th scope="col" { "Attempt" } th scope="col" { "Outcome" } th scope="col" { "Status" } th scope="col" { "Latency" } th scope="col" { "Details" } } }
                tbody {
                    @for row in &rows {
                        tr class={ "outcome-" (text(&row["outcome"])) } {
                            td { (time(&row["created_at"])) }
                            td { (text(&row["event_type"])) br; small { code { (text(&row["event_id"])) } } }
                            td { (text(&row["attempt"])) }
                            td { (text(&row["outcome"])) }
                            td { (text(&row["status_code"])) }
                            td { (text(&row["latency_ms"])) " ms" }
                            td {
                                details {
                                    summary { "Request and response" }
                                    @if !row["error"].is_null() { p { "Error: " (text(&row["error"])) } }
                                    h3 { "Request headers" }
                                    (request_headers(row, &subscription))
                                    h3 { "Response" }
                                    @match row["response_excerpt"].as_str() {
                                        Some(excerpt) => pre { code { (excerpt) } },
                                        None => p { "Not kept (successes keep none unless the operator asks)." },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(with_query(&here, &[("outcome", &outcome), ("from", &from), ("to", &to), ("cursor", &next)])) { "Older attempts" } }
        }
    };
    Ok(page(&viewer, Section::Subscriptions, "Attempts", body).into_response())
}

/// The headers an attempt was sent with, as far as they are known: the
/// webhook's own (its signature redacted) and the subscription's custom
/// headers as configured now (secret values redacted by the API).
fn request_headers(attempt: &Value, subscription: &Value) -> Markup {
    let sent_at = attempt["created_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp().to_string())
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), format!("hookgate/{}", env!("CARGO_PKG_VERSION"))),
        ("webhook-id".to_owned(), text(&attempt["webhook_id"])),
        ("webhook-timestamp".to_owned(), format!("{sent_at} (about)")),
        ("webhook-signature".to_owned(), "v1,[redacted]".to_owned()),
    ];
    if let Some(custom) = subscription["headers"].as_object() {
        headers.extend(custom.iter().map(|(name, value)| (name.clone(), text(value))));
    }
    html! {
        dl class="headers" {
            @for (name, value) in &headers { dt { code { (name) } } dd { code { (value) } } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap())
            .map(Form::from_pairs)
            .unwrap()
    }

    #[test]
    fn the_form_becomes_the_apis_body_and_an_emptied_field_clears_on_update() {
        let posted = form(&[
            ("url", " https://example.com/hook "),
            ("event_type", "order.created"),
            ("patterns", "invoice.*, order.created"),
            ("per_second", "10"),
            ("ordered", "on"),
            ("filter", ""),
        ]);
        let body = settings_body(&posted, false).unwrap();
        assert_eq!(body["url"], "https://example.com/hook");
        assert_eq!(body["event_types"], json!(["order.created", "invoice.*"]));
        assert_eq!(body["rate_limit"], json!({"per_second": 10, "burst": 10}));
        assert_eq!(body["ordered"], true);
        assert!(body.get("filter").is_none() && body.get("max_in_flight").is_none());
        let update = settings_body(&posted, true).unwrap();
        assert_eq!(
            (update["filter"].clone(), update["max_in_flight"].clone()),
            (Value::Null, Value::Null)
        );
    }

    #[test]
    fn numbers_and_filters_that_do_not_parse_are_named() {
        let refused =
            settings_body(&form(&[("url", "x"), ("per_second", "ten"), ("filter", "{")]), false)
                .unwrap_err();
        assert!(refused.about("rate_limit").is_some_and(|m| m.contains("ten")));
        assert!(refused.about("filter").is_some_and(|m| m.starts_with("not JSON")));
    }

    #[test]
    fn a_local_time_is_read_as_utc() {
        assert_eq!(as_rfc3339("2026-12-03T10:15"), "2026-12-03T10:15:00Z");
        assert_eq!(as_rfc3339("2026-12-03T10:15:30"), "2026-12-03T10:15:30Z");
        assert_eq!(as_rfc3339("2026-12-03T10:15:30+01:00"), "2026-12-03T10:15:30+01:00");
        assert_eq!(as_rfc3339("nonsense"), "nonsense");
    }
}
