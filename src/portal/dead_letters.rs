//! Dead letters: list with filters, inspect, replay (optionally to another
//! URL), discard; bulk replays with a dry run first, and a page that shows
//! a running replay's progress (it reloads itself, without a script, until
//! the replay ends).

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::bridge::{with_query, Cursor, Problem};
use super::page::{self, action, json_block, notice, option, page, problem, text, time, Section};
use super::session::{csrf_field, Change, Viewer};
use super::subscriptions::as_rfc3339;
use super::{PortalError, PortalState};
use crate::domain::{DeadLetterId, ReplayId};

pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/dead-letters", get(list))
        .route("/portal/dead-letters/{id}", get(detail))
        .route("/portal/dead-letters/{id}/replay", post(replay_one))
        .route("/portal/dead-letters/{id}/discard", post(discard))
        .route("/portal/replays", get(replays).post(create_replay))
        .route("/portal/replays/new", get(new_replay))
        .route("/portal/replays/{id}", get(progress))
}

/// The filters of a list and of a bulk replay, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    subscription_id: Option<String>,
    event_type: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

impl Filters {
    fn value(field: &Option<String>) -> &str {
        field.as_deref().map(str::trim).unwrap_or_default()
    }

    /// The API's query: times as RFC 3339.
    fn api_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("subscription_id", Self::value(&self.subscription_id).to_owned()),
            ("event_type", Self::value(&self.event_type).to_owned()),
            ("status", Self::value(&self.status).to_owned()),
            ("from", as_rfc3339(Self::value(&self.from))),
            ("to", as_rfc3339(Self::value(&self.to))),
        ]
    }

    /// The portal's query, as typed.
    fn page_pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("subscription_id", Self::value(&self.subscription_id)),
            ("event_type", Self::value(&self.event_type)),
            ("status", Self::value(&self.status)),
            ("from", Self::value(&self.from)),
            ("to", Self::value(&self.to)),
        ]
    }
}

fn refs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn filter_form(filters: &Filters, to: &str, with_status: bool) -> Markup {
    let status = Filters::value(&filters.status);
    html! {
        form method="get" action=(to) class="filters" {
            label for="f-subscription" { "Subscription id" }
            input type="text" id="f-subscription" name="subscription_id" value=(Filters::value(&filters.subscription_id));
            label for="f-type" { "Event type" }
            input type="text" id="f-type" name="event_type" value=(Filters::value(&filters.event_type));
            @if with_status {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    (option("", "any", Some(status)))
                    (option("pending", "pending", Some(status)))
                    (option("replayed", "replayed", Some(status)))
                    (option("discarded", "discarded", Some(status)))
                }
            }
            label for="f-from" { "From (UTC)" }
            input type="datetime-local" id="f-from" name="from" value=(Filters::value(&filters.from));
            label for="f-to" { "Until (UTC)" }
            input type="datetime-local" id="f-to" name="to" value=(Filters::value(&filters.to));
            button type="submit" { "Filter" }
        }
    }
}

fn done_message(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "replayed" => "The dead letter was sent again.",
        "discarded" => "The dead letter was discarded.",
        _ => return None,
    })
}

async fn list(viewer: Viewer, Query(filters): Query<Filters>) -> Result<Markup, PortalError> {
    let mut pairs = filters.api_pairs();
    pairs.push(("cursor", filters.cursor.clone().unwrap_or_default()));
    pairs.push(("limit", "50".to_owned()));
    let (rows, next, refused) =
        match viewer.api.get(&with_query("/v1/dead-letters", &refs(&pairs))).await {
            Ok(answer) => (
                answer["data"].as_array().cloned().unwrap_or_default(),
                answer["next_cursor"].as_str().map(str::to_owned),
                None,
            ),
            Err(refused) if refused.status < 500 => (Vec::new(), None, Some(refused)),
            Err(refused) => return Err(refused.into()),
        };
    let more = next.as_deref().map(|next| {
        let mut pairs = filters.page_pairs();
        pairs.push(("cursor", next));
        with_query("/portal/dead-letters", &pairs)
    });
    let mut replay_pairs = filters.page_pairs();
    replay_pairs.retain(|(k, _)| *k != "status");
    let body = html! {
        @if let Some(message) = done_message(filters.done.as_deref()) { (notice(message)) }
        (filter_form(&filters, "/portal/dead-letters", true))
        @if let Some(refused) = &refused { (problem(refused)) }
        p class="actions" {
            @if !viewer.read_only() {
                a class="button" href=(with_query("/portal/replays/new", &replay_pairs)) { "Replay the pending ones that match…" }
            }
            a class="button" href="/portal/replays" { "Bulk replays" }
        }
        @if rows.is_empty() && refused.is_none() {
            p { "No dead letters match." }
        } @else if !rows.is_empty() {
            table {
                caption { "Dead letters, oldest first" }
                thead { tr { th scope="col" { "Died" } th scope="col" { "Event type" } th scope="col" { "Subscription" } th scope="col" { "Reason" } th scope="col" { "Last status" } th scope="col" { "Attempts" } th scope="col" { "Status" } } }
                tbody {
                    @for row in &rows {
                        tr {
                            td { a href={ "/portal/dead-letters/" (text(&row["id"])) } { (time(&row["dead_at"])) } }
                            td { (text(&row["event_type"])) }
                            td { code { (text(&row["subscription_id"])) } }
                            td { (text(&row["reason"])) @if let Some(e) = row["error"].as_str() { br; small { (e) } } }
                            td { (text(&row["last_status"])) }
                            td { (text(&row["attempts"])) }
                            td { (text(&row["status"])) }
                        }
                    }
                }
            }
        }
        @if let Some(more) = &more {
            p { a href=(more) { "More dead letters" } }
        }
    };
    Ok(page(&viewer, Section::DeadLetters, "Dead letters", body))
}

