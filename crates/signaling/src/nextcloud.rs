//! The client of Nextcloud's signaling backend API (reference §2.2, §2.3): signed POSTs
//! to Talk's OCS endpoint (with the `signaling-v3` path switch), OCS envelope decoding,
//! and the capabilities fetch with its cache. Errors say which URL failed and why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpb_proto::backend::{BackendReply, Ocs};
use hpb_proto::checksum;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::backends::Backend;
use crate::config::SignalingConfig;

/// Path of Talk's signaling backend endpoint below the Nextcloud base URL.
pub const BACKEND_PATH_V1: &str = "ocs/v2.php/apps/spreed/api/v1/signaling/backend";
const BACKEND_PATH_V3: &str = "ocs/v2.php/apps/spreed/api/v3/signaling/backend";
const CAPABILITIES_PATH: &str = "ocs/v2.php/cloud/capabilities";
const MIN_CAPS_AGE: Duration = Duration::from_secs(60);
const MIN_INVALIDATE_INTERVAL: Duration = Duration::from_secs(60);

/// Why a request to Nextcloud failed.
#[derive(Debug, thiserror::Error)]
pub enum NextcloudError {
    #[error(
        "Nextcloud at {url} is unreachable from hpb: {reason}. Check that this host can resolve and connect to it (firewall, DNS, TLS)"
    )]
    Unreachable { url: String, reason: String },
    #[error("Nextcloud at {url} did not answer within {secs} s ([backend] timeout)")]
    Timeout { url: String, secs: u64 },
    #[error(
        "Nextcloud at {url} is busy: hpb's {limit} requests to it ([backend] connectionsperhost) did not finish within {secs} s ([backend] timeout)"
    )]
    Busy {
        url: String,
        limit: usize,
        secs: u64,
    },
    #[error(
        "Nextcloud at {url} answered HTTP {status}; expected 200 from Talk's signaling endpoint (is Talk installed and enabled there?)"
    )]
    Status { url: String, status: u16 },
    #[error(
        "Nextcloud at {url} answered with Content-Type \"{content_type}\" instead of JSON (a login page or proxy error page?)"
    )]
    ContentType { url: String, content_type: String },
    #[error(
        "Nextcloud at {url} throttled hpb (OCS status 429): too many failed requests; check the shared secret and wait"
    )]
    Throttled { url: String },
    #[error("Nextcloud at {url} sent an invalid reply: {reason}")]
    Invalid { url: String, reason: String },
}

/// The parts of Talk's capabilities the signaling server uses.
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    pub features: Vec<String>,
    pub hello_v2_token_key: Option<String>,
    pub session_ping_limit: u64,
}

impl Capabilities {
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

type CapsSlot = Arc<tokio::sync::Mutex<Option<CapsEntry>>>;

struct CapsEntry {
    caps: Arc<Capabilities>,
    fetched: Instant,
    max_age: Duration,
    etag: Option<String>,
    invalidated: Option<Instant>,
}

/// HTTP client for all backends.
pub struct Nextcloud {
    http: reqwest::Client,
    timeout: Duration,
    /// Per base URL: its cache entry behind its own lock, so refreshes of one Nextcloud
    /// are serialised without a slow Nextcloud holding up the others.
    caps: parking_lot::Mutex<HashMap<String, CapsSlot>>,
    /// Per `host:port`: at most `[backend] connectionsperhost` requests in flight, as
    /// upstream limits its connection pool, so a burst of hellos cannot swamp PHP.
    host_slots: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    per_host: usize,
    features_header: String,
}

/// Follow redirects only within the same scheme and host, as upstream does: a signed
/// request must not be handed on to another server.
fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().last().is_some_and(|prev| {
            prev.scheme() == attempt.url().scheme()
                && prev.host_str() == attempt.url().host_str()
                && prev.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() >= 10 {
            attempt.error("stopped after 10 redirects")
        } else if !same {
            let to = attempt.url().to_string();
            attempt.error(format!(
                "not following the redirect to {to}: Nextcloud may only redirect within its own scheme and host (check overwrite.cli.url / the URL configured in hpb)"
            ))
        } else {
            attempt.follow()
        }
    })
}

