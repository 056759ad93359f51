//! TLS for hpb's public port: the certificate chain and key from PEM files, served through a
//! resolver that swaps in a new pair on SIGHUP or when the files change, so renewed
//! certificates take effect for new handshakes without dropping any connection. With ACME the
//! certificates come from `crate::acme` instead, through the same server configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN ids the public port accepts: HTTP/1.1 (HTTPS, WSS) and TURN (RFC 7443).
pub const ALPN_HTTP: &[u8] = b"http/1.1";
pub const ALPN_TURN: &[u8] = b"stun.turn";
/// ALPN of ACME's tls-alpn-01 validation (RFC 8737): answered by the certificate alone.
pub const ALPN_ACME: &[u8] = b"acme-tls/1";

/// Read a PEM certificate chain and private key and check they belong together; `section`
/// names the configuration they came from in errors.
pub fn load(cert: &Path, key: &Path, section: &str) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("the certificate {} is not valid PEM", cert.display()))?;
    if certs.is_empty() {
        bail!(
            "{} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {} (PEM)", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .context("the private key is not one rustls can sign with (RSA, ECDSA or Ed25519)")?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .with_context(|| format!("{section} certificate and key do not belong together"))?;
    Ok(ck)
}

fn mtimes(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

/// The current certificate, reloadable.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<ReloadingCert>> {
        let ck = load(&cert, &key, "[https]")?;
        let seen = mtimes(&cert, &key);
        Ok(Arc::new(ReloadingCert {
            cert,
            key,
            current: RwLock::new(Arc::new(ck)),
            seen: RwLock::new(seen),
        }))
    }

    /// Loads the files again; on failure the old certificate stays in use.
    pub fn reload(&self, why: &str) {
        match load(&self.cert, &self.key, "[https]") {
            Ok(ck) => {
                *self.current.write() = Arc::new(ck);
                *self.seen.write() = mtimes(&self.cert, &self.key);
                tracing::info!(certificate = %self.cert.display(), "TLS certificate reloaded ({why})");
            }
            Err(e) => tracing::warn!(
                certificate = %self.cert.display(),
                "TLS certificate not reloaded ({why}), the previous one stays in use: {e:#}"
            ),
        }
    }

    /// Reloads on SIGHUP and when the files' modification times change.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut hup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(
                            "no SIGHUP handler, certificate reloads only on file changes: {e}"
                        );
                        None
                    }
                };
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = async { match &mut hup { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => {
                        me.reload("SIGHUP");
                    }
                    _ = tick.tick() => {
                        if mtimes(&me.cert, &me.key) != *me.seen.read() {
                            me.reload("the files changed");
                        }
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The rustls server configuration of the public port.
pub fn server_config(cert: Arc<ReloadingCert>) -> Arc<rustls::ServerConfig> {
    config_with(cert, false)
}

/// The public port's configuration with ACME's resolver: it also answers tls-alpn-01.
pub fn acme_server_config(
    resolver: Arc<rustls_acme::ResolvesServerCertAcme>,
) -> Arc<rustls::ServerConfig> {
    config_with(resolver, true)
}

fn config_with(resolver: Arc<dyn ResolvesServerCert>, acme: bool) -> Arc<rustls::ServerConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![ALPN_HTTP.to_vec(), ALPN_TURN.to_vec()];
    if acme {
        cfg.alpn_protocols.push(ALPN_ACME.to_vec());
    }
    Arc::new(cfg)
}
