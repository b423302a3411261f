//! The dispatchers' copy of the subscriptions, refreshed from the store by
//! version: in the background, and on demand when an event is newer than the
//! copy, so that a subscription created before an event was published always
//! gets it. The first load reads live rows only (up to the version current
//! then); deletes after it leave tombstones, forgotten after a while: a
//! delivery for an id the copy does not know is dropped after a refresh
//! anyway, so a tombstone only spares that refresh.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::domain::{
    subscription, Event, EventTypePattern, SigningSecret, Subscription, SubscriptionId,
    SubscriptionStatus, TenantId,
};
use crate::store::{self, Store};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
const PAGE: i64 = 1_000;
/// After a failed refresh, events go on with the copy they have for this
/// long rather than each waiting on an unreachable database.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// How long a deleted subscription's tombstone is kept.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60 * 60);

/// A subscription ready for delivery: its secrets and headers parsed once.
pub struct Target {
    pub subscription: Subscription,
    pub secret: SigningSecret,
    /// Secrets from rotations, each with the end of its grace period.
    pub previous_secrets: Vec<(SigningSecret, DateTime<Utc>)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    patterns: Vec<EventTypePattern>,
    /// The parsed URL (`None`: it does not parse, and nothing is sent).
    url: Option<url::Url>,
}

impl Target {
    pub fn new(subscription: Subscription) -> Option<Self> {
        // A secret that did not decrypt would sign wrong or send a placeholder.
        if subscription.unreadable.is_some() {
            return None;
        }
        let secret = SigningSecret::parse(&subscription.secret).ok()?;
        let previous_secrets = subscription
            .previous_secrets
            .iter()
            .filter_map(|p| Some((SigningSecret::parse(&p.secret).ok()?, p.expires_at)))
            .collect();
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
        Some(Self { subscription, secret, previous_secrets, headers, patterns, url })
    }

    /// The same subscription sending to `url` instead (a replay's override);
    /// `None` when the URL is not one.
    pub fn redirected(&self, url: &str) -> Option<Self> {
        url::Url::parse(url).ok()?;
        Self::new(Subscription { url: url.to_owned(), ..self.subscription.clone() })
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
        let mut signature = self.secret.sign(webhook_id, timestamp, body);
        for (secret, expires_at) in &self.previous_secrets {
            if *expires_at > now {
                signature.push(' ');
                signature.push_str(&secret.sign(webhook_id, timestamp, body));
            }
        }
        signature
    }

    /// The destination's address when the URL names one instead of a host.
    pub fn url(&self) -> Option<&url::Url> {
        self.url.as_ref()
    }
}

/// What the copy knows of a subscription id.
pub enum Lookup {
    Found(Arc<Target>),
    /// Deleted: its deliveries have nobody to go to.
    Deleted,
    /// Not in the copy, which may be stale (the database was away): not the
    /// same as deleted, so its deliveries wait rather than being dropped.
    Unknown,
}

#[derive(Clone, Default)]
struct Snapshot {
    targets: HashMap<SubscriptionId, Arc<Target>>,
    /// Deleted subscriptions (and ones whose row no longer parses), with
    /// when the copy learnt it.
    tombstones: HashMap<SubscriptionId, Instant>,
    /// Event types only some tenants may see, with those tenants.
    restricted: HashMap<String, HashSet<TenantId>>,
}

/// Whether a refresh asked for succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// The database did not answer: the copy may miss recent changes.
    Stale,
}

/// How long work that needs a fresh copy waits between tries.
pub const STALE_RETRY: Duration = FAILURE_BACKOFF;

struct RefreshState {
    /// The first load (live rows only) is done.
    loaded: bool,
    version: i64,
    /// The last event type change seen.
    type_version: i64,
    failed_at: Option<Instant>,
}

pub struct SubscriptionCache {
    store: Arc<dyn Store>,
    snapshot: RwLock<Arc<Snapshot>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Microseconds since the epoch at which the last successful refresh began.
    fresh_as_of: AtomicI64,
    generation: std::sync::atomic::AtomicU64,
}

