//! Federated room joins (reference §1.6 "Federated join"): hpb connects to the remote
//! signaling server as a client, says hello v2 with `auth.type: federation`, joins the
//! remote room with the same Talk session id, and then proxies frames both ways,
//! rewriting the remote session and room ids into the local ones.
//!
//! This file holds the wire steps (connect, hello, join) and the id rewriting; the
//! running link, including the reconnect after a lost connection (`federation_interrupted`,
//! resume or a fresh remote session, `federation_resumed`), is in `federation_link.rs`.

#[path = "federation_link.rs"]
mod link;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hpb_proto::ErrorCode;
use hpb_proto::client::FederationJoin;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::hub::Hub;
use crate::rooms::Refusal;
use crate::session::Session;

pub use link::FederationLink;

/// Replace string values equal to `from` by `to`; with `rooms`, also `roomid` values.
fn rewrite(v: &mut Value, from: &str, to: &str, rooms: Option<(&str, &str)>) {
    match v {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, from, to, rooms)),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if let (Some((remote, local)), "roomid", Value::String(s)) =
                    (rooms, k.as_str(), &*x)
                    && s == remote
                {
                    *x = Value::String(local.to_string());
                    continue;
                }
                rewrite(x, from, to, rooms);
            }
        }
        _ => {}
    }
}

fn ws_url(signaling: &str) -> Result<String, String> {
    let base = signaling.trim();
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        return Err(format!(
            "federation signaling URL \"{signaling}\" must start with http(s):// or ws(s)://"
        ));
    };
    Ok(if base.ends_with('/') {
        format!("{base}spreed")
    } else {
        format!("{base}/spreed")
    })
}

fn network_error(msg: String) -> Refusal {
    let details = json!({"code": "network_error", "message": msg});
    Refusal {
        code: ErrorCode::FederationError,
        message: format!("could not connect to the remote signaling server: {msg}"),
        details: serde_json::value::to_raw_value(&details).ok(),
    }
}

type Remote =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Remote) -> Result<Value, Refusal> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| network_error(format!("remote sent invalid JSON: {e}")));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => {
                return Err(network_error(format!(
                    "unexpected frame from remote: {other:?}"
                )));
            }
            Some(Err(e)) => return Err(network_error(e.to_string())),
            None => return Err(network_error("the remote closed the connection".into())),
        }
    }
}

async fn send_json(ws: &mut Remote, v: &Value) -> Result<(), Refusal> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| network_error(e.to_string()))
}

