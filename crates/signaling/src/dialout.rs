//! SIP dial-out (reference §1.12, backend API §2): internal clients with the
//! `start-dialout` feature (a SIP bridge) that are in no room take Nextcloud's `dialout`
//! requests, tried one after another until one accepts; their later call status becomes the
//! room's transient `callstatus_<callid>` and their other dial-out messages go to the room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hpb_proto::client::Dialout;
use hpb_proto::features::CLIENT_START_DIALOUT;
use hpb_proto::server;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::backends::Backend;
use crate::hub::Hub;
use crate::session::{ClientKind, Delivery, Session};
use crate::ws::Conn;

/// How long a call's final status (`cleared`, `rejected`) stays in the room.
pub const FINAL_STATUS_TTL: Duration = Duration::from_secs(5);
const STATUS_KEY_PREFIX: &str = "callstatus_";

/// What a bridge answered to a dial-out request: the call id, or the error to report.
type Answer = Result<String, Value>;
/// A request sent to a bridge: (bridge session, request id).
type RequestKey = (Arc<str>, String);

/// The bridges that can take dial-outs and the requests waiting for their answer.
#[derive(Default)]
pub struct Dialouts {
    /// Internal sessions (by public id) that said `start-dialout` and have not joined a room
    /// since their hello (an internal session in a room cannot dial out, as upstream).
    ready: Mutex<HashMap<Arc<str>, Bridge>>,
    /// (bridge session, request id) → the backend request waiting for its answer.
    pending: Mutex<HashMap<RequestKey, oneshot::Sender<Answer>>>,
}

/// Where a SIP bridge connected from, for serverinfo.
#[derive(Clone)]
struct Bridge {
    address: IpAddr,
    user_agent: Arc<str>,
}

fn error(code: &str, message: impl Into<String>) -> Value {
    json!({"code": code, "message": message.into()})
}

fn error_body(e: &Value) -> String {
    json!({"type": "dialout", "dialout": {"error": e}}).to_string()
}

fn connected(s: &Session) -> bool {
    matches!(*s.delivery.lock(), Delivery::Connected(_))
}

/// Upstream's checks of a dial-out request, in its order: a number, in E.164, for a
/// numeric room.
fn check_request(room_id: &str, request: &RawValue) -> Result<(), Value> {
    let d: Value = serde_json::from_str(request.get()).unwrap_or(Value::Null);
    let number = d.get("number").and_then(Value::as_str).unwrap_or_default();
    if number.is_empty() {
        Err(error(
            "number_missing",
            "No number provided: dialout.number must be an E.164 number like +4930123456",
        ))
    } else if !is_e164(number) {
        Err(error(
            "invalid_number",
            format!("Expected an E.164 number like +4930123456, got {number:?}"),
        ))
    } else if room_id.is_empty() || !room_id.bytes().all(|b| b.is_ascii_digit()) {
        Err(error(
            "invalid_roomid",
            format!("The room id must be numeric for a dial-out, got {room_id:?}"),
        ))
    } else {
        Ok(())
    }
}

/// `^\+\d{2,}$`: what upstream accepts as a dial-out number.
fn is_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| d.len() >= 2 && d.bytes().all(|b| b.is_ascii_digit()))
}

impl Hub {
    /// After hello: a SIP bridge becomes a dial-out candidate.
    pub(crate) fn dialout_hello(&self, s: &Session, conn: &Conn) {
        if s.kind == ClientKind::Internal && s.has_feature(CLIENT_START_DIALOUT) {
            let bridge = Bridge {
                address: conn.ip,
                user_agent: conn.user_agent.clone(),
            };
            self.dialout
                .ready
                .lock()
                .insert(s.public_id.clone(), bridge);
        }
    }

    /// The session joined a room: it takes no more dial-outs.
    pub(crate) fn dialout_forget(&self, s: &Session) {
        if s.kind == ClientKind::Internal {
            self.dialout.ready.lock().remove(&s.public_id);
        }
    }

