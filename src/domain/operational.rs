//! Operational events: what hookgate tells a tenant about its own
//! subscriptions (disabled, enabled, recovered, a delivery failing or
//! exhausted, a circuit opened or closed). Each is a CloudEvent of a type
//! under `hookgate.`, scoped to the subscription's tenant, with a versioned
//! data shape whose JSON Schema is registered like any event type's.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::{EventId, SubscriptionId, TenantId};

/// Every operational type starts with it; nobody else may publish under it.
pub const NAMESPACE: &str = "hookgate.";
/// The version of every data shape below; a change that is not additive
/// gets a new one (and a new `dataschema`).
pub const DATA_VERSION: u32 = 1;
/// `ce_source` of every operational event.
pub const SOURCE: &str = "hookgate";

/// Whether `event_type` is one of hookgate's own (`hookgate.…`).
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with(NAMESPACE)
}

/// Declares the kinds from one list: name, description, and the properties
/// their data has beside the common ones.
macro_rules! kinds {
    ($($variant:ident => $name:literal, $doc:literal;)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $(#[doc = $doc] $variant,)+
        }

        impl Kind {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(Self::$variant => $doc,)+
                }
            }
        }
    };
}

kinds! {
    SubscriptionDisabled => "hookgate.subscription.disabled",
        "A subscription stopped receiving webhooks: its endpoint answered 410 Gone, failed every attempt for the configured span, or an admin disabled or suspended it.";
    SubscriptionEnabled => "hookgate.subscription.enabled",
        "A subscription that was paused, disabled or suspended is active again.";
    SubscriptionRecovered => "hookgate.subscription.recovered",
        "A subscription's endpoint succeeded again after failed attempts in a row.";
    DeliveryFailing => "hookgate.delivery.failing",
        "One event's delivery to a subscription failed the configured number of attempts; it is still being retried.";
    DeliveryExhausted => "hookgate.delivery.exhausted",
        "One event's delivery to a subscription gave up and is a dead letter (replayable by its id).";
    CircuitOpened => "hookgate.circuit.opened",
        "A subscription's circuit breaker opened: its deliveries wait until a probe succeeds.";
    CircuitClosed => "hookgate.circuit.closed",
        "A subscription's circuit breaker closed: a probe succeeded and deliveries flow again.";
}

impl Kind {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// The CloudEvents `dataschema` of this kind's data.
    pub fn data_schema_uri(self) -> String {
        format!("urn:hookgate:schema:{}:v{DATA_VERSION}", self.as_str())
    }

    /// The JSON Schema (2020-12) of this kind's `data`.
    pub fn schema(self) -> Value {
        let mut properties = serde_json::Map::new();
        let mut required = vec!["version", "subscription_id", "tenant_id", "at"];
        properties.insert("version".into(), json!({"type": "integer", "const": DATA_VERSION}));
        properties.insert(
            "subscription_id".into(),
            json!({"type": "string", "description": "The subscription concerned (`sub_…`)"}),
        );
        properties.insert("tenant_id".into(), json!({"type": "string"}));
        properties.insert(
            "at".into(),
            json!({"type": "string", "format": "date-time", "description": "When it happened"}),
        );
        let delivery = || {
            vec![
                ("event_id", json!({"type": "string"})),
                ("event_type", json!({"type": "string"})),
                (
                    "webhook_id",
                    json!({"type": "string", "description": "The `webhook-id` of its webhooks"}),
                ),
                ("attempts", json!({"type": "integer", "minimum": 1})),
                (
                    "last_status",
                    json!({"type": ["integer", "null"], "description": "The endpoint's last HTTP status, if it answered"}),
                ),
                ("last_error", json!({"type": ["string", "null"]})),
            ]
        };
        let extra: Vec<(&str, Value)> = match self {
            Self::SubscriptionDisabled => vec![
                (
                    "reason",
                    json!({"type": "string", "enum": ["gone", "sustained_failure", "admin", "suspended"],
                    "description": "`gone`: the endpoint answered 410; `sustained_failure`: every attempt failed for the configured span; `admin`: an admin disabled it; `suspended`: an admin suspended it (only an admin can re-enable it)"}),
                ),
                ("detail", json!({"type": "string"})),
                ("consecutive_failures", json!({"type": "integer", "minimum": 0})),
                ("failing_since", json!({"type": ["string", "null"], "format": "date-time"})),
            ],
            Self::SubscriptionEnabled => vec![
                (
                    "previous_status",
                    json!({"type": "string", "enum": ["paused", "disabled", "suspended"]}),
                ),
                ("by", json!({"type": "string", "enum": ["tenant", "admin"]})),
            ],
            Self::SubscriptionRecovered => vec![
                (
                    "failed_attempts",
                    json!({"type": "integer", "minimum": 1, "description": "Failed attempts in a row before this success"}),
                ),
                ("failing_since", json!({"type": ["string", "null"], "format": "date-time"})),
            ],
            Self::DeliveryFailing => delivery(),
            Self::DeliveryExhausted => {
                let mut fields = delivery();
                fields.push(("dead_letter_id", json!({"type": "string", "description": "Replay it with `POST /v1/dead-letters/{id}/replay`"})));
                fields.push((
                    "reason",
                    json!({"type": "string", "description": "The dead letter's reason"}),
                ));
                fields
            }
            Self::CircuitOpened => vec![
                (
                    "until",
                    json!({"type": "string", "format": "date-time", "description": "When the next probe may go"}),
                ),
                (
                    "reopened",
                    json!({"type": "boolean", "description": "A probe failed and it opened again, for longer"}),
                ),
            ],
            Self::CircuitClosed => vec![],
        };
        for (name, schema) in extra {
            // Nullable fields may be absent or null; the others are always there.
            if !schema["type"].is_array() {
                required.push(name);
            }
            properties.insert(name.into(), schema);
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": self.data_schema_uri(),
            "title": self.as_str(),
            "description": self.description(),
            "type": "object",
            "properties": properties,
            "required": required,
        })
    }
}

