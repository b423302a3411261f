//! A webhook subscription and the event-type patterns it matches.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::is_valid_event_type;
use super::filter::Filter;
use super::signature::{Ed25519Secret, SignatureScheme};
use super::{SubscriptionId, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    Paused,
    /// By hookgate (410 Gone, sustained failure) or an admin; the tenant
    /// may set it `active` again.
    Disabled,
    /// By an admin: only an admin may set it `active` again.
    Suspended,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
            Self::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "disabled" => Some(Self::Disabled),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// Headers hookgate sets itself or that HTTP owns.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "user-agent",
    "traceparent",
    "tracestate",
    // Hop-by-hop (RFC 9110 §7.6.1): they speak to the next hop, not the receiver.
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // What proxies read and write: a subscription must not steer, or speak
    // to, the operator's egress proxy.
    "via",
    "forwarded",
];

/// Whether a subscription may set this custom header (any case).
pub fn is_custom_header_allowed(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(RESERVED_HEADERS.contains(&name.as_str())
        || name.starts_with("proxy-")
        || name.starts_with("x-forwarded-"))
}

/// Deliveries per second, with bursts up to `burst`; absent: unlimited.
/// Its schema (minimum 1 each) is in `api::schemas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A secret replaced by a rotation, still signing until `expires_at`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What `GET` shows in place of a secret header's value, and what a
/// `PATCH` may send back to keep the stored one.
pub const REDACTED: &str = "********";

/// Headers that carry credentials whatever the subscription says (compared
/// without case).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-amz-security-token",
];

/// Parts of a header name that mark a credential (`X-Vendor-Token`,
/// `X-Client-Secret`, `X-Custom-Auth`): a false alarm costs a write-only
/// value, a miss costs a credential in clear.
const SECRET_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "api-key",
    "api_key",
    "apikey",
    "signature",
];

/// Whether a header's value is a secret: encrypted at rest, redacted on
/// `GET`, never logged. `marked`: the subscription's own `secret_headers`.
pub fn is_secret_header(name: &str, marked: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&lower.as_str())
        || SECRET_NAME_PARTS.iter().any(|part| lower.contains(part))
        || marked.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// Headers for `Debug`: the values of secret ones redacted.
struct DebugHeaders<'a>(&'a BTreeMap<String, String>, &'a [String]);

impl std::fmt::Debug for DebugHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_secret_header(name, self.1) { REDACTED } else { value.as_str() };
                (name, shown)
            }))
            .finish()
    }
}

#[derive(Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub url: String,
    pub event_types: Vec<String>,
    /// Of the events its types match, only those that pass; shared by the
    /// copies the dispatcher keeps.
    pub filter: Option<Arc<Filter>>,
    /// The `whsec_…` (hmac-sha256) or `whsk_…` (ed25519) text; never logged.
    pub secret: String,
    /// Secrets replaced by rotations; webhooks carry their signatures too
    /// until each expires.
    pub previous_secrets: Vec<PreviousSecret>,
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: Option<u32>,
    pub ordered: bool,
    pub headers: BTreeMap<String, String>,
    /// Headers the subscription marks secret beyond those that always are
    /// (`is_secret_header`).
    pub secret_headers: Vec<String>,
    pub status: SubscriptionStatus,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write (the store assigns it; 0 until stored): the
    /// API's `ETag`, checked against `If-Match`.
    pub version: i64,
    /// Set by the store when a secret of the row does not decrypt (why: a
    /// key id `HOOKGATE_SECRET_KEY` does not hold, an altered value). Then
    /// `secret` is empty and such header values are `REDACTED`: nothing
    /// may be signed or sent with them.
    pub unreadable: Option<String>,
    /// Webhooks carry a bearer token fetched with these client credentials.
    pub oauth2: Option<OAuth2>,
    /// A client certificate for the endpoint, and CAs to trust for it.
    pub tls: Option<EndpointTls>,
}

/// TLS to the endpoint beyond the usual: a client certificate and its key
/// (mutual TLS), and CA certificates trusted for this endpoint besides the
/// system's. PEM text each; the key is write-only, sealed at rest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

