//! The signaling server's settings, already validated and typed. `hpb` builds this from
//! its layered configuration (hpb.toml, server.conf, environment, flags); the signaling
//! crate never reads files or the environment itself.

use std::time::Duration;

use ipnet::IpNet;
use url::Url;

/// Everything the signaling server needs to run.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// `[sessions] hashkey`: HMAC key of session ids.
    pub hash_key: Vec<u8>,
    /// `[sessions] blockkey`: optional AES key (16/24/32 bytes) of session ids.
    pub block_key: Vec<u8>,
    /// `[clients] internalsecret`; `None` refuses internal clients.
    pub internal_secret: Option<Vec<u8>>,
    /// Configured backends (`[backend] backends = a, b` with sections `[a]`, `[b]`).
    pub backends: Vec<BackendConfig>,
    /// `allowall` / legacy `allowed` backends using the common secret.
    pub common: Option<CommonBackend>,
    /// `[backend] timeout`.
    pub backend_timeout: Duration,
    /// `[backend] connectionsperhost`.
    pub connections_per_host: usize,
    /// `[backend] skipverify`: do not verify Nextcloud's TLS certificate.
    pub backend_skip_verify: bool,
    /// `[http] allowed_origins`: empty allows every origin (upstream behaviour).
    pub allowed_origins: Vec<String>,
    /// `[app] trustedproxies`: peers allowed to set X-Real-IP / X-Forwarded-For.
    pub trusted_proxies: Vec<IpNet>,
    /// `[stats] allowed_ips`: who may read /api/v1/stats, /api/v1/serverinfo, /metrics.
    pub stats_allowed_ips: Vec<IpNet>,
    /// `[turn]` for `/turn/credentials` (TURN REST API).
    pub turn: Option<TurnRestConfig>,
    /// `[federation]`.
    pub federation: FederationConfig,
    /// `[mcu] maxstreambitrate` (bits/s, 0 = none).
    pub mcu_max_stream_bitrate: u64,
    /// `[mcu] maxscreenbitrate` (bits/s, 0 = none).
    pub mcu_max_screen_bitrate: u64,
    /// `[app] allowsubscribeany`.
    pub allow_subscribe_any: bool,
    /// `[mcu] timeout`: how long a media-plane request (and a subscriber's wait for its
    /// publisher) may take.
    pub mcu_timeout: Duration,
    /// Timers and limits (`[limits]`, hpb-only; defaults are upstream's values).
    pub limits: Limits,
}

/// One Nextcloud instance (or several URLs of the same instance).
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub id: String,
    /// Canonical base URLs (see `hpb_proto::backend_url::canonical`).
    pub urls: Vec<Url>,
    pub secret: Vec<u8>,
    /// 0 = unlimited (internal and virtual sessions are not counted).
    pub session_limit: u64,
    pub max_stream_bitrate: u64,
    pub max_screen_bitrate: u64,
}

/// Backends accepted by host with the common `[backend] secret`.
#[derive(Debug, Clone)]
pub struct CommonBackend {
    pub secret: Vec<u8>,
    /// `allowall = true`: any host.
    pub allow_all: bool,
    /// Legacy `allowed = host1, host2`.
    pub allowed_hosts: Vec<String>,
    /// `allowhttp`: accept http:// Nextcloud URLs.
    pub allow_http: bool,
    pub session_limit: u64,
    pub max_stream_bitrate: u64,
    pub max_screen_bitrate: u64,
}

#[derive(Debug, Clone)]
pub struct TurnRestConfig {
    pub api_key: String,
    pub secret: Vec<u8>,
    pub servers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FederationConfig {
    pub timeout: Duration,
    pub skip_verify: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            skip_verify: false,
        }
    }
}

/// Timers and limits. Defaults are upstream's values (reference §1.15).
#[derive(Debug, Clone)]
pub struct Limits {
    pub hello_timeout: Duration,
    pub room_join_timeout: Duration,
    pub resume_window: Duration,
    pub ws_ping_interval: Duration,
    pub ws_pong_timeout: Duration,
    pub write_timeout: Duration,
    pub room_ping_interval: Duration,
    /// How long one SIP bridge has to accept a dial-out before the next is asked.
    pub dialout_timeout: Duration,
    /// Largest inbound WebSocket message.
    pub max_message_size: usize,
    /// Frames queued for one session before it is disconnected as too slow.
    pub max_queued_messages: usize,
    /// Sustained client messages per second per connection.
    pub client_rate: u32,
    /// Burst of client messages allowed above the sustained rate.
    pub client_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(2),
            room_join_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(30),
            ws_ping_interval: Duration::from_secs(54),
            ws_pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            room_ping_interval: Duration::from_secs(10),
            dialout_timeout: Duration::from_secs(45),
            max_message_size: 64 * 1024,
            max_queued_messages: 8192,
            client_rate: 200,
            client_burst: 1000,
        }
    }
}

impl SignalingConfig {
    /// A configuration with the given keys and no backends; callers fill in the rest.
    pub fn new(hash_key: Vec<u8>) -> Self {
        Self {
            hash_key,
            block_key: Vec::new(),
            internal_secret: None,
            backends: Vec::new(),
            common: None,
            backend_timeout: Duration::from_secs(10),
            connections_per_host: 8,
            backend_skip_verify: false,
            allowed_origins: Vec::new(),
            trusted_proxies: default_trusted_proxies(),
            stats_allowed_ips: default_stats_ips(),
            turn: None,
            federation: FederationConfig::default(),
            mcu_max_stream_bitrate: 1_048_576,
            mcu_max_screen_bitrate: 2_097_152,
            allow_subscribe_any: false,
            mcu_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Upstream's default trusted proxies: loopback and RFC 1918.
pub fn default_trusted_proxies() -> Vec<IpNet> {
    nets(&[
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ])
}

/// Upstream's default stats allow-list: loopback.
pub fn default_stats_ips() -> Vec<IpNet> {
    nets(&["127.0.0.1/32", "::1/128"])
}