fn parse_id(raw: &str) -> Result<DeadLetterId, PortalError> {
    DeadLetterId::parse(raw).ok_or_else(|| PortalError::Api(Problem::not_found("dead letter")))
}

async fn detail(viewer: Viewer, Path(raw): Path<String>) -> Result<Markup, PortalError> {
    let id = parse_id(&raw)?;
    detail_page(&viewer, &id, None).await
}

async fn detail_page(
    viewer: &Viewer,
    id: &DeadLetterId,
    refused: Option<&Problem>,
) -> Result<Markup, PortalError> {
    let letter = viewer.api.get(&format!("/v1/dead-letters/{}", id.as_str())).await?;
    let here = format!("/portal/dead-letters/{}", id.as_str());
    let pending = letter["status"] == "pending";
    let body = html! {
        @if let Some(refused) = refused { (problem(refused)) }
        dl class="facts" {
            dt { "Status" } dd { (text(&letter["status"])) }
            dt { "Reason" } dd { (text(&letter["reason"])) }
            dt { "Last error" } dd { (text(&letter["error"])) }
            dt { "Last status" } dd { (text(&letter["last_status"])) }
            dt { "Attempts" } dd { (text(&letter["attempts"])) }
            dt { "Event" } dd { (text(&letter["event_type"])) " " code { (text(&letter["event_id"])) } }
            dt { "Subscription" } dd {
                @match letter["subscription_id"].as_str() {
                    Some(sub) => a href={ "/portal/subscriptions/" (sub) } { code { (sub) } },
                    None => "—",
                }
            }
            dt { "webhook-id" } dd { code { (text(&letter["webhook_id"])) } }
            dt { "First attempt" } dd { (time(&letter["first_attempt_at"])) }
            dt { "Last attempt" } dd { (time(&letter["last_attempt_at"])) }
            dt { "Died" } dd { (time(&letter["dead_at"])) }
        }
        @if pending && letter["replayable"].as_bool().unwrap_or(false) {
            section aria-labelledby="replay-title" {
                h2 id="replay-title" { "Replay" }
                form method="post" action={ (here) "/replay" } {
                    (csrf_field(viewer))
                    label for="replay-url" { "Send to another URL instead (optional)" }
                    input type="url" id="replay-url" name="url";
                    button type="submit" class="primary" disabled[viewer.read_only()] { "Replay" }
                }
                (action(viewer, &format!("{here}/discard"), "Discard", "danger"))
            }
        }
        h2 { "Payload" }
        @match &letter["record"]["payload"] {
            Value::Null => p { "Not JSON (" (letter["record"]["payload_base64"].as_str().map_or(0, str::len)) " base64 characters)." },
            payload => (json_block(payload, "Payload")),
        }
        h2 { "Attempts" }
        @let attempts = letter["attempt_log"].as_array().cloned().unwrap_or_default();
        @if attempts.is_empty() { p { "None in the attempt log." } } @else {
            table {
                caption { "Attempts of this delivery" }
                thead { tr { th scope="col" { "Time" } th scope="col" { "Attempt" } th scope="col" { "Outcome" } th scope="col" { "Status" } th scope="col" { "Error" } } }
                tbody {
                    @for a in &attempts {
                        tr { td { (time(&a["created_at"])) } td { (text(&a["attempt"])) } td { (text(&a["outcome"])) } td { (text(&a["status_code"])) } td { (text(&a["error"])) } }
                    }
                }
            }
        }
    };
    Ok(page(viewer, Section::DeadLetters, "Dead letter", body))
}

