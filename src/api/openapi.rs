//! The OpenAPI 3.1 document: `Base` (info, shared components, tags, the
//! bearer scheme) filled with the operations that each resource's router
//! carries (`api::documented`), then `secure_v1`. It is served at
//! `/openapi.json`, printed by `hookgate openapi`, and committed as
//! `openapi/hookgate.yaml` (a test fails when the two drift apart).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem;

/// What no router says: the routers add the paths.
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
    components(schemas(problem::Problem, problem::FieldError)),
    modifiers(&BearerAuth, &OperationalSchemas),
    tags(
        (name = "tenants", description = "Tenants and their API keys (admin)"),
        (name = "subscriptions", description = "Webhook subscriptions"),
        (name = "event-types", description = "Registered event types and their schemas (admin)"),
        (name = "events", description = "Publishing and delivery attempts"),
        (name = "dead-letters", description = "What was not delivered: inspect, replay (one or in bulk), discard"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct Base;

/// `Base`, for the routers to fill.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// The whole document, as the API's router serves it.
#[derive(Debug)]
pub struct ApiDoc;

impl OpenApi for ApiDoc {
    fn openapi() -> utoipa::openapi::OpenApi {
        super::documented().1
    }
}

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

/// The data of each operational event type (`hookgate.…`), under the
/// type's name: the JSON Schemas the catalogue registers, so the two never
/// differ.
struct OperationalSchemas;

impl Modify for OperationalSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::domain::operational::Kind;
        let components = openapi.components.get_or_insert_with(Default::default);
        for kind in Kind::ALL {
            let mut schema = kind.schema();
            if let Some(object) = schema.as_object_mut() {
                // The document's dialect is OpenAPI 3.1's; the URN stays in
                // the catalogue's copy.
                object.remove("$schema");
                object.remove("$id");
            }
            match serde_json::from_value::<utoipa::openapi::RefOr<utoipa::openapi::Schema>>(schema)
            {
                Ok(schema) => {
                    components.schemas.insert(kind.as_str().to_owned(), schema);
                }
                Err(error) => {
                    tracing::error!(kind = kind.as_str(), %error, "operational schema not documented")
                }
            }
        }
    }
}

/// Every `/v1` operation takes the bearer token, so each documents it, its
/// 401, and the 429 of an address that failed to authenticate too often
/// (`quota::Limiters`) unless it documents a 429 of its own. Handlers'
/// annotations name none of these.
pub(super) fn secure_v1(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::Header;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let unauthorized = super::responses::problem("No or bad token").build();
    let auth_limited = super::responses::problem(
        "`rate_limited`: too many failed authentications from this address \
         (`HOOKGATE_AUTH_FAILURES_PER_MINUTE`); tenant keys from it wait",
    )
    .header("Retry-After", Header::new(ObjectBuilder::new().schema_type(Type::Integer)))
    .build();
    let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![bearer.clone()]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), unauthorized.clone().into());
            responses.entry("429".to_owned()).or_insert_with(|| auth_limited.clone().into());
        }
    }
}

/// The document as YAML, as committed in `openapi/hookgate.yaml`.
pub fn yaml() -> String {
    ApiDoc::openapi()
        .to_yaml()
        .unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operational_type_has_its_data_schema_among_the_components() {
        let document = ApiDoc::openapi();
        let schemas = &document.components.expect("components").schemas;
        for kind in crate::domain::operational::Kind::ALL {
            let schema = kind.schema();
            let mut stripped = schema.clone();
            if let Some(object) = stripped.as_object_mut() {
                object.remove("$schema");
                object.remove("$id");
            }
            let parsed =
                serde_json::from_value::<utoipa::openapi::RefOr<utoipa::openapi::Schema>>(stripped);
            assert!(parsed.is_ok(), "{}: {:?}", kind.as_str(), parsed.err());
            let documented = serde_json::to_value(&schemas[kind.as_str()]).expect("JSON");
            assert_eq!(documented["required"], schema["required"], "{}", kind.as_str());
        }
    }
}
