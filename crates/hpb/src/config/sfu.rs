//! The built-in SFU's settings from `[sfu]`: it runs when `[sfu] listen` (its UDP media
//! address) is set; `external_ip` is the address put into ICE candidates behind a 1:1 NAT.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, anyhow};

use super::resolve::{Reader, parse_listen};

#[derive(Debug, Clone)]
pub struct SfuSettings {
    pub listen: SocketAddr,
    pub external_ip: Option<IpAddr>,
}

/// `None` when the SFU is off.
pub fn resolve(r: &Reader<'_>) -> Result<Option<SfuSettings>> {
    let Some((listen, item)) = r.text("sfu", "listen")? else {
        return Ok(None);
    };
    let listen = parse_listen(&listen).ok_or_else(|| {
        item.error(format_args!(
            "= {listen:?} is not a UDP address like 0.0.0.0:3479 or 127.0.0.1:0"
        ))
    })?;
    let external_ip = match r.text("sfu", "external_ip")? {
        Some((ip, item)) => Some(ip.parse::<IpAddr>().map_err(|_| {
            anyhow!(item.error(format_args!(
                "= {ip:?} is not an IP address (the public address clients send media to)"
            )))
        })?),
        None => None,
    };
    Ok(Some(SfuSettings {
        listen,
        external_ip,
    }))
}