/// The error code of a remote `error` frame (empty if it is none).
fn remote_code(v: &Value) -> &str {
    v.pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn remote_error(v: &Value) -> Refusal {
    let code = match remote_code(v) {
        "" => "federation_error",
        c => c,
    };
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let details = json!({"code": code, "message": message});
    Refusal {
        code: match code {
            "token_expired" => ErrorCode::TokenExpired,
            "federation_unsupported" => ErrorCode::FederationUnsupported,
            _ => ErrorCode::FederationError,
        },
        message: format!(
            "the remote signaling server refused the federated join: {code}: {message}"
        ),
        details: serde_json::value::to_raw_value(&details).ok(),
    }
}

/// Where a federated session lives remotely, from the client's join request.
pub(crate) struct Target {
    /// `ws(s)://…/spreed` of the remote signaling server.
    url: String,
    /// The remote Nextcloud (`auth.url` of the federation hello).
    nextcloud_url: String,
    /// The JWT of the remote Nextcloud (it lives 60 s: a later fresh hello may fail).
    token: String,
    remote_room: String,
    local_room: String,
    /// The Talk room session id, used for every remote join.
    room_session_id: String,
    timeout: Duration,
    /// `[federation] skipverify`: accept the remote's certificate unchecked.
    skip_verify: bool,
}

/// The remote ids of our session there.
#[derive(Clone, Debug, Default)]
pub(crate) struct RemoteIds {
    session_id: String,
    resume_id: String,
}

/// A connected remote after hello and room join.
struct Joined {
    ws: Remote,
    ids: RemoteIds,
    /// The remote's room reply (not yet rewritten).
    reply: Value,
    /// Frames that arrived before the room reply.
    early: Vec<Value>,
}

/// Open the WebSocket, check the `federation` feature (upgrade header and welcome).
async fn connect(t: &Target) -> Result<Remote, Refusal> {
    let url = t.url.as_str();
    let connector = match t.skip_verify {
        true => Some(tokio_tungstenite::Connector::Rustls(
            crate::insecure_tls::client_config()
                .map_err(|e| network_error(format!("TLS setup for {url}: {e}")))?,
        )),
        false => None,
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector);
    let (mut ws, resp) = tokio::time::timeout(t.timeout, connecting)
        .await
        .map_err(|_| {
            network_error(format!(
                "no connection to {url} within {} s ([federation] timeout)",
                t.timeout.as_secs()
            ))
        })?
        .map_err(|e| {
            let hint = if e.to_string().contains("certificate") && !t.skip_verify {
                " (a self-signed or internal certificate needs [federation] skipverify = true)"
            } else {
                ""
            };
            network_error(format!("{url}: {e}{hint}"))
        })?;
    let header = resp
        .headers()
        .get(hpb_proto::checksum::HEADER_FEATURES)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !header.split(',').any(|x| x.trim() == "federation") {
        return Err(Refusal::new(
            ErrorCode::FederationUnsupported,
            format!("the remote signaling server at {url} does not support federation"),
        ));
    }
    let welcome = tokio::time::timeout(t.timeout, next_json(&mut ws))
        .await
        .map_err(|_| network_error(format!("no welcome from {url}")))??;
    if welcome["type"] != "welcome" {
        return Err(network_error(format!(
            "expected a welcome from the remote, got {welcome}"
        )));
    }
    Ok(ws)
}

fn ids_of(reply: &Value) -> RemoteIds {
    let get = |p: &str| {
        reply
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    RemoteIds {
        session_id: get("/hello/sessionid"),
        resume_id: get("/hello/resumeid"),
    }
}

/// A fresh federation hello and room join on a connected remote.
async fn hello_and_join(t: &Target, mut ws: Remote) -> Result<Joined, Refusal> {
    let hello = json!({"id": "1", "type": "hello", "hello": {"version": "2.0",
        "auth": {"type": "federation", "url": t.nextcloud_url, "params": {"token": t.token}}}});
    send_json(&mut ws, &hello).await?;
    let reply = next_json(&mut ws).await?;
    if reply["type"] != "hello" {
        return Err(remote_error(&reply));
    }
    let ids = ids_of(&reply);
    let join = json!({"id": "2", "type": "room",
        "room": {"roomid": t.remote_room, "sessionid": t.room_session_id}});
    send_json(&mut ws, &join).await?;
    // Frames may arrive before the room reply (events); keep them for after it.
    let mut early = Vec::new();
    loop {
        let v = next_json(&mut ws).await?;
        if v["id"] == "2" {
            if v["type"] != "room" {
                return Err(remote_error(&v));
            }
            return Ok(Joined {
                ws,
                ids,
                reply: v,
                early,
            });
        }
        early.push(v);
    }
}

impl Hub {
    /// Join a room on a remote server for `s`. Returns the room reply to send locally;
    /// the link starts proxying once [`FederationLink::start`] is called (after that reply).
    pub async fn federated_join(
        self: &Arc<Self>,
        s: &Arc<Session>,
        local_room: &str,
        room_session_id: &str,
        f: &FederationJoin,
    ) -> Result<(Arc<FederationLink>, Value), Refusal> {
        let url = ws_url(&f.signaling).map_err(|m| Refusal::new(ErrorCode::FederationError, m))?;
        let target = Target {
            url,
            nextcloud_url: f.url.clone(),
            token: f.token.clone(),
            remote_room: if f.roomid.is_empty() {
                local_room.to_string()
            } else {
                f.roomid.clone()
            },
            local_room: local_room.to_string(),
            room_session_id: room_session_id.to_string(),
            timeout: self.cfg.federation.timeout,
            skip_verify: self.cfg.federation.skip_verify,
        };
        let ws = connect(&target).await?;
        let Joined {
            ws,
            ids,
            mut reply,
            early,
        } = tokio::time::timeout(target.timeout, hello_and_join(&target, ws))
            .await
            .map_err(|_| {
                network_error(format!(
                    "the remote at {} did not complete hello and join within {} s",
                    target.url,
                    target.timeout.as_secs()
                ))
            })??;
        rewrite(
            &mut reply,
            &ids.session_id,
            &s.public_id,
            Some((&target.remote_room, &target.local_room)),
        );
        let link = FederationLink::spawn(self, s, target, ids, ws, early);
        Ok((link, reply))
    }

    /// Close the federation link of a session, if any.
    pub fn end_federation(&self, s: &Session) {
        if let Some(link) = s.federation.lock().take() {
            link.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_ws_urls() {
        assert_eq!(
            ws_url("https://a.example/standalone-signaling/").ok(),
            Some("wss://a.example/standalone-signaling/spreed".into())
        );
        assert_eq!(
            ws_url("http://127.0.0.1:9/").ok(),
            Some("ws://127.0.0.1:9/spreed".into())
        );
        assert!(ws_url("ftp://x").is_err());
    }

    #[test]
    fn rewrites_ids_and_rooms() {
        let mut v = json!({"type":"event","event":{"join":[{"sessionid":"R"}],"roomid":"remote"}});
        rewrite(&mut v, "R", "L", Some(("remote", "local")));
        assert_eq!(
            v,
            json!({"type":"event","event":{"join":[{"sessionid":"L"}],"roomid":"local"}})
        );
    }

    #[test]
    fn remote_errors_keep_the_remote_code() {
        let e =
            remote_error(&json!({"type":"error","error":{"code":"token_expired","message":"x"}}));
        assert_eq!(e.code, ErrorCode::TokenExpired);
        let e = remote_error(&json!({"type":"bye"}));
        assert_eq!(e.code, ErrorCode::FederationError);
    }
}
