//! Turning the merged values into what the servers run with: a validated
//! `SignalingConfig`, the listen address and the log level. Every check on the
//! configuration lives here; each error names the key, its source and the fix.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hpb_signaling::SignalingConfig;
use hpb_signaling::config::{
    BackendConfig, CommonBackend, TurnRestConfig, default_stats_ips, default_trusted_proxies,
};
use ipnet::IpNet;
use url::Url;

use super::layer::LayerKind;
use super::merged::{Item, Merged};

/// The typed result of a configuration.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    /// `[http] shutdown_timeout`: how long SIGTERM waits for clients to go.
    pub shutdown_timeout: Duration,
    pub signaling: SignalingConfig,
    pub log_level: String,
    /// The built-in TURN server, when a TURN secret is configured.
    pub turn: Option<super::turn::TurnSettings>,
    /// The built-in SFU, when `[sfu] listen` is set.
    pub sfu: Option<super::sfu::SfuSettings>,
    /// The public TLS port, when `[https] listen` is set.
    pub https: Option<super::https::HttpsSettings>,
}

pub(super) struct Reader<'a> {
    pub(super) m: &'a Merged,
}

impl<'a> Reader<'a> {
    pub(super) fn item(&self, section: &str, key: &str) -> Option<&'a Item> {
        self.m.get(section, key)
    }

    /// A string value; `None` when absent or empty.
    pub(super) fn text(&self, section: &str, key: &str) -> Result<Option<(String, &'a Item)>> {
        match self.item(section, key) {
            Some(i) => {
                let t = i.text()?;
                Ok((!t.is_empty()).then_some((t, i)))
            }
            None => Ok(None),
        }
    }

    pub(super) fn boolean(&self, section: &str, key: &str, default: bool) -> Result<bool> {
        self.item(section, key).map_or(Ok(default), Item::boolean)
    }

    pub(super) fn uint(&self, section: &str, key: &str, default: u64) -> Result<u64> {
        self.item(section, key).map_or(Ok(default), Item::uint)
    }

    pub(super) fn positive(&self, section: &str, key: &str, default: u64) -> Result<u64> {
        let n = self.uint(section, key, default)?;
        if n == 0
            && let Some(i) = self.item(section, key)
        {
            return Err(i.error("must be greater than 0"));
        }
        Ok(n)
    }

    pub(super) fn list(&self, section: &str, key: &str) -> Result<Vec<String>> {
        self.item(section, key).map_or(Ok(Vec::new()), Item::list)
    }
}

/// A listen address: `ip:port`, `[v6]:port`, `:port` (all IPv4 interfaces, as in Go) or
/// `localhost:port`.
pub fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    }
    None
}

fn listen(r: &Reader<'_>, warnings: &mut Vec<String>) -> Result<SocketAddr> {
    let Some((value, item)) = r.text("http", "listen")? else {
        return super::defaults::DEFAULT_LISTEN.parse().map_err(|_| {
            anyhow!("[http] listen is empty; set it to an address like 127.0.0.1:8080")
        });
    };
    let mut parts = value.split_whitespace();
    let Some(first) = parts.next() else {
        return Err(item.error("is empty; set it to an address like 127.0.0.1:8080"));
    };
    let rest: Vec<&str> = parts.collect();
    if !rest.is_empty() {
        warnings.push(format!(
            "{} lists several addresses; hpb listens on the first, {first}, and ignores {} (from {})",
            item.label,
            rest.join(" "),
            item.source
        ));
    }
    if first.starts_with('/') {
        return Err(item.error(format_args!(
            "is the Unix socket {first:?}; hpb listens on TCP only: give an address like 127.0.0.1:8080"
        )));
    }
    parse_listen(first).ok_or_else(|| {
        item.error(format_args!(
            "{first:?} is not an address like 127.0.0.1:8080, [::]:8081 or :8080 (host names other than localhost are not resolved)"
        ))
    })
}

