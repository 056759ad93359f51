//! The built-in TURN server's settings from `[turn]` (and `[tls]` for `turns:`): it runs
//! when a TURN secret is configured (`[turn] secret`, `TURN_SECRET`), on `[turn] listen`
//! (default 0.0.0.0 on `[turn] port`, 3478), unless `[turn] enabled = false`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use hpb_turn::TurnConfig;

use super::resolve::{Reader, parse_listen, parse_net};

/// A resolved TURN server configuration.
pub struct TurnSettings {
    pub config: TurnConfig,
}

impl std::fmt::Debug for TurnSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSettings")
            .field("listen", &self.config.listen)
            .field("tls_listen", &self.config.tls_listen)
            .field("realm", &self.config.realm)
            .finish_non_exhaustive()
    }
}

/// Loads a certificate chain and private key (PEM files) into a rustls server config.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let ck = crate::tls::load(cert, key, "[tls]")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
    Ok(Arc::new(cfg))
}

fn relay_range(r: &Reader<'_>) -> Result<std::ops::RangeInclusive<u16>> {
    let Some((text, item)) = r.text("turn", "relay_range")? else {
        return Ok(49152..=65535);
    };
    let parsed = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo >= 1024 && lo <= hi => Ok(lo..=hi),
        _ => Err(item.error(format_args!(
            "= {text:?} is not a port range like 49152-65535 (low port at least 1024)"
        ))),
    }
}

/// `None` when the TURN server is off.
pub fn resolve(r: &Reader<'_>, _warnings: &mut Vec<String>) -> Result<Option<TurnSettings>> {
    let secret = r.text("turn", "secret")?;
    let enabled = match r.item("turn", "enabled") {
        Some(i) => i.boolean()?,
        None => secret.is_some(),
    };
    if !enabled {
        return Ok(None);
    }
    let Some((secret, _)) = secret else {
        bail!(
            "[turn] enabled = true needs [turn] secret (or TURN_SECRET): the TURN secret entered in Talk's TURN server settings"
        );
    };
    let mut secrets = vec![secret.into_bytes()];
    secrets.extend(
        r.list("turn", "secrets")?
            .into_iter()
            .map(String::into_bytes),
    );
    let mut cfg = TurnConfig::new(secrets);

    let port = r.uint("turn", "port", 3478)?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("[turn] port must be 1-65535, it is {port}"))?;
    let listen = r.list("turn", "listen")?;
    cfg.listen = if listen.is_empty() {
        vec![SocketAddr::from(([0, 0, 0, 0], port))]
    } else {
        let item = r.item("turn", "listen");
        listen
            .iter()
            .map(|s| {
                parse_listen(s).ok_or_else(|| match item {
                    Some(i) => i.error(format_args!(
                        "has {s:?}, which is not an address like 0.0.0.0:3478 or [::]:3478"
                    )),
                    None => anyhow!("[turn] listen has {s:?}, which is not an address"),
                })
            })
            .collect::<Result<_>>()?
    };
    if let Some((tls, item)) = r.text("turn", "tls_listen")? {
        let addr = parse_listen(&tls).ok_or_else(|| {
            item.error(format_args!(
                "= {tls:?} is not an address like 0.0.0.0:5349"
            ))
        })?;
        let (Some((cert, _)), Some((key, _))) =
            (r.text("tls", "certificate")?, r.text("tls", "key")?)
        else {
            return Err(item.error(
                "is set, so TURN over TLS needs [tls] certificate and [tls] key (PEM files)",
            ));
        };
        cfg.tls_listen = Some(addr);
        cfg.tls = Some(load_tls(Path::new(&cert), Path::new(&key))?);
    }
    if let Some((realm, _)) = r.text("turn", "realm")? {
        cfg.realm = realm;
    } else if let Some((domain, _)) = r.text("turn", "domain")? {
        cfg.realm = domain;
    }
    cfg.relay_range = relay_range(r)?;
    for s in r.list("turn", "external_ip")? {
        let ip: IpAddr = s.parse().map_err(|_| {
            anyhow!("[turn] external_ip has {s:?}, which is not an IP address (the public address clients reach)")
        })?;
        match ip {
            IpAddr::V4(_) if cfg.external_ip.is_none() => cfg.external_ip = Some(ip),
            IpAddr::V6(_) if cfg.external_ip6.is_none() => cfg.external_ip6 = Some(ip),
            _ => bail!("[turn] external_ip lists more than one address of a family: {s}"),
        }
    }
    let nets = |key: &str| -> Result<Vec<ipnet::IpNet>> {
        r.list("turn", key)?
            .iter()
            .map(|s| {
                parse_net(s).ok_or_else(|| {
                    anyhow!("[turn] {key} has {s:?}, which is not an address or network like 203.0.113.0/24")
                })
            })
            .collect()
    };
    cfg.allowed_peers = nets("allowed_peers")?;
    cfg.denied_peers = nets("denied_peers")?;
    cfg.allow_loopback_peers = r.boolean("turn", "allow_loopback_peers", false)?;
    cfg.total_quota = usize::try_from(r.uint("turn", "total_quota", 0)?).unwrap_or(usize::MAX);
    cfg.user_quota = usize::try_from(r.uint("turn", "user_quota", 0)?).unwrap_or(usize::MAX);
    cfg.max_bps = r.uint("turn", "max_bps", 0)?;
    cfg.tcp_relay = r.boolean("turn", "tcp_relay", false)?;
    let workers = r.uint("turn", "workers", 0)?;
    if workers > 0 {
        cfg.workers = usize::try_from(workers).unwrap_or(1);
    }
    Ok(Some(TurnSettings { config: cfg }))
}

/// The `turn:`/`turns:` URIs of the built-in server for `/turn/credentials`: `[turn] domain`
/// (or a specific listen address) with the listen port, UDP and TCP, and TLS if configured.
pub fn builtin_uris(r: &Reader<'_>, cfg: &TurnConfig) -> Result<Vec<String>> {
    let Some(first) = cfg.listen.first() else {
        return Ok(Vec::new());
    };
    let host = match r.text("turn", "domain")? {
        Some((d, _)) => d,
        None if !first.ip().is_unspecified() => match first.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        },
        None => return Ok(Vec::new()),
    };
    let port = first.port();
    let mut uris = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls) = cfg.tls_listen {
        uris.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
    }
    Ok(uris)
}
