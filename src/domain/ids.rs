//! Prefixed, time-sortable ids (`sub_…`, `ten_…`, `att_…`, `key_…`, `dl_…`,
//! `rpl_…`), and event ids, which their producers choose. The ULID part sorts by creation time and, within a process,
//! strictly increases, so lists ordered by id and paged by the last id are
//! stable under inserts. The `webhook-id` (`msg_…`) is derived instead.

use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, monotonic_ulid()))
            }

            /// Accepts only ids of this kind, so a `sub_` id never reaches a
            /// query for tenants.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let valid = !rest.is_empty()
                    && rest.len() <= 64
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                valid.then(|| Self(s.to_owned()))
            }

            /// For values read back from our own store.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(SubscriptionId, "sub_");
prefixed_id!(TenantId, "ten_");
prefixed_id!(AttemptId, "att_");
prefixed_id!(ApiKeyId, "key_");
prefixed_id!(DeadLetterId, "dl_");
prefixed_id!(ReplayId, "rpl_");

/// The `webhook-id` of an event for a subscription (`msg_…`): the same for
/// every attempt and replay of it, different across subscriptions. Made by
/// `delivery::webhook_id`; read back from the store as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookId(String);

impl WebhookId {
    pub const PREFIX: &'static str = "msg_";

    /// For values made by `delivery::webhook_id` or read back from our store.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compared with the header it was sent as.
impl PartialEq<&str> for WebhookId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<WebhookId> for String {
    fn from(id: WebhookId) -> Self {
        id.0
    }
}

/// Plain ULIDs made in the same millisecond are random in their order; this
/// generator increments instead, so ids never go backwards in a process. It is
/// process-wide because that is the scope of the guarantee.
static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());

fn monotonic_ulid() -> String {
    let ulid = match GENERATOR.lock() {
        Ok(mut generator) => generator
            .generate()
            // Overflow needs 2^80 ids in one millisecond; fall back anyway.
            .unwrap_or_else(|_| ulid::Ulid::new()),
        Err(_) => ulid::Ulid::new(),
    };
    ulid.to_string().to_lowercase()
}

impl TenantId {
    /// The built-in tenant an admin acts on when it names none.
    pub fn default_tenant() -> Self {
        Self("ten_default".to_owned())
    }
}

/// An event's id (`ce_id`): whatever text its producer chose, so it is not
/// checked for a prefix; hookgate's own are `evt_…`. With the subscription,
/// it makes the `webhook-id` that stays the same across retries and replays.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub const PREFIX: &'static str = "evt_";

    /// A new id, for events published without one.
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, monotonic_ulid()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for EventId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for EventId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl PartialEq<&str> for EventId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_its_own_prefix() {
        let id = SubscriptionId::generate();
        assert!(SubscriptionId::parse(id.as_str()).is_some());
        assert!(TenantId::parse(id.as_str()).is_none());
        assert!(SubscriptionId::parse("sub_").is_none());
        assert!(SubscriptionId::parse("sub_a b").is_none());
    }

    #[test]
    fn event_ids_are_whatever_their_producer_chose() {
        let made = EventId::generate();
        assert!(made.as_str().starts_with(EventId::PREFIX));
        assert_eq!(EventId::from("order-7".to_owned()), "order-7");
        let json = serde_json::to_string(&made).expect("json");
        assert_eq!(json, format!("\"{made}\""), "serialized as the bare text");
    }

    #[test]
    fn ids_made_in_one_millisecond_still_increase() {
        let ids: Vec<AttemptId> = (0..1000).map(|_| AttemptId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let a = AttemptId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = AttemptId::generate();
        assert!(a < b);
    }
}
