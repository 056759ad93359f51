//! Which peers a TURN client may reach (reference turn.md §3, the Slack write-up): the
//! special-purpose deny-list applied to the canonical form of every address (IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 forms unwrapped; Teredo refused), the admin's
//! `allowed_peers`/`denied_peers`, the test-only `allow_loopback_peers`, and the server's own
//! addresses: refused except for its relay ports (client-to-client relaying) and the SFU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::IpNet;

/// Why a peer address was refused (log text; the client gets 403 Forbidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub peer: SocketAddr,
    pub reason: String,
}

const DENY_V4: &[(&str, &str)] = &[
    (
        "0.0.0.0/8",
        "\"this network\" (0.0.0.0 reaches the local host)",
    ),
    ("10.0.0.0/8", "private network"),
    ("100.64.0.0/10", "carrier-grade NAT shared space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata service)"),
    ("172.16.0.0/12", "private network"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private network"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
];

const DENY_V6: &[(&str, &str)] = &[
    ("::/128", "unspecified (reaches the local host)"),
    ("::1/128", "loopback"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    (
        "fc00::/7",
        "unique local (includes cloud metadata fd00:ec2::254)",
    ),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// The IPv4 address embedded in an IPv6 form that reaches it, if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible ::a.b.c.d (but not :: and ::1, which are their own entries).
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/16.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The address a packet to `ip` really reaches: IPv4 forms in IPv6 unwrapped.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub struct PeerPolicy {
    deny: Vec<(IpNet, &'static str)>,
    allowed: Vec<IpNet>,
    denied: Vec<IpNet>,
    allow_loopback: bool,
    own_ips: Vec<IpAddr>,
    relay_ports: RangeInclusive<u16>,
    sfu: Vec<SocketAddr>,
}

impl PeerPolicy {
    pub fn new(
        allowed: Vec<IpNet>,
        denied: Vec<IpNet>,
        allow_loopback: bool,
        own_ips: Vec<IpAddr>,
        relay_ports: RangeInclusive<u16>,
        sfu: Vec<SocketAddr>,
    ) -> PeerPolicy {
        let deny = DENY_V4
            .iter()
            .chain(DENY_V6)
            .filter_map(|(net, why)| net.parse::<IpNet>().ok().map(|n| (n, *why)))
            .collect();
        PeerPolicy {
            deny,
            allowed,
            denied,
            allow_loopback,
            own_ips: own_ips.into_iter().map(canonical).collect(),
            relay_ports,
            sfu,
        }
    }

    fn refuse(peer: SocketAddr, reason: String) -> Result<(), Refused> {
        Err(Refused { peer, reason })
    }

    /// Whether a permission for `peer`'s IP may be installed (ports are checked per packet
    /// destination by [`PeerPolicy::check_destination`]).
    pub fn check_ip(&self, peer: SocketAddr) -> Result<(), Refused> {
        let ip = canonical(peer.ip());
        if let IpAddr::V6(v6) = peer.ip()
            && v6.segments()[..2] == [0x2001, 0]
        {
            return Self::refuse(peer, "Teredo addresses are refused".into());
        }
        if self.sfu.iter().any(|s| canonical(s.ip()) == ip) || self.own_ips.contains(&ip) {
            // Our own address: decided per destination port.
            return Ok(());
        }
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if let Some(n) = self.denied.iter().find(|n| n.contains(&ip)) {
            return Self::refuse(peer, format!("{ip} is in [turn] denied_peers ({n})"));
        }
        if self.allow_loopback && ip.is_loopback() {
            return Ok(());
        }
        if let Some((n, why)) = self.deny.iter().find(|(n, _)| n.contains(&ip)) {
            return Self::refuse(
                peer,
                format!("{ip} is {why} ({n}); add it to [turn] allowed_peers to relay there"),
            );
        }
        Ok(())
    }

    /// Whether data may be sent to `peer` (IP and port).
    pub fn check_destination(&self, peer: SocketAddr) -> Result<(), Refused> {
        self.check_ip(peer)?;
        let ip = canonical(peer.ip());
        if self
            .sfu
            .iter()
            .any(|s| canonical(s.ip()) == ip && s.port() == peer.port())
        {
            return Ok(());
        }
        let exempt = self.relay_ports.contains(&peer.port())
            || (self.allow_loopback && ip.is_loopback())
            || self.allowed.iter().any(|n| n.contains(&ip));
        if self.own_ips.contains(&ip) && !exempt {
            return Self::refuse(
                peer,
                format!(
                    "{peer} is this server itself outside the relay ports: only relayed addresses and the SFU may be reached"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PeerPolicy {
        PeerPolicy::new(
            vec![],
            vec![],
            false,
            vec![
                "198.51.100.7".parse().expect("ip"),
                "203.0.113.5".parse().expect("ip"),
            ],
            49152..=65535,
            vec!["203.0.113.5:3478".parse().expect("addr")],
        )
    }

    fn denied(p: &PeerPolicy, a: &str) -> bool {
        p.check_destination(a.parse().expect("addr")).is_err()
    }

    #[test]
    fn every_special_range_and_every_encoding_is_refused() {
        let p = policy();
        for a in [
            "0.0.0.0:80",
            "10.1.2.3:80",
            "100.64.0.1:80",
            "127.0.0.1:80",
            "127.255.255.254:80",
            "169.254.169.254:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.0.0.1:80",
            "192.0.2.1:80",
            "192.88.99.1:80",
            "192.168.1.1:80",
            "198.18.0.1:80",
            "198.19.255.255:80",
            "203.0.113.9:80",
            "224.0.0.1:80",
            "239.255.255.255:80",
            "240.0.0.1:80",
            "255.255.255.255:80",
            "[::]:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[::127.0.0.1]:80",
            "[::a9fe:a9fe]:80",
            "[64:ff9b::7f00:1]:80",
            "[64:ff9b:1::a00:1]:80",
            "[2002:7f00:1::]:80",
            "[2002:a9fe:a9fe::1]:80",
            "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80",
            "[2001:db8::1]:80",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
            "[fec0::1]:80",
            "[ff02::1]:80",
            "[100::1]:80",
            "[2001:10::1]:80",
        ] {
            assert!(denied(&p, a), "{a} must be refused");
        }
    }

    #[test]
    fn public_peers_relays_and_the_sfu_are_allowed() {
        let p = policy();
        for a in [
            "8.8.8.8:53",
            "[2606:4700::1111]:443",
            "[::ffff:8.8.8.8]:53",
            "[2002:808:808::]:53",
            "198.51.100.7:50000",
            "203.0.113.5:3478",
            "203.0.113.5:60000",
            "172.32.0.1:80",
            "100.128.0.1:80",
        ] {
            assert!(!denied(&p, a), "{a} must be allowed");
        }
        // Our own address outside the relay ports (our HTTP, metrics) is refused.
        assert!(denied(&p, "198.51.100.7:443"));
        assert!(denied(&p, "[::ffff:198.51.100.7]:443"));
    }

    #[test]
    fn admin_lists_and_the_loopback_switch() {
        let p = PeerPolicy::new(
            vec!["10.0.0.0/24".parse().expect("net")],
            vec!["8.8.8.0/24".parse().expect("net")],
            true,
            vec![],
            49152..=65535,
            vec![],
        );
        assert!(!denied(&p, "10.0.0.5:1"));
        assert!(denied(&p, "10.0.1.5:1"));
        assert!(denied(&p, "8.8.8.8:53"));
        assert!(!denied(&p, "127.0.0.1:3480"));
        assert!(!denied(&p, "[::1]:3480"));
        assert!(!denied(&p, "[::ffff:127.0.0.1]:3480"));
        let r = p
            .check_destination("169.254.169.254:80".parse().expect("addr"))
            .expect_err("metadata");
        assert!(r.reason.contains("link-local"), "{}", r.reason);
        assert!(r.reason.contains("allowed_peers"), "{}", r.reason);
    }
}
