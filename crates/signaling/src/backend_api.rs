//! `POST /api/v1/room/{roomid}`: requests from Nextcloud (reference §2.4) checked in
//! upstream's order (length, type, headers, brute force, backend, checksum, JSON) with
//! upstream's status codes, each refusal saying what was wrong; then dispatched.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hpb_proto::backend::{self as wire, MAX_ROOM_REQUEST_BYTES, RoomRequest};
use hpb_proto::checksum;
use hpb_proto::server;
use serde_json::{Value, json};

use crate::backends::Backend;
use crate::client_ip::client_ip;
use crate::hub::{CloseReason, Hub};
use crate::room::Room;
use crate::session::{ClientKind, Session};
use crate::throttle::Action;

fn refuse(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

pub async fn room_request(
    State(hub): State<Arc<Hub>>,
    Path(room_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = client_ip(&hub.cfg.trusted_proxies, peer.ip(), &headers);
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request too large: the limit is {MAX_ROOM_REQUEST_BYTES} bytes"),
        )
    };
    // The headers are checked before the body is read, so an oversized or unauthenticated
    // request costs nothing.
    let Some(len) = header_str(&headers, header::CONTENT_LENGTH.as_str()) else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "Length required: send a Content-Length header".into(),
        );
    };
    if len
        .parse::<usize>()
        .is_ok_and(|n| n > MAX_ROOM_REQUEST_BYTES)
    {
        return too_large();
    }
    let ct = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    if !ct.starts_with("application/json") {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("Unsupported Content-Type \"{ct}\": send application/json"),
        );
    }
    let (random, sum) = (
        header_str(&headers, checksum::HEADER_RANDOM),
        header_str(&headers, checksum::HEADER_CHECKSUM),
    );
    let (Some(random), Some(sum)) = (random, sum) else {
        let missing = match (random, sum) {
            (None, None) => format!(
                "the {} and {} headers are missing",
                checksum::HEADER_RANDOM,
                checksum::HEADER_CHECKSUM
            ),
            (None, _) => format!("the {} header is missing", checksum::HEADER_RANDOM),
            _ => format!("the {} header is missing", checksum::HEADER_CHECKSUM),
        };
        tracing::warn!(remote = %ip, room = %room_id, reason = %missing, "backend request without checksum headers");
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Authentication check failed: {missing} (a proxy between Nextcloud and hpb may drop them)"
            ),
        );
    };
    // The Content-Length is at most the limit and hyper holds the body to it, so a
    // failure here is a broken connection or a body shorter than announced.
    let body: Bytes = match axum::body::to_bytes(body, MAX_ROOM_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("Could not read the request body: {e}"),
            );
        }
    };
    if hub.throttle.is_blocked(ip, Action::BackendRoomAuth) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many requests: {ip} sent too many requests with a wrong checksum; fix the shared secret and wait"
            ),
        );
    }
    let backend = match select_backend(&hub, &headers, random, sum, &body) {
        Ok(b) => b,
        Err(msg) => {
            let delay = hub.throttle.record_failure(ip, Action::BackendRoomAuth);
            tokio::time::sleep(delay).await;
            tracing::warn!(remote = %ip, room = %room_id, reason = %msg, "backend request refused");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("Authentication check failed: {msg}"),
            );
        }
    };
    let request = match wire::parse_room_request(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(remote = %ip, room = %room_id, backend = %backend.id, error = %e, "invalid backend request");
            return refuse(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    tracing::debug!(room = %room_id, backend = %backend.id, kind = request.kind(), "backend request");
    match hub.process_room_request(&backend, &room_id, request).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body.unwrap_or_else(|| "{}".to_owned()),
        )
            .into_response(),
        Err((status, body)) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
    }
}

/// Find the backend by the `Spreed-Signaling-Backend` header and check the checksum.
fn select_backend(
    hub: &Hub,
    headers: &HeaderMap,
    random: &str,
    sum: &str,
    body: &[u8],
) -> Result<Arc<Backend>, String> {
    if let Some(url) = header_str(headers, checksum::HEADER_BACKEND) {
        let canonical = hpb_proto::backend_url::canonical(url)
            .map_err(|e| format!("the {} header is not a URL: {e}", checksum::HEADER_BACKEND))?;
        let backend = hub.backends.lookup(&canonical).map_err(|e| e.to_string())?;
        if !checksum::verify(&backend.secret, random, body, sum) {
            return Err(format!(
                "checksum mismatch: the secret configured for backend {} differs from the one Nextcloud used (Talk admin settings → High-performance backend → Shared secret)",
                backend.label()
            ));
        }
        return Ok(backend);
    }
    // Old Talk versions send no backend header: try the candidate secrets.
    hub.backends
        .legacy_candidates()
        .into_iter()
        .find(|b| checksum::verify(&b.secret, random, body, sum))
        .ok_or_else(|| {
            format!(
                "no {} header and no configured secret matches the checksum: the shared secret in Talk differs from hpb's",
                checksum::HEADER_BACKEND
            )
        })
}