async fn replay_one(
    Path(raw): Path<String>,
    Change { viewer, form }: Change,
) -> Result<Response, PortalError> {
    let id = parse_id(&raw)?;
    let body = match form.get("url") {
        Some(url) => json!({ "url": url }),
        None => json!({}),
    };
    match viewer.api.post(&format!("/v1/dead-letters/{}/replay", id.as_str()), body).await {
        Ok(_) => Ok(page::see_other("/portal/dead-letters?done=replayed")),
        Err(refused) if refused.status < 500 && refused.status != 404 => {
            Ok((status_of(&refused), detail_page(&viewer, &id, Some(&refused)).await?)
                .into_response())
        }
        Err(refused) => Err(refused.into()),
    }
}

async fn discard(Path(raw): Path<String>, change: Change) -> Result<Response, PortalError> {
    let id = parse_id(&raw)?;
    change.viewer.api.post(&format!("/v1/dead-letters/{}/discard", id.as_str()), json!({})).await?;
    Ok(page::see_other("/portal/dead-letters?done=discarded"))
}

fn status_of(problem: &Problem) -> axum::http::StatusCode {
    axum::http::StatusCode::from_u16(problem.status)
        .unwrap_or(axum::http::StatusCode::UNPROCESSABLE_ENTITY)
}

/// A bulk replay's form: its filter, a rate, another URL; a dry run first.
fn replay_form(
    viewer: &Viewer,
    filters: &Filters,
    url: &str,
    rate: &str,
    counted: Option<u64>,
) -> Markup {
    let hidden = filters.page_pairs();
    html! {
        form method="post" action="/portal/replays" class="settings" {
            (csrf_field(viewer))
            @for (name, value) in &hidden {
                @if !value.is_empty() { input type="hidden" name=(name) value=(value); }
            }
            label for="r-url" { "Send to another URL instead (optional)" }
            input type="url" id="r-url" name="url" value=(url);
            label for="r-rate" { "At most this many a second to each subscription (optional)" }
            input type="number" id="r-rate" name="rate_per_second" min="1" value=(rate);
            div class="actions" {
                button type="submit" name="dry_run" value="1" { "Dry run: count them" }
                @if let Some(total) = counted {
                    button type="submit" class="primary" disabled[total == 0 || viewer.read_only()] { "Replay " (total) " dead letters" }
                }
            }
        }
    }
}

async fn new_replay(viewer: Viewer, Query(filters): Query<Filters>) -> Result<Markup, PortalError> {
    let body = html! {
        p { "Sends every pending dead letter that matches again. Change the filter here, then count them with a dry run before you replay." }
        (filter_form(&filters, "/portal/replays/new", false))
        (replay_form(&viewer, &filters, "", "", None))
    };
    Ok(page(&viewer, Section::DeadLetters, "Bulk replay", body))
}

async fn create_replay(Change { viewer, form }: Change) -> Result<Response, PortalError> {
    let filters = Filters {
        subscription_id: form.get("subscription_id").map(str::to_owned),
        event_type: form.get("event_type").map(str::to_owned),
        from: form.get("from").map(str::to_owned),
        to: form.get("to").map(str::to_owned),
        ..Filters::default()
    };
    let mut body = Map::new();
    for (name, value) in filters.api_pairs() {
        if !value.is_empty() && name != "status" {
            body.insert(name.to_owned(), json!(value));
        }
    }
    let url = form.get("url").unwrap_or_default().to_owned();
    let rate = form.get("rate_per_second").unwrap_or_default().to_owned();
    if !url.is_empty() {
        body.insert("url".to_owned(), json!(url));
    }
    if !rate.is_empty() {
        match rate.parse::<u64>() {
            Ok(rate) => {
                body.insert("rate_per_second".to_owned(), json!(rate));
            }
            Err(_) => {
                body.insert("rate_per_second".to_owned(), json!(rate));
            }
        }
    }
    let dry_run = form.checked("dry_run");
    body.insert("dry_run".to_owned(), json!(dry_run));
    let outcome = viewer.api.post("/v1/replays", Value::Object(body)).await;
    let (extra, counted, status) = match outcome {
        Ok(answer) if dry_run => {
            let total = answer["total"].as_u64().unwrap_or(0);
            let message = match total {
                0 => "No pending dead letter matches: there is nothing to replay.".to_owned(),
                1 => "1 pending dead letter matches.".to_owned(),
                n => format!("{n} pending dead letters match."),
            };
            (notice(&message), Some(total), axum::http::StatusCode::OK)
        }
        Ok(answer) => {
            let id = text(&answer["id"]);
            return Ok(page::see_other(&format!("/portal/replays/{id}")));
        }
        Err(refused) if refused.status < 500 => {
            let status = status_of(&refused);
            (problem(&refused), None, status)
        }
        Err(refused) => return Err(refused.into()),
    };
    let body = html! {
        (extra)
        (filter_form(&filters, "/portal/replays/new", false))
        (replay_form(&viewer, &filters, &url, &rate, counted))
    };
    Ok((status, page(&viewer, Section::DeadLetters, "Bulk replay", body)).into_response())
}

