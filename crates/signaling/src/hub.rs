//! The hub: the registry of sessions, users, room sessions and rooms on this node, and
//! the primitives every operation uses: deliver a frame to a session or a room, close
//! a session with a reason, and the 1-second housekeeping (timeouts, expiry).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use hpb_proto::server::{self, Bye};
use hpb_proto::session_id::{SessionIdCodec, SessionIdData};
use parking_lot::{Mutex, RwLock};

use crate::backends::Backends;
use crate::config::SignalingConfig;
use crate::nextcloud::Nextcloud;
use crate::outbox::CloseRequest;
use crate::room::{Room, RoomKey};
use crate::session::{ClientKind, Delivery, Sent, Session};
use crate::throttle::Throttle;

/// Why a session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said bye.
    Bye,
    /// Resume window passed without a reconnect.
    Expired,
    HelloTimeout,
    RoomJoinTimeout,
    /// Another signaling session joined with the same Talk room session id.
    RoomSessionReconnected,
    /// The client did not read its frames fast enough.
    SlowClient,
    /// Disinvited from / deleted room while in it.
    Disinvited,
    /// The owning internal session went away, or it removed this virtual session.
    Removed,
    Shutdown,
}

impl CloseReason {
    /// The `bye` reason sent to the client, if any.
    pub fn bye_reason(&self) -> Option<&'static str> {
        match self {
            CloseReason::HelloTimeout => Some("hello_timeout"),
            CloseReason::RoomJoinTimeout => Some("room_join_timeout"),
            CloseReason::RoomSessionReconnected => Some("room_session_reconnected"),
            CloseReason::SlowClient => Some("slow_client"),
            CloseReason::Shutdown => Some("shutdown"),
            _ => None,
        }
    }

    fn close_text(&self, limit: usize) -> String {
        match self {
            CloseReason::SlowClient => format!(
                "client too slow: more than {limit} frames were waiting to be sent ([limits] max_queued_messages); reconnect with a new hello"
            ),
            CloseReason::RoomJoinTimeout => {
                "anonymous sessions (guests) must join a room within [limits] room_join_timeout_ms of their hello or of leaving a room".into()
            }
            CloseReason::RoomSessionReconnected => {
                "the Talk session reconnected on another signaling connection".into()
            }
            CloseReason::Disinvited => "removed from the room".into(),
            CloseReason::Shutdown => {
                "service restart: the signaling server is shutting down; reconnect".into()
            }
            other => format!("{other:?}").to_lowercase(),
        }
    }

    /// The WebSocket close code: 1012 (service restart) on shutdown, so clients reconnect
    /// (Talk reconnects on every close code except 1001), else 1000.
    pub fn close_code(&self) -> u16 {
        match self {
            CloseReason::Shutdown => 1012,
            _ => 1000,
        }
    }
}

/// Counters for `/api/v1/stats` and metrics.
#[derive(Default)]
pub struct Counters {
    pub sessions_total: AtomicU64,
    pub resumes_total: AtomicU64,
    pub resume_failed_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub slow_client_disconnects: AtomicU64,
    /// Client WebSocket connections open now (with or without a session).
    pub connections: AtomicU64,
}

