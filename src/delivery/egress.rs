//! Egress rules: where webhooks may go. By default only to public
//! addresses: never loopback, private, link-local, metadata or otherwise
//! internal ones (unless private targets are allowed). An operator adds
//! allowed and denied networks and the ports deliveries may use. The check is
//! on the resolved address that the connection then uses, so a name that
//! resolves to an internal address later (DNS rebinding) is refused too.
//!
//! No proxy is taken from the environment: a proxy resolves the destination
//! itself, out of the guard's sight. An explicit egress proxy can be set; it
//! must then enforce the rules (only literal addresses and ports are checked
//! here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What a tenant is told of any refusal. The same text whatever the reason
/// (built-in class, operator rule, port, what a name resolved to), so that
/// refusals do not map the network behind the dispatcher.
pub const REFUSED: &str = "the destination is not allowed by this server's egress rules";

/// Refused destination, as the resolver reports it.
#[derive(Debug, thiserror::Error)]
#[error("{REFUSED}")]
pub struct ForbiddenDestination;

/// The operator's egress rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    /// Allow the built-in internal classes too (`hookgate dev`, tests).
    pub allow_private: bool,
    /// Networks allowed even when the built-in classes refuse them.
    pub allowed_networks: Vec<IpNet>,
    /// Networks refused even when otherwise allowed.
    pub denied_networks: Vec<IpNet>,
    /// Ports deliveries may use; empty: any.
    pub allowed_ports: Vec<RangeInclusive<u16>>,
    /// Every delivery goes through this proxy, which enforces the rules.
    pub proxy: Option<url::Url>,
}

impl EgressRules {
    pub fn private_allowed() -> Self {
        Self { allow_private: true, ..Self::default() }
    }

    /// The most specific operator network that holds `ip` decides (a deny on
    /// a tie); without one, the built-in classes do.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let longest = |networks: &[IpNet]| {
            networks.iter().filter(|n| n.contains(&ip)).map(IpNet::prefix_len).max()
        };
        match (longest(&self.allowed_networks), longest(&self.denied_networks)) {
            (Some(allowed), Some(denied)) => allowed > denied,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => self.allow_private || !is_forbidden(ip),
        }
    }

    pub fn allows_port(&self, port: u16) -> bool {
        self.allowed_ports.is_empty() || self.allowed_ports.iter().any(|r| r.contains(&port))
    }

    /// Checks what a URL says by itself: its port and, when its host is an
    /// address, that address. Names are checked once resolved.
    pub fn allows_url(&self, url: &url::Url) -> bool {
        let Some(port) = url.port_or_known_default() else { return false };
        if !self.allows_port(port) {
            return false;
        }
        match literal_ip(url) {
            Some(ip) => self.allows_ip(ip),
            None => true,
        }
    }

    /// The resolver deliveries use: names resolve to allowed addresses only
    /// (the proxy's own name excepted: it is the operator's).
    pub fn resolver(self: &Arc<Self>) -> GuardedResolver {
        GuardedResolver { rules: Arc::clone(self) }
    }
}

/// The address a URL names literally, if it does.
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries, for the
/// operator's IPv4 networks as for the connection.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The built-in classes a delivery never goes to unless private targets are
/// allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

/// Azure's virtual public address of the host (DNS, metadata, health): public
/// in form, internal in effect.
const AZURE_HOST_SERVICES: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip == AZURE_HOST_SERVICES
        || ip.is_unspecified()   // 0.0.0.0
        || a == 0                // 0.0.0.0/8 "this network"
        || ip.is_loopback()      // 127.0.0.0/8
        || ip.is_private()       // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()    // 169.254/16, cloud metadata included
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 CGNAT
        || (a == 192 && b == 0 && c == 0)       // 192.0.0/24 IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // TEST-NET-1
        || (a == 198 && (b == 18 || b == 19))   // 198.18/15 benchmarking
        || (a == 198 && b == 51 && c == 100)    // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)     // TEST-NET-3
        || ip.is_multicast()     // 224/4
        || a >= 240 // 240/4 reserved, broadcast
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4); // ::ffff:a.b.c.d
    }
    match segments {
        // ::a.b.c.d (IPv4-compatible, deprecated) and :: / ::1
        [0, 0, 0, 0, 0, 0, _, _] => true,
        // ::ffff:0:a.b.c.d (IPv4-translated, SIIT): a translator's way in.
        [0, 0, 0, 0, 0xffff, 0, _, _] => true,
        // 64:ff9b::/96 NAT64 maps to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => is_forbidden_v4(embedded_v4(high, low)),
        // 64:ff9b:1::/48 local-use NAT64.
        [0x64, 0xff9b, 1, ..] => true,
        // 2002::/16 6to4 embeds an IPv4 address in bits 16..48.
        [0x2002, high, low, ..] => is_forbidden_v4(embedded_v4(high, low)),
        // 2001::/32 Teredo tunnels to an obfuscated IPv4 address.
        [0x2001, 0, ..] => true,
        // 2001:db8::/32 documentation.
        [0x2001, 0xdb8, ..] => true,
        // 100::/64 discard-only.
        [0x100, 0, 0, 0, ..] => true,
        [first, ..] => {
            (first & 0xfe00) == 0xfc00        // fc00::/7 unique local
                || (first & 0xffc0) == 0xfe80 // fe80::/10 link-local
                || (first & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
                || (first & 0xff00) == 0xff00 // ff00::/8 multicast
        }
    }
}

/// Resolves names, keeping only the addresses the rules allow: for
/// reqwest's pools (`Resolve`) and for hyper-util's (`tower::Service`).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    rules: Arc<EgressRules>,
}

