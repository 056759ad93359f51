//! Joining and leaving rooms (reference §1.6): the Nextcloud room request, room-session
//! takeover, the reply with properties and bandwidth, join/leave events, and the room
//! cleanup when the last member leaves.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use hpb_proto::ErrorCode;
use hpb_proto::backend::{RoomBackendRequest, VERSION};
use hpb_proto::client::RoomRequest;
use hpb_proto::server::{self, Bandwidth, JoinEntry, RoomReply};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::hub::{CloseReason, Hub};
use crate::room::Room;
use crate::session::{ClientKind, PERM_HIDE_DISPLAYNAMES, Session};
use crate::ws::Conn;

/// A refusal to send to the client: code, message, optional details.
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Box<RawValue>>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }
}

fn strip_displayname(user: &RawValue) -> Option<Box<RawValue>> {
    let mut m: Map<String, Value> = serde_json::from_str(user.get()).ok()?;
    m.remove("displayname");
    // Nothing left: no `user` at all, like upstream's filterDisplayNames.
    if m.is_empty() {
        return None;
    }
    serde_json::value::to_raw_value(&m).ok()
}

/// Sessions per `join` event listing the others in the room.
const JOIN_CHUNK: usize = 25;

/// The `join` entry describing `s`; `hide` removes display names.
pub fn join_entry_json(s: &Session, hide: bool) -> Value {
    let user_id = s.user_id();
    let stripped = if hide {
        s.user_data.as_deref().and_then(strip_displayname)
    } else {
        None
    };
    let user = if hide {
        stripped.as_deref()
    } else {
        s.user_data.as_deref()
    };
    let client = matches!(s.kind, ClientKind::Client | ClientKind::Federation);
    let room_session = s.state.lock().room_session_id.clone();
    let entry = JoinEntry {
        sessionid: &s.public_id,
        userid: &user_id,
        user,
        roomsessionid: if client {
            room_session.as_deref()
        } else {
            None
        },
        // Upstream's `features,omitempty`: no empty list.
        features: if client && !s.features.is_empty() {
            Some(&s.features)
        } else {
            None
        },
        federated: s.kind == ClientKind::Federation,
    };
    serde_json::to_value(entry).unwrap_or(Value::Null)
}

impl Hub {
    /// Handle a client `room` request.
    pub async fn handle_room(
        self: &Arc<Self>,
        conn: &Conn,
        s: &Arc<Session>,
        id: Option<&str>,
        req: RoomRequest,
    ) {
        let was_federated = s.federation.lock().is_some();
        self.end_federation(s);
        if req.roomid.is_empty() {
            if self.leave_room(s, true).await || was_federated {
                conn.reply(server::frame(
                    id,
                    "room",
                    Some(&RoomReply {
                        roomid: "",
                        properties: None,
                        bandwidth: None,
                    }),
                ));
            }
            return;
        }
        if let Some(f) = &req.federation {
            self.leave_room(s, true).await;
            let room_session = if req.sessionid.is_empty() {
                s.public_id.to_string()
            } else {
                req.sessionid.clone()
            };
            match self.federated_join(s, &req.roomid, &room_session, f).await {
                Ok((link, mut reply)) => {
                    *s.federation.lock() = Some(link.clone());
                    match id {
                        Some(i) => reply["id"] = serde_json::Value::String(i.to_string()),
                        None => {
                            if let Some(m) = reply.as_object_mut() {
                                m.remove("id");
                            }
                        }
                    }
                    conn.reply(reply.to_string());
                    // Remote frames only after the room reply.
                    link.start();
                }
                Err(r) => {
                    tracing::warn!(session = %s.public_id, room = %req.roomid, code = %r.code, reason = %r.message, "federated join failed");
                    conn.error(id, r.code, &r.message, r.details.as_deref());
                }
            }
            return;
        }
        match self.join_room(conn, s, id, &req).await {
            Ok(()) => {}
            Err(r) => conn.error(id, r.code, &r.message, r.details.as_deref()),
        }
    }

