//! The built-in SFU's settings from `[sfu]`: it runs when `[sfu] listen` (its UDP media
//! address) is set; `listen_v6` adds an IPv6 media socket, `tcp_listen` an ICE-TCP
//! listener of its own (the shared `[https]` port carries ICE-TCP too), and
//! `external_ip`/`external_ip_v6` are the addresses put into ICE candidates behind a 1:1 NAT;
//! `thin_silent_audio` forwards muted microphones' audio once per 400 ms instead of in full,
//! and `opus_dtx` asks publishers' browsers to send silence as Opus DTX.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, anyhow};

use super::resolve::{Reader, parse_listen};

#[derive(Debug, Clone)]
pub struct SfuSettings {
    pub listen: SocketAddr,
    pub external_ip: Option<IpAddr>,
    pub listen_v6: Option<SocketAddr>,
    pub external_ip_v6: Option<IpAddr>,
    pub tcp_listen: Option<SocketAddr>,
    pub thin_silent_audio: bool,
    pub opus_dtx: bool,
}

/// `None` when the SFU is off.
pub fn resolve(r: &Reader<'_>) -> Result<Option<SfuSettings>> {
    let Some(listen) = address(
        r,
        "listen",
        "a UDP address like 0.0.0.0:3479 or 127.0.0.1:0",
    )?
    else {
        return Ok(None);
    };
    let listen_v6 = address(r, "listen_v6", "a UDP address like [::]:3479")?;
    if let Some(a) = listen_v6
        && !a.is_ipv6()
    {
        return Err(anyhow!(
            "[sfu] listen_v6 = \"{a}\" is an IPv4 address: give an IPv6 one like [::]:3479 (listen is the IPv4 socket)"
        ));
    }
    Ok(Some(SfuSettings {
        listen,
        external_ip: ip(r, "external_ip")?,
        listen_v6,
        external_ip_v6: ip(r, "external_ip_v6")?,
        tcp_listen: address(r, "tcp_listen", "a TCP address like 0.0.0.0:3479")?,
        thin_silent_audio: r.boolean("sfu", "thin_silent_audio", false)?,
        opus_dtx: r.boolean("sfu", "opus_dtx", false)?,
    }))
}

fn address(r: &Reader<'_>, key: &str, like: &str) -> Result<Option<SocketAddr>> {
    let Some((text, item)) = r.text("sfu", key)? else {
        return Ok(None);
    };
    parse_listen(&text)
        .map(Some)
        .ok_or_else(|| item.error(format_args!("= {text:?} is not {like}")))
}

fn ip(r: &Reader<'_>, key: &str) -> Result<Option<IpAddr>> {
    let Some((text, item)) = r.text("sfu", key)? else {
        return Ok(None);
    };
    text.parse::<IpAddr>().map(Some).map_err(|_| {
        item.error(format_args!(
            "= {text:?} is not an IP address (the public address clients send media to)"
        ))
    })
}
