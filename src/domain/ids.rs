//! Prefixed, time-sortable ids (`sub_…`, `ten_…`, `att_…`). The ULID part sorts
//! by creation time, which keeps cursor pagination stable under inserts.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::new().to_string().to_lowercase()))
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

impl TenantId {
    /// The built-in tenant an admin acts on when it names none.
    pub fn default_tenant() -> Self {
        Self("ten_default".to_owned())
    }
}

/// A new event id, for events published without one.
pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::new().to_string().to_lowercase())
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
    fn generated_ids_sort_by_creation() {
        let a = AttemptId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = AttemptId::generate();
        assert!(a < b);
    }
}
