//! The running link of one federated session (upstream's `FederationClient`): it proxies
//! remote frames to the local session (ids rewritten), pings the remote, and when the
//! connection is lost it reconnects the way upstream does:
//!
//! 1. the client gets `{"type":"event","event":{"target":"room","type":"federation_interrupted"}}`;
//! 2. reconnect attempts after 100 ms, doubling up to 8 s between attempts; each first tries
//!    to resume the remote session (hello `resumeid` = the remote private id of the first
//!    hello reply). Resumed → `federation_resumed` with `resumed: true`, same ids, and the
//!    messages the client sent meanwhile are sent;
//! 3. resume refused with `no_such_session` (e.g. the remote restarted or the 30 s resume
//!    window passed) → a fresh federation hello with the join's token and a join of the
//!    remote room with the same Talk room session id → `federation_resumed` with
//!    `resumed: false`, then the new room reply (without id) and `join` events, rewritten
//!    with the new remote session id. Queued client messages are dropped, like upstream
//!    (they were meant for the old remote session).
//!
//! Client messages while the link is down are queued (at most [`MAX_PENDING`]; beyond that
//! each one is refused with a `federation_error` that says why). Reconnecting stops when
//! the local session leaves the room or closes ([`FederationLink::close`]). It gives up
//! after [`GIVE_UP_AFTER`] of failed attempts, or at once when the remote refuses the fresh
//! hello or join (most likely `token_expired`: Talk's federation JWT lives 60 s) or ends
//! our remote session (bye `room_session_reconnected` / `session_resumed`). Giving up
//! sends the client an `error` without id carrying the remote's reason (`token_expired`
//! as such, so Talk fetches a fresh token; otherwise `federation_error` with `details`),
//! then `{"type":"room","room":{"roomid":""}}`: the session is out of the federated room
//! and Talk's join logic may join again. Upstream retries forever and sends only the error.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hpb_proto::ErrorCode;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Joined, Remote, RemoteIds, Target, connect, hello_and_join, network_error, next_json,
    remote_code, remote_error, rewrite, send_json,
};
use crate::hub::Hub;
use crate::rooms::Refusal;
use crate::session::Session;

/// Client messages kept while the link is down.
pub const MAX_PENDING: usize = 256;
const INITIAL_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// How long reconnect attempts go on before the client is told the room is gone.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

fn next_delay(d: Duration) -> Duration {
    (d * 2).min(MAX_DELAY)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Joined, waiting for the local room reply to be sent ([`FederationLink::start`]).
    Waiting,
    Running,
    Closed,
}

struct LinkState {
    /// To the writer of the current connection; `None` while the link is down.
    tx: Option<mpsc::UnboundedSender<Message>>,
    pending: VecDeque<String>,
    closed: bool,
}

/// An open link to a remote signaling server for one local session.
pub struct FederationLink {
    target: Target,
    hub: Weak<Hub>,
    session: Weak<Session>,
    ids: Mutex<RemoteIds>,
    state: Mutex<LinkState>,
    phase: watch::Sender<Phase>,
}

/// How a connection ended.
enum End {
    Closed,
    Lost(String),
    /// The remote ended our session on purpose: do not reconnect.
    Ended(Refusal),
}

/// A failed reconnect attempt.
enum Failure {
    Retry(String),
    Fatal(Refusal),
}

/// Transport problems are worth another attempt; refusals by the remote are not.
fn classify(r: Refusal) -> Failure {
    let network = r.code == ErrorCode::FederationError
        && r.details
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
            .is_some_and(|d| d["code"] == "network_error");
    if network {
        Failure::Retry(r.message)
    } else {
        Failure::Fatal(r)
    }
}

/// The remote closed our session on purpose (`reason` of its bye).
fn ended(reason: &str) -> Refusal {
    let message = format!("the remote signaling server ended the federated session ({reason})");
    let details = json!({"code": reason, "message": message});
    Refusal {
        code: ErrorCode::FederationError,
        message,
        details: serde_json::value::to_raw_value(&details).ok(),
    }
}

