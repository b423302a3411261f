//! A subscription ready for delivery: what every send needs of it (its
//! signing keys, custom headers, URL and event-type patterns) parsed once,
//! when the dispatcher's copy loads the row or the API reads it for a test.

use std::cell::OnceCell;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::domain::filter::Content;
use crate::domain::{
    subscription, BadSecret, Event, EventTypePattern, SigningKeys, Subscription,
    SubscriptionStatus, TenantId,
};

/// Why a stored subscription cannot be sent for; whoever loads it reports
/// this once, rather than dropping the subscription silently.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// A secret of the row did not decrypt: it would sign wrong, or send a
    /// placeholder header value.
    #[error("its secrets cannot be decrypted with HOOKGATE_SECRET_KEY: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Secret(#[from] BadSecret),
}

/// A subscription ready for delivery: its secrets and headers parsed once.
#[derive(Debug, Clone)]
pub struct Target {
    pub subscription: Subscription,
    pub keys: SigningKeys,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    patterns: Vec<EventTypePattern>,
    /// The parsed URL (`None`: it does not parse, and nothing is sent).
    url: Option<url::Url>,
}

impl Target {
    pub fn new(subscription: Subscription) -> Result<Self, Unusable> {
        if let Some(reason) = &subscription.unreadable {
            return Err(Unusable::Unreadable(reason.clone()));
        }
        let keys = SigningKeys::parse(&subscription.secret, &subscription.previous_secrets)?;
        let patterns =
            subscription.event_types.iter().filter_map(|p| EventTypePattern::parse(p)).collect();
        let headers = subscription
            .headers
            .iter()
            // Rows written before a header was reserved keep it, unsent.
            .filter(|(name, _)| subscription::is_custom_header_allowed(name))
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        let url = url::Url::parse(&subscription.url).ok();
        Ok(Self { subscription, keys, headers, patterns, url })
    }

    /// The same subscription sending to `url` instead (a replay's override);
    /// `None` when the URL is not one.
    pub fn redirected(&self, url: &str) -> Option<Self> {
        let parsed = url::Url::parse(url).ok()?;
        let subscription = Subscription { url: url.to_owned(), ..self.subscription.clone() };
        Some(Self { subscription, url: Some(parsed), ..self.clone() })
    }

