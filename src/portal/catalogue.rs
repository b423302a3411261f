//! The event catalogue: the types a tenant may subscribe to, each with its
//! JSON Schema and an example payload (the schema's own `examples`, or one
//! made from the schema).

use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::page::{json_block, page, text, Section};
use super::session::Viewer;
use super::{PortalError, PortalState};

pub(super) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/portal/event-types", get(tenant_catalogue))
        .route("/portal/admin/event-types", get(admin_catalogue))
}

async fn tenant_catalogue(viewer: Viewer) -> Result<Markup, PortalError> {
    catalogue(viewer).await
}

async fn admin_catalogue(viewer: Viewer) -> Result<Markup, PortalError> {
    if !viewer.is_admin() {
        return Err(PortalError::Forbidden("This page is for admins.".to_owned()));
    }
    catalogue(viewer).await
}

/// Every type the viewer may see (a few pages of the API's list at most).
async fn catalogue(viewer: Viewer) -> Result<Markup, PortalError> {
    let mut types = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = super::bridge::with_query(
            "/v1/event-types",
            &[("limit", "200"), ("cursor", cursor.as_deref().unwrap_or_default())],
        );
        let answer = viewer.api.get(&path).await?;
        types.extend(answer["data"].as_array().cloned().unwrap_or_default());
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let body = html! {
        p { "The event types you can subscribe to. A subscription names them exactly, or by a pattern such as " code { "order.*" } "." }
        @if types.is_empty() { p { "No event types are registered yet." } }
        @for (i, event_type) in types.iter().enumerate() {
            section class="event-type" aria-labelledby={ "type-" (i) } {
                h2 id={ "type-" (i) } { code { (text(&event_type["name"])) } }
                @if let Some(description) = event_type["description"].as_str() { p { (description) } }
                @match &event_type["schema"] {
                    Value::Null => p { "No schema: any JSON is accepted as its data." },
                    schema => {
                        details {
                            summary { "JSON Schema" }
                            (json_block(schema, "JSON Schema"))
                        }
                    }
                }
                h3 { "Example payload" }
                (json_block(&example_webhook(event_type), "Example payload"))
            }
        }
    };
    Ok(page(&viewer, Section::EventTypes, "Event types", body))
}

/// A webhook's body as the receiver gets it, with example data.
fn example_webhook(event_type: &Value) -> Value {
    json!({
        "type": event_type["name"],
        "timestamp": "2026-12-01T12:00:00Z",
        "data": example(&event_type["schema"], 0),
    })
}

/// An example value that the schema accepts, for the common keywords:
/// `examples`, `const`, `enum`, `default`, `type`, `properties`, `items`.
fn example(schema: &Value, depth: usize) -> Value {
    let Some(schema) = schema.as_object() else { return json!({}) };
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema.get("examples").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for keyword in ["const", "default"] {
        if let Some(value) = schema.get(keyword) {
            return value.clone();
        }
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema.get(keyword).and_then(Value::as_array).and_then(|e| e.first()) {
            return example(first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => {
            kinds.iter().filter_map(Value::as_str).find(|k| *k != "null").unwrap_or("null")
        }
        _ if schema.contains_key("properties") => "object",
        _ => return json!({}),
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), example(property, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => match schema.get("items") {
            Some(items) => json!([example(items, depth + 1)]),
            None => json!([]),
        },
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-12-01T12:00:00Z"),
            Some("date") => json!("2026-12-01"),
            Some("email") => json!("someone@example.com"),
            Some("uri") => json!("https://example.com/"),
            Some("uuid") => json!("00000000-0000-4000-8000-000000000000"),
            _ => json!("string"),
        },
        "integer" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "number" => schema.get("minimum").cloned().unwrap_or(json!(1.5)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_follows_the_schema_or_its_own_examples() {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "amount": {"type": "integer", "minimum": 100},
                "currency": {"enum": ["EUR", "USD"]},
                "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
                "paid": {"type": ["null", "boolean"]},
            }
        });
        assert_eq!(
            example(&schema, 0),
            json!({
                "id": "00000000-0000-4000-8000-000000000000",
                "amount": 100,
                "currency": "EUR",
                "lines": [{"sku": "string"}],
                "paid": true,
            })
        );
        assert_eq!(example(&json!({"examples": [{"a": 1}], "type": "object"}), 0), json!({"a": 1}));
        assert_eq!(example(&Value::Null, 0), json!({}));
        assert_eq!(example(&json!(true), 0), json!({}));
        let wrapped = example_webhook(&json!({"name": "order.created", "schema": null}));
        assert_eq!(
            (wrapped["type"].clone(), wrapped["data"].clone()),
            (json!("order.created"), json!({}))
        );
    }

    #[test]
    fn the_example_of_a_schema_that_refers_to_itself_ends() {
        let mut schema = json!({"type": "object", "properties": {}});
        for _ in 0..20 {
            schema = json!({"type": "object", "properties": {"next": schema}});
        }
        let made = example(&schema, 0);
        assert!(made.to_string().len() < 200, "{made}");
    }
}
