//! Federated room joins (reference §1.6 "Federated join"): hpb connects to the remote
//! signaling server as a client, says hello v2 with `auth.type: federation`, joins the
//! remote room with the same Talk session id, and then proxies frames both ways,
//! rewriting the remote session and room ids into the local ones.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hpb_proto::ErrorCode;
use hpb_proto::client::FederationJoin;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::hub::Hub;
use crate::rooms::Refusal;
use crate::session::Session;

/// An open link to a remote signaling server for one local session.
pub struct FederationLink {
    pub remote_session_id: String,
    pub remote_room: String,
    pub local_room: String,
    tx: mpsc::UnboundedSender<Message>,
    closed: Mutex<bool>,
}

impl FederationLink {
    /// Forward a client frame to the remote server.
    pub fn forward(&self, local_id: &str, text: &str) {
        let Ok(mut v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        rewrite(&mut v, local_id, &self.remote_session_id, None);
        let _ = self.tx.send(Message::Text(v.to_string().into()));
    }

    /// Say bye to the remote server and close the link.
    pub fn close(&self) {
        let mut c = self.closed.lock();
        if !*c {
            *c = true;
            let _ = self.tx.send(Message::Text(
                json!({"type": "bye", "bye": {}}).to_string().into(),
            ));
            let _ = self.tx.send(Message::Close(None));
        }
    }
}

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

fn remote_error(v: &Value) -> Refusal {
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("federation_error");
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

impl Hub {
    /// Join a room on a remote server for `s`. Returns the room reply to send locally.
    pub async fn federated_join(
        self: &Arc<Self>,
        s: &Arc<Session>,
        local_room: &str,
        room_session_id: &str,
        f: &FederationJoin,
    ) -> Result<(Arc<FederationLink>, Value), Refusal> {
        let url = ws_url(&f.signaling).map_err(|m| Refusal::new(ErrorCode::FederationError, m))?;
        let timeout = self.cfg.federation.timeout;
        let (mut ws, resp) =
            tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url.as_str()))
                .await
                .map_err(|_| {
                    network_error(format!(
                        "no connection to {url} within {} s ([federation] timeout)",
                        timeout.as_secs()
                    ))
                })?
                .map_err(|e| network_error(format!("{url}: {e}")))?;
        let features = resp
            .headers()
            .get(hpb_proto::checksum::HEADER_FEATURES)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !features.split(',').any(|x| x.trim() == "federation") {
            return Err(Refusal::new(
                ErrorCode::FederationUnsupported,
                format!("the remote signaling server at {url} does not support federation"),
            ));
        }
        let step = async {
            let welcome = next_json(&mut ws).await?;
            if welcome["type"] != "welcome" {
                return Err(network_error(format!(
                    "expected a welcome from the remote, got {welcome}"
                )));
            }
            let hello = json!({"id": "1", "type": "hello", "hello": {"version": "2.0",
                "auth": {"type": "federation", "url": f.url, "params": {"token": f.token}}}});
            ws.send(Message::Text(hello.to_string().into()))
                .await
                .map_err(|e| network_error(e.to_string()))?;
            let reply = next_json(&mut ws).await?;
            if reply["type"] != "hello" {
                return Err(remote_error(&reply));
            }
            let remote_id = reply
                .pointer("/hello/sessionid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let remote_room = if f.roomid.is_empty() {
                local_room.to_string()
            } else {
                f.roomid.clone()
            };
            let join = json!({"id": "2", "type": "room", "room": {"roomid": remote_room, "sessionid": room_session_id}});
            ws.send(Message::Text(join.to_string().into()))
                .await
                .map_err(|e| network_error(e.to_string()))?;
            // Frames may arrive before the room reply (events); keep them for after it.
            let mut early = Vec::new();
            loop {
                let v = next_json(&mut ws).await?;
                if v["id"] == "2" {
                    if v["type"] != "room" {
                        return Err(remote_error(&v));
                    }
                    return Ok((remote_id, remote_room, v, early));
                }
                early.push(v);
            }
        };
        let (remote_id, remote_room, mut room_reply, early) =
            tokio::time::timeout(timeout, step).await.map_err(|_| {
                network_error(format!(
                    "the remote at {url} did not complete hello and join within {} s",
                    timeout.as_secs()
                ))
            })??;
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let link = Arc::new(FederationLink {
            remote_session_id: remote_id.clone(),
            remote_room: remote_room.clone(),
            local_room: local_room.to_string(),
            tx,
            closed: Mutex::new(false),
        });
        rewrite(
            &mut room_reply,
            &remote_id,
            &s.public_id,
            Some((&remote_room, local_room)),
        );
        let (mut sink, mut stream) = ws.split();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        let hub = self.clone();
        let session = s.clone();
        let link2 = link.clone();
        let local_room = local_room.to_string();
        tokio::spawn(async move {
            let deliver = |mut v: Value| {
                rewrite(
                    &mut v,
                    &link2.remote_session_id,
                    &session.public_id,
                    Some((&link2.remote_room, &local_room)),
                );
                hub.deliver(&session, &v.to_string().into());
            };
            for v in early {
                deliver(v);
            }
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                            if v["type"] == "bye" {
                                break;
                            }
                            deliver(v);
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    _ => {}
                }
            }
            if !*link2.closed.lock() {
                // The remote went away: tell the client its federated room is gone.
                let ev = json!({"type": "event", "event": {"target": "room", "type": "federation_interrupted"}});
                hub.deliver(&session, &ev.to_string().into());
                hub.end_federation(&session);
            }
        });
        Ok((link, room_reply))
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
}
