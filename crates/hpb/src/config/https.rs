//! The public TLS port from `[https]` (upstream's section): `listen`, `certificate` and `key`
//! (PEM files). On it hpb serves HTTPS and WSS signaling and, with the TURN server on, TURN
//! over TLS and TCP too.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::resolve::{Reader, parse_listen};

#[derive(Debug, Clone)]
pub struct HttpsSettings {
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// `None` when `[https] listen` is not set.
pub fn resolve(r: &Reader<'_>) -> Result<Option<HttpsSettings>> {
    let Some((listen, item)) = r.text("https", "listen")? else {
        return Ok(None);
    };
    let first = listen.split_whitespace().next().unwrap_or_default();
    let listen = parse_listen(first).ok_or_else(|| {
        item.error(format_args!(
            "= {first:?} is not an address like 0.0.0.0:443 or [::]:443"
        ))
    })?;
    let (Some((certificate, _)), Some((key, _))) =
        (r.text("https", "certificate")?, r.text("https", "key")?)
    else {
        return Err(
            item.error("is set, so [https] certificate and [https] key (PEM files) are needed too")
        );
    };
    Ok(Some(HttpsSettings {
        listen,
        certificate: PathBuf::from(certificate),
        key: PathBuf::from(key),
    }))
}