fn install_crypto_provider() {
    // Ignore the error: another part of the process may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Nextcloud {
    pub fn new(cfg: &SignalingConfig, features_header: String) -> Result<Self, reqwest::Error> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(cfg.backend_timeout)
            .pool_max_idle_per_host(cfg.connections_per_host.max(1))
            .tls_danger_accept_invalid_certs(cfg.backend_skip_verify)
            .redirect(same_host_redirects())
            .user_agent(format!(
                "nextcloud-spreed-signaling/{}",
                hpb_proto::COMPAT_VERSION
            ))
            .build()?;
        Ok(Self {
            http,
            timeout: cfg.backend_timeout,
            caps: parking_lot::Mutex::new(HashMap::new()),
            host_slots: parking_lot::Mutex::new(HashMap::new()),
            per_host: cfg.connections_per_host.max(1),
            features_header,
        })
    }

    /// Wait for one of the `[backend] connectionsperhost` slots of `base`'s host; the
    /// wait counts against `[backend] timeout`. Hold the permit until the reply is read.
    async fn host_slot(
        &self,
        base: &Url,
        url: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, NextcloudError> {
        let key = format!(
            "{}:{}",
            base.host_str().unwrap_or_default(),
            base.port_or_known_default().unwrap_or_default()
        );
        let slots = self
            .host_slots
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_host)))
            .clone();
        match tokio::time::timeout(self.timeout, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; only the timeout ends the wait.
            Ok(Err(_)) | Err(_) => Err(NextcloudError::Busy {
                url: url.to_string(),
                limit: self.per_host,
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// A shared HTTP client (for federation and other outgoing requests).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn map_err(&self, url: &str, e: reqwest::Error) -> NextcloudError {
        if e.is_timeout() {
            NextcloudError::Timeout {
                url: url.to_string(),
                secs: self.timeout.as_secs(),
            }
        } else {
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                src = s.source();
            }
            NextcloudError::Unreachable {
                url: url.to_string(),
                reason,
            }
        }
    }

    /// POST a signed request `{"type":kind, kind: body}` to Talk and decode the reply.
    pub async fn request<T: Serialize>(
        &self,
        backend: &Backend,
        base: &Url,
        kind: &str,
        body: &T,
    ) -> Result<BackendReply, NextcloudError> {
        let path = match self.capabilities(base).await {
            Ok(c) if c.has("signaling-v3") => BACKEND_PATH_V3,
            Ok(_) => BACKEND_PATH_V1,
            Err(e) => {
                tracing::debug!(backend = %backend.id, error = %e, "capabilities unavailable, using the v1 endpoint");
                BACKEND_PATH_V1
            }
        };
        let url = format!("{base}{path}");
        let payload = hpb_proto::server::frame(None, kind, Some(body));
        let random = checksum::random_hex(64);
        let sum = checksum::calculate(&backend.secret, &random, payload.as_bytes());
        let send = || {
            self.http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .header("OCS-APIRequest", "true")
                .header(checksum::HEADER_RANDOM, &random)
                .header(checksum::HEADER_CHECKSUM, &sum)
                .header(checksum::HEADER_BACKEND, base.as_str())
                .header(checksum::HEADER_FEATURES, &self.features_header)
                .body(payload.clone())
                .send()
        };
        let _slot = self.host_slot(base, &url).await?;
        let resp = match send().await {
            Ok(r) => r,
            // Retry only when the request never reached Nextcloud: always safe.
            Err(e) if e.is_connect() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                send().await.map_err(|e| self.map_err(&url, e))?
            }
            Err(e) => return Err(self.map_err(&url, e)),
        };
        let data = self.read_ocs_data(&url, resp).await?;
        backend_reply(&url, data)
    }

    /// Reads the answer's body (not for an error status) and decodes it with [`ocs_data`].
    async fn read_ocs_data(
        &self,
        url: &str,
        resp: reqwest::Response,
    ) -> Result<Value, NextcloudError> {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // An error status is refused without waiting for its body.
        let bytes = if status == 200 {
            resp.bytes().await.map_err(|e| self.map_err(url, e))?
        } else {
            Default::default()
        };
        ocs_data(url, status, &content_type, &bytes)
    }

    /// Talk's capabilities for a Nextcloud base URL, cached per URL.
    pub async fn capabilities(&self, base: &Url) -> Result<Arc<Capabilities>, NextcloudError> {
        let key = base.to_string();
        let slot = self.caps.lock().entry(key).or_default().clone();
        let mut cached = slot.lock().await;
        let etag = match cached.as_ref() {
            Some(e) if e.fetched.elapsed() < e.max_age => return Ok(e.caps.clone()),
            Some(e) => e.etag.clone(),
            None => None,
        };
        let url = format!("{base}{CAPABILITIES_PATH}");
        let mut req = self
            .http
            .get(&url)
            .header("OCS-APIRequest", "true")
            .header("Accept", "application/json");
        if let Some(tag) = &etag {
            req = req.header("If-None-Match", tag);
        }
        let _slot = self.host_slot(base, &url).await?;
        let resp = req.send().await.map_err(|e| self.map_err(&url, e))?;
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age)
            .unwrap_or(Duration::ZERO)
            .max(MIN_CAPS_AGE);
        if resp.status().as_u16() == 304
            && let Some(e) = cached.as_mut()
        {
            e.fetched = Instant::now();
            e.max_age = max_age;
            return Ok(e.caps.clone());
        }
        let new_etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let data = self.read_ocs_data(&url, resp).await?;
        let caps = Arc::new(capabilities(&data));
        let invalidated = cached.as_ref().and_then(|e| e.invalidated);
        *cached = Some(CapsEntry {
            caps: caps.clone(),
            fetched: Instant::now(),
            max_age,
            etag: new_etag,
            invalidated,
        });
        Ok(caps)
    }

    /// Drop the cached capabilities (at most once a minute), e.g. when a key is missing.
    /// Returns true when the cache entry was dropped.
    pub async fn invalidate_capabilities(&self, base: &Url) -> bool {
        let Some(slot) = self.caps.lock().get(base.as_str()).cloned() else {
            return false;
        };
        let mut cached = slot.lock().await;
        match cached.as_mut() {
            Some(e)
                if e.invalidated
                    .is_none_or(|t| t.elapsed() >= MIN_INVALIDATE_INTERVAL) =>
            {
                e.invalidated = Some(Instant::now());
                e.max_age = Duration::ZERO;
                true
            }
            _ => false,
        }
    }
}

