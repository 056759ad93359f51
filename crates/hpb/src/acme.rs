//! ACME for the public port: rustls-acme obtains and renews the certificate for `[https]
//! acme_domains` with tls-alpn-01, answered on the public port itself (ALPN `acme-tls/1`),
//! and keeps the account key and the certificates in `[https] acme_cache`. Every step is
//! logged at info, every failure at warn with what it most likely means and what to change.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls_acme::acme::{Auth, AuthStatus, ChallengeType, Order, Problem};
use rustls_acme::caches::DirCache;
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, OrderError,
    ResolvesServerCertAcme,
};

use crate::config::AcmeSettings;

type State = AcmeState<io::Error, io::Error>;
type Error = EventError<io::Error, io::Error>;

/// ACME, ready to run once the public port listens.
pub struct Acme {
    state: State,
    info: Arc<Info>,
}

/// What the log lines need to say.
struct Info {
    domains: String,
    directory: String,
    cache: PathBuf,
    ca: Option<PathBuf>,
    contact: Vec<String>,
    /// The certificate last loaded from or stored to the cache (PEM: key, then chain).
    last_pem: Mutex<Option<Vec<u8>>>,
}

/// The disk cache: rustls-acme's directory cache, watched so the log can tell what it did.
struct Cache {
    dir: DirCache<PathBuf>,
    info: Arc<Info>,
}

#[async_trait]
impl CertCache for Cache {
    type EC = io::Error;
    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let r = self.dir.load_cert(domains, directory_url).await;
        match &r {
            Ok(Some(pem)) => *self.info.last_pem.lock() = Some(pem.clone()),
            Ok(None) => tracing::info!(
                "acme: no cached certificate for {} in {}: ordering one from {} (tls-alpn-01: the CA connects to port 443 of each name)",
                self.info.domains,
                self.info.cache.display(),
                self.info.directory
            ),
            Err(_) => {}
        }
        r
    }
    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> io::Result<()> {
        *self.info.last_pem.lock() = Some(cert.to_vec());
        self.dir.store_cert(domains, directory_url, cert).await
    }
}

#[async_trait]
impl AccountCache for Cache {
    type EA = io::Error;
    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let r = self.dir.load_account(contact, directory_url).await;
        match &r {
            Ok(Some(_)) => tracing::info!(
                "acme: using the cached account for {directory_url} from {}",
                self.info.cache.display()
            ),
            Ok(None) => tracing::info!(
                "acme: no cached account for {directory_url}: creating one{}",
                if contact.is_empty() {
                    " without contact (set [https] acme_email to get expiry warnings)".to_string()
                } else {
                    format!(" with contact {}", contact.join(", "))
                }
            ),
            Err(_) => {}
        }
        r
    }
    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> io::Result<()> {
        self.dir
            .store_account(contact, directory_url, account)
            .await
    }
}

