//! A webhook subscription and the event-type patterns it matches.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::is_valid_event_type;
use super::{SubscriptionId, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    Paused,
    Disabled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// Deliveries per second, with bursts up to `burst`; absent: unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[schema(minimum = 1)]
    pub per_second: u32,
    #[schema(minimum = 1)]
    pub burst: u32,
}

/// A secret replaced by a rotation, still signing until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub url: String,
    pub event_types: Vec<String>,
    /// The `whsec_…` text; never logged (see `SigningSecret`'s Debug).
    pub secret: String,
    /// Secrets replaced by rotations; webhooks carry their signatures too
    /// until each expires.
    pub previous_secrets: Vec<PreviousSecret>,
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: Option<u32>,
    pub ordered: bool,
    pub headers: BTreeMap<String, String>,
    pub status: SubscriptionStatus,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
impl Subscription {
    /// An active subscription of `tenant` to `order.*` at a dead loopback
    /// port, for unit tests.
    pub fn example(tenant: TenantId, secret: &str) -> Self {
        let now = Utc::now();
        Self {
            id: SubscriptionId::generate(),
            tenant_id: tenant,
            url: "http://127.0.0.1:1/".to_owned(),
            event_types: vec!["order.*".to_owned()],
            secret: secret.to_owned(),
            previous_secrets: Vec::new(),
            rate_limit: None,
            max_in_flight: None,
            ordered: false,
            headers: BTreeMap::new(),
            status: SubscriptionStatus::Active,
            disabled_reason: None,
            description: None,
            metadata: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// One entry of `event_types`: an exact name, `prefix.*`, or `*` for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypePattern {
    All,
    /// Holds the prefix with its trailing dot: `order.` for `order.*`.
    Prefix(String),
    Exact(String),
}

impl EventTypePattern {
    pub fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Self::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            return is_valid_event_type(prefix).then(|| Self::Prefix(format!("{prefix}.")));
        }
        is_valid_event_type(s).then(|| Self::Exact(s.to_owned()))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::Exact(name) => name == event_type,
        }
    }
}

/// A subscription's circuit breaker as its dispatcher last wrote it (times
/// in Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitRecord {
    pub open: bool,
    /// While open: when it opened.
    pub opened_ms: Option<i64>,
    /// While open: when the next probe may go.
    pub until_ms: Option<i64>,
    /// When this change happened; an older write never replaces a newer.
    pub changed_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        let exact = EventTypePattern::parse("order.created").expect("valid");
        let prefix = EventTypePattern::parse("order.*").expect("valid");
        let all = EventTypePattern::parse("*").expect("valid");
        assert!(exact.matches("order.created"));
        assert!(!exact.matches("order.created.v2"));
        assert!(prefix.matches("order.created"));
        assert!(prefix.matches("order.paid.v2"));
        assert!(!prefix.matches("order"));
        assert!(!prefix.matches("orders.created"));
        assert!(all.matches("anything.at.all"));
    }

    #[test]
    fn patterns_refuse_wildcards_in_the_middle() {
        for bad in ["a.*.b", "*.created", "order.", "", "order.**", "or der"] {
            assert_eq!(EventTypePattern::parse(bad), None, "{bad:?}");
        }
    }
}