fn event(kind: &str, resumed: Option<bool>) -> String {
    let mut ev = json!({"target": "room", "type": kind});
    if let Some(r) = resumed {
        ev["resumed"] = Value::Bool(r);
    }
    json!({"type": "event", "event": ev}).to_string()
}

impl FederationLink {
    /// Create the link for a joined remote and spawn its task.
    pub(super) fn spawn(
        hub: &Arc<Hub>,
        s: &Arc<Session>,
        target: Target,
        ids: RemoteIds,
        ws: Remote,
        early: Vec<Value>,
    ) -> Arc<Self> {
        let link = Arc::new(Self {
            target,
            hub: Arc::downgrade(hub),
            session: Arc::downgrade(s),
            ids: Mutex::new(ids),
            state: Mutex::new(LinkState {
                tx: None,
                pending: VecDeque::new(),
                closed: false,
            }),
            phase: watch::channel(Phase::Waiting).0,
        });
        let task = link.clone();
        let (hub, s) = (hub.clone(), s.clone());
        tokio::spawn(async move { task.supervise(hub, s, ws, early).await });
        link
    }

    /// Start proxying remote frames (call after the local room reply was queued).
    pub fn start(&self) {
        self.phase.send_if_modified(|p| {
            let waiting = *p == Phase::Waiting;
            if waiting {
                *p = Phase::Running;
            }
            waiting
        });
    }

    /// Forward a client frame to the remote server (queued while the link is down).
    pub fn forward(&self, local_id: &str, text: &str) {
        let Ok(mut v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let remote = self.ids.lock().session_id.clone();
        rewrite(&mut v, local_id, &remote, None);
        let out = v.to_string();
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        if let Some(tx) = &st.tx
            && tx.send(Message::Text(out.clone().into())).is_ok()
        {
            return;
        }
        if st.pending.len() < MAX_PENDING {
            st.pending.push_back(out);
            return;
        }
        drop(st);
        if let (Some(hub), Some(s)) = (self.hub.upgrade(), self.session.upgrade()) {
            let details = json!({"code": "network_error", "message": "link interrupted"});
            let frame = hpb_proto::server::error(
                v["id"].as_str(),
                ErrorCode::FederationError,
                &format!(
                    "the connection to the remote signaling server is interrupted and \
                     {MAX_PENDING} messages already wait for it; this message was dropped"
                ),
                serde_json::value::to_raw_value(&details).ok().as_deref(),
            );
            hub.deliver(&s, &frame.into());
        }
    }

    /// Say bye to the remote server, close the link and stop reconnecting.
    pub fn close(&self) {
        let tx = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.pending.clear();
            st.tx.take()
        };
        if let Some(tx) = tx {
            let bye = json!({"type": "bye", "bye": {}}).to_string();
            let _ = tx.send(Message::Text(bye.into()));
            let _ = tx.send(Message::Close(None));
        }
        self.phase.send_replace(Phase::Closed);
    }

    async fn wait_phase(&self, want: impl Fn(Phase) -> bool) -> Phase {
        let mut rx = self.phase.subscribe();
        loop {
            let p = *rx.borrow_and_update();
            if want(p) {
                return p;
            }
            if rx.changed().await.is_err() {
                return Phase::Closed;
            }
        }
    }

    async fn closed(&self) {
        self.wait_phase(|p| p == Phase::Closed).await;
    }

    /// Deliver a remote frame to the local session, ids rewritten.
    fn deliver(&self, hub: &Arc<Hub>, s: &Arc<Session>, mut v: Value) {
        let remote = self.ids.lock().session_id.clone();
        let t = &self.target;
        rewrite(
            &mut v,
            &remote,
            &s.public_id,
            Some((&t.remote_room, &t.local_room)),
        );
        hub.deliver(s, &v.to_string().into());
    }