    /// The session ended: it takes no more dial-outs, and a request waiting for it goes on
    /// to the next bridge at once instead of after the timeout.
    pub(crate) fn dialout_closed(&self, s: &Session) {
        if s.kind == ClientKind::Internal {
            self.dialout_forget(s);
            self.dialout
                .pending
                .lock()
                .retain(|(bridge, _), _| *bridge != s.public_id);
        }
    }

    /// The bridges of `backend` (all with `None`), sorted by session id.
    fn dialout_bridges(&self, backend: Option<&Backend>) -> Vec<(Arc<Session>, Bridge)> {
        let ready: Vec<(Arc<str>, Bridge)> = self
            .dialout
            .ready
            .lock()
            .iter()
            .map(|(id, b)| (id.clone(), b.clone()))
            .collect();
        let mut out: Vec<(Arc<Session>, Bridge)> = ready
            .into_iter()
            .filter_map(|(id, b)| Some((self.session(&id)?, b)))
            .filter(|(s, _)| backend.is_none_or(|b| b.id == s.backend.id))
            .collect();
        out.sort_by(|a, b| a.0.public_id.cmp(&b.0.public_id));
        out
    }

    /// `/api/v1/serverinfo`'s `dialout` list: like upstream, a bridge that is offline
    /// (waiting for a resume) shows only its id.
    pub fn dialout_info(&self) -> Vec<Value> {
        self.dialout_bridges(None)
            .iter()
            .map(|(s, b)| {
                if !connected(s) {
                    return json!({"sessionid": &*s.public_id, "connected": false});
                }
                let version = b
                    .user_agent
                    .split_once('/')
                    .map(|(_, v)| v.split(' ').next().unwrap_or_default())
                    .unwrap_or_default();
                json!({
                    "sessionid": &*s.public_id,
                    "connected": true,
                    "address": b.address.to_string(),
                    "useragent": &*b.user_agent,
                    "version": version,
                    "features": &s.features,
                })
            })
            .collect()
    }

