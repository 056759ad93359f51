//! A signaling session: its ids, who it is (user, backend, client type), its mutable
//! state (room, permissions, call flags) and where its frames go: the current
//! connection, or an offline buffer while it may still be resumed.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use url::Url;

use crate::backends::Backend;
use crate::outbox::{Outbox, Push};
use crate::room::Room;

/// The client types of upstream (metrics label `clienttype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Client,
    Internal,
    Virtual,
    Federation,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Client => "client",
            ClientKind::Internal => "internal",
            ClientKind::Virtual => "virtual",
            ClientKind::Federation => "federation",
        }
    }
}

/// Permissions from Nextcloud (reference §6 item 7).
pub const PERM_CONTROL: &str = "control";
pub const PERM_TRANSIENT: &str = "transient-data";
pub const PERM_HIDE_DISPLAYNAMES: &str = "hide-displaynames";

/// Mutable state, behind the session's lock.
#[derive(Debug)]
pub struct SessionState {
    pub user_id: Arc<str>,
    pub room: Option<Arc<Room>>,
    pub room_session_id: Option<Arc<str>>,
    /// `None` until Nextcloud sent permissions: then all but `hide-displaynames`.
    pub permissions: Option<HashSet<String>>,
    pub in_call: i64,
    /// Virtual session flags (1 muted speaking, 2 muted listening, 4 talking).
    pub flags: u32,
    pub closed: bool,
    /// When the session last was without a room (anonymous join deadline).
    pub roomless_since: Instant,
}

/// Where frames for this session go.
pub enum Delivery {
    Connected(Arc<Outbox>),
    Offline {
        buffer: VecDeque<Utf8Bytes>,
        since: Instant,
    },
    /// Virtual sessions receive nothing directly.
    None,
    Closed,
}

/// Outcome of sending a frame to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// The client does not keep up: it must be disconnected.
    Overflow,
    Dropped,
}

pub struct Session {
    pub sid: u64,
    pub public_id: Arc<str>,
    pub private_id: Arc<str>,
    pub kind: ClientKind,
    pub backend: Arc<Backend>,
    /// The canonical Nextcloud base URL this session authenticated against.
    pub backend_url: Url,
    pub user_data: Option<Arc<RawValue>>,
    pub features: Vec<String>,
    /// The user id Nextcloud authenticated (empty for guests).
    pub auth_user_id: Arc<str>,
    /// For virtual sessions: the owning internal session and the id it chose.
    pub owner: Option<Arc<Session>>,
    pub virtual_id: Option<String>,
    /// Federated sessions and actor-based virtual sessions: (actorId, actorType).
    pub actor: Option<(String, String)>,
    pub state: Mutex<SessionState>,
    pub delivery: Mutex<Delivery>,
    /// The link to a remote signaling server while in a federated room.
    pub federation: Mutex<Option<Arc<crate::federation::FederationLink>>>,
    limit: usize,
}

pub struct NewSession {
    pub sid: u64,
    pub public_id: String,
    pub private_id: String,
    pub kind: ClientKind,
    pub backend: Arc<Backend>,
    pub backend_url: Url,
    pub user_id: String,
    pub user_data: Option<Box<RawValue>>,
    pub features: Vec<String>,
    pub owner: Option<Arc<Session>>,
    pub virtual_id: Option<String>,
    pub actor: Option<(String, String)>,
    pub in_call: i64,
    pub delivery: Delivery,
    pub limit: usize,
}

impl Session {
    pub fn new(n: NewSession) -> Self {
        let user: Arc<str> = n.user_id.into();
        Self {
            sid: n.sid,
            public_id: n.public_id.into(),
            private_id: n.private_id.into(),
            kind: n.kind,
            backend: n.backend,
            backend_url: n.backend_url,
            user_data: n.user_data.map(Arc::from),
            features: n.features,
            auth_user_id: user.clone(),
            owner: n.owner,
            virtual_id: n.virtual_id,
            actor: n.actor,
            state: Mutex::new(SessionState {
                user_id: user,
                room: None,
                room_session_id: None,
                permissions: None,
                in_call: n.in_call,
                flags: 0,
                closed: false,
                roomless_since: Instant::now(),
            }),
            delivery: Mutex::new(n.delivery),
            federation: Mutex::new(None),
            limit: n.limit,
        }
    }

    pub fn user_id(&self) -> Arc<str> {
        self.state.lock().user_id.clone()
    }

    pub fn room(&self) -> Option<Arc<Room>> {
        self.state.lock().room.clone()
    }

    pub fn has_feature(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }

    pub fn is_internal(&self) -> bool {
        self.kind == ClientKind::Internal
    }

    /// Whether Nextcloud granted `perm` (before any permissions arrived, all but
    /// `hide-displaynames` are granted, for old Talk versions).
    pub fn has_permission(&self, perm: &str) -> bool {
        match &self.state.lock().permissions {
            Some(p) => p.contains(perm),
            None => perm != PERM_HIDE_DISPLAYNAMES,
        }
    }

    /// Queue a frame for the client.
    pub fn send(&self, frame: &Utf8Bytes) -> Sent {
        let mut d = self.delivery.lock();
        match &mut *d {
            Delivery::Connected(o) => match o.push(frame.clone()) {
                Push::Queued => Sent::Ok,
                Push::Overflow => Sent::Overflow,
                Push::Closed => Sent::Dropped,
            },
            Delivery::Offline { buffer, .. } => {
                if buffer.len() >= self.limit {
                    return Sent::Overflow;
                }
                buffer.push_back(frame.clone());
                Sent::Ok
            }
            Delivery::None | Delivery::Closed => Sent::Dropped,
        }
    }

    /// The connection this session writes to, if any.
    pub fn outbox(&self) -> Option<Arc<Outbox>> {
        match &*self.delivery.lock() {
            Delivery::Connected(o) => Some(o.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("public_id", &self.public_id)
            .field("kind", &self.kind)
            .field("backend", &self.backend.id)
            .finish()
    }
}