    async fn supervise(
        self: Arc<Self>,
        hub: Arc<Hub>,
        s: Arc<Session>,
        mut ws: Remote,
        early: Vec<Value>,
    ) {
        if self.wait_phase(|p| p != Phase::Waiting).await == Phase::Closed {
            let _ = send_json(&mut ws, &json!({"type": "bye", "bye": {}})).await;
            let _ = ws.close(None).await;
            return;
        }
        let mut frames = early;
        loop {
            let why = match self.run(&hub, &s, ws, frames).await {
                End::Closed => return,
                End::Ended(r) => return self.give_up(&hub, &s, r),
                End::Lost(why) => why,
            };
            tracing::warn!(session = %s.public_id, remote = %self.target.url, reason = %why,
                "federation link lost, reconnecting");
            hub.deliver(&s, &event("federation_interrupted", None).into());
            match self.reconnect(&hub, &s).await {
                None => return,
                Some(Err(r)) => return self.give_up(&hub, &s, r),
                Some(Ok((w, f))) => (ws, frames) = (w, f),
            }
        }
    }

    /// Proxy one connection until it is lost or the link is closed.
    async fn run(&self, hub: &Arc<Hub>, s: &Arc<Session>, ws: Remote, frames: Vec<Value>) -> End {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let ping_every = hub.cfg.limits.ws_ping_interval;
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + ping_every;
            let mut ping = tokio::time::interval_at(start, ping_every);
            loop {
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = ping.tick() => Some(Message::Ping(Default::default())),
                };
                let Some(m) = m else { break };
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        {
            let mut st = self.state.lock();
            if st.closed {
                let bye = json!({"type": "bye", "bye": {}}).to_string();
                let _ = tx.send(Message::Text(bye.into()));
                let _ = tx.send(Message::Close(None));
                return End::Closed;
            }
            let n = st.pending.len();
            for m in st.pending.drain(..) {
                let _ = tx.send(Message::Text(m.into()));
            }
            if n > 0 {
                tracing::info!(session = %s.public_id, count = n, "sent queued federated messages");
            }
            st.tx = Some(tx);
        }
        for v in frames {
            self.deliver(hub, s, v);
        }
        let pong_wait = hub.cfg.limits.ws_pong_timeout;
        let end = loop {
            let next = tokio::select! {
                _ = self.closed() => return End::Closed,
                n = tokio::time::timeout(pong_wait, stream.next()) => n,
            };
            match next {
                Err(_) => {
                    break End::Lost(format!("nothing received for {} s", pong_wait.as_secs()));
                }
                Ok(None) => break End::Lost("the remote closed the connection".into()),
                Ok(Some(Err(e))) => break End::Lost(e.to_string()),
                Ok(Some(Ok(Message::Close(c)))) => {
                    break End::Lost(format!("the remote closed the connection ({c:?})"));
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    if v["type"] != "bye" {
                        self.deliver(hub, s, v);
                        continue;
                    }
                    let reason = v["bye"]["reason"].as_str().unwrap_or_default();
                    if matches!(reason, "room_session_reconnected" | "session_resumed") {
                        break End::Ended(ended(reason));
                    }
                    break End::Lost(format!("the remote said bye ({reason})"));
                }
                Ok(Some(Ok(_))) => {}
            }
        };
        let mut st = self.state.lock();
        if st.closed {
            return End::Closed;
        }
        st.tx = None;
        end
    }