pub(super) fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn nets(r: &Reader<'_>, section: &str, key: &str, default: Vec<IpNet>) -> Result<Vec<IpNet>> {
    let list = r.list(section, key)?;
    if list.is_empty() {
        return Ok(default);
    }
    let mut out = Vec::with_capacity(list.len());
    for s in &list {
        match parse_net(s) {
            Some(n) => out.push(n),
            None => {
                let i = r
                    .item(section, key)
                    .map_or_else(|| format!("[{section}] {key}"), |i| i.label.clone());
                let src = r.item(section, key).map_or("", |i| i.source.as_str());
                bail!("{i}: {s:?} is not an IP address or CIDR like 10.0.0.0/8 (from {src})");
            }
        }
    }
    Ok(out)
}

fn origins(r: &Reader<'_>) -> Result<Vec<String>> {
    let list = r.list("http", "allowed_origins")?;
    let mut out = Vec::new();
    for o in list {
        let Some(item) = r.item("http", "allowed_origins") else {
            break;
        };
        if o == "*" {
            return Err(
                item.error("does not take \"*\": leave the list empty to allow every origin")
            );
        }
        let ok = Url::parse(&o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if !ok {
            return Err(item.error(format_args!(
                "has {o:?}, which is not an origin like https://cloud.example.com (scheme and host, no path)"
            )));
        }
        out.push(o.trim_end_matches('/').to_string());
    }
    Ok(out)
}

/// Where an admin defines backend `id`, for hints.
fn backend_home(id: &str, layer: Option<LayerKind>) -> String {
    match layer {
        Some(LayerKind::IniFile) => format!("its [{id}] section"),
        Some(LayerKind::Env) => format!("HPB_BACKENDS__{}__<KEY>", id.to_ascii_uppercase()),
        Some(LayerKind::AioEnv) => "NC_DOMAIN / SIGNALING_SECRET".to_string(),
        _ => format!("[backends.{id}]"),
    }
}

fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn backends(
    r: &Reader<'_>,
    common_secret: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<BackendConfig>> {
    let m = r.m;
    let listed_item = r.item("backend", "backends");
    let ids: Vec<String> = match listed_item {
        Some(item) => {
            let mut ids: Vec<String> = Vec::new();
            for id in item.list()? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            for id in &ids {
                if m.backends.contains_key(id) {
                    continue;
                }
                let msg = match item.layer {
                    Some(LayerKind::IniFile) => format!(
                        "{}: [backend] backends lists \"{id}\" but there is no [{id}] section; add a [{id}] section with urls and secret, or remove \"{id}\" from the list",
                        item.source
                    ),
                    Some(LayerKind::TomlFile) => format!(
                        "{}: [backend] backends lists \"{id}\" but there is no [backends.{id}] table; add one with urls and secret, or remove \"{id}\" from the list",
                        item.source
                    ),
                    _ => format!(
                        "[backend] backends lists \"{id}\" but no backend \"{id}\" is defined; set HPB_BACKENDS__{}__URLS and __SECRET, or remove \"{id}\" from the list (from {})",
                        id.to_ascii_uppercase(),
                        item.source
                    ),
                };
                bail!(msg);
            }
            for (id, (src, _)) in &m.backend_sources {
                if !ids.contains(id) {
                    warnings.push(format!(
                        "{src}: backend \"{id}\" is defined but [backend] backends ({}) does not list it, so it is not used",
                        item.source
                    ));
                }
            }
            ids
        }
        None => m.backends.keys().cloned().collect(),
    };

    let mut out = Vec::new();
    let mut owner: HashMap<String, (String, String)> = HashMap::new();
    for id in ids {
        let empty = BTreeMap::new();
        let keys = m.backends.get(&id).unwrap_or(&empty);
        let table_layer = m.backend_sources.get(&id).and_then(|(_, l)| *l);
        let mut url_items: Vec<(String, &Item)> = Vec::new();
        if let Some(item) = keys.get("urls") {
            url_items.extend(item.list()?.into_iter().map(|u| (u, item)));
        }
        if url_items.is_empty()
            && let Some(item) = keys.get("url")
        {
            let u = item.text()?;
            if !u.trim().is_empty() {
                warnings.push(format!(
                    "{} is deprecated; write `urls` (a comma-separated list) instead (from {})",
                    item.label, item.source
                ));
                url_items.push((u.trim().to_string(), item));
            }
        }
        if url_items.is_empty() {
            let defined = m
                .backend_sources
                .get(&id)
                .map(|(src, _)| format!(" (defined at {src})"))
                .unwrap_or_default();
            bail!(
                "backend \"{id}\" has no urls: set urls = https://cloud.example.com (the Nextcloud it serves) in {}{defined}",
                backend_home(&id, table_layer)
            );
        }
        let mut urls: Vec<Url> = Vec::new();
        for (raw, item) in url_items {
            let url = hpb_proto::backend_url::canonical(&raw).map_err(|e| {
                anyhow!(
                    "{}: {e}; write the full address of the Nextcloud, like https://cloud.example.com (from {})",
                    item.label,
                    item.source
                )
            })?;
            if urls.contains(&url) {
                continue;
            }
            if let Some((other, other_src)) = owner.get(url.as_str()) {
                bail!(
                    "backend URL {url} belongs to backend \"{other}\" ({other_src}) and to backend \"{id}\" ({}); a URL may belong to only one backend: remove it from one of them",
                    item.source
                );
            }
            if url.scheme() == "http" && !is_loopback_host(&url) {
                warnings.push(format!(
                    "{}: {url} is plain http, so the shared secret's checksums and all session data cross the network unencrypted; use https (from {})",
                    item.label, item.source
                ));
            }
            owner.insert(url.to_string(), (id.clone(), item.source.clone()));
            urls.push(url);
        }
        let own_secret = match keys.get("secret") {
            Some(i) => Some(i.text()?).filter(|s| !s.is_empty()),
            None => None,
        };
        let Some(secret) = own_secret.or_else(|| common_secret.map(str::to_string)) else {
            bail!(
                "backend \"{id}\" has no secret and there is no common [backend] secret: set secret in {} to the shared secret entered in Nextcloud's Talk settings (High-performance backend)",
                backend_home(&id, table_layer)
            );
        };
        let uint = |key: &str| keys.get(key).map_or(Ok(0), |i: &Item| i.uint());
        out.push(BackendConfig {
            id: id.clone(),
            urls,
            secret: secret.into_bytes(),
            session_limit: uint("sessionlimit")?,
            max_stream_bitrate: uint("maxstreambitrate")?,
            max_screen_bitrate: uint("maxscreenbitrate")?,
        });
    }
    Ok(out)
}

fn log_level(r: &Reader<'_>) -> Result<String> {
    let Some((raw, item)) = r.text("log", "level")? else {
        return Ok(super::defaults::DEFAULT_LOG_LEVEL.to_string());
    };
    let raw = raw.trim();
    if raw.contains('=') || raw.contains(',') {
        return Ok(raw.to_string());
    }
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => Ok(lower),
        "warning" => Ok("warn".to_string()),
        _ => Err(item.error(format_args!(
            "must be one of trace, debug, info, warn, error, off (or a filter like info,hpb=debug), it is {raw:?}"
        ))),
    }
}

fn limits(r: &Reader<'_>, warnings: &mut Vec<String>) -> Result<hpb_signaling::config::Limits> {
    let mut l = hpb_signaling::config::Limits::default();
    let ms = |key: &str, d: Duration| -> Result<Duration> {
        let default = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Duration::from_millis(r.positive("limits", key, default)?))
    };
    l.hello_timeout = ms("hello_timeout_ms", l.hello_timeout)?;
    l.room_join_timeout = ms("room_join_timeout_ms", l.room_join_timeout)?;
    l.resume_window = ms("resume_window_ms", l.resume_window)?;
    l.ws_ping_interval = ms("ws_ping_interval_ms", l.ws_ping_interval)?;
    l.ws_pong_timeout = ms("ws_pong_timeout_ms", l.ws_pong_timeout)?;
    l.write_timeout = ms("write_timeout_ms", l.write_timeout)?;
    l.room_ping_interval = ms("room_ping_interval_ms", l.room_ping_interval)?;
    l.dialout_timeout = ms("dialout_timeout_ms", l.dialout_timeout)?;
    let size = |key: &str, d: usize| -> Result<usize> {
        let n = r.positive("limits", key, u64::try_from(d).unwrap_or(u64::MAX))?;
        usize::try_from(n).map_err(|_| anyhow!("[limits] {key} is too large: {n}"))
    };
    l.max_message_size = size("max_message_size", l.max_message_size)?;
    l.max_queued_messages = size("max_queued_messages", l.max_queued_messages)?;
    let rate = |key: &str, d: u32| -> Result<u32> {
        let n = r.positive("limits", key, u64::from(d))?;
        u32::try_from(n)
            .map_err(|_| anyhow!("[limits] {key} must be at most {}, it is {n}", u32::MAX))
    };
    l.client_rate = rate("client_rate", l.client_rate)?;
    l.client_burst = rate("client_burst", l.client_burst)?;
    if l.ws_pong_timeout <= l.ws_ping_interval {
        warnings.push(format!(
            "[limits] ws_pong_timeout_ms ({} ms) is not longer than ws_ping_interval_ms ({} ms): idle clients will be disconnected before they can answer a ping",
            l.ws_pong_timeout.as_millis(),
            l.ws_ping_interval.as_millis()
        ));
    }
    Ok(l)
}

