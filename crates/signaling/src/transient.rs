//! Transient room data (reference §1.11): a key/value store per room that members with
//! the `transient-data` permission write, with optional TTL, `sd:<session>` keys only
//! their session may write, and the `initial` snapshot on join.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use hpb_proto::ErrorCode;
use hpb_proto::client::TransientMessage;
use hpb_proto::server::{self, TransientOut};
use serde_json::value::RawValue;

use crate::hub::Hub;
use crate::room::{Room, TransientEntry};
use crate::session::{PERM_TRANSIENT, Session};
use crate::ws::Conn;

const SESSION_DATA_PREFIX: &str = "sd:";

fn set_frame(key: &str, value: &RawValue, old: Option<&RawValue>) -> Utf8Bytes {
    server::frame(
        None,
        "transient",
        Some(&TransientOut {
            kind: "set",
            key: Some(key),
            value: Some(value),
            oldvalue: old,
            data: None,
        }),
    )
    .into()
}

fn remove_frame(key: &str, old: Option<&RawValue>) -> Utf8Bytes {
    server::frame(
        None,
        "transient",
        Some(&TransientOut {
            kind: "remove",
            key: Some(key),
            value: None,
            oldvalue: old,
            data: None,
        }),
    )
    .into()
}

impl Hub {
    pub fn handle_transient(
        self: &Arc<Self>,
        conn: &Conn,
        s: &Arc<Session>,
        id: Option<&str>,
        t: TransientMessage,
    ) {
        let Some(room) = s.room() else {
            conn.error(
                id,
                ErrorCode::NotInRoom,
                "transient data needs a room: join one first",
                None,
            );
            return;
        };
        if !s.is_internal() && !s.has_permission(PERM_TRANSIENT) {
            conn.error(
                id,
                ErrorCode::NotAllowed,
                "Nextcloud did not grant this session the \"transient-data\" permission",
                None,
            );
            return;
        }
        let key = match &t {
            TransientMessage::Set { key, .. } | TransientMessage::Remove { key } => key.as_str(),
            TransientMessage::Other(kind) => {
                conn.error(
                    id,
                    ErrorCode::Ignored,
                    &format!("unsupported transient type \"{kind}\"; use set or remove"),
                    None,
                );
                return;
            }
        };
        if let Some(owner) = key.strip_prefix(SESSION_DATA_PREFIX)
            && owner != &*s.public_id
        {
            conn.error(id, ErrorCode::NotAllowed, &format!("key {key} belongs to another session; a session may only write sd:<its own session id>"), None);
            return;
        }
        match t {
            TransientMessage::Set { key, value, ttl_ns } => {
                let expires =
                    (ttl_ns > 0).then(|| Instant::now() + Duration::from_nanos(ttl_ns as u64));
                self.set_transient(&room, key, Arc::from(value), expires);
            }
            TransientMessage::Remove { key } => self.remove_transient(&room, &key),
            TransientMessage::Other(_) => {}
        }
    }

    /// Set `key` in `room` and tell its members; the same value again only refreshes its
    /// expiry (`None`: it stays until removed or the room ends).
    pub(crate) fn set_transient(
        self: &Arc<Self>,
        room: &Room,
        key: String,
        value: Arc<RawValue>,
        expires: Option<Instant>,
    ) {
        let frame = {
            let mut st = room.state.lock();
            let old = st.transient.get(&key).map(|e| e.value.clone());
            if old.as_ref().is_some_and(|o| o.get() == value.get()) {
                if let Some(e) = st.transient.get_mut(&key) {
                    e.expires = expires;
                }
                return;
            }
            st.transient.insert(
                key.clone(),
                TransientEntry {
                    value: value.clone(),
                    expires,
                },
            );
            set_frame(&key, &value, old.as_deref())
        };
        self.deliver_room(room, &frame, None, |_| true);
    }

    fn remove_transient(self: &Arc<Self>, room: &Room, key: &str) {
        let old = room.state.lock().transient.remove(key);
        if let Some(old) = old {
            self.deliver_room(room, &remove_frame(key, Some(&old.value)), None, |_| true);
        }
    }

    /// Drop `sd:<id>` of a session that left.
    pub fn remove_session_transient(self: &Arc<Self>, room: &Room, s: &Session) {
        let key = format!("{SESSION_DATA_PREFIX}{}", s.public_id);
        self.remove_transient(room, &key);
    }

    /// Send the current transient data to a session that joined.
    pub fn send_initial_transient(self: &Arc<Self>, room: &Room, s: &Arc<Session>) {
        let data: serde_json::Map<String, serde_json::Value> = {
            let st = room.state.lock();
            if st.transient.is_empty() {
                return;
            }
            st.transient
                .iter()
                .filter_map(|(k, e)| Some((k.clone(), serde_json::from_str(e.value.get()).ok()?)))
                .collect()
        };
        let Ok(raw) = serde_json::value::to_raw_value(&data) else {
            return;
        };
        let frame = server::frame(
            None,
            "transient",
            Some(&TransientOut {
                kind: "initial",
                key: None,
                value: None,
                oldvalue: None,
                data: Some(&raw),
            }),
        );
        self.deliver(s, &frame.into());
    }

    /// Remove values whose TTL passed.
    pub fn expire_transient(self: &Arc<Self>, now: Instant) {
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        for room in rooms {
            let expired: Vec<String> = room
                .state
                .lock()
                .transient
                .iter()
                .filter(|(_, e)| e.expires.is_some_and(|t| t <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                self.remove_transient(&room, &k);
            }
        }
    }
}