impl std::fmt::Debug for EndpointTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointTls")
            .field("client_certificate", &self.client_certificate.as_ref().map(|_| "PEM"))
            .field("client_key", &self.client_key.as_ref().map(|_| "***"))
            .field("ca_certificates", &self.ca_certificates.as_ref().map(|_| "PEM"))
            .finish()
    }
}

/// OAuth 2.0 client credentials (RFC 6749 §4.4) for an endpoint: hookgate
/// fetches a token from `token_url` and sends it as `Authorization: Bearer`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    /// Write-only; sealed at rest like the signing secret.
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("filter", &self.filter.as_ref().map(|f| f.as_json()))
            .field("secret", &"***")
            .field("previous_secrets", &self.previous_secrets)
            .field("rate_limit", &self.rate_limit)
            .field("max_in_flight", &self.max_in_flight)
            .field("ordered", &self.ordered)
            .field("headers", &DebugHeaders(&self.headers, &self.secret_headers))
            .field("secret_headers", &self.secret_headers)
            .field("status", &self.status)
            .field("disabled_reason", &self.disabled_reason)
            .field("description", &self.description)
            .field("metadata", &self.metadata)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("version", &self.version)
            .field("unreadable", &self.unreadable)
            .field("oauth2", &self.oauth2)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Subscription {
    pub fn is_secret_header(&self, name: &str) -> bool {
        is_secret_header(name, &self.secret_headers)
    }

    /// By its secret's prefix.
    pub fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::of(&self.secret).unwrap_or_default()
    }

    /// The `whpk_` key receivers verify with (ed25519 only).
    pub fn public_key(&self) -> Option<String> {
        Ed25519Secret::parse(&self.secret).ok().map(|k| k.public_key())
    }
}

/// Rotated-out secrets kept signing at once; older ones are dropped early.
pub const MAX_PREVIOUS_SECRETS: usize = 5;

impl Subscription {
    /// Makes `new` the secret; the current one keeps signing until
    /// `grace_ends` (`None`: dropped now), expired ones go, and at most
    /// `MAX_PREVIOUS_SECRETS` stay. False, changing nothing, when `new` is
    /// the current secret.
    pub fn rotate_secret(
        &mut self,
        new: &str,
        grace_ends: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> bool {
        if new == self.secret {
            return false;
        }
        self.previous_secrets.retain(|p| p.expires_at > now);
        let old = std::mem::replace(&mut self.secret, new.to_owned());
        if let Some(expires_at) = grace_ends {
            self.previous_secrets.push(PreviousSecret { secret: old, expires_at });
        }
        let extra = self.previous_secrets.len().saturating_sub(MAX_PREVIOUS_SECRETS);
        self.previous_secrets.drain(..extra);
        self.updated_at = now;
        true
    }
}

/// The fields a PATCH sets; `None` leaves a field as it is. The store
/// writes only these columns, so a concurrent write to others stands.
#[derive(Clone, Default)]
pub struct SubscriptionPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub filter: Option<Option<Arc<Filter>>>,
    pub rate_limit: Option<Option<RateLimit>>,
    pub max_in_flight: Option<Option<u32>>,
    pub ordered: Option<bool>,
    /// A secret header whose value is `REDACTED` keeps its stored value
    /// (the store reads it in the write's transaction).
    pub headers: Option<BTreeMap<String, String>>,
    pub secret_headers: Option<Vec<String>>,
    /// Setting a status also sets `disabled_reason` to `status_reason`.
    pub status: Option<SubscriptionStatus>,
    pub status_reason: Option<String>,
    /// Write the status only while the subscription is not suspended (a
    /// tenant's write: an admin's suspension stands).
    pub unless_suspended: bool,
    pub description: Option<Option<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub oauth2: Option<Option<OAuth2>>,
    pub tls: Option<Option<EndpointTls>>,
}

