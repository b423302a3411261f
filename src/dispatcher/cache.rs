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
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::Target;
use crate::domain::{Event, EventTypePattern, SubscriptionId, SubscriptionStatus, TenantId};
use crate::store::{self, Store};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
const PAGE: i64 = 1_000;
/// After a failed refresh, events go on with the copy they have for this
/// long rather than each waiting on an unreachable database.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// How long a deleted subscription's tombstone is kept.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60 * 60);

/// What the copy knows of a subscription id.
#[derive(Debug)]
pub enum Lookup {
    Found(Arc<Target>),
    /// Deleted: its deliveries have nobody to go to.
    Deleted,
    /// Not in the copy, which may be stale (the database was away): not the
    /// same as deleted, so its deliveries wait rather than being dropped.
    Unknown,
}

/// One version of the copy. Its maps are persistent (`imbl`): the next
/// version shares what did not change, so a change costs its own size, not
/// a copy of every subscription.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    targets: imbl::HashMap<SubscriptionId, Arc<Target>>,
    /// The active targets by the event types they want.
    by_type: TypeIndex,
    /// Deleted subscriptions (and ones whose row no longer parses), with
    /// when the copy learnt it.
    tombstones: imbl::HashMap<SubscriptionId, Instant>,
    /// Event types only some tenants may see, with those tenants.
    restricted: HashMap<String, HashSet<TenantId>>,
}

impl Snapshot {
    fn put(&mut self, id: SubscriptionId, target: Option<Target>, now: Instant) {
        if let Some(old) = self.targets.remove(&id) {
            self.by_type.remove(&old);
        }
        match target {
            Some(target) => {
                self.tombstones.remove(&id);
                self.by_type.insert(&target);
                self.targets.insert(id, Arc::new(target));
            }
            None => {
                self.tombstones.insert(id, now);
            }
        }
    }
}

/// Which active subscriptions want an event type, so that an event is
/// matched against those that name its type, a prefix of it or `*`, not
/// against every subscription.
#[derive(Debug, Clone, Default)]
struct TypeIndex {
    exact: imbl::HashMap<String, imbl::HashSet<SubscriptionId>>,
    /// By the prefix with its trailing dot (`order.` for `order.*`).
    prefix: imbl::HashMap<String, imbl::HashSet<SubscriptionId>>,
    all: imbl::HashSet<SubscriptionId>,
}

impl TypeIndex {
    fn insert(&mut self, target: &Target) {
        if target.subscription.status != SubscriptionStatus::Active {
            return;
        }
        let id = &target.subscription.id;
        for pattern in target.patterns() {
            match pattern {
                EventTypePattern::All => {
                    self.all.insert(id.clone());
                }
                EventTypePattern::Prefix(prefix) => {
                    self.prefix.entry(prefix.clone()).or_default().insert(id.clone());
                }
                EventTypePattern::Exact(name) => {
                    self.exact.entry(name.clone()).or_default().insert(id.clone());
                }
            }
        }
    }

