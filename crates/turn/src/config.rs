//! The TURN server's settings, already validated: what hpb's `[turn]` section (and the AIO
//! names `TURN_SECRET`, `TALK_PORT`, `TURN_DOMAIN`) turns into.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

#[derive(Clone)]
pub struct TurnConfig {
    /// UDP and TCP listeners (default 0.0.0.0:3478).
    pub listen: Vec<SocketAddr>,
    /// TURN over TLS (`turns:`), with the certificate hpb uses.
    pub tls_listen: Option<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TURN REST secrets (`use-auth-secret`); several are accepted at once for rotation.
    pub secrets: Vec<Vec<u8>>,
    pub realm: String,
    /// Relayed transport addresses are taken from this port range.
    pub relay_range: RangeInclusive<u16>,
    /// The address clients are told to send to (NAT 1:1); default: the address the server
    /// uses to reach the client.
    pub external_ip: Option<IpAddr>,
    pub external_ip6: Option<IpAddr>,
    pub allowed_peers: Vec<IpNet>,
    pub denied_peers: Vec<IpNet>,
    /// Test-only: let clients relay to loopback peers.
    pub allow_loopback_peers: bool,
    /// Our own SFU's media addresses, always reachable.
    pub sfu_addrs: Vec<SocketAddr>,
    /// Allocations in total (0 = unlimited).
    pub total_quota: usize,
    /// Allocations per TURN username's user part (0 = unlimited).
    pub user_quota: usize,
    /// Allocations per client IP (0 = unlimited): Talk's usernames are per page load, so a
    /// per-user quota alone is weak.
    pub ip_quota: usize,
    /// Bits per second per allocation, each direction (0 = unlimited).
    pub max_bps: u64,
    /// Bits per second for the whole server, each direction (0 = unlimited).
    pub total_bps: u64,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    /// Failed authentications per client IP per minute before requests are ignored.
    pub auth_failures_per_minute: u32,
    /// UDP worker threads, each with its own SO_REUSEPORT socket (default: one per core).
    pub workers: usize,
    /// RFC 6062 TCP relaying (Connect); off unless enabled.
    pub tcp_relay: bool,
    /// Data from one allocation to another allocation's relayed address on this server
    /// (two clients both relayed here) goes straight to the other client in-process instead
    /// of through the relay sockets and the kernel; the same checks apply. On by default; off
    /// only to exercise or measure the socket path.
    pub relay_short_circuit: bool,
}

impl TurnConfig {
    /// Defaults as coturn and RFC 8656 set them, for `secrets`.
    pub fn new(secrets: Vec<Vec<u8>>) -> TurnConfig {
        TurnConfig {
            listen: vec!["0.0.0.0:3478".parse().expect("literal address")],
            tls_listen: None,
            tls: None,
            secrets,
            realm: "hpb".into(),
            relay_range: 49152..=65535,
            external_ip: None,
            external_ip6: None,
            allowed_peers: Vec::new(),
            denied_peers: Vec::new(),
            allow_loopback_peers: false,
            sfu_addrs: Vec::new(),
            total_quota: 0,
            user_quota: 0,
            ip_quota: 0,
            max_bps: 0,
            total_bps: 0,
            max_permissions: 128,
            max_channels: 128,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            auth_failures_per_minute: 60,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            tcp_relay: false,
            relay_short_circuit: true,
        }
    }
}