impl std::fmt::Debug for SubscriptionPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let marked = self.secret_headers.as_deref().unwrap_or_default();
        f.debug_struct("SubscriptionPatch")
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("filter", &self.filter.as_ref().map(|f| f.as_ref().map(|f| f.as_json())))
            .field("rate_limit", &self.rate_limit)
            .field("max_in_flight", &self.max_in_flight)
            .field("ordered", &self.ordered)
            .field("headers", &self.headers.as_ref().map(|h| DebugHeaders(h, marked)))
            .field("secret_headers", &self.secret_headers)
            .field("status", &self.status)
            .field("description", &self.description)
            .field("metadata", &self.metadata)
            .field("oauth2", &self.oauth2)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SubscriptionPatch {
    /// The subscription as it is once patched, for validation.
    pub fn apply_to(&self, s: &mut Subscription) {
        let Self {
            url,
            event_types,
            filter,
            rate_limit,
            max_in_flight,
            ordered,
            headers,
            secret_headers,
            status,
            status_reason,
            unless_suspended: _,
            description,
            metadata,
            oauth2,
            tls,
        } = self.clone();
        if let Some(url) = url {
            s.url = url;
        }
        if let Some(event_types) = event_types {
            s.event_types = event_types;
        }
        if let Some(filter) = filter {
            s.filter = filter;
        }
        if let Some(rate_limit) = rate_limit {
            s.rate_limit = rate_limit;
        }
        if let Some(max_in_flight) = max_in_flight {
            s.max_in_flight = max_in_flight;
        }
        if let Some(ordered) = ordered {
            s.ordered = ordered;
        }
        if let Some(headers) = headers {
            s.headers = headers;
        }
        if let Some(secret_headers) = secret_headers {
            s.secret_headers = secret_headers;
        }
        if let Some(status) = status {
            s.status = status;
            s.disabled_reason = status_reason;
        }
        if let Some(description) = description {
            s.description = description;
        }
        if let Some(metadata) = metadata {
            s.metadata = metadata;
        }
        if let Some(oauth2) = oauth2 {
            s.oauth2 = oauth2;
        }
        if let Some(tls) = tls {
            s.tls = tls;
        }
    }
}

impl Subscription {
    /// An active subscription of `tenant` to `event_types` at `url`, signed
    /// with `secret`, and nothing else set: callers change what they
    /// configure (`Subscription { ordered: true, ..Subscription::new(…) }`).
    pub fn new(
        tenant: TenantId,
        url: String,
        event_types: Vec<String>,
        secret: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: SubscriptionId::generate(),
            tenant_id: tenant,
            url,
            event_types,
            filter: None,
            secret,
            previous_secrets: Vec::new(),
            rate_limit: None,
            max_in_flight: None,
            ordered: false,
            headers: BTreeMap::new(),
            secret_headers: Vec::new(),
            status: SubscriptionStatus::Active,
            disabled_reason: None,
            description: None,
            metadata: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            version: 0,
            unreadable: None,
            oauth2: None,
            tls: None,
        }
    }

    /// An active subscription of `tenant` to `order.*` at a dead loopback
    /// port, for unit tests.
    #[cfg(test)]
    pub fn example(tenant: TenantId, secret: &str) -> Self {
        let (url, types) = ("http://127.0.0.1:1/".to_owned(), vec!["order.*".to_owned()]);
        Self::new(tenant, url, types, secret.to_owned(), Utc::now())
    }
}

