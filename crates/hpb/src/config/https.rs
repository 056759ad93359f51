//! The public TLS port from `[https]` (upstream's section): `listen` and where its certificate
//! comes from, either PEM files (`certificate`, `key`) or ACME (`acme_domains` with
//! `acme_email`, `acme_directory`, `acme_cache`, `acme_ca`). On it hpb serves HTTPS and WSS
//! signaling and, with the TURN server on, TURN over TLS and TCP too.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use url::Url;

use super::resolve::{Reader, parse_listen};

/// Let's Encrypt's production directory, the default `[https] acme_directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The default `[https] acme_cache`, relative to the working directory (the container volume).
pub const DEFAULT_ACME_CACHE: &str = "acme";

#[derive(Debug, Clone)]
pub struct HttpsSettings {
    pub listen: SocketAddr,
    pub source: CertSource,
}

/// Where the public port's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, reloaded on SIGHUP and when they change.
    Files { certificate: PathBuf, key: PathBuf },
    /// Obtained and renewed with ACME (tls-alpn-01 on the public port).
    Acme(AcmeSettings),
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` contacts for the ACME account (empty: none).
    pub contact: Vec<String>,
    pub directory: String,
    /// Where the account key and the certificates are kept.
    pub cache: PathBuf,
    /// Extra CA roots (PEM) trusted when talking to the directory.
    pub ca: Option<PathBuf>,
}

/// Checks a name we are to get a certificate for; `Err` says why it cannot be one.
fn check_domain(d: &str) -> Result<(), &'static str> {
    if d.starts_with("*.") {
        return Err(
            "is a wildcard, which tls-alpn-01 cannot validate (only DNS-01 can): list the names themselves",
        );
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address: ACME certificates here are for DNS names");
    }
    let ok = d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("is not a DNS name like hpb.example.com")
    }
}

fn acme(r: &Reader<'_>, warnings: &mut Vec<String>, listen: SocketAddr) -> Result<AcmeSettings> {
    let item = r.item("https", "acme_domains");
    let mut domains: Vec<String> = Vec::new();
    for d in r.list("https", "acme_domains")? {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Err(why) = check_domain(&d)
            && let Some(i) = item
        {
            return Err(i.error(format_args!("has {d:?}, which {why}")));
        }
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let mut contact = Vec::new();
    if let Some((email, i)) = r.text("https", "acme_email")? {
        for e in super::merged::split_list(&email) {
            let addr = e.strip_prefix("mailto:").unwrap_or(&e);
            let ok = addr
                .split_once('@')
                .is_some_and(|(u, h)| !u.is_empty() && h.contains('.'));
            if !ok {
                return Err(i.error(format_args!(
                    "= {e:?} is not an e-mail address like admin@example.com (the CA sends expiry warnings there)"
                )));
            }
            contact.push(format!("mailto:{addr}"));
        }
    }
    let directory = match r.text("https", "acme_directory")? {
        Some((d, i)) => {
            let ok = Url::parse(&d).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !ok {
                return Err(i.error(format_args!(
                    "= {d:?} is not an https:// URL of an ACME directory, like {LETS_ENCRYPT}"
                )));
            }
            d
        }
        None => LETS_ENCRYPT.to_string(),
    };
    let cache = r
        .text("https", "acme_cache")?
        .map_or_else(|| DEFAULT_ACME_CACHE.to_string(), |(c, _)| c);
    let ca = r.text("https", "acme_ca")?.map(|(c, _)| PathBuf::from(c));
    if listen.port() != 443 {
        warnings.push(format!(
            "[https] acme_domains is set and [https] listen is on port {}: the CA validates on port 443 of {}, so port 443 must reach this port (a port forward), or validation fails",
            listen.port(),
            domains.join(", ")
        ));
    }
    Ok(AcmeSettings {
        domains,
        contact,
        directory,
        cache: PathBuf::from(cache),
        ca,
    })
}

/// `None` when TLS is off: no `[https] listen`, certificate, key or acme_domains. With a
/// certificate or ACME but no `listen`, TLS is on 0.0.0.0:443.
pub fn resolve(r: &Reader<'_>, warnings: &mut Vec<String>) -> Result<Option<HttpsSettings>> {
    let certificate = r.text("https", "certificate")?;
    let key = r.text("https", "key")?;
    let acme_set = !r.list("https", "acme_domains")?.is_empty();
    let listen = match r.text("https", "listen")? {
        Some((listen, item)) => {
            let first = listen.split_whitespace().next().unwrap_or_default();
            parse_listen(first).ok_or_else(|| {
                item.error(format_args!(
                    "= {first:?} is not an address like 0.0.0.0:443 or [::]:443"
                ))
            })?
        }
        None if certificate.is_some() || key.is_some() || acme_set => {
            SocketAddr::from(([0, 0, 0, 0], 443))
        }
        None => return Ok(None),
    };
    // The setting errors below point at.
    let item = r
        .item("https", "listen")
        .or_else(|| certificate.as_ref().or(key.as_ref()).map(|(_, i)| *i))
        .or_else(|| r.item("https", "acme_domains"));
    if acme_set {
        if let Some((_, i)) = certificate.as_ref().or(key.as_ref()) {
            return Err(i.error(
                "is set together with [https] acme_domains: with acme_domains hpb gets its certificate itself; remove certificate and key, or acme_domains",
            ));
        }
        let acme = acme(r, warnings, listen)?;
        return Ok(Some(HttpsSettings {
            listen,
            source: CertSource::Acme(acme),
        }));
    }
    let (Some((certificate, _)), Some((key, _))) = (certificate, key) else {
        let why = "is set, so [https] certificate and [https] key (PEM files) are needed too, or [https] acme_domains to get a certificate with ACME";
        return Err(match item {
            Some(i) => i.error(why),
            None => anyhow::anyhow!("[https] {why}"),
        });
    };
    Ok(Some(HttpsSettings {
        listen,
        source: CertSource::Files {
            certificate: PathBuf::from(certificate),
            key: PathBuf::from(key),
        },
    }))
}
