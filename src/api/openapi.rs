//! The OpenAPI 3.1 document, generated from the handlers' annotations. It is
//! served at `/openapi.json`, printed by `hookgate openapi`, and committed as
//! `openapi/hookgate.yaml` (a test fails when the two drift apart).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    dead_letters, event_types, events, health, problem, replays, subscription_actions,
    subscriptions, tenants,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookgate",
        description = "Webhook delivery service and event API gateway on Apache Kafka. \
            Every `/v1` call takes `Authorization: Bearer <token>`: an admin token, or a \
            tenant API key (`hgk_…`) that sees only its tenant's resources. Errors are \
            RFC 9457 `application/problem+json` with a stable `type` and `code`. Lists \
            answer `{\"data\": [...], \"next_cursor\": …}`; pass `next_cursor` as `cursor`. \
            Quotas answer 422 `quota_exceeded` (a count is full) or 429 `rate_limited` with \
            `Retry-After` (a rate is spent), naming the `quota` and its `limit`; a client \
            address whose tokens failed too often gets 429 for tenant keys for a while, \
            without a database lookup.",
        license(name = "Apache-2.0")
    ),
    paths(
        health::healthz,
        health::readyz,
        tenants::create,
        tenants::list,
        tenants::get,
        tenants::create_key,
        tenants::list_keys,
        tenants::revoke_key,
        subscriptions::create,
        subscriptions::list,
        subscriptions::get,
        subscriptions::update,
        subscriptions::delete,
        subscription_actions::rotate_secret,
        subscription_actions::send_test,
        subscription_actions::attempts,
        event_types::create,
        event_types::list,
        event_types::get,
        event_types::update,
        events::publish,
        events::publish_batch,
        events::attempts,
        dead_letters::list,
        dead_letters::get,
        dead_letters::replay,
        dead_letters::discard,
        replays::create,
        replays::get,
        replays::cancel,
    ),
    components(schemas(problem::Problem, problem::FieldError)),
    modifiers(&BearerAuth, &AuthFailureLimit),
    tags(
        (name = "tenants", description = "Tenants and their API keys (admin)"),
        (name = "subscriptions", description = "Webhook subscriptions"),
        (name = "event-types", description = "Registered event types and their schemas (admin)"),
        (name = "events", description = "Publishing and delivery attempts"),
        (name = "dead-letters", description = "What was not delivered: inspect, replay (one or in bulk), discard"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token from the configuration, or a tenant API key (`hgk_…`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation with a bearer token may answer 429: its address failed
/// to authenticate too often (`quota::Limiters`).
struct AuthFailureLimit;

impl Modify for AuthFailureLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::Header;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description(
                "`rate_limited`: too many failed authentications from this address \
                 (`HOOKGATE_AUTH_FAILURES_PER_MINUTE`); tenant keys from it wait",
            )
            .header("Retry-After", Header::new(ObjectBuilder::new().schema_type(Type::Integer)))
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    operation
                        .responses
                        .responses
                        .entry("429".to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// The document as YAML, as committed in `openapi/hookgate.yaml`.
pub fn yaml() -> String {
    ApiDoc::openapi()
        .to_yaml()
        .unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
}