type ResolveError = Box<dyn std::error::Error + Send + Sync>;

impl GuardedResolver {
    async fn allowed(
        rules: Arc<EgressRules>,
        host: String,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
        let is_proxy = rules.proxy.as_ref().and_then(url::Url::host_str) == Some(host.as_str());
        let allowed: Vec<SocketAddr> =
            resolved.filter(|a| is_proxy || rules.allows_ip(a.ip())).collect();
        if allowed.is_empty() {
            return Err(Box::new(ForbiddenDestination));
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = Self::allowed(Arc::clone(&self.rules), name.as_str().to_owned());
        Box::pin(async move { Ok(Box::new(allowed.await?.into_iter()) as Addrs) })
    }
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, ResolveError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ResolveError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allowed = Self::allowed(Arc::clone(&self.rules), name.as_str().to_owned());
        Box::pin(async move { Ok(allowed.await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(ip: &str) -> bool {
        is_forbidden(ip.parse().expect("an IP address"))
    }

    #[test]
    fn internal_addresses_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
            "168.63.129.16",
            "::ffff:0:808:808",
            "::ffff:0:7f00:1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    fn rules(allowed: &[&str], denied: &[&str], ports: &[RangeInclusive<u16>]) -> EgressRules {
        let nets = |list: &[&str]| list.iter().map(|n| n.parse().expect("a network")).collect();
        EgressRules {
            allowed_networks: nets(allowed),
            denied_networks: nets(denied),
            allowed_ports: ports.to_vec(),
            ..EgressRules::default()
        }
    }

    fn allows(rules: &EgressRules, ip: &str) -> bool {
        rules.allows_ip(ip.parse().expect("an IP address"))
    }

    #[test]
    fn the_most_specific_operator_network_decides_and_a_deny_wins_a_tie() {
        let rules = rules(&["10.1.0.0/16", "0.0.0.0/0"], &["10.1.2.0/24", "8.8.8.8/32"], &[]);
        assert!(allows(&rules, "10.1.3.4"), "allowed network inside a refused class");
        assert!(!allows(&rules, "10.1.2.3"), "denied network inside an allowed one");
        assert!(!allows(&rules, "8.8.8.8"), "denied public address");
        assert!(allows(&rules, "192.168.0.1"), "0.0.0.0/0 allowed opens every class");
        let tie = self::rules(&["127.0.0.1/32"], &["127.0.0.1/32"], &[]);
        assert!(!allows(&tie, "127.0.0.1"));
    }

    #[test]
    fn without_a_matching_rule_the_built_in_classes_decide() {
        let rules = rules(&["10.1.0.0/16"], &["8.8.8.8/32"], &[]);
        assert!(!allows(&rules, "127.0.0.1"));
        assert!(allows(&rules, "1.1.1.1"));
        let private = EgressRules { allow_private: true, ..rules };
        assert!(allows(&private, "127.0.0.1"));
        assert!(!allows(&private, "8.8.8.8"), "a deny holds with private targets allowed");
    }

    #[test]
    fn a_deny_holds_against_private_targets_allowed() {
        let rules =
            EgressRules { allow_private: true, ..rules(&[], &["127.0.0.0/8", "::1/128"], &[]) };
        assert!(!allows(&rules, "127.0.0.1"));
        assert!(!allows(&rules, "::1"));
        assert!(!allows(&rules, "::ffff:127.0.0.1"), "mapped IPv4 meets the IPv4 rule");
        assert!(allows(&rules, "10.0.0.1"));
    }

    #[test]
    fn only_the_dead_loopback_port_is_reachable_when_everything_else_is_denied() {
        let rules = rules(&["127.0.0.1/32"], &["0.0.0.0/0", "::/0"], &[9..=9]);
        let url = |u: &str| url::Url::parse(u).expect("a URL");
        assert!(rules.allows_url(&url("http://127.0.0.1:9/x")));
        assert!(!rules.allows_url(&url("http://127.0.0.1:8080/")));
        assert!(!rules.allows_url(&url("http://1.1.1.1:9/")));
        assert!(!rules.allows_url(&url("https://example.com/")), "port 443 is not allowed");
        assert!(rules.allows_url(&url("http://example.com:9/")), "a name waits for its addresses");
        assert!(!allows(&rules, "93.184.216.34"));
        assert!(!allows(&rules, "::1"));
    }

    #[test]
    fn ports_default_to_any_and_ranges_hold() {
        let any = EgressRules::default();
        assert!(any.allows_port(1) && any.allows_port(65535));
        let some = rules(&[], &[], &[443..=443, 8000..=8999]);
        assert!(some.allows_port(443) && some.allows_port(8000) && some.allows_port(8999));
        assert!(!some.allows_port(80) && !some.allows_port(9000));
    }

    #[test]
    fn literal_addresses_are_checked_from_the_url() {
        let rules = EgressRules::default();
        for refused in [
            "http://10.0.0.1/",
            "http://[::1]:8080/",
            "http://[::ffff:169.254.169.254]/",
            "http://168.63.129.16/",
            "http://0x7f.1/",
            // IPv4-compatible and IPv4-translated loopback: not loopback
            // to IPv6, so only here, where nothing connects.
            "http://[::127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
        ] {
            let url = url::Url::parse(refused).expect("a URL");
            assert!(!rules.allows_url(&url), "{refused}");
        }
        let url = url::Url::parse("http://8.8.8.8/").expect("a URL");
        assert!(rules.allows_url(&url));
    }

    #[test]
    fn refusals_say_nothing_of_why() {
        assert_eq!(ForbiddenDestination.to_string(), REFUSED);
    }
}
