//! Participants updates (reference §1.7 target `participants`): Talk's participant
//! lists rewritten from Talk session ids to signaling ids, `changed` merged into
//! `users`, permissions applied and stripped, internal and virtual sessions added;
//! call membership from `incall` updates, including `all`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use hpb_proto::backend::{ParticipantEntry, entry_session_id, in_call_flags};
use hpb_proto::server;
use serde_json::{Value, json};

use crate::hub::{Hub, unix_now};
use crate::room::Room;
use crate::session::{ClientKind, Session};

impl Hub {
    /// Replace Talk session ids by signaling public ids; entries without a connected
    /// session (unknown ids and "0") are dropped, like upstream's `fixupUserSessions`.
    fn map_entries(
        &self,
        room: &Room,
        entries: &mut Vec<ParticipantEntry>,
    ) -> Vec<(Arc<Session>, usize)> {
        let mut found = Vec::new();
        let map = self.room_sessions.lock();
        let mut kept = Vec::with_capacity(entries.len());
        for mut e in std::mem::take(entries) {
            let Some(talk_id) = entry_session_id(&e).map(str::to_string) else {
                continue;
            };
            e.remove("sessionid");
            if talk_id == "0" || talk_id.is_empty() {
                continue;
            }
            let session = match map.get(&(room.backend.id.clone(), Arc::from(talk_id.as_str()))) {
                Some(s) => Some(s.clone()),
                // A virtual session is known to Nextcloud by its public id.
                None => self
                    .session(&talk_id)
                    .filter(|s| s.kind == ClientKind::Virtual),
            };
            let Some(s) = session else {
                continue;
            };
            e.insert("sessionId".into(), Value::String(s.public_id.to_string()));
            found.push((s, kept.len()));
            kept.push(e);
        }
        *entries = kept;
        found
    }

    /// Add synthetic entries for internal and virtual sessions of the room.
    fn add_internal_entries(&self, room: &Room, users: &mut Vec<ParticipantEntry>) {
        let now = unix_now();
        let present: HashSet<String> = users
            .iter()
            .filter_map(|u| {
                u.get("sessionId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        for s in room.members() {
            let (in_call, kind) = (s.state.lock().in_call, s.kind);
            let entry = match kind {
                ClientKind::Internal => {
                    let mut e = json!({"inCall": in_call, "sessionId": &*s.public_id, "lastPing": now, "internal": true});
                    if !s.features.is_empty() {
                        e["features"] = json!(s.features);
                    }
                    e
                }
                ClientKind::Virtual if !present.contains(&*s.public_id) => {
                    json!({"inCall": in_call, "sessionId": &*s.public_id, "lastPing": now, "virtual": true})
                }
                ClientKind::Virtual => {
                    if let Some(u) = users
                        .iter_mut()
                        .find(|u| u.get("sessionId").and_then(Value::as_str) == Some(&*s.public_id))
                    {
                        u.insert("virtual".into(), Value::Bool(true));
                        u.insert("inCall".into(), json!(in_call));
                    }
                    continue;
                }
                _ => continue,
            };
            if let Value::Object(m) = entry {
                users.push(m);
            }
        }
    }

    fn participants_frame(&self, room: &Room, users: &[ParticipantEntry]) -> Utf8Bytes {
        server::event(
            "participants",
            "update",
            &json!({"roomid": room.id, "users": users}),
        )
        .into()
    }

    /// A `participants` request from Nextcloud.
    pub fn backend_participants(
        self: &Arc<Self>,
        room: &Arc<Room>,
        mut changed: Vec<ParticipantEntry>,
        mut users: Vec<ParticipantEntry>,
    ) {
        let found = self.map_entries(room, &mut changed);
        for (s, i) in &found {
            if let Some(perms) = changed[*i].get("permissions").and_then(Value::as_array) {
                let set: HashSet<String> = perms
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect();
                s.state.lock().permissions = Some(set);
                self.media_permissions_changed(s);
            }
        }
        self.map_entries(room, &mut users);
        self.publish_users(room, changed, users);
    }

    /// An `incall` request from Nextcloud.
    pub async fn backend_incall(
        self: &Arc<Self>,
        room: &Arc<Room>,
        incall: &Value,
        all: bool,
        mut changed: Vec<ParticipantEntry>,
        mut users: Vec<ParticipantEntry>,
    ) {
        if all {
            let flags = in_call_flags(incall);
            let frame: Utf8Bytes = server::event(
                "participants",
                "update",
                &json!({"roomid": room.id, "incall": flags, "all": true}),
            )
            .into();
            // Like upstream: joining the call concerns only regular clients (internal
            // and federated sessions manage their own flags); leaving is told to every
            // connected session.
            let joining = flags & 1 != 0;
            for s in room.members() {
                if matches!(s.kind, ClientKind::Client) {
                    let old = std::mem::replace(&mut s.state.lock().in_call, flags);
                    self.media_call_flags(&s, old, flags);
                }
                let notify = match s.kind {
                    ClientKind::Client => true,
                    ClientKind::Federation | ClientKind::Internal => !joining,
                    ClientKind::Virtual => false,
                };
                if notify {
                    self.deliver(&s, &frame);
                }
            }
            return;
        }
        let found = self.map_entries(room, &mut changed);
        for (s, i) in &found {
            if let Some(v) = changed[*i].get("inCall") {
                let new = in_call_flags(v);
                let old = std::mem::replace(&mut s.state.lock().in_call, new);
                self.media_call_flags(s, old, new);
            }
        }
        self.map_entries(room, &mut users);
        self.publish_users(room, changed, users);
    }

    fn publish_users(
        self: &Arc<Self>,
        room: &Arc<Room>,
        changed: Vec<ParticipantEntry>,
        mut users: Vec<ParticipantEntry>,
    ) {
        // Talk may send only `changed`: merge entries missing from `users`.
        let present: HashSet<String> = users
            .iter()
            .filter_map(|u| {
                u.get("sessionId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        for c in changed {
            let sid = c
                .get("sessionId")
                .and_then(Value::as_str)
                .map(str::to_string);
            if sid.is_none_or(|id| !present.contains(&id)) {
                users.push(c);
            }
        }
        for u in &mut users {
            u.remove("permissions");
        }
        room.state.lock().users = users.clone();
        self.add_internal_entries(room, &mut users);
        let frame = self.participants_frame(room, &users);
        self.deliver_room(room, &frame, None, |r| r.kind != ClientKind::Virtual);
    }

    /// Re-send the participants list to one session (after resume).
    pub fn send_participants_snapshot(self: &Arc<Self>, room: &Room, s: &Arc<Session>) {
        let mut users = room.state.lock().users.clone();
        self.add_internal_entries(room, &mut users);
        if users.is_empty() {
            return;
        }
        let frame = self.participants_frame(room, &users);
        self.deliver(s, &frame);
    }

    /// Publish the last known list plus internal sessions (internal session changes).
    pub fn publish_users_with_internal(self: &Arc<Self>, room: &Room) {
        let mut users = room.state.lock().users.clone();
        self.add_internal_entries(room, &mut users);
        if users.is_empty() {
            return;
        }
        let frame = self.participants_frame(room, &users);
        self.deliver_room(room, &frame, None, |r| r.kind != ClientKind::Virtual);
    }
}
