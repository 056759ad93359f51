//! The real client address: `X-Real-IP`, else the right-most untrusted hop of
//! `X-Forwarded-For`, else of RFC 7239 `Forwarded` (`for=`), believed only when the TCP
//! peer is a trusted proxy.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

fn trusted(list: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    list.iter().any(|n| n.contains(&ip))
}

pub fn client_ip(trusted_proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted(trusted_proxies, peer) {
        return peer;
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        for hop in xff.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            if !trusted(trusted_proxies, ip) {
                return ip;
            }
        }
    }
    if let Some(fwd) = headers.get("forwarded").and_then(|v| v.to_str().ok()) {
        for element in fwd.rsplit(',') {
            let Some(ip) = forwarded_for(element) else {
                break;
            };
            if !trusted(trusted_proxies, ip) {
                return ip;
            }
        }
    }
    peer
}

/// The address of the `for=` pair of one `Forwarded` element (`for=192.0.2.1`,
/// `for="[2001:db8::1]:4711"`, `for=192.0.2.1:80`); `None` for obfuscated or unknown ones.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let v = value.trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_trusted_proxies;

    #[test]
    fn headers_only_from_trusted_peers() {
        let list = default_trusted_proxies();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 10.0.0.2".parse().expect("header"),
        );
        let proxy: IpAddr = "127.0.0.1".parse().expect("ip");
        let outsider: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(
            client_ip(&list, proxy, &h),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(&list, outsider, &h), outsider);
    }

    #[test]
    fn rfc7239_forwarded() {
        let list = default_trusted_proxies();
        let proxy: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            "for=203.0.113.7;proto=https, for=10.0.0.3"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            client_ip(&list, proxy, &h),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            "For=\"[2001:db8:cafe::17]:4711\"".parse().expect("header"),
        );
        assert_eq!(
            client_ip(&list, proxy, &h),
            "2001:db8:cafe::17".parse::<IpAddr>().expect("ip")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            "for=198.51.100.2:8080".parse().expect("header"),
        );
        assert_eq!(
            client_ip(&list, proxy, &h),
            "198.51.100.2".parse::<IpAddr>().expect("ip")
        );
        let mut h = HeaderMap::new();
        h.insert("forwarded", "for=_hidden".parse().expect("header"));
        assert_eq!(client_ip(&list, proxy, &h), proxy);
        let outsider: IpAddr = "198.51.100.1".parse().expect("ip");
        h.insert("forwarded", "for=203.0.113.7".parse().expect("header"));
        assert_eq!(client_ip(&list, outsider, &h), outsider);
    }
}
