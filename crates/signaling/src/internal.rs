//! Messages of internal clients (reference §1.12): virtual sessions for SIP/phone
//! participants (add, update, remove, announced to Nextcloud and the room) and the
//! internal session's own call flags.

use std::sync::Arc;

use hpb_proto::ErrorCode;
use hpb_proto::backend::{RoomBackendRequest, SessionRequest, VERSION};
use hpb_proto::client::{AddSession, InternalMessage};
use hpb_proto::server;
use serde_json::json;

use crate::hub::{CloseReason, Hub};
use crate::session::{ClientKind, Delivery, NewSession, Session};
use crate::ws::Conn;

impl Hub {
    pub async fn handle_internal(
        self: &Arc<Self>,
        conn: &Conn,
        s: &Arc<Session>,
        id: Option<&str>,
        m: InternalMessage,
    ) {
        if s.kind != ClientKind::Internal {
            return;
        }
        match m {
            InternalMessage::AddSession(a) => {
                if let Err(msg) = self.add_virtual(s, a).await {
                    conn.error(id, ErrorCode::AddFailed, &msg, None);
                }
            }
            InternalMessage::UpdateSession(u) => {
                let Some(v) = self
                    .virtuals
                    .lock()
                    .get(&(s.public_id.clone(), u.sessionid.clone()))
                    .cloned()
                else {
                    return;
                };
                let (flags_changed, incall_changed) = {
                    let mut st = v.state.lock();
                    let f = u.flags.is_some_and(|f| f != st.flags);
                    let c = u.incall.is_some_and(|c| c != st.in_call);
                    if let Some(f) = u.flags {
                        st.flags = f;
                    }
                    if let Some(c) = u.incall {
                        st.in_call = c;
                    }
                    (f, c)
                };
                if let Some(room) = v.room() {
                    if flags_changed {
                        let payload = json!({"roomid": room.id, "sessionid": &*v.public_id, "flags": v.state.lock().flags});
                        let frame = server::event("participants", "flags", &payload).into();
                        self.deliver_room(&room, &frame, None, |r| r.kind != ClientKind::Virtual);
                    }
                    if incall_changed {
                        self.publish_users_with_internal(&room);
                    }
                }
            }
            InternalMessage::RemoveSession(r) => {
                let v = self
                    .virtuals
                    .lock()
                    .remove(&(s.public_id.clone(), r.sessionid.clone()));
                if let Some(v) = v {
                    let room_id = v.room().map(|r| r.id.clone()).unwrap_or(r.roomid.clone());
                    self.close_session(&v, CloseReason::Removed).await;
                    if let Err(e) = self.announce_virtual(&v, &room_id, "remove").await {
                        conn.error(id, ErrorCode::RemoveFailed, &e, None);
                    }
                }
            }
            InternalMessage::InCall { incall } => {
                let old = std::mem::replace(&mut s.state.lock().in_call, incall);
                self.media_call_flags(s, old, incall);
                if let Some(room) = s.room() {
                    self.publish_users_with_internal(&room);
                }
            }
            InternalMessage::Dialout(d) => self.on_dialout(s, id, d),
            InternalMessage::Other(kind) => {
                tracing::debug!(session = %s.public_id, kind, "internal message type ignored");
            }
        }
    }

    async fn add_virtual(
        self: &Arc<Self>,
        owner: &Arc<Session>,
        a: AddSession,
    ) -> Result<(), String> {
        let Some(room) = owner
            .room()
            .filter(|r| r.id == a.roomid)
            .or_else(|| self.room(&owner.backend.id, &a.roomid))
        else {
            // Upstream ignores these silently; say why in the log.
            tracing::warn!(session = %owner.public_id, room = %a.roomid, "addsession ignored: the room has no sessions on this server; the internal client must join it first");
            return Ok(());
        };
        let key = (owner.public_id.clone(), a.sessionid.clone());
        if self.virtuals.lock().contains_key(&key) {
            return Ok(());
        }
        let (sid, public_id, private_id) = self.new_ids(&owner.backend.id);
        let in_call = a.incall.unwrap_or(
            if owner.has_feature(hpb_proto::features::CLIENT_INTERNAL_INCALL) {
                0
            } else {
                9
            },
        );
        let actor = a
            .options
            .as_ref()
            .filter(|o| !o.actor_id.is_empty() && !o.actor_type.is_empty())
            .map(|o| (o.actor_id.clone(), o.actor_type.clone()));
        let v = Arc::new(Session::new(NewSession {
            sid,
            public_id,
            private_id,
            kind: ClientKind::Virtual,
            backend: owner.backend.clone(),
            backend_url: owner.backend_url.clone(),
            user_id: a.userid.clone(),
            user_data: a.user,
            features: Vec::new(),
            owner: Some(owner.clone()),
            virtual_id: Some(a.sessionid.clone()),
            actor,
            in_call,
            delivery: Delivery::None,
            limit: 1,
        }));
        v.state.lock().flags = a.flags;
        self.announce_virtual(&v, &room.id, "add").await?;
        self.register(&v);
        self.virtuals.lock().insert(key, v.clone());
        v.state.lock().room = Some(room.clone());
        room.state
            .lock()
            .members
            .insert(v.public_id.clone(), v.clone());
        self.publish_join(&room, &v);
        let payload = json!({"roomid": room.id, "sessionid": &*v.public_id, "flags": a.flags});
        let frame = server::event("participants", "flags", &payload).into();
        self.deliver_room(&room, &frame, None, |r| r.kind != ClientKind::Virtual);
        self.publish_users_with_internal(&room);
        Ok(())
    }

    /// Tell Nextcloud about a virtual session (actor-based room join/leave, or session add/remove).
    pub(crate) async fn announce_virtual(
        &self,
        v: &Session,
        room_id: &str,
        action: &str,
    ) -> Result<(), String> {
        let user = v.user_id();
        let result = if let Some((actor_id, actor_type)) = &v.actor {
            let in_call = v.state.lock().in_call;
            let body = RoomBackendRequest {
                version: VERSION,
                roomid: room_id,
                userid: &user,
                sessionid: &v.public_id,
                action: (action == "remove").then_some("leave"),
                actorid: actor_id,
                actortype: actor_type,
                incall: Some(in_call),
            };
            self.nextcloud
                .request(&v.backend, &v.backend_url, "room", &body)
                .await
        } else {
            let body = SessionRequest {
                version: VERSION,
                roomid: room_id,
                action,
                sessionid: &v.public_id,
                userid: &user,
                // Like upstream, only the add carries the user data.
                user: if action == "add" {
                    v.user_data.as_deref()
                } else {
                    None
                },
            };
            self.nextcloud
                .request(&v.backend, &v.backend_url, "session", &body)
                .await
        };
        match result {
            Ok(r) if r.kind == "error" => Err(format!(
                "Nextcloud refused the virtual session: {}",
                r.error
                    .map(|e| format!("{} {}", e.code, e.message))
                    .unwrap_or_default()
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "could not announce the virtual session to Nextcloud: {e}"
            )),
        }
    }
}