/// Validate the merged configuration. `dev` is the development sandbox (no warnings
/// about its deliberately open settings).
pub fn resolve(m: &Merged, dev: bool, warnings: &mut Vec<String>) -> Result<Resolved> {
    let r = Reader { m };
    let listen = listen(&r, warnings)?;

    let Some((hash_key, hash_item)) = r.text("sessions", "hashkey")? else {
        bail!(
            "[sessions] hashkey is not set; it signs session ids. Set it to a random value, e.g. the output of `openssl rand -hex 32`, as [sessions] hashkey in the config file or with HPB_SESSIONS_HASHKEY"
        );
    };
    if !matches!(hash_key.len(), 32 | 64) {
        warnings.push(format!(
            "[sessions] hashkey has {} bytes; use 32 or 64 (`openssl rand -hex 32` gives 64) (from {})",
            hash_key.len(),
            hash_item.source
        ));
    }
    let mut cfg = SignalingConfig::new(hash_key.into_bytes());
    if let Some((block_key, item)) = r.text("sessions", "blockkey")? {
        if !matches!(block_key.len(), 16 | 24 | 32) {
            bail!(
                "[sessions] blockkey must be 16, 24 or 32 bytes, it has {} (from {}); `openssl rand -hex 16` gives 32, or leave it empty to not encrypt session ids",
                block_key.len(),
                item.source
            );
        }
        cfg.block_key = block_key.into_bytes();
    }
    cfg.internal_secret = r
        .text("clients", "internalsecret")?
        .map(|(s, _)| s.into_bytes());

    if let Some((kind, item)) = r.text("backend", "backendtype")?
        && !kind.trim().eq_ignore_ascii_case("static")
    {
        return Err(item.error(format_args!(
            "= {kind:?} is not supported by hpb; use backendtype = static and list the backends in [backend] backends, each with its own section"
        )));
    }
    let common_secret = r.text("backend", "secret")?.map(|(s, _)| s);
    let allow_all = r.boolean("backend", "allowall", false)?;
    let allowed: Vec<String> = r
        .list("backend", "allowed")?
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if allow_all || !allowed.is_empty() {
        let Some(secret) = common_secret.clone() else {
            let what = if allow_all {
                "allowall = true"
            } else {
                "allowed"
            };
            bail!(
                "[backend] {what} needs the common [backend] secret (the shared secret entered in Nextcloud's Talk settings); set [backend] secret in the config file or HPB_BACKEND_SECRET"
            );
        };
        if allow_all
            && let Some(item) = r.item("backend", "allowall")
            && item.layer != Some(LayerKind::DevSandbox)
        {
            warnings.push(format!(
                "[backend] allowall = true accepts every Nextcloud that knows the common secret; list your Nextcloud in [backend] backends for production (from {})",
                item.source
            ));
        }
        cfg.common = Some(CommonBackend {
            secret: secret.into_bytes(),
            allow_all,
            allowed_hosts: allowed,
            allow_http: r.boolean("backend", "allowhttp", false)?,
            session_limit: r.uint("backend", "sessionlimit", 0)?,
            max_stream_bitrate: r.uint("backend", "maxstreambitrate", 0)?,
            max_screen_bitrate: r.uint("backend", "maxscreenbitrate", 0)?,
        });
    }
    cfg.backends = backends(&r, common_secret.as_deref(), warnings)?;
    if cfg.backends.is_empty() && cfg.common.is_none() && !dev {
        warnings.push(
            "no backends are configured, so every Nextcloud will be refused: list them in [backend] backends (server.conf), as [backends.<id>] tables (hpb.toml), or set NC_DOMAIN and SIGNALING_SECRET"
                .to_string(),
        );
    }
    cfg.backend_timeout =
        Duration::from_secs(r.positive("backend", "timeout", cfg.backend_timeout.as_secs())?);
    let cph = r.positive(
        "backend",
        "connectionsperhost",
        u64::try_from(cfg.connections_per_host).unwrap_or(8),
    )?;
    cfg.connections_per_host = usize::try_from(cph).unwrap_or(usize::MAX);
    cfg.backend_skip_verify = r.boolean("backend", "skipverify", false)?;

    cfg.allowed_origins = origins(&r)?;
    cfg.trusted_proxies = nets(&r, "app", "trustedproxies", default_trusted_proxies())?;
    cfg.stats_allowed_ips = nets(&r, "stats", "allowed_ips", default_stats_ips())?;
    cfg.allow_subscribe_any = r.boolean("app", "allowsubscribeany", false)?;

    let servers = r.list("turn", "servers")?;
    if !servers.is_empty() {
        let api_key = r.text("turn", "apikey")?;
        let secret = r.text("turn", "secret")?;
        let (Some((api_key, _)), Some((secret, _))) = (api_key, secret) else {
            let src = r
                .item("turn", "servers")
                .map(|i| format!(" (servers from {})", i.source))
                .unwrap_or_default();
            bail!(
                "[turn] servers is set{src}, so [turn] apikey and [turn] secret are required too (the TURN REST API key clients send, and the secret shared with the TURN server); set both, or remove servers"
            );
        };
        for s in &servers {
            if !(s.starts_with("turn:") || s.starts_with("turns:") || s.starts_with("stun:")) {
                warnings.push(format!(
                    "[turn] servers has {s:?}, which does not start with turn:, turns: or stun:; clients will not understand it"
                ));
            }
        }
        cfg.turn = Some(TurnRestConfig {
            api_key,
            secret: secret.into_bytes(),
            servers,
        });
    }

    cfg.federation.timeout = Duration::from_secs(r.positive(
        "federation",
        "timeout",
        cfg.federation.timeout.as_secs(),
    )?);
    cfg.federation.skip_verify = r.boolean("federation", "skipverify", false)?;
    cfg.mcu_max_stream_bitrate = r.uint("mcu", "maxstreambitrate", cfg.mcu_max_stream_bitrate)?;
    cfg.mcu_max_screen_bitrate = r.uint("mcu", "maxscreenbitrate", cfg.mcu_max_screen_bitrate)?;
    cfg.mcu_timeout =
        Duration::from_secs(r.positive("mcu", "timeout", cfg.mcu_timeout.as_secs())?);
    // `[turn] port` is only read for its type here; the TURN server uses it.
    r.uint("turn", "port", 0)?;
    cfg.limits = limits(&r, warnings)?;

    if dev && !listen.ip().is_loopback() {
        warnings.push(format!(
            "the development sandbox accepts any Nextcloud that knows its generated secret, and it listens on {listen}, reachable from other hosts; write a configuration for production"
        ));
    }
    let turn = super::turn::resolve(&r, warnings)?;
    if cfg.turn.is_none()
        && let (Some(t), Some((api_key, _))) = (&turn, r.text("turn", "apikey")?)
    {
        // /turn/credentials for the built-in server: its own URIs, from [turn] domain.
        let servers = super::turn::builtin_uris(&r, &t.config)?;
        if servers.is_empty() {
            warnings.push(
                "[turn] apikey is set but /turn/credentials has no URIs to hand out: set [turn] domain (the name clients reach the built-in TURN server by) or [turn] servers".into(),
            );
        }
        cfg.turn = Some(TurnRestConfig {
            api_key,
            secret: t.config.secrets[0].clone(),
            servers,
        });
    }
    let shutdown_timeout = Duration::from_secs(r.uint(
        "http",
        "shutdown_timeout",
        super::defaults::DEFAULT_SHUTDOWN_TIMEOUT.as_secs(),
    )?);
    Ok(Resolved {
        listen,
        shutdown_timeout,
        signaling: cfg,
        log_level: log_level(&r)?,
        turn,
        sfu: super::sfu::resolve(&r)?,
        https: super::https::resolve(&r, warnings)?,
    })
}