    /// Reconnect with backoff. `None`: the link was closed meanwhile.
    async fn reconnect(
        &self,
        hub: &Arc<Hub>,
        s: &Arc<Session>,
    ) -> Option<Result<(Remote, Vec<Value>), Refusal>> {
        let began = Instant::now();
        let mut delay = INITIAL_DELAY;
        let mut attempts = 0u32;
        loop {
            tokio::select! {
                _ = self.closed() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = next_delay(delay);
            attempts += 1;
            let t = self.target.timeout;
            let r = tokio::select! {
                _ = self.closed() => return None,
                r = tokio::time::timeout(t, self.attempt(hub, s)) => r,
            };
            let why = match r {
                Ok(Ok(done)) => return Some(Ok(done)),
                Ok(Err(Failure::Fatal(r))) => return Some(Err(r)),
                Ok(Err(Failure::Retry(why))) => why,
                Err(_) => format!("no answer within {} s ([federation] timeout)", t.as_secs()),
            };
            tracing::debug!(session = %s.public_id, attempts, reason = %why, "federation reconnect failed");
            if began.elapsed() >= GIVE_UP_AFTER {
                return Some(Err(network_error(format!(
                    "the remote signaling server {} stayed unreachable for {} s ({attempts} attempts, last: {why})",
                    self.target.url,
                    GIVE_UP_AFTER.as_secs()
                ))));
            }
        }
    }

    /// One reconnect: resume, else a fresh hello and join.
    async fn attempt(
        &self,
        hub: &Arc<Hub>,
        s: &Arc<Session>,
    ) -> Result<(Remote, Vec<Value>), Failure> {
        let mut ws = connect(&self.target).await.map_err(classify)?;
        let resume_id = self.ids.lock().resume_id.clone();
        let hello = json!({"id": "1", "type": "hello",
            "hello": {"version": "2.0", "resumeid": resume_id}});
        send_json(&mut ws, &hello).await.map_err(classify)?;
        let reply = next_json(&mut ws).await.map_err(classify)?;
        if reply["type"] == "hello" {
            let mut ids = self.ids.lock();
            let new = super::ids_of(&reply);
            if !new.session_id.is_empty() {
                *ids = new;
            }
            drop(ids);
            tracing::info!(session = %s.public_id, "federation link resumed");
            hub.deliver(s, &event("federation_resumed", Some(true)).into());
            return Ok((ws, Vec::new()));
        }
        match remote_code(&reply) {
            "no_such_session" => {}
            "too_many_requests" => {
                return Err(Failure::Retry("the remote throttles resumes".into()));
            }
            _ => return Err(Failure::Fatal(remote_error(&reply))),
        }
        let Joined {
            ws,
            ids,
            mut reply,
            early,
        } = hello_and_join(&self.target, ws).await.map_err(classify)?;
        *self.ids.lock() = ids;
        let dropped = {
            let mut st = self.state.lock();
            std::mem::take(&mut st.pending).len()
        };
        tracing::info!(session = %s.public_id, dropped, "federation link reconnected with a new remote session");
        hub.deliver(s, &event("federation_resumed", Some(false)).into());
        if let Some(m) = reply.as_object_mut() {
            m.remove("id");
        }
        let mut frames = vec![reply];
        frames.extend(early);
        Ok((ws, frames))
    }

    /// Stop for good and tell the client why (see the module documentation).
    fn give_up(&self, hub: &Arc<Hub>, s: &Arc<Session>, r: Refusal) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.tx = None;
            st.pending.clear();
        }
        self.phase.send_replace(Phase::Closed);
        {
            let mut f = s.federation.lock();
            if f.as_ref()
                .is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), self))
            {
                *f = None;
            }
        }
        tracing::warn!(session = %s.public_id, remote = %self.target.url, code = %r.code,
            reason = %r.message, "federation link given up");
        let err = hpb_proto::server::error(None, r.code, &r.message, r.details.as_deref());
        hub.deliver(s, &err.into());
        let left = json!({"type": "room", "room": {"roomid": ""}}).to_string();
        hub.deliver(s, &left.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_eight_seconds() {
        let mut d = INITIAL_DELAY;
        let mut seen = vec![d];
        for _ in 0..9 {
            d = next_delay(d);
            seen.push(d);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 8000, 8000, 8000]);
    }

    #[test]
    fn events_have_the_upstream_shape() {
        let v: Value =
            serde_json::from_str(&event("federation_resumed", Some(false))).expect("json");
        assert_eq!(
            v,
            json!({"type":"event","event":{"target":"room","type":"federation_resumed","resumed":false}})
        );
        let v: Value = serde_json::from_str(&event("federation_interrupted", None)).expect("json");
        assert_eq!(
            v,
            json!({"type":"event","event":{"target":"room","type":"federation_interrupted"}})
        );
    }

    #[test]
    fn only_network_errors_are_retried() {
        assert!(matches!(
            classify(network_error("x".into())),
            Failure::Retry(_)
        ));
        let refused = remote_error(&json!({"type":"error","error":{"code":"token_expired"}}));
        assert!(matches!(classify(refused), Failure::Fatal(_)));
    }
}