impl SubscriptionCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            snapshot: RwLock::new(Arc::default()),
            refresh: tokio::sync::Mutex::new(RefreshState {
                loaded: false,
                version: 0,
                type_version: 0,
                failed_at: None,
            }),
            fresh_as_of: AtomicI64::new(i64::MIN),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The targets an event goes to: by type, and by tenant when a tenant
    /// published it.
    pub fn matching(&self, event: &Event) -> Vec<Arc<Target>> {
        let snapshot = self.current();
        let visible = snapshot.restricted.get(&event.event_type);
        snapshot.targets.values().filter(|t| t.wants_event(event, visible)).cloned().collect()
    }

    /// The subscription as last seen, without waiting.
    pub fn peek(&self, id: &SubscriptionId) -> Lookup {
        let snapshot = self.current();
        match snapshot.targets.get(id) {
            Some(target) => Lookup::Found(Arc::clone(target)),
            None if snapshot.tombstones.contains_key(id) => Lookup::Deleted,
            None => Lookup::Unknown,
        }
    }

    /// The subscription as last seen, refreshing once when it is unknown
    /// (created since the last refresh, by another process). `Unknown`
    /// means the refresh failed, or the id never was a subscription.
    pub async fn lookup(&self, id: &SubscriptionId) -> (Lookup, Freshness) {
        match self.peek(id) {
            Lookup::Unknown => {}
            known => return (known, Freshness::Fresh),
        }
        let freshness = self.ensure_fresh(Utc::now()).await;
        (self.peek(id), freshness)
    }

    /// Whether the copy holds every change committed before `time`.
    pub fn is_fresh_for(&self, time: DateTime<Utc>) -> bool {
        self.fresh_as_of.load(Ordering::Acquire) >= time.min(Utc::now()).timestamp_micros()
    }

    /// Counts refreshes that changed something: a cheap way to tell that
    /// subscriptions may have changed since one looked.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| Arc::clone(&s)).unwrap_or_default()
    }

    /// Tries to make sure every change committed before `time` is in the
    /// copy; answers whether it is. After a failure, callers are told
    /// `Stale` at once for a while rather than each waiting on an
    /// unreachable database.
    pub async fn ensure_fresh(&self, time: DateTime<Utc>) -> Freshness {
        if self.is_fresh_for(time) {
            return Freshness::Fresh;
        }
        let mut state = self.refresh.lock().await;
        // Another task may have refreshed while this one waited for the lock.
        if self.is_fresh_for(time) {
            return Freshness::Fresh;
        }
        if state.failed_at.is_some_and(|at| at.elapsed() < FAILURE_BACKOFF) {
            return Freshness::Stale;
        }
        match self.refresh_locked(&mut state).await {
            Ok(()) => Freshness::Fresh,
            Err(error) => {
                tracing::warn!(%error, "subscription refresh failed; waiting for the database");
                Freshness::Stale
            }
        }
    }

    pub async fn refresh(&self) -> store::Result<()> {
        let mut state = self.refresh.lock().await;
        self.refresh_locked(&mut state).await
    }

    async fn refresh_locked(&self, state: &mut RefreshState) -> store::Result<()> {
        let result = self.load(state).await;
        if result.is_err() {
            state.failed_at = Some(Instant::now());
        }
        result
    }

    /// Reads what changed and applies it; `state` moves on only when all
    /// of it was read, so that a failed page is read again next time.
    async fn load(&self, state: &mut RefreshState) -> store::Result<()> {
        let started = Utc::now().timestamp_micros();
        let mut version = state.version;
        let mut changes = Vec::new();
        if !state.loaded {
            // Rows at or below `upto` are committed (writes take the version
            // row until they commit); a row deleted while this reads moves
            // above it and comes in as a change, below.
            let upto = self.store.subscription_version().await?;
            loop {
                let page = self.store.live_subscriptions(version, upto, PAGE).await?;
                let done = (page.len() as i64) < PAGE;
                if let Some(last) = page.last() {
                    version = last.version;
                }
                changes.extend(page);
                if done {
                    break;
                }
            }
            version = version.max(upto);
        }
        loop {
            let page = self.store.subscription_changes(version, PAGE).await?;
            let done = (page.len() as i64) < PAGE;
            if let Some(last) = page.last() {
                version = last.version;
            }
            changes.extend(page);
            if done {
                break;
            }
        }
        // In the same refresh, so that a type restricted before an event
        // was written is restricted for it too. A changed type moves to a
        // new version: its latest audience is all there is to learn.
        let types = self.store.event_type_changes(state.type_version).await?;
        state.failed_at = None;
        state.loaded = true;
        state.version = version;
        let now = Instant::now();
        let expired = |seen: &Instant| now.duration_since(*seen) >= TOMBSTONE_TTL;
        let current = self.current();
        let prune = current.tombstones.values().any(expired);
        if !changes.is_empty() || !types.is_empty() || prune {
            let mut next: Snapshot = (*current).clone();
            next.tombstones.retain(|_, seen| !expired(seen));
            for change in types {
                state.type_version = state.type_version.max(change.version);
                match change.visible_to {
                    Some(tenants) => {
                        next.restricted.insert(change.name, tenants.into_iter().collect())
                    }
                    None => next.restricted.remove(&change.name),
                };
            }
            for change in changes {
                let id = change.subscription.id.clone();
                let unreadable = change.subscription.unreadable.clone();
                match (change.deleted, Target::new(change.subscription)) {
                    (false, Some(target)) => {
                        next.tombstones.remove(&id);
                        next.targets.insert(id, Arc::new(target));
                    }
                    (deleted, _) => {
                        if let (false, Some(reason)) = (deleted, unreadable) {
                            // Logged once per change of the row; its
                            // deliveries are dropped like a deleted one's.
                            tracing::error!(subscription_id = %id, %reason, "subscription not delivered: its secrets cannot be decrypted with HOOKGATE_SECRET_KEY");
                        }
                        next.targets.remove(&id);
                        next.tombstones.insert(id, now);
                    }
                }
            }
            if let Ok(mut snapshot) = self.snapshot.write() {
                *snapshot = Arc::new(next);
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.fresh_as_of.fetch_max(started, Ordering::AcqRel);
        Ok(())
    }

    /// How many subscriptions and tombstones the copy holds.
    pub fn held(&self) -> (usize, usize) {
        let snapshot = self.current();
        (snapshot.targets.len(), snapshot.tombstones.len())
    }

    /// Picks up changes (pause, delete, new URL) even when no event comes.
    pub async fn poll(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "subscription refresh failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::value::RawValue;

    use super::*;
    use crate::domain::{Audience, PreviousSecret};

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
            data: RawValue::from_string("{}".to_owned()).expect("JSON"),
            audience: match tenant {
                Some(t) => Audience::Tenant(TenantId::from_trusted(t.to_owned())),
                None => Audience::Broadcast,
            },
        }
    }

    #[test]
    fn a_subscription_whose_secrets_did_not_decrypt_is_no_target() {
        let mut subscription = Subscription::example(TenantId::default_tenant(), NEW);
        assert!(Target::new(subscription.clone()).is_some());
        // As the store leaves it: a header value that did not open.
        subscription.headers.insert("Authorization".into(), "********".into());
        subscription.unreadable = Some("a secret sealed with key id `a`, …".into());
        assert!(Target::new(subscription).is_none(), "it would send the placeholder");
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