fn roomlist(kind: &str, payload: Value) -> axum::extract::ws::Utf8Bytes {
    server::event("roomlist", kind, &payload).into()
}

impl Hub {
    fn deliver_users<'a>(
        self: &Arc<Self>,
        backend: &Backend,
        users: impl IntoIterator<Item = &'a String>,
        frame: &axum::extract::ws::Utf8Bytes,
    ) {
        for u in users {
            for s in self.user_sessions(&backend.id, u) {
                self.deliver(&s, frame);
            }
        }
    }

    fn talk_session(&self, backend: &Backend, talk_id: &str) -> Option<Arc<Session>> {
        self.room_sessions
            .lock()
            .get(&(backend.id.clone(), Arc::from(talk_id)))
            .cloned()
    }

    /// Apply one request from Nextcloud; `Some` is a reply body other than `{}`.
    pub async fn process_room_request(
        self: &Arc<Self>,
        backend: &Arc<Backend>,
        room_id: &str,
        req: RoomRequest,
    ) -> Result<Option<String>, (StatusCode, String)> {
        let room = self.room(&backend.id, room_id);
        match req {
            RoomRequest::Invite(i) => {
                let props = i.properties.as_deref();
                let frame = roomlist("invite", json!({"roomid": room_id, "properties": props}));
                self.deliver_users(backend, &i.userids, &frame);
                let invited: HashSet<&String> = i.userids.iter().collect();
                let update = roomlist("update", json!({"roomid": room_id, "properties": props}));
                self.deliver_users(
                    backend,
                    i.alluserids.iter().filter(|u| !invited.contains(u)),
                    &update,
                );
            }
            RoomRequest::Disinvite(d) => {
                let frame = roomlist(
                    "disinvite",
                    json!({"roomid": room_id, "reason": "disinvited"}),
                );
                let mut targets: Vec<Arc<Session>> = Vec::new();
                for u in &d.userids {
                    targets.extend(self.user_sessions(&backend.id, u));
                }
                for t in d.sessionids.iter().filter(|t| *t != "0") {
                    targets.extend(self.talk_session(backend, t));
                }
                let mut seen = HashSet::new();
                for s in targets {
                    if !seen.insert(s.public_id.clone()) {
                        continue;
                    }
                    if s.kind == ClientKind::Virtual {
                        // The SIP bridge owning the virtual session is asked to hang up
                        // (upstream: VirtualSession on roomlist disinvite).
                        if let (Some(owner), Some(vid)) = (&s.owner, &s.virtual_id)
                            && s.room().is_some_and(|r| r.id == room_id)
                        {
                            let hangup = json!({"type": "control", "control": {
                                "recipient": {"type": "session", "sessionid": vid},
                                "data": {"type": "hangup", "hangup": {"reason": "disinvited"}},
                            }});
                            self.deliver(owner, &hangup.to_string().into());
                        }
                        continue;
                    }
                    self.deliver(&s, &frame);
                    if s.room().is_some_and(|r| r.id == room_id) {
                        self.close_session(&s, CloseReason::Disinvited).await;
                    }
                }
                let removed: HashSet<&String> = d.userids.iter().collect();
                let update = roomlist(
                    "update",
                    json!({"roomid": room_id, "properties": d.properties.as_deref()}),
                );
                self.deliver_users(
                    backend,
                    d.alluserids.iter().filter(|u| !removed.contains(u)),
                    &update,
                );
            }
            RoomRequest::Update(u) => {
                if let Some(room) = &room {
                    self.update_properties(room, u.properties.as_deref());
                }
                let frame = roomlist(
                    "update",
                    json!({"roomid": room_id, "properties": u.properties.as_deref()}),
                );
                self.deliver_users(backend, &u.userids, &frame);
            }
            RoomRequest::Delete(d) => {
                if let Some(room) = &room {
                    self.delete_room(room).await;
                }
                let frame = roomlist("disinvite", json!({"roomid": room_id, "reason": "deleted"}));
                self.deliver_users(backend, &d.userids, &frame);
            }
            RoomRequest::Participants(p) => {
                if let Some(room) = &room {
                    self.backend_participants(room, p.changed, p.users);
                }
            }
            RoomRequest::InCall(c) => {
                if let Some(room) = &room {
                    self.backend_incall(room, &c.incall, c.all, c.changed, c.users)
                        .await;
                }
            }
            RoomRequest::Message(m) => {
                if let Some(room) = &room {
                    self.room_message(room, &m.data);
                }
            }
            RoomRequest::SwitchTo(sw) => {
                let targets: Vec<(String, Option<Value>)> = match sw.sessions {
                    Value::Array(list) => list
                        .into_iter()
                        .filter_map(|v| v.as_str().map(|s| (s.to_string(), None)))
                        .collect(),
                    Value::Object(map) => map
                        .into_iter()
                        .map(|(k, v)| (k, (!v.is_null()).then_some(v)))
                        .collect(),
                    _ => Vec::new(),
                };
                for (talk_id, details) in targets {
                    if let Some(s) = self.talk_session(backend, &talk_id) {
                        let mut payload = json!({"roomid": sw.roomid});
                        if let Some(d) = details {
                            payload["details"] = d;
                        }
                        self.deliver(&s, &server::event("room", "switchto", &payload).into());
                    }
                }
            }
            RoomRequest::Dialout(raw) => {
                return self.start_dialout(backend, room_id, &raw).await.map(Some);
            }
        }
        Ok(None)
    }

    fn update_properties(
        self: &Arc<Self>,
        room: &Room,
        props: Option<&serde_json::value::RawValue>,
    ) {
        let changed = {
            let mut st = room.state.lock();
            let same = match (&st.properties, props) {
                (None, None) => true,
                (Some(a), Some(b)) => a.get() == b.get(),
                _ => false,
            };
            if !same {
                st.properties = props.map(|p| Arc::from(p.to_owned()));
            }
            !same
        };
        if changed {
            let frame = server::frame(
                None,
                "room",
                Some(&server::RoomReply {
                    roomid: &room.id,
                    properties: props,
                    bandwidth: None,
                }),
            );
            self.deliver_room(room, &frame.into(), None, |_| true);
        }
    }

    async fn delete_room(self: &Arc<Self>, room: &Arc<Room>) {
        let members = room.members();
        // Upstream's notifyInternalRoomDeleted: an event without payload.
        let delete: axum::extract::ws::Utf8Bytes = server::frame(
            None,
            "event",
            Some(&server::BareEvent {
                target: "room",
                kind: "delete",
            }),
        )
        .into();
        let moved = server::frame(
            None,
            "room",
            Some(&server::RoomReply {
                roomid: "",
                properties: None,
                bandwidth: None,
            }),
        );
        let moved: axum::extract::ws::Utf8Bytes = moved.into();
        for s in &members {
            if s.kind == ClientKind::Internal {
                self.deliver(s, &delete);
            }
        }
        for s in &members {
            if s.kind == ClientKind::Virtual {
                continue;
            }
            self.leave_room(s, false).await;
            self.deliver(s, &moved);
        }
    }

    /// A chat or other room message from Nextcloud (chat relay rules of §1.7).
    fn room_message(self: &Arc<Self>, room: &Room, data: &serde_json::value::RawValue) {
        let parsed: Value = serde_json::from_str(data.get()).unwrap_or(Value::Null);
        let chat = parsed.get("type").and_then(Value::as_str) == Some("chat");
        let comments: Vec<Value> = if chat {
            let c = &parsed["chat"];
            match (
                c.get("comment"),
                c.get("comments").and_then(Value::as_array),
            ) {
                (Some(one), _) => vec![one.clone()],
                (None, Some(many)) => many.clone(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let event = |d: &Value| -> axum::extract::ws::Utf8Bytes {
            server::event("room", "message", &json!({"roomid": room.id, "data": d})).into()
        };
        if comments.is_empty() {
            let frame = event(&parsed);
            self.deliver_room(room, &frame, None, |r| r.kind != ClientKind::Virtual);
            return;
        }
        let refresh = event(&json!({"type": "chat", "chat": {"refresh": true}}));
        self.deliver_room(room, &refresh, None, |r| {
            r.kind != ClientKind::Virtual && !r.has_feature(hpb_proto::features::CLIENT_CHAT_RELAY)
        });
        let relay = |r: &Session| {
            r.kind != ClientKind::Virtual && r.has_feature(hpb_proto::features::CLIENT_CHAT_RELAY)
        };
        let hide = crate::session::PERM_HIDE_DISPLAYNAMES;
        for c in comments {
            let frame = event(&json!({"type": "chat", "chat": {"comment": c}}));
            let named = c
                .get("actorDisplayName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                self.deliver_room(room, &frame, None, relay);
                continue;
            }
            self.deliver_room(room, &frame, None, |r| relay(r) && !r.has_permission(hide));
            // Sessions that must not see display names get the comment without it.
            let mut blanked = c.clone();
            blanked["actorDisplayName"] = Value::String(String::new());
            let frame = event(&json!({"type": "chat", "chat": {"comment": blanked}}));
            self.deliver_room(room, &frame, None, |r| relay(r) && r.has_permission(hide));
        }
    }
}