async fn progress(viewer: Viewer, Path(raw): Path<String>) -> Result<Markup, PortalError> {
    let id = ReplayId::parse(&raw).ok_or_else(|| PortalError::Api(Problem::not_found("replay")))?;
    let replay = viewer.api.get(&format!("/v1/replays/{}", id.as_str())).await?;
    let total = replay["total"].as_u64().unwrap_or(0);
    let handled =
        ["done", "failed", "skipped"].iter().map(|k| replay[*k].as_u64().unwrap_or(0)).sum::<u64>();
    let running = replay["status"] == "running";
    let body = html! {
        // Reloads itself while the replay runs: a page without a script.
        @if running { (PreEscaped(r#"<meta http-equiv="refresh" content="1">"#)) }
        p {
            label for="replay-progress" { "Progress: " (handled) " of " (total) }
            " "
            progress id="replay-progress" max=(total.max(1)) value=(if total == 0 { 1 } else { handled }) { (handled) " of " (total) }
        }
        p role="status" { "Status: " strong { (text(&replay["status"])) } }
        dl class="facts" {
            dt { "Sent again" } dd { (text(&replay["done"])) }
            dt { "Not replayable" } dd { (text(&replay["failed"])) }
            dt { "Skipped (handled otherwise meanwhile)" } dd { (text(&replay["skipped"])) }
            dt { "Started" } dd { (time(&replay["created_at"])) }
            dt { "Finished" } dd { (time(&replay["finished_at"])) }
            @if let Some(url) = replay["url"].as_str() { dt { "Sent to" } dd { (url) } }
        }
        p { a href="/portal/dead-letters" { "Back to the dead letters" } }
    };
    Ok(page(&viewer, Section::DeadLetters, "Bulk replay", body))
}

/// The viewer's bulk replays, newest first.
async fn replays(viewer: Viewer, Query(cursor): Query<Cursor>) -> Result<Markup, PortalError> {
    replay_page(&viewer, &cursor, "/portal/replays").await
}

/// A page of the bulk replays the viewer may see (a tenant its own, an
/// admin every tenant's), at `here`.
pub(super) async fn replay_page(
    viewer: &Viewer,
    cursor: &Cursor,
    here: &str,
) -> Result<Markup, PortalError> {
    let path = with_query("/v1/replays", &[("limit", "50"), ("cursor", cursor.value())]);
    let answer = viewer.api.get(&path).await?;
    Ok(page(viewer, Section::DeadLetters, "Bulk replays", replay_table(&answer, here)))
}

/// A page of replays as a table, with a link to the next page.
fn replay_table(answer: &Value, here: &str) -> Markup {
    let rows = answer["data"].as_array().cloned().unwrap_or_default();
    html! {
        @if rows.is_empty() { p { "No bulk replays yet." } } @else {
            table {
                caption { "Bulk replays, newest first" }
                thead { tr { th scope="col" { "Started" } th scope="col" { "Tenant" } th scope="col" { "Status" } th scope="col" { "Sent / total" } th scope="col" { "Filter" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href={ "/portal/replays/" (text(&r["id"])) } { (time(&r["created_at"])) } }
                            td { code { (text(&r["tenant_id"])) } }
                            td { (text(&r["status"])) }
                            td { (text(&r["done"])) " / " (text(&r["total"])) }
                            td { (text(&r["event_type"])) " " (text(&r["subscription_id"])) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = answer["next_cursor"].as_str() {
            p { a href=(with_query(here, &[("cursor", next)])) { "Older replays" } }
        }
    }
}
