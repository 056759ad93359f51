//! The plain HTTP endpoints (reference §2.5): `/api/v1/welcome`, `/api/v1/stats`,
//! `/api/v1/serverinfo`, `/turn/credentials`, and the headers every reply carries
//! (`Server`, `X-Spreed-Signaling-Features`) that Talk reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::client_ip::client_ip;
use crate::hub::Hub;

const TURN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Middleware: add `Server` and `X-Spreed-Signaling-Features` to every response.
pub async fn signaling_headers(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "nextcloud-spreed-signaling/{}",
        hpb_proto::COMPAT_VERSION
    )) {
        h.insert(header::SERVER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&hpb_proto::features::header_value(&hub.client_features)) {
        h.insert(hpb_proto::checksum::HEADER_FEATURES, v);
    }
    resp
}

pub async fn welcome() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        format!(
            "{}\n",
            json!({"nextcloud-spreed-signaling": "Welcome", "version": hpb_proto::COMPAT_VERSION})
        ),
    )
        .into_response()
}

/// Whether the client (after trusted-proxy headers) is in `[stats] allowed_ips`; the 403 to
/// send otherwise.
pub fn stats_allowed(
    hub: &Hub,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Box<Response>> {
    let ip = client_ip(&hub.cfg.trusted_proxies, peer.ip(), headers);
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if hub.cfg.stats_allowed_ips.iter().any(|n| n.contains(&ip)) {
        Ok(())
    } else {
        tracing::warn!(remote = %ip, "stats request refused");
        Err((
            StatusCode::FORBIDDEN,
            format!("Authentication check failed: {ip} is not in [stats] allowed_ips\n"),
        )
            .into_response()
            .into())
    }
}

pub async fn stats(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = stats_allowed(&hub, peer, &headers) {
        return *r;
    }
    let mut body = json!({"rooms": hub.room_count(), "sessions": hub.session_count()});
    if let Some(media) = &hub.media {
        body["mcu"] = json!(media.stats());
    }
    Json(body).into_response()
}

pub async fn serverinfo(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = stats_allowed(&hub, peer, &headers) {
        return *r;
    }
    let mut body = json!({
        "version": hpb_proto::COMPAT_VERSION,
        "features": hub.client_features,
        "nats": {"urls": ["in-process"], "connected": true},
    });
    if let Some(media) = &hub.media {
        let mut sfu = json!(media.stats());
        sfu["mode"] = json!("builtin");
        body["sfu"] = sfu;
    }
    let dialout = hub.dialout_info();
    if !dialout.is_empty() {
        body["dialout"] = json!(dialout);
    }
    Json(body).into_response()
}

#[derive(Deserialize)]
pub struct TurnQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    api: String,
}

pub async fn turn_credentials(State(hub): State<Arc<Hub>>, Query(q): Query<TurnQuery>) -> Response {
    let key = if q.key.is_empty() { q.api } else { q.key };
    if q.service != "turn" || key.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "Invalid service or missing key: use ?service=turn&key=<[turn] apikey>\n",
        )
            .into_response();
    }
    let Some(turn) = &hub.cfg.turn else {
        return (
            StatusCode::NOT_FOUND,
            "No TURN servers available: configure [turn] apikey, secret and servers\n",
        )
            .into_response();
    };
    if !constant_eq(key.as_bytes(), turn.api_key.as_bytes()) {
        return (
            StatusCode::FORBIDDEN,
            "Invalid key: it differs from [turn] apikey\n",
        )
            .into_response();
    }
    if turn.servers.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "No TURN servers available: [turn] servers is empty\n",
        )
            .into_response();
    }
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d + TURN_TTL)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let user = if q.username.is_empty() {
        hpb_proto::checksum::random_hex(32)
    } else {
        q.username
    };
    let username = hpb_proto::turn_credentials::username(expiry, &user);
    let password = hpb_proto::turn_credentials::password(&turn.secret, &username);
    Json(json!({"username": username, "password": password, "ttl": TURN_TTL.as_secs(), "uris": turn.servers})).into_response()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