    async fn join_room(
        self: &Arc<Self>,
        conn: &Conn,
        s: &Arc<Session>,
        id: Option<&str>,
        req: &RoomRequest,
    ) -> Result<(), Refusal> {
        if let Some(room) = s.room()
            && room.id == req.roomid
        {
            if !req.sessionid.is_empty() {
                // The new Talk session id replaces the old one, also for lookups
                // (participants lists, disinvite, switchto).
                let new: Arc<str> = Arc::from(req.sessionid.as_str());
                let old = s.state.lock().room_session_id.replace(new.clone());
                let mut map = self.room_sessions.lock();
                if let Some(old) = old {
                    let key = (s.backend.id.clone(), old);
                    if map.get(&key).is_some_and(|x| Arc::ptr_eq(x, s)) {
                        map.remove(&key);
                    }
                }
                map.insert((s.backend.id.clone(), new), s.clone());
            }
            let props = room.state.lock().properties.clone();
            let details =
                serde_json::json!({"room": {"roomid": room.id, "properties": props.as_deref()}});
            return Err(Refusal {
                code: ErrorCode::AlreadyJoined,
                message: format!("this session is already in room {}", room.id),
                details: serde_json::value::to_raw_value(&details).ok(),
            });
        }
        // One room per session: leave the current one first.
        self.leave_room(s, true).await;

        let mut properties = None;
        let mut permissions = None;
        let mut assigned_user = None;
        if s.kind != ClientKind::Internal {
            let user_id = s.user_id();
            let room_session = if req.sessionid.is_empty() {
                &*s.public_id
            } else {
                req.sessionid.as_str()
            };
            let (actorid, actortype) = s.actor.clone().unwrap_or_default();
            let body = RoomBackendRequest {
                version: VERSION,
                roomid: &req.roomid,
                userid: &user_id,
                sessionid: room_session,
                action: None,
                actorid: &actorid,
                actortype: &actortype,
                incall: None,
            };
            let reply = self
                .nextcloud
                .request(&s.backend, &s.backend_url, "room", &body)
                .await
                .map_err(|e| {
                    tracing::warn!(session = %s.public_id, room = %req.roomid, backend = %s.backend.id, error = %e, "room join failed");
                    Refusal::new(ErrorCode::RoomJoinFailed, format!("could not check the room join with Nextcloud: {e}"))
                })?;
            match (reply.kind.as_str(), reply.room, reply.error) {
                ("room", Some(r), _) => {
                    properties = r.properties.map(Arc::from);
                    permissions = r.permissions;
                    assigned_user = r.session.map(|x| x.userid).filter(|u| !u.is_empty());
                }
                ("error", _, Some(e)) => {
                    tracing::warn!(session = %s.public_id, room = %req.roomid, backend = %s.backend.id, code = %e.code, "Nextcloud refused the room join");
                    return Err(Refusal {
                        code: forwarded_code(&e.code),
                        message: explain_backend_error(&e.code, &e.message, &s.backend.label()),
                        details: e.details,
                    });
                }
                (other, _, _) => {
                    return Err(Refusal::new(
                        ErrorCode::RoomJoinFailed,
                        format!(
                            "Nextcloud answered the room join with an unexpected reply of type \"{other}\""
                        ),
                    ));
                }
            }
        }
        if s.state.lock().closed {
            return Ok(());
        }
        if let Some(u) = assigned_user {
            self.set_user_id(s, &u);
        }
        // Room session takeover: the same Talk session on another signaling session.
        if !req.sessionid.is_empty() {
            let key = (s.backend.id.clone(), Arc::from(req.sessionid.as_str()));
            let previous = self.room_sessions.lock().insert(key, s.clone());
            if let Some(p) = previous
                && !Arc::ptr_eq(&p, s)
            {
                self.close_session(&p, CloseReason::RoomSessionReconnected)
                    .await;
            }
        }
        let room = self.get_or_create_room(&s.backend, &req.roomid);
        self.dialout_forget(s);
        {
            let mut st = s.state.lock();
            st.room = Some(room.clone());
            st.room_session_id =
                (!req.sessionid.is_empty()).then(|| Arc::from(req.sessionid.as_str()));
            if let Some(p) = permissions {
                st.permissions = Some(p.into_iter().collect::<HashSet<_>>());
            }
        }
        let others: Vec<Arc<Session>> = {
            let mut rs = room.state.lock();
            if s.kind != ClientKind::Internal || properties.is_some() {
                rs.properties = properties.clone().or(rs.properties.take());
            }
            let others = rs.members.values().cloned().collect();
            rs.members.insert(s.public_id.clone(), s.clone());
            others
        };
        let props = room.state.lock().properties.clone();
        conn.reply(server::frame(
            id,
            "room",
            Some(&RoomReply {
                roomid: &room.id,
                properties: props.as_deref(),
                bandwidth: self.bandwidth(&room),
            }),
        ));
        self.send_initial_transient(&room, s);
        self.publish_join(&room, s);
        if s.kind == ClientKind::Internal {
            // Internal sessions are part of the participants list (upstream's
            // publishUsersChangedWithInternal on join, as on leave).
            self.publish_users_with_internal(&room);
        }
        if !others.is_empty() {
            let hide = s.has_permission(PERM_HIDE_DISPLAYNAMES);
            // In events of at most JOIN_CHUNK entries (clients add up join events): one
            // frame for a room of thousands would be hundreds of KiB, and each connection's
            // write buffer keeps the capacity of the largest frame it ever sent.
            for chunk in others.chunks(JOIN_CHUNK) {
                let entries: Vec<Value> = chunk.iter().map(|o| join_entry_json(o, hide)).collect();
                let frame = server::event("room", "join", &entries);
                self.deliver(s, &frame.into());
            }
            for o in others.iter().filter(|o| o.kind == ClientKind::Virtual) {
                let flags = o.state.lock().flags;
                let payload = serde_json::json!({"roomid": room.id, "sessionid": o.public_id, "flags": flags});
                self.deliver(s, &server::event("participants", "flags", &payload).into());
            }
        }
        tracing::debug!(session = %s.public_id, room = %room.id, backend = %s.backend.id, "joined room");
        Ok(())
    }

