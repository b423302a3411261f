//! The admin view, behind an admin token: tenants with their keys, a
//! portal link for any tenant, the event types, and every bulk replay.

use axum::extract::{Path, Query};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde_json::json;

use super::bridge::{with_query, Cursor, Problem};
use super::dead_letters::replay_page;
use super::page::{notice, page, text, time, Section};
use super::session::{csrf_field, Change, Viewer};
use super::{PortalError, PortalState};
use crate::domain::TenantId;

pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/admin", get(tenants))
        .route("/portal/admin/tenants/{id}", get(tenant))
        .route("/portal/admin/tenants/{id}/portal-link", post(portal_link))
        .route("/portal/admin/replays", get(replays))
}

fn admin_only(viewer: &Viewer) -> Result<(), PortalError> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(PortalError::Forbidden("This page is for admins.".to_owned()))
    }
}

async fn tenants(viewer: Viewer, Query(cursor): Query<Cursor>) -> Result<Markup, PortalError> {
    admin_only(&viewer)?;
    let path = with_query("/v1/tenants", &[("limit", "50"), ("cursor", cursor.value())]);
    let answer = viewer.api.get(&path).await?;
    let rows = answer["data"].as_array().cloned().unwrap_or_default();
    let body = html! {
        table {
            caption { "Tenants" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Created" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td { a href={ "/portal/admin/tenants/" (text(&row["id"])) } { (text(&row["name"])) } }
                        td { code { (text(&row["id"])) } }
                        td { (time(&row["created_at"])) }
                    }
                }
            }
        }
        @if let Some(next) = answer["next_cursor"].as_str() {
            p { a href=(with_query("/portal/admin", &[("cursor", next)])) { "More tenants" } }
        }
    };
    Ok(page(&viewer, Section::Admin, "Tenants", body))
}

fn tenant_id(raw: &str) -> Result<TenantId, PortalError> {
    TenantId::parse(raw).ok_or_else(|| PortalError::Api(Problem::not_found("tenant")))
}

async fn tenant(viewer: Viewer, Path(raw): Path<String>) -> Result<Markup, PortalError> {
    admin_only(&viewer)?;
    let id = tenant_id(&raw)?;
    tenant_page(&viewer, &id, None).await
}

async fn tenant_page(
    viewer: &Viewer,
    id: &TenantId,
    link: Option<&serde_json::Value>,
) -> Result<Markup, PortalError> {
    let tenant = viewer.api.get(&format!("/v1/tenants/{}", id.as_str())).await?;
    let keys = viewer.api.get(&format!("/v1/tenants/{}/keys?limit=200", id.as_str())).await?;
    let keys = keys["data"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if let Some(link) = link {
            (notice("A portal link was made. It opens this tenant's portal once; hand it to the tenant."))
            p { code id="portal-link" { (text(&link["url"])) } }
            p { "It expires at " (time(&link["expires_at"])) "." }
        }
        dl class="facts" {
            dt { "Id" } dd { code { (id.as_str()) } }
            dt { "Created" } dd { (time(&tenant["created_at"])) }
        }
        h2 { "API keys" }
        @if keys.is_empty() { p { "No keys." } } @else {
            table {
                caption { "API keys (prefix only)" }
                thead { tr { th scope="col" { "Prefix" } th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Revoked" } } }
                tbody {
                    @for key in &keys {
                        tr {
                            td { code { (text(&key["prefix"])) } }
                            td { (text(&key["name"])) }
                            td { (time(&key["created_at"])) }
                            td { (time(&key["revoked_at"])) }
                        }
                    }
                }
            }
        }
        h2 { "Portal link" }
        form method="post" action={ "/portal/admin/tenants/" (id.as_str()) "/portal-link" } class="inline" {
            (csrf_field(viewer))
            div class="check" {
                input type="checkbox" id="read-only" name="read_only" value="on";
                label for="read-only" { "Read-only" }
            }
            button type="submit" class="primary" { "Make a portal link" }
        }
    };
    let name = tenant["name"].as_str().unwrap_or("Tenant").to_owned();
    Ok(page(viewer, Section::Admin, &name, body))
}

async fn portal_link(
    Path(raw): Path<String>,
    Change { viewer, form }: Change,
) -> Result<Markup, PortalError> {
    admin_only(&viewer)?;
    let id = tenant_id(&raw)?;
    let link = viewer
        .api
        .post(
            &format!("/v1/tenants/{}/portal-links", id.as_str()),
            json!({ "read_only": form.checked("read_only") }),
        )
        .await?;
    tenant_page(&viewer, &id, Some(&link)).await
}

async fn replays(viewer: Viewer, cursor: Query<Cursor>) -> Result<Markup, PortalError> {
    admin_only(&viewer)?;
    replay_page(&viewer, &cursor, "/portal/admin/replays").await
}