/// Why a subscription was disabled (`hookgate.subscription.disabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledBecause {
    Gone,
    SustainedFailure,
    Admin,
    Suspended,
}

/// One operational event, before it is a record.
#[derive(Debug, Clone)]
pub struct Operational {
    pub kind: Kind,
    pub tenant_id: TenantId,
    pub subscription_id: SubscriptionId,
    pub at: DateTime<Utc>,
    /// The kind's own fields (see `Kind::schema`).
    pub fields: serde_json::Map<String, Value>,
}

impl Operational {
    pub fn new(
        kind: Kind,
        tenant_id: TenantId,
        subscription_id: SubscriptionId,
        at: DateTime<Utc>,
    ) -> Self {
        Self { kind, tenant_id, subscription_id, at, fields: serde_json::Map::new() }
    }

    /// Adds one of the kind's fields.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        self.fields.insert(name.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// Its `data`: the common fields, then the kind's.
    pub fn data(&self) -> Value {
        let mut data = serde_json::Map::new();
        data.insert("version".into(), json!(DATA_VERSION));
        data.insert("subscription_id".into(), json!(self.subscription_id.as_str()));
        data.insert("tenant_id".into(), json!(self.tenant_id.as_str()));
        data.insert("at".into(), json!(self.at.to_rfc3339_opts(SecondsFormat::Millis, true)));
        data.extend(self.fields.clone());
        Value::Object(data)
    }

    /// A fresh event id for it.
    pub fn event_id() -> EventId {
        EventId::generate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_in_the_namespace_and_parses_back() {
        for kind in Kind::ALL {
            assert!(is_operational(kind.as_str()), "{kind:?}");
            assert!(super::super::event::is_valid_event_type(kind.as_str()));
            assert_eq!(Kind::parse(kind.as_str()), Some(*kind));
        }
        assert!(!is_operational("hookgates.x"));
        assert!(!is_operational("order.created"));
    }

    #[test]
    fn data_carries_the_common_fields_and_satisfies_its_schema() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let tenant = TenantId::default_tenant();
        let event = Operational::new(
            Kind::DeliveryExhausted,
            tenant,
            SubscriptionId::from_trusted("sub_1".into()),
            at,
        )
        .with("event_id", "evt_1")
        .with("event_type", "order.created")
        .with("webhook_id", "msg_1")
        .with("attempts", 4)
        .with("last_status", Some(503))
        .with("last_error", Option::<String>::None)
        .with("dead_letter_id", "dlq_1")
        .with("reason", "exhausted");
        let data = event.data();
        assert_eq!(data["version"], 1);
        assert_eq!(data["subscription_id"], "sub_1");
        assert_eq!(data["at"], "2023-11-14T22:13:20.000Z");
        let schema = Kind::DeliveryExhausted.schema();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        assert!(validator.is_valid(&data), "{data}");
        let mut missing = data.clone();
        missing.as_object_mut().expect("object").remove("dead_letter_id");
        assert!(!validator.is_valid(&missing), "dead_letter_id is required");
    }

    #[test]
    fn every_schema_compiles() {
        for kind in Kind::ALL {
            assert!(jsonschema::validator_for(&kind.schema()).is_ok(), "{kind:?}");
        }
    }
}
