//! The API's rate quotas, in memory: keyed token buckets (governor) for
//! publishing per key and per tenant, test sends per tenant, and failed
//! authentications per client address. Each API replica counts its own, so
//! with N replicas behind a balancer a caller gets up to N times the rate.
//! Count quotas (subscriptions, running replays) are checked by the store,
//! in the transaction that writes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::problem::ApiError;
use crate::config::{Quotas, Rate};
use crate::domain::TenantId;

/// How often idle buckets are forgotten, so that memory follows the
/// callers of the last minutes, not every caller ever seen.
const RETAIN_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Limiters {
    pub quotas: Quotas,
    publish_per_key: DefaultKeyedRateLimiter<String>,
    publish_per_tenant: DefaultKeyedRateLimiter<TenantId>,
    test_sends: DefaultKeyedRateLimiter<TenantId>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses whose failures used their bucket up, until when: checked
    /// before a key costs a database lookup (a bucket cannot be looked at
    /// without taking from it).
    auth_blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl Limiters {
    pub fn new(quotas: Quotas) -> Arc<Self> {
        let per_minute = |n: u32| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            Quota::per_minute(n).allow_burst(n)
        };
        Arc::new(Self {
            publish_per_key: RateLimiter::keyed(per_second(quotas.publish_per_key)),
            publish_per_tenant: RateLimiter::keyed(per_second(quotas.publish_per_tenant)),
            test_sends: RateLimiter::keyed(per_minute(quotas.test_sends_per_minute)),
            auth_failures: RateLimiter::keyed(per_minute(quotas.auth_failures_per_minute)),
            auth_blocked: Mutex::default(),
            clock: DefaultClock::default(),
            quotas,
        })
    }

    /// Takes `events` from the key's bucket, then from its tenant's. A
    /// batch larger than a burst can never pass: that is a 422, not a 429.
    pub fn publish(&self, key: &str, tenant: &TenantId, events: usize) -> Result<(), ApiError> {
        let n = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX).max(1))
            .unwrap_or(NonZeroU32::MIN);
        let key_rate = self.quotas.publish_per_key;
        self.take(&self.publish_per_key, &key.to_owned(), n, "publish_rate_per_key", key_rate)?;
        let tenant_rate = self.quotas.publish_per_tenant;
        self.take(&self.publish_per_tenant, tenant, n, "publish_rate_per_tenant", tenant_rate)
    }

    fn take<K: Clone + Hash + Eq>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        n: NonZeroU32,
        quota: &'static str,
        rate: Rate,
    ) -> Result<(), ApiError> {
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(ApiError::RateLimited {
                quota,
                limit: u64::from(rate.per_second),
                detail: format!(
                    "over the publish rate ({quota}: {} events a second, {} at once); \
                     nothing was published",
                    rate.per_second, rate.burst
                ),
                retry_after_secs: seconds_up(not_until.wait_time_from(self.clock.now())),
            }),
            Err(_) => Err(ApiError::field(
                "events",
                format!("at most {} events in one request under {quota}", rate.burst),
            )),
        }
    }

    /// One test send of the tenant's, or 429.
    pub fn test_send(&self, tenant: &TenantId) -> Result<(), ApiError> {
        let limit = self.quotas.test_sends_per_minute;
        self.test_sends.check_key(tenant).map_err(|not_until| ApiError::RateLimited {
            quota: "test_sends_per_minute",
            limit: u64::from(limit),
            detail: format!("at most {limit} test sends a minute per tenant; nothing was sent"),
            retry_after_secs: seconds_up(not_until.wait_time_from(self.clock.now())),
        })
    }

    /// 429 while the address is blocked for failing to authenticate.
    pub fn auth_allowed(&self, peer: IpAddr) -> Result<(), ApiError> {
        let peer = network_of(peer);
        let until = self.auth_blocked.lock().ok().and_then(|blocked| blocked.get(&peer).copied());
        match until.map(|until| until.saturating_duration_since(Instant::now())) {
            Some(wait) if !wait.is_zero() => Err(self.auth_limited(wait)),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication; the one that empties the bucket
    /// blocks the address until the bucket has room again.
    pub fn auth_failed(&self, peer: IpAddr) {
        let peer = network_of(peer);
        if let Err(not_until) = self.auth_failures.check_key(&peer) {
            let wait = not_until.wait_time_from(self.clock.now());
            if let Ok(mut blocked) = self.auth_blocked.lock() {
                blocked.insert(peer, Instant::now() + wait);
            }
        }
    }

    fn auth_limited(&self, wait: Duration) -> ApiError {
        let limit = self.quotas.auth_failures_per_minute;
        ApiError::RateLimited {
            quota: "auth_failures_per_minute",
            limit: u64::from(limit),
            detail: format!(
                "too many failed authentications from this address (at most {limit} a minute); \
                 try again later"
            ),
            retry_after_secs: seconds_up(wait),
        }
    }

    /// Forgets full buckets and expired blocks.
    pub fn retain_recent(&self) {
        self.publish_per_key.retain_recent();
        self.publish_per_tenant.retain_recent();
        self.test_sends.retain_recent();
        self.auth_failures.retain_recent();
        let now = Instant::now();
        if let Ok(mut blocked) = self.auth_blocked.lock() {
            blocked.retain(|_, until| *until > now);
        }
    }

    /// Keys held, for tests of the clean-up.
    pub fn tracked(&self) -> usize {
        self.publish_per_key.len()
            + self.publish_per_tenant.len()
            + self.test_sends.len()
            + self.auth_failures.len()
            + self.auth_blocked.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Runs `retain_recent` until `shutdown`.
    pub async fn clean_up(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(RETAIN_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.retain_recent(),
            }
        }
    }
}

fn per_second(rate: Rate) -> Quota {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn seconds_up(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// One bucket per IPv4 address, and per /64 for IPv6 (one host holds a
/// whole /64, and would otherwise get a bucket per address it picks).
fn network_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Quotas {
        Quotas {
            publish_per_key: Rate { per_second: 1, burst: 3 },
            publish_per_tenant: Rate { per_second: 1, burst: 5 },
            auth_failures_per_minute: 2,
            test_sends_per_minute: 1,
            ..Quotas::default()
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(seconds_up(Duration::from_millis(1_001)), 2);
        assert_eq!(seconds_up(Duration::from_secs(3)), 3);
        assert_eq!(seconds_up(Duration::ZERO), 1);
    }

    #[test]
    fn publishing_takes_from_the_key_and_the_tenant() {
        let limiters = Limiters::new(quotas());
        let tenant = TenantId::from_trusted("ten_a".to_owned());
        assert!(limiters.publish("k1", &tenant, 3).is_ok());
        match limiters.publish("k1", &tenant, 1) {
            Err(ApiError::RateLimited { quota, retry_after_secs, .. }) => {
                assert_eq!(quota, "publish_rate_per_key");
                assert!(retry_after_secs >= 1);
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Another key of the tenant has its own bucket; the tenant's has 2 left.
        assert!(limiters.publish("k2", &tenant, 2).is_ok());
        assert!(matches!(
            limiters.publish("k3", &tenant, 1),
            Err(ApiError::RateLimited { quota: "publish_rate_per_tenant", .. })
        ));
        assert!(matches!(limiters.publish("k4", &tenant, 4), Err(ApiError::Validation(_))));
    }

    #[test]
    fn an_address_is_blocked_once_its_failures_use_the_bucket_up() {
        let limiters = Limiters::new(quotas());
        let peer: IpAddr = "192.0.2.1".parse().expect("address");
        let other: IpAddr = "192.0.2.2".parse().expect("address");
        for _ in 0..2 {
            assert!(limiters.auth_allowed(peer).is_ok());
            limiters.auth_failed(peer);
        }
        assert!(limiters.auth_allowed(peer).is_ok(), "blocked only past the limit");
        limiters.auth_failed(peer);
        assert!(matches!(
            limiters.auth_allowed(peer),
            Err(ApiError::RateLimited { quota: "auth_failures_per_minute", .. })
        ));
        assert!(limiters.auth_allowed(other).is_ok());
    }

    #[test]
    fn ipv6_peers_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(network_of(a), network_of(b));
        assert_ne!(network_of(a), network_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("address");
        assert_eq!(network_of(mapped), "192.0.2.1".parse::<IpAddr>().expect("address"));
    }
}