    /// Nextcloud's `dialout` request for `room_id`: checked as upstream checks it, then each
    /// bridge is asked in turn. The body of a 200 reply, or the status and body of the
    /// refusal.
    pub(crate) async fn start_dialout(
        self: &Arc<Self>,
        backend: &Backend,
        room_id: &str,
        request: &RawValue,
    ) -> Result<String, (StatusCode, String)> {
        if let Err(e) = check_request(room_id, request) {
            return Err((StatusCode::BAD_REQUEST, error_body(&e)));
        }
        let candidates: Vec<Arc<Session>> = self
            .dialout_bridges(Some(backend))
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| connected(s))
            .collect();
        if candidates.is_empty() {
            let e = error(
                "no_client_available",
                format!(
                    "No available client found to trigger dialout: no SIP bridge (an internal client with the \"{CLIENT_START_DIALOUT}\" feature, in no room) is connected for backend {}",
                    backend.label()
                ),
            );
            return Err((StatusCode::NOT_FOUND, error_body(&e)));
        }
        let mut first_error = None;
        for bridge in candidates {
            match self.ask_bridge(&bridge, room_id, request).await {
                Ok(callid) => {
                    tracing::info!(room = %room_id, bridge = %bridge.public_id, %callid, "dial-out started");
                    return Ok(
                        json!({"type": "dialout", "dialout": {"callid": callid}}).to_string()
                    );
                }
                Err(e) => {
                    tracing::warn!(room = %room_id, bridge = %bridge.public_id, error = %e, "dial-out refused by a SIP bridge");
                    first_error.get_or_insert(e);
                }
            }
        }
        let e =
            first_error.unwrap_or_else(|| error("error_notify", "No dialout response received."));
        Err((StatusCode::BAD_GATEWAY, error_body(&e)))
    }

    /// Send one bridge the request and wait for its answer.
    async fn ask_bridge(
        self: &Arc<Self>,
        bridge: &Arc<Session>,
        room_id: &str,
        request: &RawValue,
    ) -> Answer {
        let id = hpb_proto::checksum::random_hex(32);
        let mut url = bridge.backend_url.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        let body = json!({"type": "dialout", "dialout": {"roomid": room_id, "backend": url, "request": request}});
        let frame = server::frame(Some(&id), "internal", Some(&body));
        let (tx, rx) = oneshot::channel();
        let key = (bridge.public_id.clone(), id);
        self.dialout.pending.lock().insert(key.clone(), tx);
        // Removed however this ends, also when Nextcloud gives up on the request.
        let _pending = Pending {
            dialouts: &self.dialout,
            key,
        };
        self.deliver(bridge, &frame.into());
        let wait = self.cfg.limits.dialout_timeout;
        let answer = tokio::time::timeout(wait, rx).await;
        match answer {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => Err(error(
                "error_notify",
                format!(
                    "Could not notify about new dialout: the SIP bridge {} disconnected before it answered",
                    bridge.public_id
                ),
            )),
            Err(_) => Err(error(
                "timeout",
                format!(
                    "Timeout while waiting for dialout to start: the SIP bridge {} did not answer within {:?} ([limits] dialout_timeout_ms)",
                    bridge.public_id, wait
                ),
            )),
        }
    }

    /// A `dialout` message of a SIP bridge: the answer to a request (`id`), a call status,
    /// or something for the room.
    pub(crate) fn on_dialout(self: &Arc<Self>, s: &Arc<Session>, id: Option<&str>, d: Dialout) {
        let waiting = id.and_then(|id| {
            self.dialout
                .pending
                .lock()
                .remove(&(s.public_id.clone(), id.to_owned()))
        });
        if let Some(tx) = waiting {
            let answer = match (&d.status, d.kind.as_str()) {
                (Some(st), _) if st.status == "accepted" => Ok(st.callid.clone()),
                (Some(st), _) => Err(error(
                    "unsupported_status",
                    format!(
                        "Unsupported dialout status received: {} (a dial-out is started by \"accepted\")",
                        st.status
                    ),
                )),
                (None, "error") => Err(dialout_error(&d.rest)),
                (None, other) => Err(error(
                    "unsupported_type",
                    format!(
                        "Unsupported dialout type received: {other} (expected status or error)"
                    ),
                )),
            };
            let _ = tx.send(answer);
            // The error answer of a request is Nextcloud's, not the room's.
            if d.kind == "error" {
                return;
            }
        }
        let Some(room) = self.room(&s.backend.id, &d.roomid) else {
            tracing::debug!(session = %s.public_id, room = %d.roomid, kind = %d.kind, "dial-out message for a room without sessions here: dropped");
            return;
        };
        match &d.status {
            Some(st) => {
                let expires = matches!(st.status.as_str(), "cleared" | "rejected")
                    .then(|| Instant::now() + FINAL_STATUS_TTL);
                let key = format!("{STATUS_KEY_PREFIX}{}", st.callid);
                self.set_transient(&room, key, Arc::from(st.raw.clone()), expires);
            }
            None => {
                let frame = server::frame(None, "dialout", Some(&*d.rest));
                self.deliver_room(&room, &frame.into(), None, |r| {
                    r.kind != ClientKind::Virtual
                });
            }
        }
    }
}

/// A request's entry in `Dialouts::pending`, removed when the request ends.
struct Pending<'a> {
    dialouts: &'a Dialouts,
    key: RequestKey,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.dialouts.pending.lock().remove(&self.key);
    }
}

/// The `error` object of a bridge's error answer.
fn dialout_error(rest: &RawValue) -> Value {
    serde_json::from_str::<Value>(rest.get())
        .ok()
        .and_then(|v| v.get("error").cloned())
        .unwrap_or_else(|| error("error_notify", "the SIP bridge sent an empty error"))
}

#[cfg(test)]
mod tests {
    use super::is_e164;

    #[test]
    fn dialout_numbers_follow_upstreams_pattern() {
        for ok in ["+49", "+4930123456", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "", "+", "+4", "4930123", "+49 30", "+49-30", "++49", "+４９",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}