/// One entry of `event_types`: an exact name, `prefix.*`, or `*` for all
/// but the operational types (`hookgate.…`), which are asked for by name.
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
            // Operational events only go to who asks for them by name or prefix.
            Self::All => !super::operational::is_operational(event_type),
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
        assert!(
            !all.matches("hookgate.delivery.failing"),
            "`*` is not asking for operational events"
        );
        let ops = EventTypePattern::parse("hookgate.*").expect("valid");
        assert!(ops.matches("hookgate.delivery.failing"));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_and_drops_the_expired() {
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let mut s = Subscription::example(TenantId::default_tenant(), "whsec_old");
        s.previous_secrets = vec![
            PreviousSecret { secret: "whsec_expired".to_owned(), expires_at: now - hour },
            PreviousSecret { secret: "whsec_older".to_owned(), expires_at: now + hour },
        ];
        assert!(!s.rotate_secret("whsec_old", Some(now + hour), now), "the same secret");
        assert_eq!(s.previous_secrets.len(), 2, "a refused rotation changes nothing");

        assert!(s.rotate_secret("whsec_new", Some(now + hour), now));
        assert_eq!(s.secret, "whsec_new");
        let kept: Vec<&str> = s.previous_secrets.iter().map(|p| p.secret.as_str()).collect();
        assert_eq!(kept, ["whsec_older", "whsec_old"]);

        assert!(s.rotate_secret("whsec_newer", None, now), "no grace");
        assert_eq!(s.previous_secrets.len(), 2, "the replaced secret is dropped at once");

        for n in 0..10 {
            assert!(s.rotate_secret(&format!("whsec_{n}"), Some(now + hour), now));
        }
        assert_eq!(s.previous_secrets.len(), MAX_PREVIOUS_SECRETS);
        assert_eq!(s.previous_secrets.last().map(|p| p.secret.as_str()), Some("whsec_8"));
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_names() {
        let mut s = Subscription::example(TenantId::default_tenant(), "whsec_x");
        s.status = SubscriptionStatus::Disabled;
        s.disabled_reason = Some("410".to_owned());
        s.description = Some("kept".to_owned());
        let mut patched = s.clone();
        SubscriptionPatch { metadata: Some(BTreeMap::new()), ..Default::default() }
            .apply_to(&mut patched);
        assert_eq!(patched.status, SubscriptionStatus::Disabled);
        assert_eq!(patched.disabled_reason.as_deref(), Some("410"));
        SubscriptionPatch {
            status: Some(SubscriptionStatus::Active),
            description: Some(None),
            ..Default::default()
        }
        .apply_to(&mut patched);
        assert_eq!(patched.status, SubscriptionStatus::Active);
        assert_eq!(patched.disabled_reason, None, "re-enabling clears the reason");
        assert_eq!(patched.description, None);
        assert_eq!(patched.url, s.url);
    }

    #[test]
    fn credential_headers_are_secret_by_default_and_marked_ones_too() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "X-Api-Key",
            "Cookie",
            "X-Vendor-Token",
            "X-Client-Secret",
        ] {
            assert!(is_secret_header(name, &[]), "{name}");
        }
        for name in ["X-Tenant", "Accept-Language", "X-Request-Source"] {
            assert!(!is_secret_header(name, &[]), "{name}");
        }
        assert!(is_secret_header("X-Tenant", &["x-tenant".to_owned()]));
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut s = Subscription::example(TenantId::default_tenant(), "whsec_c2VjcmV0LXZhbHVl");
        s.previous_secrets =
            vec![PreviousSecret { secret: "whsec_b2xkLXNlY3JldA".into(), expires_at: Utc::now() }];
        s.headers = BTreeMap::from([
            ("Authorization".to_owned(), "Bearer hunter2".to_owned()),
            ("X-Marked".to_owned(), "marked-value".to_owned()),
            ("X-Plain".to_owned(), "plain-value".to_owned()),
        ]);
        s.secret_headers = vec!["x-marked".to_owned()];
        let patch = SubscriptionPatch {
            headers: Some(s.headers.clone()),
            secret_headers: Some(s.secret_headers.clone()),
            ..Default::default()
        };
        for shown in [format!("{s:?}"), format!("{patch:?}")] {
            for secret in ["c2VjcmV0LXZhbHVl", "b2xkLXNlY3JldA", "hunter2", "marked-value"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("plain-value"), "{shown}");
        }
    }

    #[test]
    fn patterns_refuse_wildcards_in_the_middle() {
        for bad in ["a.*.b", "*.created", "order.", "", "order.**", "or der"] {
            assert_eq!(EventTypePattern::parse(bad), None, "{bad:?}");
        }
    }
}