/// The trust roots for talking to the directory: the Mozilla roots plus `[https] acme_ca`.
fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading [https] acme_ca {}", ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("[https] acme_ca {} is not valid PEM", ca.display()))?;
        if certs.is_empty() {
            bail!(
                "[https] acme_ca {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
                ca.display()
            );
        }
        for c in certs {
            roots.add(c).with_context(|| {
                format!(
                    "[https] acme_ca {} holds a certificate that is not a usable CA root",
                    ca.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS for the ACME client")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl Acme {
    /// Checks the settings (the cache must be writable, `acme_ca` readable) and prepares ACME.
    pub fn new(s: &AcmeSettings) -> Result<Acme> {
        std::fs::create_dir_all(&s.cache).with_context(|| {
            format!(
                "[https] acme_cache {} cannot be created: it keeps the ACME account and certificates (a writable volume, or systemd StateDirectory=)",
                s.cache.display()
            )
        })?;
        let probe = s.cache.join(".hpb-write-test");
        std::fs::write(&probe, b"").with_context(|| {
            format!(
                "[https] acme_cache {} is not writable: without it every restart orders a new certificate and soon hits the CA's rate limit",
                s.cache.display()
            )
        })?;
        let _ = std::fs::remove_file(&probe);
        let info = Arc::new(Info {
            domains: s.domains.join(", "),
            directory: s.directory.clone(),
            cache: s.cache.clone(),
            ca: s.ca.clone(),
            contact: s.contact.clone(),
            last_pem: Mutex::new(None),
        });
        let state = AcmeConfig::new_with_client_config(&s.domains, client_config(s.ca.as_deref())?)
            .contact(&s.contact)
            .directory(&s.directory)
            .cache(Cache {
                dir: DirCache::new(s.cache.clone()),
                info: info.clone(),
            })
            .state();
        Ok(Acme { state, info })
    }

    /// The certificate resolver for the public port's TLS configuration.
    pub fn resolver(&self) -> Arc<ResolvesServerCertAcme> {
        self.state.resolver()
    }

    /// Runs ACME (obtaining, renewing) until the process ends.
    pub fn spawn(self) {
        let Acme { mut state, info } = self;
        tracing::info!(
            "acme: certificates for {} from {} (cache {})",
            info.domains,
            info.directory,
            info.cache.display()
        );
        tokio::spawn(async move {
            let mut failures: u32 = 0;
            let mut renew_at: Option<tokio::time::Instant> = None;
            loop {
                let event = tokio::select! {
                    e = state.next() => e,
                    () = async {
                        match renew_at {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        renew_at = None;
                        tracing::info!("acme: renewing the certificate for {} (a third of its lifetime is left)", info.domains);
                        continue;
                    }
                };
                let Some(event) = event else {
                    tracing::warn!("acme: stopped; the certificate will not be renewed");
                    return;
                };
                match event {
                    Ok(ok) => {
                        if matches!(ok, EventOk::DeployedNewCert) {
                            failures = 0;
                        }
                        if let Some(t) = info.on_event(&ok) {
                            renew_at = Some(t);
                        }
                    }
                    Err(err) => {
                        let order = matches!(err, EventError::Order(_));
                        if order {
                            failures = failures.saturating_add(1);
                        }
                        let retry = if order {
                            // rustls-acme waits 1 s, 2 s, 4 s, … (at most 2^16 s) after each failed order.
                            let secs = 1u64 << failures.saturating_sub(1).min(16);
                            format!(" (attempt {failures}; the next one in {})", human(secs))
                        } else {
                            String::new()
                        };
                        tracing::warn!("acme: {}{retry}", info.explain(&err));
                    }
                }
            }
        });
    }
}

/// Seconds as a rough duration for people.
fn human(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// The validity (not before, not after; Unix seconds) of the first certificate in a PEM bundle.
fn validity(pem: &[u8]) -> Option<(i64, i64)> {
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Now in Unix milliseconds.
fn now_ms() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_millis()).unwrap_or(i128::MAX))
}

/// The last word of an ACME problem type: `urn:ietf:params:acme:error:dns` → `dns`.
fn problem_kind(p: &Problem) -> &str {
    p.typ
        .as_deref()
        .map_or("", |t| t.rsplit(':').next().unwrap_or(t))
}

/// rustls-acme's "non 2xx http status: 429 \"{…}\"" (its error type cannot be named from
/// outside the crate): the status and the problem document.
fn non_2xx(text: &str) -> Option<(u16, Problem)> {
    let rest = text.strip_prefix("non 2xx http status: ")?;
    let (code, quoted) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = code.parse().ok()?;
    let body: String = serde_json::from_str(quoted).unwrap_or_else(|_| quoted.to_string());
    let problem = serde_json::from_str::<Problem>(&body).unwrap_or_else(|_| {
        const URN: &str = "urn:ietf:params:acme:error:";
        let typ = body.find(URN).map(|i| {
            body[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
                .collect()
        });
        Problem {
            typ,
            detail: Some(body.chars().take(300).collect()),
        }
    });
    Some((status, problem))
}

impl Info {
    /// Logs an event; returns when the renewal is due, if this event tells.
    fn on_event(&self, ok: &EventOk) -> Option<tokio::time::Instant> {
        match ok {
            EventOk::DeployedNewCert => {
                tracing::info!(
                    "acme: certificate for {} deployed (new, from {})",
                    self.domains,
                    self.directory
                );
                None
            }
            EventOk::DeployedCachedCert => {
                let (lifetime, renew) = self.lifetime();
                tracing::info!(
                    "acme: certificate for {} deployed from the cache {}{lifetime}",
                    self.domains,
                    self.cache.display()
                );
                renew
            }
            EventOk::CertCacheStore => {
                let (lifetime, renew) = self.lifetime();
                tracing::info!(
                    "acme: certificate for {} stored in {}{lifetime}",
                    self.domains,
                    self.cache.display()
                );
                renew
            }
            EventOk::AccountCacheStore => {
                tracing::info!(
                    "acme: account key for {} stored in {}",
                    self.directory,
                    self.cache.display()
                );
                None
            }
        }
    }

    /// "; valid for …, renewal in …" of the last certificate, and when the renewal is due.
    fn lifetime(&self) -> (String, Option<tokio::time::Instant>) {
        let pem = self.last_pem.lock().clone();
        let Some((from, until)) = pem.as_deref().and_then(validity) else {
            return (String::new(), None);
        };
        let now = now_ms();
        // rustls-acme renews when a third of the lifetime is left.
        let (from, until) = (i128::from(from) * 1000, i128::from(until) * 1000);
        let renew = until - (until - from) / 3;
        let left = u64::try_from((until - now) / 1000).unwrap_or(0);
        let due = u64::try_from(renew - now).unwrap_or(0);
        let text = if until <= now {
            "; it has expired, renewing now".to_string()
        } else {
            format!(
                "; valid for {}, renewal in {}",
                human(left),
                human(due / 1000)
            )
        };
        let at = tokio::time::Instant::now() + Duration::from_millis(due);
        (text, (due > 0).then_some(at))
    }

    fn cache_hint(&self) -> String {
        format!(
            "check that {} is writable by hpb (the container volume, or systemd StateDirectory=)",
            self.cache.display()
        )
    }

    /// What went wrong, in the admin's terms.
    fn explain(&self, err: &Error) -> String {
        match err {
            EventError::CertCacheLoad(e) | EventError::AccountCacheLoad(e) => format!(
                "cannot read the ACME cache {}: {e}; {}",
                self.cache.display(),
                self.cache_hint()
            ),
            EventError::CertCacheStore(e) | EventError::AccountCacheStore(e) => format!(
                "cannot write to the ACME cache {}: {e}. The certificate works until hpb restarts, but each restart then orders a new one and soon hits the CA's rate limit; {}",
                self.cache.display(),
                self.cache_hint()
            ),
            EventError::CachedCertParse(e) => format!(
                "the cached certificate in {} is damaged ({e}); ordering a new one",
                self.cache.display()
            ),
            EventError::NewCertParse(e) => format!(
                "the CA {} sent a certificate hpb cannot use: {e}",
                self.directory
            ),
            EventError::Order(e) => format!(
                "getting a certificate for {} failed: {}",
                self.domains,
                self.explain_order(e)
            ),
        }
    }

    fn explain_order(&self, e: &OrderError) -> String {
        use rustls_acme::acme::AcmeError;
        match e {
            OrderError::Acme(AcmeError::HttpRequest(h)) => {
                let text = h.to_string();
                if let Some((status, p)) = non_2xx(&text) {
                    return self.explain_problem(None, &p, Some(status));
                }
                if [
                    "UnknownIssuer",
                    "invalid peer certificate",
                    "CaUsedAsEndEntity",
                    "NotValidForName",
                ]
                .iter()
                .any(|s| text.contains(s))
                {
                    format!(
                        "the TLS certificate of the ACME directory {} is not trusted ({text}); if it is an internal or test CA, set [https] acme_ca to its root certificate (PEM){}",
                        self.directory,
                        self.ca
                            .as_ref()
                            .map(|c| format!(" ({} does not hold it)", c.display()))
                            .unwrap_or_default()
                    )
                } else {
                    format!(
                        "cannot reach the ACME directory {} ({text}); check [https] acme_directory and that this machine can make outgoing HTTPS connections (DNS, firewall, proxy)",
                        self.directory
                    )
                }
            }
            OrderError::Acme(AcmeError::Json(j)) => format!(
                "the answer of {} is not ACME ({j}); is [https] acme_directory the directory URL (Let's Encrypt: {})?",
                self.directory,
                crate::config::LETS_ENCRYPT
            ),
            OrderError::Acme(AcmeError::NoTlsAlpn01Challenge) => format!(
                "the CA {} offers no tls-alpn-01 challenge, the only one hpb answers; use a CA that supports it",
                self.directory
            ),
            OrderError::Acme(other) => format!("{other} (talking to {})", self.directory),
            OrderError::BadAuth(auth) => self.explain_auth(auth),
            OrderError::BadOrder(order) => self.explain_bad_order(order),
            OrderError::TooManyAttemptsAuth(domain) => format!(
                "the CA did not finish validating {domain} in about 30 s; port 443 of {domain} is probably not reachable from the CA (a firewall that drops packets, or no port forward to [https] listen)"
            ),
            OrderError::ProcessingTimeout(_) => {
                "the CA kept the order in processing for too long (a problem on the CA's side)"
                    .to_string()
            }
            OrderError::Rcgen(e) => format!("creating the certificate request failed: {e}"),
        }
    }

    fn explain_bad_order(&self, order: &Order) -> String {
        match &order.error {
            Some(p) => self.explain_problem(None, p, None),
            None => {
                "the CA declared the order invalid, usually after a failed validation".to_string()
            }
        }
    }

    fn explain_auth(&self, auth: &Auth) -> String {
        let rustls_acme::acme::Identifier::Dns(domain) = &auth.identifier;
        let problem = auth
            .challenges
            .iter()
            .filter(|c| c.typ == ChallengeType::TlsAlpn01)
            .chain(auth.challenges.iter())
            .find_map(|c| c.error.as_ref());
        match (problem, &auth.status) {
            (Some(p), _) => self.explain_problem(Some(domain), p, None),
            (None, AuthStatus::Revoked | AuthStatus::Deactivated | AuthStatus::Expired) => {
                format!(
                    "the CA's authorization for {domain} is {:?}; ordering again",
                    auth.status
                )
            }
            (None, s) => {
                format!("the validation of {domain} ended as {s:?} without a reason from the CA")
            }
        }
    }

    /// An RFC 8555 problem document as an explanation.
    fn explain_problem(&self, domain: Option<&str>, p: &Problem, status: Option<u16>) -> String {
        let name = domain.map_or_else(|| self.domains.clone(), str::to_string);
        let detail = p.detail.as_deref().unwrap_or("no detail");
        let mut s = String::new();
        let mut kind = problem_kind(p);
        let lower = detail.to_ascii_lowercase();
        // Some CAs (pebble) report a refused or timed-out connection as a `tls` problem.
        if matches!(kind, "tls" | "unauthorized" | "incorrectResponse")
            && [
                "failed to connect",
                "connection refused",
                "timeout",
                "no route",
                "unreachable",
            ]
            .iter()
            .any(|w| lower.contains(w))
        {
            kind = "connection";
        }
        match kind {
            "rateLimited" => {
                let _ = write!(
                    s,
                    "the CA's rate limit is reached ({detail}). Let's Encrypt allows 5 certificates a week for the same names and 5 failed validations an hour: keep [https] acme_cache across restarts and updates, and try things against the staging directory https://acme-staging-v02.api.letsencrypt.org/directory first"
                );
            }
            "dns" => {
                let _ = write!(
                    s,
                    "the CA could not look up {name} in DNS ({detail}): create an A (and AAAA) record for {name} pointing to this server's public address"
                );
            }
            "connection" => {
                let _ = write!(
                    s,
                    "the CA could not connect to port 443 of {name} ({detail}): the DNS record of {name} must point to this server and port 443/tcp must be reachable from the internet (firewall, NAT port forward to [https] listen)"
                );
            }
            "tls" | "unauthorized" | "incorrectResponse" => {
                let _ = write!(
                    s,
                    "the CA reached port 443 of {name} but did not get hpb's tls-alpn-01 answer ({detail}): the DNS record of {name} probably points to another server, or something in front (a reverse proxy or load balancer terminating TLS) answers instead of hpb"
                );
            }
            "caa" => {
                let _ = write!(
                    s,
                    "a DNS CAA record of {name} forbids this CA to issue ({detail}): add the CA to the CAA record or remove it"
                );
            }
            "rejectedIdentifier" => {
                let _ = write!(
                    s,
                    "the CA will not issue for {name} ({detail}): [https] acme_domains must be public DNS names"
                );
            }
            "invalidContact" | "unsupportedContact" => {
                let _ = write!(
                    s,
                    "the CA refused the contact {} ({detail}): fix [https] acme_email",
                    self.contact.join(", ")
                );
            }
            "accountDoesNotExist" => {
                let _ = write!(
                    s,
                    "the CA does not know the cached account ({detail}): remove the cached_account_* files from {}",
                    self.cache.display()
                );
            }
            "externalAccountRequired" => {
                let _ = write!(
                    s,
                    "the CA {} requires external account binding, which hpb does not support ({detail}); use another CA, e.g. Let's Encrypt",
                    self.directory
                );
            }
            "userActionRequired" => {
                let _ = write!(
                    s,
                    "the CA asks for an action, such as accepting new terms of service ({detail})"
                );
            }
            "badNonce" => {
                let _ = write!(
                    s,
                    "the CA rejected a request's nonce ({detail}); this is transient"
                );
            }
            "serverInternal" => {
                let _ = write!(
                    s,
                    "the CA has an internal problem ({detail}); it is on the CA's side"
                );
            }
            _ => {
                let _ = write!(
                    s,
                    "the CA {} refused: {} ({detail})",
                    self.directory,
                    p.typ.as_deref().unwrap_or("no problem type")
                );
                if status == Some(429) {
                    s.push_str("; this is a rate limit: keep [https] acme_cache across restarts");
                }
            }
        }
        if let Some(code) = status {
            let _ = write!(s, " [HTTP {code}]");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            domains: "hpb.example.com".into(),
            directory: crate::config::LETS_ENCRYPT.into(),
            cache: PathBuf::from("/var/lib/hpb/acme"),
            ca: None,
            contact: vec!["mailto:admin@example.com".into()],
            last_pem: Mutex::new(None),
        }
    }

    fn problem(kind: &str) -> Problem {
        Problem {
            typ: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: Some("detail from the CA".into()),
        }
    }

    #[test]
    fn problems_are_explained() {
        let i = info();
        let dns = i.explain_problem(Some("hpb.example.com"), &problem("dns"), None);
        assert!(dns.contains("A (and AAAA) record"), "{dns}");
        let conn = i.explain_problem(None, &problem("connection"), None);
        assert!(conn.contains("port 443/tcp must be reachable"), "{conn}");
        let tls = i.explain_problem(None, &problem("unauthorized"), None);
        assert!(tls.contains("points to another server"), "{tls}");
        let rate = i.explain_problem(None, &problem("rateLimited"), Some(429));
        assert!(
            rate.contains("rate limit") && rate.contains("HTTP 429"),
            "{rate}"
        );
        let other = i.explain_problem(None, &problem("somethingNew"), Some(429));
        assert!(other.contains("rate limit"), "{other}");
    }

    #[test]
    fn error_statuses_are_parsed() {
        let text = r#"non 2xx http status: 429 "{\n  \"type\": \"urn:ietf:params:acme:error:rateLimited\",\n  \"detail\": \"too many certificates\"\n}""#;
        let (status, p) = non_2xx(text).expect("parsed");
        assert_eq!(status, 429);
        assert_eq!(problem_kind(&p), "rateLimited");
        assert_eq!(p.detail.as_deref(), Some("too many certificates"));
        let (status, p) =
            non_2xx("non 2xx http status: 503 \"<html>down</html>\"").expect("parsed");
        assert_eq!(status, 503);
        assert!(p.typ.is_none());
        assert!(non_2xx("io error: refused").is_none());
        let i = info();
        let refused = Problem {
            typ: Some("urn:ietf:params:acme:error:tls".into()),
            detail: Some("Failed to connect to 192.0.2.1:443 for the tls-alpn-01 challenge".into()),
        };
        let s = i.explain_problem(Some("hpb.example.com"), &refused, None);
        assert!(s.contains("could not connect to port 443"), "{s}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(5), "5 s");
        assert_eq!(human(600), "10 min");
        assert_eq!(human(10_800), "3 h");
        assert_eq!(human(60 * 86_400), "60 days");
    }
}