    /// `bandwidth` of the join reply: the smaller non-zero of SFU and backend limits.
    fn bandwidth(&self, room: &Room) -> Option<Bandwidth> {
        fn min_nonzero(a: u64, b: u64) -> u64 {
            match (a, b) {
                (0, x) | (x, 0) => x,
                (a, b) => a.min(b),
            }
        }
        let stream = min_nonzero(
            self.cfg.mcu_max_stream_bitrate,
            room.backend.max_stream_bitrate,
        );
        let screen = min_nonzero(
            self.cfg.mcu_max_screen_bitrate,
            room.backend.max_screen_bitrate,
        );
        (stream != 0 || screen != 0).then_some(Bandwidth {
            maxstreambitrate: stream,
            maxscreenbitrate: screen,
        })
    }

    pub fn get_or_create_room(
        &self,
        backend: &Arc<crate::backends::Backend>,
        room_id: &str,
    ) -> Arc<Room> {
        self.rooms
            .lock()
            .entry((backend.id.clone(), room_id.to_string()))
            .or_insert_with(|| Arc::new(Room::new(room_id.to_string(), backend.clone())))
            .clone()
    }

    pub fn room(&self, backend_id: &str, room_id: &str) -> Option<Arc<Room>> {
        self.rooms
            .lock()
            .get(&(backend_id.to_string(), room_id.to_string()))
            .cloned()
    }