/// The `data` of Nextcloud's OCS answer (status, `Content-Type` and body of the HTTP
/// response from `url`), or why it is not one.
pub fn ocs_data(
    url: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<Value, NextcloudError> {
    if status != 200 {
        return Err(NextcloudError::Status {
            url: url.to_string(),
            status,
        });
    }
    if !content_type.starts_with("application/json") {
        return Err(NextcloudError::ContentType {
            url: url.to_string(),
            content_type: content_type.to_string(),
        });
    }
    let ocs: Ocs = serde_json::from_slice(body).map_err(|e| NextcloudError::Invalid {
        url: url.to_string(),
        reason: format!("not an OCS envelope: {e}"),
    })?;
    if ocs.ocs.meta.statuscode == 429 {
        return Err(NextcloudError::Throttled {
            url: url.to_string(),
        });
    }
    let data = ocs
        .ocs
        .data
        .filter(|d| !matches!(d.get().trim(), "null" | "{}" | "[]" | ""))
        .ok_or_else(|| NextcloudError::Invalid {
            url: url.to_string(),
            reason: "incomplete OCS response (no data)".into(),
        })?;
    serde_json::from_str(data.get()).map_err(|e| NextcloudError::Invalid {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// The signaling backend's reply in the OCS `data` from `url`.
pub fn backend_reply(url: &str, data: Value) -> Result<BackendReply, NextcloudError> {
    serde_json::from_value::<BackendReply>(data).map_err(|e| NextcloudError::Invalid {
        url: url.to_string(),
        reason: format!("the OCS data is not a signaling reply: {e}"),
    })
}

/// The parts of Talk's capabilities hpb uses, from the OCS `data` of the capabilities
/// endpoint; what is missing or of another type reads as absent.
pub fn capabilities(data: &Value) -> Capabilities {
    let spreed = data
        .pointer("/capabilities/spreed")
        .cloned()
        .unwrap_or(Value::Null);
    Capabilities {
        features: spreed
            .get("features")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        hello_v2_token_key: spreed
            .pointer("/config/signaling/hello-v2-token-key")
            .and_then(Value::as_str)
            .map(str::to_string),
        session_ping_limit: spreed
            .pointer("/config/signaling/session-ping-limit")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// The `max-age` of a `Cache-Control` header value.
pub fn parse_max_age(v: &str) -> Option<Duration> {
    v.split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("max-age="))
        .and_then(|n| n.parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://cloud.example/ocs";

    fn ok(body: &str) -> Result<Value, NextcloudError> {
        ocs_data(URL, 200, "application/json; charset=utf-8", body.as_bytes())
    }

    #[test]
    fn ocs_data_is_unwrapped() {
        let data = ok(r#"{"ocs":{"meta":{"status":"ok","statuscode":200},"data":{"type":"room","room":{"roomid":"r1"}}}}"#)
            .expect("a valid answer");
        let reply = backend_reply(URL, data).expect("a signaling reply");
        assert_eq!(reply.kind, "room");
        assert_eq!(reply.room.expect("room").roomid, "r1");
    }

    #[test]
    fn bad_answers_say_what_was_wrong_and_where() {
        let cases: [(Result<Value, NextcloudError>, &str); 6] = [
            (ocs_data(URL, 404, "application/json", b"{}"), "HTTP 404"),
            (
                ocs_data(URL, 200, "text/html", b"<html>login</html>"),
                "\"text/html\" instead of JSON",
            ),
            (ok("<html>"), "not an OCS envelope"),
            (
                ok(r#"{"ocs":{"meta":{"statuscode":429},"data":{"x":1}}}"#),
                "429",
            ),
            (
                ok(r#"{"ocs":{"meta":{"statuscode":200},"data":[]}}"#),
                "no data",
            ),
            (ok(r#"{"ocs":{"meta":{"statuscode":200}}}"#), "no data"),
        ];
        for (result, says) in cases {
            let e = result.expect_err(says).to_string();
            assert!(
                e.contains(URL) && e.contains(says),
                "{e:?} should say {says:?}"
            );
        }
        let e = backend_reply(URL, serde_json::json!({"type": 5})).expect_err("type is a number");
        assert!(e.to_string().contains("not a signaling reply"), "{e}");
    }

    #[test]
    fn capabilities_take_what_is_there_and_ignore_the_rest() {
        let data = serde_json::json!({"capabilities": {"spreed": {
            "features": ["audio", 7, "federation-v2"],
            "config": {"signaling": {"hello-v2-token-key": "KEY", "session-ping-limit": 50}}
        }}});
        let caps = capabilities(&data);
        assert_eq!(caps.features, ["audio", "federation-v2"]);
        assert_eq!(caps.hello_v2_token_key.as_deref(), Some("KEY"));
        assert_eq!(caps.session_ping_limit, 50);
        let none = capabilities(&serde_json::json!({"capabilities": {"spreed": "no"}}));
        assert!(none.features.is_empty() && none.hello_v2_token_key.is_none());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("private, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=-1"), None);
    }
}
