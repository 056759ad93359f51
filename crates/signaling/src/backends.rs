//! The configured Nextcloud backends and how an incoming URL or request finds its
//! backend: by host and path prefix among configured URLs, or the common-secret
//! `allowall`/`allowed` backend (reference §3.7).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use url::Url;

use crate::config::SignalingConfig;

/// Id of the backend used for `allowall`/`allowed` hosts.
pub const COMPAT_ID: &str = "compat";

/// One backend at runtime.
#[derive(Debug)]
pub struct Backend {
    pub id: String,
    pub urls: Vec<Url>,
    pub secret: Vec<u8>,
    pub session_limit: u64,
    pub max_stream_bitrate: u64,
    pub max_screen_bitrate: u64,
    /// `allowall`/`allowed`: rooms and users are shared by all hosts using it.
    pub compat: bool,
    /// Sessions counted against `session_limit`.
    sessions: AtomicU64,
}

impl Backend {
    /// Reserve a slot for a new session; false when the limit is reached.
    pub fn try_add_session(&self) -> bool {
        if self.session_limit == 0 {
            self.sessions.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.session_limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn remove_session(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn session_count(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// A human label for messages: the first URL, or the id.
    pub fn label(&self) -> String {
        self.urls
            .first()
            .map(|u| u.to_string())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// Why a URL has no backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error(
        "the Nextcloud URL {0} is not configured as a backend: add it to the urls of a [backends.<id>] section (server.conf: [backend] backends = id and [id] urls = ...)"
    )]
    Unknown(String),
    #[error(
        "the Nextcloud URL {0} uses http, but its backend is configured with https: fix the URL in Nextcloud's settings or configure the backend URL with http"
    )]
    SchemeMismatch(String),
    #[error(
        "the Nextcloud URL {0} uses http; set [backend] allowhttp = true to accept plain http Nextcloud URLs"
    )]
    HttpNotAllowed(String),
}

/// All backends.
#[derive(Debug)]
pub struct Backends {
    list: Vec<Arc<Backend>>,
    compat: Option<(Arc<Backend>, CompatRules)>,
}

#[derive(Debug)]
struct CompatRules {
    allow_all: bool,
    hosts: Vec<String>,
    allow_http: bool,
}

impl Backends {
    pub fn new(cfg: &SignalingConfig) -> Self {
        let list = cfg
            .backends
            .iter()
            .map(|b| {
                Arc::new(Backend {
                    id: b.id.clone(),
                    urls: b.urls.clone(),
                    secret: b.secret.clone(),
                    session_limit: b.session_limit,
                    max_stream_bitrate: b.max_stream_bitrate,
                    max_screen_bitrate: b.max_screen_bitrate,
                    compat: false,
                    sessions: AtomicU64::new(0),
                })
            })
            .collect();
        let compat = cfg
            .common
            .as_ref()
            .filter(|c| c.allow_all || !c.allowed_hosts.is_empty())
            .map(|c| {
                (
                    Arc::new(Backend {
                        id: COMPAT_ID.to_string(),
                        urls: Vec::new(),
                        secret: c.secret.clone(),
                        session_limit: c.session_limit,
                        max_stream_bitrate: c.max_stream_bitrate,
                        max_screen_bitrate: c.max_screen_bitrate,
                        compat: true,
                        sessions: AtomicU64::new(0),
                    }),
                    CompatRules {
                        allow_all: c.allow_all,
                        hosts: c
                            .allowed_hosts
                            .iter()
                            .map(|h| h.to_ascii_lowercase())
                            .collect(),
                        allow_http: c.allow_http,
                    },
                )
            });
        Self { list, compat }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.list.iter().chain(self.compat.iter().map(|(b, _)| b))
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Backend>> {
        self.all().find(|b| b.id == id)
    }

    /// Find the backend for a canonical Nextcloud base URL.
    pub fn lookup(&self, url: &Url) -> Result<Arc<Backend>, LookupError> {
        let mut scheme_mismatch = false;
        for b in &self.list {
            for u in &b.urls {
                if u.host_str() == url.host_str()
                    && u.port() == url.port()
                    && url.path().starts_with(u.path())
                {
                    if u.scheme() == url.scheme()
                        || (u.scheme() == "http" && url.scheme() == "https")
                    {
                        return Ok(b.clone());
                    }
                    scheme_mismatch = true;
                }
            }
        }
        if scheme_mismatch {
            return Err(LookupError::SchemeMismatch(url.to_string()));
        }
        if let Some((b, rules)) = &self.compat {
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            if rules.allow_all || rules.hosts.contains(&host) {
                if url.scheme() == "http" && !rules.allow_http {
                    return Err(LookupError::HttpNotAllowed(url.to_string()));
                }
                return Ok(b.clone());
            }
        }
        Err(LookupError::Unknown(url.to_string()))
    }

    /// Backends whose secret should be tried for a request without a backend header.
    pub fn legacy_candidates(&self) -> Vec<Arc<Backend>> {
        if let Some((b, _)) = &self.compat {
            return vec![b.clone()];
        }
        self.list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, CommonBackend};

    fn cfg() -> SignalingConfig {
        let mut c = SignalingConfig::new(b"k".to_vec());
        c.backends.push(BackendConfig {
            id: "one".into(),
            urls: vec![Url::parse("https://cloud.example.com/nc/").expect("url")],
            secret: b"s1".to_vec(),
            session_limit: 1,
            max_stream_bitrate: 0,
            max_screen_bitrate: 0,
        });
        c
    }

    #[test]
    fn finds_by_host_and_prefix() {
        let b = Backends::new(&cfg());
        let u = Url::parse("https://cloud.example.com/nc/").expect("url");
        assert_eq!(b.lookup(&u).expect("found").id, "one");
        let other = Url::parse("https://cloud.example.com/other/").expect("url");
        assert!(matches!(b.lookup(&other), Err(LookupError::Unknown(_))));
        let http = Url::parse("http://cloud.example.com/nc/").expect("url");
        assert!(matches!(
            b.lookup(&http),
            Err(LookupError::SchemeMismatch(_))
        ));
    }

    #[test]
    fn compat_and_limits() {
        let mut c = cfg();
        c.common = Some(CommonBackend {
            secret: b"common".to_vec(),
            allow_all: true,
            allowed_hosts: vec![],
            allow_http: false,
            session_limit: 0,
            max_stream_bitrate: 0,
            max_screen_bitrate: 0,
        });
        let b = Backends::new(&c);
        let u = Url::parse("https://any.example.org/").expect("url");
        assert_eq!(b.lookup(&u).expect("compat").id, COMPAT_ID);
        let http = Url::parse("http://any.example.org/").expect("url");
        assert!(matches!(
            b.lookup(&http),
            Err(LookupError::HttpNotAllowed(_))
        ));
        let one = b.by_id("one").expect("one");
        assert!(one.try_add_session());
        assert!(!one.try_add_session());
        one.remove_session();
        assert!(one.try_add_session());
    }
}
