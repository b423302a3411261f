//! The SSRF guard: webhooks never go to loopback, private, link-local,
//! metadata or otherwise internal addresses (unless configured). The check is
//! on the resolved address that the connection then uses, so a name that
//! resolves to an internal address later (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Refused destination, as the resolver reports it.
#[derive(Debug, thiserror::Error)]
#[error("the destination resolves only to internal addresses ({0})")]
pub struct ForbiddenDestination(pub String);

pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()          // 0.0.0.0
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

/// Resolves names, keeping only the addresses deliveries may go to.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.iter().copied().filter(|a| !is_forbidden(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenDestination(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
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
}