    fn remove(&mut self, target: &Target) {
        let id = &target.subscription.id;
        for pattern in target.patterns() {
            let (map, key) = match pattern {
                EventTypePattern::All => {
                    self.all.remove(id);
                    continue;
                }
                EventTypePattern::Prefix(prefix) => (&mut self.prefix, prefix),
                EventTypePattern::Exact(name) => (&mut self.exact, name),
            };
            if let Some(ids) = map.get_mut(key) {
                ids.remove(id);
                if ids.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    /// The subscriptions that may want `event_type`, each once.
    fn candidates(&self, event_type: &str) -> HashSet<&SubscriptionId> {
        let prefixes =
            event_type.match_indices('.').filter_map(|(at, _)| self.prefix.get(&event_type[..=at]));
        self.exact.get(event_type).into_iter().chain(prefixes).flatten().chain(&self.all).collect()
    }
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

#[derive(Debug)]
struct RefreshState {
    /// The first load (live rows only) is done.
    loaded: bool,
    version: i64,
    /// The last event type change seen.
    type_version: i64,
    failed_at: Option<Instant>,
}

#[derive(Debug)]
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

    /// The targets an event goes to: by type, by tenant when a tenant
    /// published it, and by content where a subscription filters.
    pub fn matching(&self, event: &Event) -> Vec<Arc<Target>> {
        let snapshot = self.current();
        let visible = snapshot.restricted.get(&event.event_type);
        let candidates = snapshot.by_type.candidates(&event.event_type);
        let data = std::cell::OnceCell::new();
        candidates
            .into_iter()
            .filter_map(|id| snapshot.targets.get(id))
            .filter(|t| t.wants_event(event, visible) && t.passes(event, &data))
            .cloned()
            .collect()
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
        // The event types in the same refresh, so that a type restricted
        // before an event was written is restricted for it too; read beside
        // the first page of changes, so that a fresh event waits for one
        // round trip, not two. A changed type moves to a new version: its
        // latest audience is all there is to learn.
        let (mut page, types) = tokio::try_join!(
            self.store.subscription_changes(version, PAGE),
            self.store.event_type_changes(state.type_version),
        )?;
        loop {
            let done = (page.len() as i64) < PAGE;
            if let Some(last) = page.last() {
                version = last.version;
            }
            changes.extend(page);
            if done {
                break;
            }
            page = self.store.subscription_changes(version, PAGE).await?;
        }
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
                let target = match change.deleted {
                    true => None,
                    false => match Target::new(change.subscription) {
                        Ok(target) => Some(target),
                        Err(reason) => {
                            // Logged once per change of the row; its
                            // deliveries are dropped like a deleted one's.
                            tracing::error!(subscription_id = %id, %reason, "subscription not delivered");
                            None
                        }
                    },
                };
                next.put(id, target, now);
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
    use super::*;
    use crate::domain::Subscription;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn subscription(types: &[&str]) -> Subscription {
        let types = types.iter().map(|t| (*t).to_owned()).collect();
        let url = "http://127.0.0.1:1/".to_owned();
        Subscription::new(TenantId::default_tenant(), url, types, SECRET.to_owned(), Utc::now())
    }

    fn put(snapshot: &mut Snapshot, subscription: &Subscription) {
        let target = Target::new(subscription.clone()).expect("a target");
        snapshot.put(subscription.id.clone(), Some(target), Instant::now());
    }

    fn wanting(snapshot: &Snapshot, event_type: &str) -> Vec<SubscriptionId> {
        let mut ids: Vec<SubscriptionId> =
            snapshot.by_type.candidates(event_type).into_iter().cloned().collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids
    }

    fn sorted(subscriptions: &[&Subscription]) -> Vec<SubscriptionId> {
        let mut ids: Vec<SubscriptionId> = subscriptions.iter().map(|s| s.id.clone()).collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids
    }

    #[tokio::test]
    async fn an_event_is_matched_against_the_subscriptions_of_its_type_prefixes_and_star_only() {
        let mut snapshot = Snapshot::default();
        let exact = subscription(&["order.created"]);
        let prefix = subscription(&["order.*"]);
        let nested = subscription(&["order.created.*", "invoice.paid"]);
        let both = subscription(&["order.*", "order.created"]);
        let all = subscription(&["*"]);
        let other = subscription(&["invoice.*"]);
        let paused = Subscription { status: SubscriptionStatus::Paused, ..subscription(&["*"]) };
        for s in [&exact, &prefix, &nested, &both, &all, &other, &paused] {
            put(&mut snapshot, s);
        }
        assert_eq!(wanting(&snapshot, "order.created"), sorted(&[&exact, &prefix, &both, &all]));
        assert_eq!(
            wanting(&snapshot, "order.created.eu"),
            sorted(&[&prefix, &nested, &both, &all])
        );
        assert_eq!(wanting(&snapshot, "invoice.paid"), sorted(&[&nested, &all, &other]));
        assert_eq!(wanting(&snapshot, "order"), sorted(&[&all]), "order.* wants order.<something>");

        // A change moves a subscription out of its old keys; a delete
        // takes it out of all of them.
        put(
            &mut snapshot,
            &Subscription { event_types: vec!["invoice.*".into()], ..prefix.clone() },
        );
        assert_eq!(wanting(&snapshot, "order.created"), sorted(&[&exact, &both, &all]));
        assert_eq!(wanting(&snapshot, "invoice.sent"), sorted(&[&prefix, &all, &other]));
        put(&mut snapshot, &Subscription { status: SubscriptionStatus::Paused, ..all.clone() });
        snapshot.put(both.id.clone(), None, Instant::now());
        assert_eq!(wanting(&snapshot, "order.created"), sorted(&[&exact]));
        assert!(snapshot.tombstones.contains_key(&both.id));
        assert!(snapshot.targets.contains_key(&all.id), "paused: known, not indexed");
        assert!(snapshot.by_type.exact.get("order.created").is_some_and(|ids| ids.len() == 1));
        assert!(snapshot.by_type.all.is_empty() && !snapshot.by_type.prefix.contains_key("order."));
    }
}