    /// Tell the room (including `s`) that `s` joined.
    pub fn publish_join(self: &Arc<Self>, room: &Room, s: &Session) {
        let normal: Utf8Bytes = server::event("room", "join", &[join_entry_json(s, false)]).into();
        let hidden: Utf8Bytes = server::event("room", "join", &[join_entry_json(s, true)]).into();
        self.deliver_room(room, &normal, None, |r| {
            !r.has_permission(PERM_HIDE_DISPLAYNAMES)
        });
        self.deliver_room(room, &hidden, None, |r| {
            r.has_permission(PERM_HIDE_DISPLAYNAMES)
        });
    }

    /// Leave the current room. Returns true when the session was in a room.
    pub async fn leave_room(self: &Arc<Self>, s: &Arc<Session>, notify_backend: bool) -> bool {
        let (room, room_session) = {
            let mut st = s.state.lock();
            let Some(room) = st.room.take() else {
                return false;
            };
            // An internal session's flags are its own (hello default, `incall`
            // messages); a client's call membership ends with the room.
            if s.kind != ClientKind::Internal {
                st.in_call = 0;
            }
            st.roomless_since = std::time::Instant::now();
            (room, st.room_session_id.take())
        };
        self.media_session_gone(s);
        if let Some(rs) = &room_session {
            let key = (s.backend.id.clone(), rs.clone());
            let mut map = self.room_sessions.lock();
            if map.get(&key).is_some_and(|x| Arc::ptr_eq(x, s)) {
                map.remove(&key);
            }
        }
        let empty = {
            let mut st = room.state.lock();
            st.members.remove(&s.public_id);
            st.members.is_empty()
        };
        let leave: Utf8Bytes = server::event("room", "leave", &[&*s.public_id]).into();
        self.deliver_room(&room, &leave, None, |_| true);
        self.remove_session_transient(&room, s);
        if s.kind == ClientKind::Internal {
            self.publish_users_with_internal(&room);
        }
        if empty {
            let mut rooms = self.rooms.lock();
            let key = room.key();
            if rooms.get(&key).is_some_and(|r| Arc::ptr_eq(r, &room))
                && room.state.lock().members.is_empty()
            {
                rooms.remove(&key);
                room.state.lock().closed = true;
            }
        }
        if notify_backend
            && matches!(s.kind, ClientKind::Client)
            && let Some(rs) = room_session
        {
            let hub = self.clone();
            let s = s.clone();
            let room_id = room.id.clone();
            tokio::spawn(async move {
                let user = s.user_id();
                let body = RoomBackendRequest {
                    version: VERSION,
                    roomid: &room_id,
                    userid: &user,
                    sessionid: &rs,
                    action: Some("leave"),
                    ..Default::default()
                };
                if let Err(e) = hub
                    .nextcloud
                    .request(&s.backend, &s.backend_url, "room", &body)
                    .await
                {
                    tracing::warn!(session = %s.public_id, room = %room_id, backend = %s.backend.id, error = %e, "could not tell Nextcloud about the room leave");
                }
            });
        }
        true
    }
}

/// Codes Talk sends that clients know; anything else becomes `room_join_failed`.
fn forwarded_code(code: &str) -> ErrorCode {
    ErrorCode::from_backend(code).unwrap_or(ErrorCode::RoomJoinFailed)
}

/// Talk's error with what it most likely means for the admin.
pub fn explain_backend_error(code: &str, message: &str, backend: &str) -> String {
    let hint = match code {
        "invalid_request" => format!(
            " (Nextcloud could not verify hpb's request: the secret configured for backend {backend} differs from the shared secret in Talk's admin settings)"
        ),
        "no_such_room" => " (the conversation does not exist or this user is not a participant)".to_string(),
        "duplicate_session" => " (this Talk session is already in use)".to_string(),
        "invalid_ticket" => " (the signaling ticket is invalid or expired; the client should fetch new signaling settings)".to_string(),
        "no_such_user" => " (the user does not exist in Nextcloud)".to_string(),
        _ => String::new(),
    };
    let base = if message.is_empty() {
        code.to_string()
    } else {
        message.to_string()
    };
    format!("{base}{hint}")
}