pub struct Hub {
    pub cfg: SignalingConfig,
    pub codec: SessionIdCodec,
    pub backends: Backends,
    pub nextcloud: Nextcloud,
    pub throttle: Throttle,
    pub counters: Counters,
    /// Feature list for regular clients (welcome/hello/header).
    pub client_features: Vec<&'static str>,
    pub internal_features: Vec<&'static str>,
    pub welcome_features: Vec<&'static str>,
    next_sid: AtomicU64,
    pub(crate) sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
    pub(crate) by_sid: RwLock<HashMap<u64, Arc<Session>>>,
    pub(crate) users: Mutex<HashMap<BackendScoped, Vec<Arc<Session>>>>,
    pub(crate) room_sessions: Mutex<HashMap<BackendScoped, Arc<Session>>>,
    pub(crate) rooms: Mutex<HashMap<RoomKey, Arc<Room>>>,
    /// Virtual sessions by (owner public id, id chosen by the internal client).
    pub(crate) virtuals: Mutex<HashMap<VirtualKey, Arc<Session>>>,
    /// SIP bridges and the dial-outs waiting for them.
    pub(crate) dialout: crate::dialout::Dialouts,
    /// The media plane, when one is plugged in (`Signaling::start_with_mcu`).
    pub media: Option<Arc<crate::media::Media>>,
    /// Set by `close_all`: connections (also those without a session yet) close themselves.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// A key scoped to one backend: (backend id, user id or Talk room session id).
pub(crate) type BackendScoped = (String, Arc<str>);
/// A virtual session's key: (owner public id, id chosen by the internal client).
pub(crate) type VirtualKey = (Arc<str>, String);

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Hub {
    pub fn new(cfg: SignalingConfig, codec: SessionIdCodec, nextcloud: Nextcloud) -> Self {
        let client_features =
            hpb_proto::features::merged(hpb_proto::features::CLIENT_FEATURES, &[]);
        let internal_features =
            hpb_proto::features::merged(hpb_proto::features::INTERNAL_FEATURES, &[]);
        let welcome_features = hpb_proto::features::merged(&client_features, &internal_features);
        Self {
            backends: Backends::new(&cfg),
            cfg,
            codec,
            nextcloud,
            throttle: Throttle::default(),
            counters: Counters::default(),
            client_features,
            internal_features,
            welcome_features,
            next_sid: AtomicU64::new(rand::random::<u32>() as u64 + 1),
            sessions: RwLock::new(HashMap::new()),
            by_sid: RwLock::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            room_sessions: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            virtuals: Mutex::new(HashMap::new()),
            dialout: crate::dialout::Dialouts::default(),
            media: None,
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Becomes `true` when the hub shuts down (`close_all`).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Allocate ids for a new session on `backend_id`.
    pub fn new_ids(&self, backend_id: &str) -> (u64, String, String) {
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        let data = SessionIdData {
            sid,
            created: unix_micros(),
            backend_id: backend_id.to_string(),
        };
        (
            sid,
            self.codec.encode_public(&data),
            self.codec.encode_private(&data),
        )
    }

    pub fn session(&self, public_id: &str) -> Option<Arc<Session>> {
        self.sessions.read().get(public_id).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Add a new session to the registries.
    pub fn register(&self, s: &Arc<Session>) {
        self.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        self.sessions.write().insert(s.public_id.clone(), s.clone());
        if s.kind != ClientKind::Virtual {
            self.by_sid.write().insert(s.sid, s.clone());
        }
        let uid = s.user_id();
        if !uid.is_empty() {
            self.users
                .lock()
                .entry((s.backend.id.clone(), uid))
                .or_default()
                .push(s.clone());
        }
    }

    /// Sessions of a user on a backend.
    pub fn user_sessions(&self, backend_id: &str, user: &str) -> Vec<Arc<Session>> {
        self.users
            .lock()
            .get(&(backend_id.to_string(), Arc::from(user)))
            .cloned()
            .unwrap_or_default()
    }

    /// Move a session to another user id (Nextcloud assigned one on room join).
    pub fn set_user_id(&self, s: &Arc<Session>, user: &str) {
        let old = {
            let mut st = s.state.lock();
            if &*st.user_id == user {
                return;
            }
            std::mem::replace(&mut st.user_id, Arc::from(user))
        };
        let mut users = self.users.lock();
        if !old.is_empty() {
            let k = (s.backend.id.clone(), old);
            if let Some(list) = users.get_mut(&k) {
                list.retain(|x| !Arc::ptr_eq(x, s));
                if list.is_empty() {
                    users.remove(&k);
                }
            }
        }
        if !user.is_empty() {
            users
                .entry((s.backend.id.clone(), Arc::from(user)))
                .or_default()
                .push(s.clone());
        }
    }

    /// Deliver one frame to a session; a client that cannot keep up is disconnected.
    pub fn deliver(self: &Arc<Self>, s: &Arc<Session>, frame: &Utf8Bytes) {
        match s.send(frame) {
            Sent::Ok => {
                self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
            }
            Sent::Overflow => self.close_later(s.clone(), CloseReason::SlowClient),
            Sent::Dropped => {}
        }
    }

    /// Deliver a frame to every member of a room, except `skip`, filtered by `want`.
    pub fn deliver_room(
        self: &Arc<Self>,
        room: &Room,
        frame: &Utf8Bytes,
        skip: Option<&str>,
        want: impl Fn(&Session) -> bool,
    ) {
        let mut overflow = Vec::new();
        let mut sent = 0u64;
        {
            let st = room.state.lock();
            for (id, s) in &st.members {
                if skip.is_some_and(|k| **id == *k) || !want(s) {
                    continue;
                }
                match s.send(frame) {
                    Sent::Ok => sent += 1,
                    Sent::Overflow => overflow.push(s.clone()),
                    Sent::Dropped => {}
                }
            }
        }
        self.counters.frames_out.fetch_add(sent, Ordering::Relaxed);
        for s in overflow {
            self.close_later(s, CloseReason::SlowClient);
        }
    }

    /// Close a session from a context that may hold locks.
    pub fn close_later(self: &Arc<Self>, s: Arc<Session>, reason: CloseReason) {
        let hub = self.clone();
        tokio::spawn(async move { hub.close_session(&s, reason).await });
    }

    /// End a session: leave its room, forget it, tell and close its connection.
    pub async fn close_session(self: &Arc<Self>, s: &Arc<Session>, reason: CloseReason) {
        {
            let mut st = s.state.lock();
            if st.closed {
                return;
            }
            st.closed = true;
        }
        self.dialout_closed(s);
        if reason == CloseReason::SlowClient {
            self.counters
                .slow_client_disconnects
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session = %s.public_id,
                backend = %s.backend.id,
                limit = self.cfg.limits.max_queued_messages,
                "disconnecting a client that does not read its messages (too slow): its queue is full; raise [limits] max_queued_messages if clients are on slow links"
            );
        }
        // Close the connection first so nothing after the bye reaches it.
        let old = std::mem::replace(&mut *s.delivery.lock(), Delivery::Closed);
        if let Delivery::Connected(outbox) = old {
            let text = reason.close_text(self.cfg.limits.max_queued_messages);
            let close = CloseRequest {
                code: reason.close_code(),
                reason: text,
            };
            match reason.bye_reason() {
                Some(r) if reason == CloseReason::SlowClient => {
                    // The queue is full: drop it and say why.
                    outbox.abort(close.clone());
                    let bye = server::frame(None, "bye", Some(&Bye { reason: r }));
                    outbox.push_all([Utf8Bytes::from(bye)]);
                }
                Some(r) => {
                    let bye = server::frame(None, "bye", Some(&Bye { reason: r }));
                    outbox.close_with(Some(bye.into()), close);
                }
                None => {
                    outbox.close_with(None, close);
                }
            }
        }
        self.end_federation(s);
        let notify_backend = reason != CloseReason::RoomSessionReconnected;
        self.leave_room(s, notify_backend).await;
        self.media_session_gone(s);
        self.unregister(s);
        // Virtual sessions owned by an internal session go with it.
        if s.kind == ClientKind::Internal {
            let owned: Vec<Arc<Session>> = {
                let mut v = self.virtuals.lock();
                let keys: Vec<_> = v
                    .keys()
                    .filter(|(o, _)| *o == s.public_id)
                    .cloned()
                    .collect();
                keys.into_iter().filter_map(|k| v.remove(&k)).collect()
            };
            for vs in owned {
                let room_id = vs.room().map(|r| r.id.clone());
                Box::pin(self.close_session(&vs, CloseReason::Removed)).await;
                // Like upstream's VirtualSession.Close: Nextcloud learns that the
                // participant left instead of waiting for the missing pings.
                if let Some(room_id) = room_id {
                    let hub = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = hub.announce_virtual(&vs, &room_id, "remove").await {
                            tracing::warn!(session = %vs.public_id, room = %room_id, error = %e, "could not tell Nextcloud that the virtual session left");
                        }
                    });
                }
            }
        }
        tracing::debug!(session = %s.public_id, backend = %s.backend.id, ?reason, "session closed");
    }

    fn unregister(&self, s: &Arc<Session>) {
        self.sessions.write().remove(&s.public_id);
        if s.kind != ClientKind::Virtual {
            self.by_sid.write().remove(&s.sid);
        }
        if matches!(s.kind, ClientKind::Client | ClientKind::Federation) {
            s.backend.remove_session();
        }
        let uid = s.user_id();
        if !uid.is_empty() {
            let mut users = self.users.lock();
            let k = (s.backend.id.clone(), uid);
            if let Some(list) = users.get_mut(&k) {
                list.retain(|x| !Arc::ptr_eq(x, s));
                if list.is_empty() {
                    users.remove(&k);
                }
            }
        }
    }

    /// A connection ended without bye: keep the session for the resume window.
    pub fn connection_lost(&self, s: &Arc<Session>, outbox: &Arc<crate::outbox::Outbox>) {
        let mut d = s.delivery.lock();
        if let Delivery::Connected(o) = &*d
            && Arc::ptr_eq(o, outbox)
        {
            let buffer = o.take_unsent();
            *d = Delivery::Offline {
                buffer,
                since: Instant::now(),
            };
            tracing::debug!(session = %s.public_id, "connection lost, session kept for resume");
        }
    }

    /// Periodic work: resume-window expiry, anonymous join deadlines, transient TTLs.
    pub async fn housekeeping(self: &Arc<Self>) {
        let now = Instant::now();
        let limits = &self.cfg.limits;
        let mut expired = Vec::new();
        let mut join_timeouts = Vec::new();
        for s in self.sessions.read().values() {
            match &*s.delivery.lock() {
                Delivery::Offline { since, .. }
                    if now.duration_since(*since) >= limits.resume_window =>
                {
                    expired.push(s.clone());
                    continue;
                }
                _ => {}
            }
            if s.kind == ClientKind::Client {
                let st = s.state.lock();
                if st.user_id.is_empty()
                    && st.room.is_none()
                    && now.duration_since(st.roomless_since) >= limits.room_join_timeout
                {
                    join_timeouts.push(s.clone());
                }
            }
        }
        for s in expired {
            self.close_session(&s, CloseReason::Expired).await;
        }
        for s in join_timeouts {
            self.close_session(&s, CloseReason::RoomJoinTimeout).await;
        }
        self.expire_transient(now);
        self.throttle.expire();
    }

    /// Run housekeeping every second until the hub is dropped.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { break };
                hub.housekeeping().await;
            }
        });
    }

    /// Close every session (shutdown): each is sent `bye` (reason `shutdown`) and close code
    /// 1012 at once, before the slower cleanup (leaving rooms at Nextcloud) runs for all of
    /// them together. Connections without a session close themselves the same way.
    pub async fn close_all(self: &Arc<Self>) {
        self.shutdown.send_replace(true);
        let all: Vec<_> = self.sessions.read().values().cloned().collect();
        futures_util::future::join_all(
            all.iter()
                .map(|s| self.close_session(s, CloseReason::Shutdown)),
        )
        .await;
    }
}
