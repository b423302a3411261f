//! An event as hookgate carries it from the publisher to the webhook.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{EventId, TenantId};

/// The longest event type name we accept.
pub const MAX_TYPE_LEN: usize = 255;

#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub event_type: String,
    pub source: String,
    pub time: DateTime<Utc>,
    /// The partition key: the scope of ordering.
    pub key: Option<Vec<u8>>,
    /// Kept as raw JSON so delivery never re-encodes it; shared, not
    /// copied, by the deliveries of one event.
    pub data: Arc<RawValue>,
    pub audience: Audience,
}

/// Whose subscriptions an event may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// One tenant's: the publishing key's, the one an admin named, or the
    /// built-in default tenant (an admin who names none, a raw Kafka record
    /// without `ce_tenantid`).
    Tenant(TenantId),
    /// Every tenant that may see the event's type: only ever on purpose
    /// (`"broadcast": true` from an admin, `ce_broadcast: true` on Kafka).
    Broadcast,
}

impl Audience {
    /// Whether a subscription of `tenant` may get the event, as far as its
    /// audience goes (the type's visibility is checked besides).
    pub fn includes(&self, tenant: &TenantId) -> bool {
        match self {
            Self::Tenant(own) => own == tenant,
            Self::Broadcast => true,
        }
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a RawValue,
}

impl Event {
    /// The Standard Webhooks body: `{"type", "timestamp", "data"}`.
    pub fn webhook_body(&self) -> Vec<u8> {
        let body = WebhookBody {
            event_type: &self.event_type,
            timestamp: self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            data: &self.data,
        };
        #[allow(clippy::expect_used, reason = "serializing strings and raw JSON cannot fail")]
        serde_json::to_vec(&body).expect("serializing strings and raw JSON cannot fail")
    }
}

/// Event type names are dot-separated words: `order.created`, `invoice.paid.v2`.
pub fn is_valid_event_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TYPE_LEN
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_body_has_type_timestamp_and_untouched_data() {
        let event = Event {
            id: "evt_1".into(),
            event_type: "order.created".into(),
            source: "test".into(),
            time: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            key: None,
            data: RawValue::from_string(r#"{"b":1, "a":2}"#.into()).expect("valid json").into(),
            audience: Audience::Broadcast,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&event.webhook_body()).expect("body is JSON");
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["data"], serde_json::json!({"a": 2, "b": 1}));
    }

    #[test]
    fn event_type_names() {
        assert!(is_valid_event_type("order.created"));
        assert!(is_valid_event_type("a_b-c.v2"));
        assert!(!is_valid_event_type(""));
        assert!(!is_valid_event_type("order..created"));
        assert!(!is_valid_event_type("order.*"));
        assert!(!is_valid_event_type("with space"));
    }
}