    /// The event types it wants, parsed.
    pub fn patterns(&self) -> &[EventTypePattern] {
        &self.patterns
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.subscription.status == SubscriptionStatus::Active
            && self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// An event goes to the subscriptions of its audience whose tenant may
    /// see its type (`visible`: the tenants that may, when not all).
    pub fn wants_event(&self, event: &Event, visible: Option<&HashSet<TenantId>>) -> bool {
        let tenant = &self.subscription.tenant_id;
        event.audience.includes(tenant)
            && visible.is_none_or(|tenants| tenants.contains(tenant))
            && self.wants(&event.event_type)
    }

    /// Whether the event passes the subscription's filter. `data` is the
    /// event's data, parsed by the first filter that looks at it and shared
    /// by the rest (JSON that does not parse is `null`).
    pub fn passes(&self, event: &Event, data: &OnceCell<Value>) -> bool {
        let Some(filter) = &self.subscription.filter else { return true };
        let data =
            data.get_or_init(|| serde_json::from_str(event.data.get()).unwrap_or(Value::Null));
        filter.matches(&Content { event_type: &event.event_type, source: &event.source, data })
    }

    /// The `webhook-signature` header value: the current secret's signature,
    /// then one per rotated-out secret still in its grace period at `now`,
    /// space-separated.
    pub fn sign(
        &self,
        webhook_id: &str,
        timestamp: i64,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> String {
        self.keys.sign(webhook_id, timestamp, body, now)
    }

    /// The destination, parsed (`None`: the URL does not parse).
    pub fn url(&self) -> Option<&url::Url> {
        self.url.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::value::RawValue;

    use super::*;
    use crate::domain::{Audience, PreviousSecret, SigningSecret};

    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn target(tenant: &str, previous: Vec<PreviousSecret>) -> Target {
        let tenant = TenantId::from_trusted(tenant.to_owned());
        let subscription =
            Subscription { previous_secrets: previous, ..Subscription::example(tenant, NEW) };
        Target::new(subscription).expect("valid target")
    }

    fn event(tenant: Option<&str>) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "order.created".to_owned(),
            source: "test".to_owned(),
            time: Utc::now(),
            key: None,
            data: RawValue::from_string("{}".to_owned()).expect("JSON").into(),
            audience: match tenant {
                Some(t) => Audience::Tenant(TenantId::from_trusted(t.to_owned())),
                None => Audience::Broadcast,
            },
        }
    }

    #[test]
    fn a_subscription_whose_secrets_did_not_decrypt_is_no_target() {
        let mut subscription = Subscription::example(TenantId::default_tenant(), NEW);
        assert!(Target::new(subscription.clone()).is_ok());
        // As the store leaves it: a header value that did not open.
        subscription.headers.insert("Authorization".into(), "********".into());
        subscription.unreadable = Some("a secret sealed with key id `a`, …".into());
        assert!(Target::new(subscription).is_err(), "it would send the placeholder");
    }

    #[test]
    fn a_secret_that_does_not_parse_makes_no_target_and_says_which() {
        let mut subscription = Subscription::example(TenantId::default_tenant(), "whsec_!!");
        let error = Target::new(subscription.clone()).expect_err("a bad current secret");
        assert!(error.to_string().contains("signing secret"), "{error}");
        subscription.secret = NEW.to_owned();
        subscription.previous_secrets =
            vec![PreviousSecret { secret: "whsec_YWJj".to_owned(), expires_at: Utc::now() }];
        let error = Target::new(subscription).expect_err("a bad rotated-out secret");
        assert!(error.to_string().contains("rotated-out secret #0"), "{error}");
    }

    #[test]
    fn a_redirected_target_keeps_its_keys_and_sends_elsewhere() {
        let rotated = target("ten_a", Vec::new());
        let moved = rotated.redirected("http://127.0.0.1:2/moved").expect("a URL");
        assert_eq!(moved.url().map(url::Url::as_str), Some("http://127.0.0.1:2/moved"));
        assert_eq!(moved.subscription.url, "http://127.0.0.1:2/moved");
        let now = Utc::now();
        assert_eq!(moved.sign("msg_1", 1, b"{}", now), rotated.sign("msg_1", 1, b"{}", now));
        assert!(rotated.redirected("not a url").is_none());
    }

    #[test]
    fn a_filter_passes_what_matches_and_without_one_the_data_is_not_parsed() {
        let filtered = |json: serde_json::Value| {
            let filter = crate::domain::filter::Filter::parse(json).expect("a filter");
            let tenant = TenantId::default_tenant();
            let subscription = Subscription {
                filter: Some(std::sync::Arc::new(filter)),
                ..Subscription::example(tenant, NEW)
            };
            Target::new(subscription).expect("valid target")
        };
        let event = Event {
            data: RawValue::from_string(r#"{"amount":150}"#.to_owned()).expect("JSON").into(),
            ..event(None)
        };
        let data = OnceCell::new();
        assert!(target("ten_default", Vec::new()).passes(&event, &data));
        assert!(data.get().is_none(), "no filter, no parse");
        assert!(filtered(serde_json::json!({"data.amount": {"$gt": 100}})).passes(&event, &data));
        assert!(!filtered(serde_json::json!({"data.amount": {"$lt": 100}})).passes(&event, &data));
        assert!(filtered(serde_json::json!({"type": "order.created"})).passes(&event, &data));
    }

    #[test]
    fn an_event_goes_to_its_audience_among_the_tenants_that_may_see_its_type() {
        let mine = target("ten_a", Vec::new());
        assert!(mine.wants_event(&event(Some("ten_a")), None));
        assert!(!mine.wants_event(&event(Some("ten_b")), None), "another tenant's event");
        assert!(mine.wants_event(&event(None), None), "a broadcast");
        let only_b: HashSet<TenantId> = [TenantId::from_trusted("ten_b".into())].into();
        assert!(
            !mine.wants_event(&event(None), Some(&only_b)),
            "a broadcast of a type A may not see"
        );
        assert!(!mine.wants_event(&event(Some("ten_a")), Some(&only_b)), "even for A itself");
        let with_a: HashSet<TenantId> = [TenantId::from_trusted("ten_a".into())].into();
        assert!(mine.wants_event(&event(None), Some(&with_a)));
    }

    #[test]
    fn signs_with_every_secret_still_in_its_grace_period() {
        let now = Utc::now();
        let rotated = target(
            "ten_a",
            vec![PreviousSecret { secret: OLD.to_owned(), expires_at: now + Duration::hours(1) }],
        );
        let old = SigningSecret::parse(OLD).expect("secret");
        let new = SigningSecret::parse(NEW).expect("secret");
        let header = rotated.sign("msg_1", 1, b"{}", now);
        assert_eq!(header.split(' ').count(), 2);
        assert!(old.verify("msg_1", 1, b"{}", &header));
        assert!(new.verify("msg_1", 1, b"{}", &header));
        let later = rotated.sign("msg_1", 1, b"{}", now + Duration::hours(2));
        assert_eq!(later, new.sign("msg_1", 1, b"{}"));
        assert!(!old.verify("msg_1", 1, b"{}", &later));
    }
}
