//! The signaling side of the MCU port (reference §1.10): with a media plane plugged in,
//! media messages inside `message` are validated, checked against permissions and turned
//! into [`McuCommand`]s; replies and [`McuEvent`]s become frames for the clients in
//! upstream's shapes; a session's media is closed when it leaves the call or the room,
//! and publishers it may no longer send are closed when its permissions shrink.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hpb_proto::ErrorCode;
use hpb_proto::client::{Recipient, RelayMessage};
use hpb_proto::mcu::{
    IceCandidate, McuCommand, McuError, McuEvent, McuReply, Selection, StreamType,
};
use hpb_proto::server;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::hub::Hub;
use crate::mcu::Mcu;
use crate::rooms::Refusal;
use crate::session::{ClientKind, Session};

/// Permissions from Nextcloud that govern publishing (reference §6 item 7).
pub const PERM_PUBLISH_AUDIO: &str = "publish-audio";
pub const PERM_PUBLISH_VIDEO: &str = "publish-video";
pub const PERM_PUBLISH_MEDIA: &str = "publish-media";
pub const PERM_PUBLISH_SCREEN: &str = "publish-screen";

/// How long after an `unshareScreen` the screen publisher is closed (upstream's Firefox
/// cleanup workaround, reference §1.15).
pub const UNSHARE_SCREEN_DELAY: Duration = Duration::from_secs(1);

/// One stream a session publishes.
#[derive(Debug, Clone)]
struct Published {
    /// The sid of its latest offer.
    sid: String,
    room_type: String,
    /// Whether its last offer had `m=audio` / `m=video` (for permission changes).
    audio: bool,
    video: bool,
}

/// One subscription of a session to another session's stream.
#[derive(Debug, Clone)]
struct Subscribed {
    sid: String,
    room_type: String,
}

/// What one session has on the media plane.
#[derive(Debug, Default)]
struct SessionMedia {
    publishers: HashMap<StreamType, Published>,
    /// By (publisher public id, stream).
    subscriptions: HashMap<(Arc<str>, StreamType), Subscribed>,
}

/// The plugged-in media plane and what signaling knows of its state.
pub struct Media {
    mcu: Arc<dyn Mcu>,
    /// By session public id; an entry exists once the session sent a media command.
    sessions: Mutex<HashMap<Arc<str>, SessionMedia>>,
    /// Woken whenever a publisher appears (subscribers wait for their publisher).
    published: Notify,
    pub commands_total: AtomicU64,
    pub failures_total: AtomicU64,
}

/// The `mcu` object of `/api/v1/stats` (and the `sfu` object of serverinfo).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MediaStats {
    pub connected: bool,
    pub publishers: usize,
    pub subscribers: usize,
    /// Sessions with anything on the media plane.
    pub clients: usize,
    pub commands: u64,
    pub failures: u64,
}

impl Media {
    pub fn new(mcu: Arc<dyn Mcu>) -> Self {
        Self {
            mcu,
            sessions: Mutex::new(HashMap::new()),
            published: Notify::new(),
            commands_total: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> MediaStats {
        let st = self.sessions.lock();
        MediaStats {
            connected: true,
            publishers: st.values().map(|m| m.publishers.len()).sum(),
            subscribers: st.values().map(|m| m.subscriptions.len()).sum(),
            clients: st.len(),
            commands: self.commands_total.load(Ordering::Relaxed),
            failures: self.failures_total.load(Ordering::Relaxed),
        }
    }

    /// Make sure the session has an entry (so leaving closes it on the media plane).
    fn touch(&self, session: &Arc<str>) {
        self.sessions.lock().entry(session.clone()).or_default();
    }

    fn has_publisher(&self, session: &str, stream: StreamType) -> bool {
        self.publisher_sid(session, stream).is_some()
    }

    fn publisher_sid(&self, session: &str, stream: StreamType) -> Option<String> {
        self.sessions
            .lock()
            .get(session)?
            .publishers
            .get(&stream)
            .map(|p| p.sid.clone())
    }

    fn subscription(
        &self,
        subscriber: &str,
        publisher: &str,
        stream: StreamType,
    ) -> Option<Subscribed> {
        self.sessions
            .lock()
            .get(subscriber)?
            .subscriptions
            .get(&(Arc::from(publisher), stream))
            .cloned()
    }

    /// Record a publisher; false when the session's media was closed meanwhile.
    fn add_publisher(&self, session: &str, stream: StreamType, p: Published) -> bool {
        let added = match self.sessions.lock().get_mut(session) {
            Some(m) => {
                m.publishers.insert(stream, p);
                true
            }
            None => false,
        };
        if added {
            self.published.notify_waiters();
        }
        added
    }

    /// Forget a publisher and the subscriptions to it; whether it was known.
    fn remove_publisher(&self, session: &str, stream: StreamType) -> bool {
        let mut st = self.sessions.lock();
        let known = st
            .get_mut(session)
            .is_some_and(|m| m.publishers.remove(&stream).is_some());
        for m in st.values_mut() {
            m.subscriptions
                .retain(|(p, s), _| !(**p == *session && *s == stream));
        }
        known
    }

    /// Wait (up to `timeout`) until `session` publishes `stream`.
    async fn wait_publisher(&self, session: &str, stream: StreamType, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.published.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_publisher(session, stream) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.has_publisher(session, stream);
            }
        }
    }

    /// Send a command whose reply nobody waits for (closing); failures are logged. The
    /// command is handed to the media plane before this returns, so order is kept.
    fn fire(&self, cmd: McuCommand, timeout: Duration) {
        self.commands_total.fetch_add(1, Ordering::Relaxed);
        let what = format!("{cmd:?}");
        let fut = self.mcu.request(cmd);
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(McuReply::Error(e)) => {
                    tracing::warn!(code = %e.code, reason = %e.message, command = %what, "the media server refused a close");
                }
                Err(_) => {
                    tracing::warn!(command = %what, "the media server did not answer a close in time");
                }
                Ok(_) => {}
            }
        });
    }
}

/// The parsed `data` of a media message (upstream's `MessageClientMessageData`). A JSON
/// shape that does not fit (data not an object, `type` not a string, ...) is not a media
/// message and is relayed unchanged, like upstream does when unmarshalling fails.
#[derive(Deserialize)]
struct RawData {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default, rename = "roomType")]
    room_type: Option<String>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    #[serde(default)]
    bitrate: Option<i64>,
}

/// An SDP that passed the light check.
struct Sdp {
    text: String,
    audio: bool,
    video: bool,
}

/// A validated media message.
struct McuData {
    kind: String,
    sid: String,
    room_type: String,
    stream: StreamType,
    payload: Map<String, Value>,
    bitrate: i64,
    sdp: Option<Sdp>,
    candidate: Option<IceCandidate>,
}

fn details(error: &str) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&json!({ "error": error })).ok()
}

/// A light SDP check (not a parser): `v=0` first, at least one `m=` line.
fn check_sdp(text: &str) -> Result<Sdp, String> {
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return Err("the SDP does not start with \"v=0\"".into());
    }
    let (mut media, mut audio, mut video) = (false, false, false);
    for l in lines {
        if let Some(rest) = l.strip_prefix("m=") {
            media = true;
            match rest.split(' ').next() {
                Some("audio") => audio = true,
                Some("video") => video = true,
                _ => {}
            }
        }
    }
    if !media {
        return Err("the SDP has no media section (no \"m=\" line)".into());
    }
    Ok(Sdp {
        text: text.to_string(),
        audio,
        video,
    })
}

/// A light ICE candidate check: `candidate:<foundation> <component> <transport> <priority>
/// <address> <port> typ <type> ...`.
fn check_candidate(c: &str) -> Result<(), String> {
    let body = c.strip_prefix("a=").unwrap_or(c);
    let body = body.strip_prefix("candidate:").unwrap_or(body);
    let f: Vec<&str> = body.split_whitespace().collect();
    let numeric = |i: usize| f.get(i).is_some_and(|x| x.parse::<u64>().is_ok());
    if f.len() < 8 || f[6] != "typ" || !numeric(1) || !numeric(3) || !numeric(5) {
        return Err(format!(
            "expected \"candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>\", got {c:?}"
        ));
    }
    Ok(())
}

fn parse_candidate(payload: &Map<String, Value>) -> Result<IceCandidate, Refusal> {
    let invalid = || {
        Refusal::new(
            ErrorCode::InvalidCandidate,
            "Payload does not contain a valid candidate: payload.candidate must be an object with a \"candidate\" string",
        )
    };
    let Some(c) = payload.get("candidate") else {
        return Err(Refusal::new(
            ErrorCode::NoCandidate,
            "Payload does not contain a candidate: a \"candidate\" message needs payload.candidate",
        ));
    };
    let Some(obj) = c.as_object() else {
        return Err(invalid());
    };
    let Some(text) = obj.get("candidate").and_then(Value::as_str) else {
        return Err(invalid());
    };
    if !text.is_empty()
        && let Err(e) = check_candidate(text)
    {
        return Err(Refusal {
            code: ErrorCode::InvalidCandidate,
            message: "Error parsing candidate from payload.".into(),
            details: details(&e),
        });
    }
    Ok(IceCandidate {
        candidate: text.to_string(),
        sdp_mid: obj
            .get("sdpMid")
            .and_then(Value::as_str)
            .map(str::to_string),
        sdp_mline_index: obj
            .get("sdpMLineIndex")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok()),
    })
}

/// `None`: not a media message (relay it as is); else the validated message or why not.
fn parse_data(raw: &RawValue) -> Option<Result<McuData, Refusal>> {
    let d: RawData = serde_json::from_str(raw.get()).ok()?;
    Some(validate(d))
}

fn validate(d: RawData) -> Result<McuData, Refusal> {
    let kind = d.kind.unwrap_or_default();
    if kind.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidFormat,
            "with an SFU, session messages need a non-empty data.type (offer, answer, candidate, requestoffer, ...)",
        ));
    }
    let room_type = d.room_type.unwrap_or_default();
    let stream = match room_type.as_str() {
        "" | "audio" | "video" => StreamType::Video,
        "screen" => StreamType::Screen,
        other => {
            return Err(Refusal::new(
                ErrorCode::InvalidFormat,
                format!(
                    "invalid data.roomType {other:?}: use \"video\", \"screen\", \"audio\" or leave it empty"
                ),
            ));
        }
    };
    let payload = d.payload.unwrap_or_default();
    let mut sdp = None;
    let mut candidate = None;
    match kind.as_str() {
        "offer" | "answer" => {
            let Some(v) = payload.get("sdp") else {
                return Err(Refusal::new(
                    ErrorCode::NoSdp,
                    format!("Payload does not contain a SDP: an \"{kind}\" needs payload.sdp"),
                ));
            };
            let Some(text) = v.as_str() else {
                return Err(Refusal::new(
                    ErrorCode::InvalidSdp,
                    "Payload does not contain a valid SDP: payload.sdp must be a string",
                ));
            };
            match check_sdp(text) {
                Ok(s) => sdp = Some(s),
                Err(e) => {
                    return Err(Refusal {
                        code: ErrorCode::InvalidSdp,
                        message: format!("Error parsing SDP from payload: {e}"),
                        details: details(&e),
                    });
                }
            }
        }
        "candidate" => candidate = Some(parse_candidate(&payload)?),
        _ => {}
    }
    Ok(McuData {
        kind,
        sid: d.sid.unwrap_or_default(),
        room_type,
        stream,
        payload,
        bitrate: d.bitrate.unwrap_or(0),
        sdp,
        candidate,
    })
}

/// One layer value of `requestoffer` / `selectStream` (ints; floats are truncated like
/// upstream's conversion).
fn layer(payload: &Map<String, Value>, key: &str) -> Result<Option<u8>, String> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64));
            v.and_then(|v| u8::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| format!("payload.{key} {n} is out of range (0 to 2)"))
        }
        Some(other) => Err(format!("payload.{key} must be a number, got {other}")),
    }
}

fn flag(payload: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match payload.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("payload.{key} must be true or false, got {other}")),
    }
}

fn selection(payload: &Map<String, Value>) -> Result<Selection, Refusal> {
    let parse = || -> Result<Selection, String> {
        Ok(Selection {
            substream: layer(payload, "substream")?,
            temporal: layer(payload, "temporal")?,
            audio: flag(payload, "audio")?,
            video: flag(payload, "video")?,
        })
    };
    parse().map_err(|e| Refusal::new(ErrorCode::ProcessingFailed, e))
}

/// Whether `s` may publish `stream` (offers: by the SDP's media sections); the missing
/// permission otherwise.
fn may_publish(
    s: &Session,
    stream: StreamType,
    sdp: Option<(bool, bool)>,
) -> Result<(), &'static str> {
    if stream == StreamType::Screen {
        return if s.has_permission(PERM_PUBLISH_SCREEN) {
            Ok(())
        } else {
            Err(PERM_PUBLISH_SCREEN)
        };
    }
    if s.has_permission(PERM_PUBLISH_MEDIA) {
        return Ok(());
    }
    match sdp {
        Some((audio, video)) => {
            if audio && !s.has_permission(PERM_PUBLISH_AUDIO) {
                return Err(PERM_PUBLISH_AUDIO);
            }
            if video && !s.has_permission(PERM_PUBLISH_VIDEO) {
                return Err(PERM_PUBLISH_VIDEO);
            }
            Ok(())
        }
        None if s.has_permission(PERM_PUBLISH_AUDIO) || s.has_permission(PERM_PUBLISH_VIDEO) => {
            Ok(())
        }
        None => Err("publish-audio\" or \"publish-video"),
    }
}

/// The sender object of a frame from `session` (no `userid` when empty).
fn sender(session: &str, userid: &str) -> Value {
    let mut v = json!({"type": "session", "sessionid": session});
    if !userid.is_empty() {
        v["userid"] = json!(userid);
    }
    v
}

fn message_frame(sender: Value, data: Value) -> String {
    json!({"type": "message", "message": {"sender": sender, "data": data}}).to_string()
}

/// An SFU offer to `subscriber`, as if sent by `publisher` (upstream's shape).
fn offer_frame(subscriber: &str, publisher: &str, room_type: &str, sid: &str, sdp: &str) -> String {
    message_frame(
        sender(publisher, ""),
        json!({"to": subscriber, "from": publisher, "type": "offer", "roomType": room_type,
            "payload": {"type": "offer", "sdp": sdp}, "sid": sid}),
    )
}

fn mcu_refusal(e: McuError, what: &str) -> Refusal {
    let code = ErrorCode::from_mcu(&e.code).unwrap_or(ErrorCode::ProcessingFailed);
    let base = match code {
        ErrorCode::ClientNotFound => "No MCU client found to send message to.",
        _ => "The media server could not process the message.",
    };
    let mut message = format!("{base} While {what}, the media server answered {}", e.code);
    if !e.message.is_empty() {
        message.push_str(": ");
        message.push_str(&e.message);
    }
    Refusal::new(code, message)
}

/// A message's sid must be empty or the one of its connection (upstream's Janus clients).
fn check_sid(what: &str, sent: &str, known: &str, client: &str) -> Result<(), Refusal> {
    if sent.is_empty() || sent == known {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::ProcessingFailed,
        format!("{what} message sid ({sent}) does not match {client} sid ({known})"),
    ))
}

fn reply_kind(r: &McuReply) -> &'static str {
    match r {
        McuReply::Answer { .. } => "an answer",
        McuReply::Offer { .. } => "an offer",
        McuReply::Done => "done",
        McuReply::Error(_) => "an error",
    }
}

impl Hub {
    /// A `message` while an MCU is plugged in: takes the media messages (reference
    /// §1.10) and returns whether the message is still to be relayed.
    pub async fn media_message(
        self: &Arc<Self>,
        s: &Arc<Session>,
        id: Option<&str>,
        m: &RelayMessage,
    ) -> bool {
        let Some(media) = self.media.clone() else {
            return true;
        };
        let target = match &m.recipient {
            Recipient::Session(t) => t.clone(),
            Recipient::Room | Recipient::Call => {
                if s.room().is_some()
                    && let Some(Err(r)) = parse_data(&m.data)
                {
                    self.media_refuse(s, id, r);
                    return false;
                }
                return true;
            }
            Recipient::User(_) => return true,
        };
        let data = match parse_data(&m.data) {
            None => return true,
            Some(Err(r)) => {
                self.media_refuse(s, id, r);
                return false;
            }
            Some(Ok(d)) => d,
        };
        let own = *target == *s.public_id;
        match data.kind.as_str() {
            "offer" => self.media_publish(&media, s, id, data).await,
            "answer" => self.media_answer(&media, s, id, &target, data).await,
            "candidate" => self.media_candidate(&media, s, id, &target, data).await,
            "selectStream" => {
                if !own {
                    self.media_select(&media, s, id, &target, data).await;
                }
            }
            "endOfCandidates" => {}
            "requestoffer" => {
                if own {
                    tracing::debug!(session = %s.public_id, "requestoffer from oneself ignored");
                    return false;
                }
                let hub = self.clone();
                let s = s.clone();
                let id = id.map(str::to_string);
                tokio::spawn(async move {
                    hub.media_request_offer(&media, &s, id.as_deref(), target, data)
                        .await;
                });
            }
            "sendoffer" => return self.media_send_offer(media, s, id, &target, data),
            "unshareScreen" => {
                if own {
                    let weak = Arc::downgrade(self);
                    let session = s.public_id.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(UNSHARE_SCREEN_DELAY).await;
                        let Some(hub) = weak.upgrade() else { return };
                        if media.remove_publisher(&session, StreamType::Screen) {
                            tracing::debug!(session = %session, "closing the screen publisher after unshareScreen");
                            media.fire(
                                McuCommand::Unpublish {
                                    session: session.to_string(),
                                    stream: StreamType::Screen,
                                },
                                hub.cfg.mcu_timeout,
                            );
                        }
                    });
                }
                return true;
            }
            _ => return true,
        }
        false
    }

    fn media_refuse(self: &Arc<Self>, s: &Arc<Session>, id: Option<&str>, r: Refusal) {
        tracing::warn!(session = %s.public_id, backend = %s.backend.id, code = %r.code, reason = %r.message, "media message refused");
        if let Some(media) = &self.media {
            media.failures_total.fetch_add(1, Ordering::Relaxed);
        }
        let frame = server::error(id, r.code, &r.message, r.details.as_deref());
        self.deliver(s, &frame.into());
    }

    /// One request to the media plane with the `[mcu] timeout`; errors become refusals.
    async fn mcu_call(
        &self,
        media: &Media,
        cmd: McuCommand,
        what: &str,
    ) -> Result<McuReply, Refusal> {
        media.commands_total.fetch_add(1, Ordering::Relaxed);
        let fut = media.mcu.request(cmd);
        match tokio::time::timeout(self.cfg.mcu_timeout, fut).await {
            Err(_) => Err(Refusal::new(
                ErrorCode::ProcessingFailed,
                format!(
                    "The media server did not answer within {} ms ([mcu] timeout) while {what}.",
                    self.cfg.mcu_timeout.as_millis()
                ),
            )),
            Ok(McuReply::Error(e)) => Err(mcu_refusal(e, what)),
            Ok(r) => Ok(r),
        }
    }

    /// Bits/s for a new stream: the client's value capped by the backend's and the SFU's
    /// maximum (0 anywhere = no limit from there), like upstream.
    fn capped_bitrate(&self, s: &Session, stream: StreamType, client: i64) -> u64 {
        let (backend_max, mcu_max) = match stream {
            StreamType::Screen => (
                s.backend.max_screen_bitrate,
                self.cfg.mcu_max_screen_bitrate,
            ),
            StreamType::Video => (
                s.backend.max_stream_bitrate,
                self.cfg.mcu_max_stream_bitrate,
            ),
        };
        let mut b = u64::try_from(client).unwrap_or(0);
        for max in [backend_max, mcu_max] {
            if b == 0 {
                b = max;
            } else if max > 0 {
                b = b.min(max);
            }
        }
        b
    }

    async fn media_publish(
        self: &Arc<Self>,
        media: &Media,
        s: &Arc<Session>,
        id: Option<&str>,
        d: McuData,
    ) {
        let Some(sdp) = d.sdp else { return };
        if let Err(perm) = may_publish(s, d.stream, Some((sdp.audio, sdp.video))) {
            return self.media_refuse(
                s,
                id,
                Refusal::new(
                    ErrorCode::NotAllowed,
                    format!("Not allowed to publish. The session lacks the \"{perm}\" permission in this conversation."),
                ),
            );
        }
        let max_bitrate = self.capped_bitrate(s, d.stream, d.bitrate);
        media.touch(&s.public_id);
        let cmd = McuCommand::Publish {
            session: s.public_id.to_string(),
            stream: d.stream,
            sid: d.sid.clone(),
            sdp: sdp.text,
            max_bitrate,
        };
        let what = format!("publishing the {} stream", d.stream.as_str());
        match self.mcu_call(media, cmd, &what).await {
            Ok(McuReply::Answer { sdp: answer }) => {
                let published = Published {
                    sid: d.sid.clone(),
                    room_type: d.room_type.clone(),
                    audio: sdp.audio,
                    video: sdp.video,
                };
                if !media.add_publisher(&s.public_id, d.stream, published) {
                    // The session left meanwhile: close what was just made.
                    media.fire(
                        McuCommand::CloseSession {
                            session: s.public_id.to_string(),
                        },
                        self.cfg.mcu_timeout,
                    );
                    return;
                }
                let own = &*s.public_id;
                let frame = message_frame(
                    sender(own, &s.user_id()),
                    json!({"to": own, "from": own, "type": "answer", "roomType": d.room_type,
                        "payload": {"type": "answer", "sdp": answer}, "sid": d.sid}),
                );
                self.deliver(s, &frame.into());
            }
            Ok(other) => self.media_refuse(
                s,
                id,
                Refusal::new(
                    ErrorCode::ProcessingFailed,
                    format!(
                        "The media server answered the offer with {} instead of an SDP answer",
                        reply_kind(&other)
                    ),
                ),
            ),
            Err(r) => self.media_refuse(s, id, r),
        }
    }

    fn no_subscription(publisher: &str, stream: StreamType) -> Refusal {
        Refusal::new(
            ErrorCode::ClientNotFound,
            format!(
                "No MCU client found to send message to: this session has no subscription to the {} stream of {publisher}; send a requestoffer first",
                stream.as_str()
            ),
        )
    }

    async fn media_answer(
        self: &Arc<Self>,
        media: &Media,
        s: &Arc<Session>,
        id: Option<&str>,
        target: &str,
        d: McuData,
    ) {
        let Some(sdp) = d.sdp else { return };
        if *target == *s.public_id {
            return self.media_refuse(
                s,
                id,
                Refusal::new(
                    ErrorCode::ProcessingFailed,
                    "An answer goes to the publisher's session: a publisher sends its offer to its own session and receives the answer",
                ),
            );
        }
        let Some(sub) = media.subscription(&s.public_id, target, d.stream) else {
            return self.media_refuse(s, id, Self::no_subscription(target, d.stream));
        };
        if let Err(r) = check_sid("Answer", &d.sid, &sub.sid, "subscriber") {
            return self.media_refuse(s, id, r);
        }
        let cmd = McuCommand::SubscriberAnswer {
            subscriber: s.public_id.to_string(),
            publisher: target.to_string(),
            stream: d.stream,
            sid: d.sid,
            sdp: sdp.text,
        };
        if let Err(r) = self
            .mcu_call(media, cmd, "applying the subscriber's answer")
            .await
        {
            self.media_refuse(s, id, r);
        }
    }

    async fn media_candidate(
        self: &Arc<Self>,
        media: &Media,
        s: &Arc<Session>,
        id: Option<&str>,
        target: &str,
        d: McuData,
    ) {
        let Some(candidate) = d.candidate else { return };
        if *target == *s.public_id {
            if let Err(perm) = may_publish(s, d.stream, None) {
                return self.media_refuse(
                    s,
                    id,
                    Refusal::new(
                        ErrorCode::NotAllowed,
                        format!("Not allowed to send candidate. The session lacks the \"{perm}\" permission in this conversation."),
                    ),
                );
            }
            let Some(sid) = media.publisher_sid(target, d.stream) else {
                return self.media_refuse(
                    s,
                    id,
                    Refusal::new(
                        ErrorCode::ClientNotFound,
                        format!(
                            "No MCU client found to send message to: this session does not publish a {} stream; send the offer first",
                            d.stream.as_str()
                        ),
                    ),
                );
            };
            if let Err(r) = check_sid("Candidate", &d.sid, &sid, "publisher") {
                return self.media_refuse(s, id, r);
            }
        } else {
            let Some(sub) = media.subscription(&s.public_id, target, d.stream) else {
                return self.media_refuse(s, id, Self::no_subscription(target, d.stream));
            };
            if let Err(r) = check_sid("Candidate", &d.sid, &sub.sid, "subscriber") {
                return self.media_refuse(s, id, r);
            }
        }
        let cmd = McuCommand::Candidate {
            session: s.public_id.to_string(),
            publisher: target.to_string(),
            stream: d.stream,
            sid: d.sid,
            candidate,
        };
        if let Err(r) = self.mcu_call(media, cmd, "adding the ICE candidate").await {
            self.media_refuse(s, id, r);
        }
    }

    async fn media_select(
        self: &Arc<Self>,
        media: &Media,
        s: &Arc<Session>,
        id: Option<&str>,
        target: &str,
        d: McuData,
    ) {
        let sel = match selection(&d.payload) {
            Ok(x) => x,
            Err(r) => return self.media_refuse(s, id, r),
        };
        if media.subscription(&s.public_id, target, d.stream).is_none() {
            return self.media_refuse(s, id, Self::no_subscription(target, d.stream));
        }
        let cmd = McuCommand::SelectStream {
            subscriber: s.public_id.to_string(),
            publisher: target.to_string(),
            stream: d.stream,
            selection: sel,
        };
        if let Err(r) = self.mcu_call(media, cmd, "selecting the stream").await {
            self.media_refuse(s, id, r);
        }
    }

    /// Whether `s` may subscribe to `target`: same room, both in the call (internal
    /// clients always), like upstream's isInSameCall.
    fn in_same_call(&self, s: &Session, target: &str) -> bool {
        if s.is_internal() {
            return true;
        }
        let Some(room) = s.room() else { return false };
        if s.state.lock().in_call & 1 == 0 {
            return false;
        }
        let Some(t) = self.session(target) else {
            return false;
        };
        let Some(troom) = t.room() else { return false };
        Arc::ptr_eq(&room, &troom) && (t.is_internal() || t.state.lock().in_call & 1 != 0)
    }

    async fn media_request_offer(
        self: &Arc<Self>,
        media: &Media,
        s: &Arc<Session>,
        id: Option<&str>,
        target: String,
        d: McuData,
    ) {
        if !self.cfg.allow_subscribe_any && !self.in_same_call(s, &target) {
            return self.media_refuse(
                s,
                id,
                Refusal::new(
                    ErrorCode::NotAllowed,
                    "Not allowed to request offer. Both sessions must be in the same conversation and in its call ([app] allowsubscribeany lifts this)",
                ),
            );
        }
        let sel = match selection(&d.payload) {
            Ok(x) => x,
            Err(r) => return self.media_refuse(s, id, r),
        };
        let publisher: Arc<str> = Arc::from(target.as_str());
        self.media_subscribe(media, s, &publisher, s, id, d, sel)
            .await;
    }

    /// `sendoffer`: the publisher `s` makes `target` subscribe to its stream. Returns
    /// whether to relay the message (never: unknown targets are dropped like any message).
    fn media_send_offer(
        self: &Arc<Self>,
        media: Arc<Media>,
        s: &Arc<Session>,
        id: Option<&str>,
        target: &str,
        d: McuData,
    ) -> bool {
        let Some(t) = self.session(target) else {
            tracing::debug!(session = %s.public_id, target, "sendoffer to an unknown session dropped");
            return false;
        };
        if Arc::ptr_eq(&t, s) || t.backend.id != s.backend.id || t.kind == ClientKind::Virtual {
            return false;
        }
        if let Err(perm) = may_publish(s, d.stream, None) {
            self.media_refuse(
                s,
                id,
                Refusal::new(
                    ErrorCode::NotAllowed,
                    format!("Not allowed to send offer. The session lacks the \"{perm}\" permission in this conversation."),
                ),
            );
            return false;
        }
        let sel = match selection(&d.payload) {
            Ok(x) => x,
            Err(r) => {
                self.media_refuse(s, id, r);
                return false;
            }
        };
        let hub = self.clone();
        let s = s.clone();
        let id = id.map(str::to_string);
        tokio::spawn(async move {
            let publisher = s.public_id.clone();
            hub.media_subscribe(&media, &t, &publisher, &s, id.as_deref(), d, sel)
                .await;
        });
        false
    }

    /// Subscribe `subscriber` to `publisher`'s stream once it exists and deliver the SFU's
    /// offer to the subscriber; refusals go to `requester` (with its request id).
    #[allow(clippy::too_many_arguments)]
    async fn media_subscribe(
        self: &Arc<Self>,
        media: &Media,
        subscriber: &Arc<Session>,
        publisher: &Arc<str>,
        requester: &Arc<Session>,
        id: Option<&str>,
        d: McuData,
        sel: Selection,
    ) {
        if !media
            .wait_publisher(publisher, d.stream, self.cfg.mcu_timeout)
            .await
        {
            return self.media_refuse(
                requester,
                id,
                Refusal::new(
                    ErrorCode::ClientNotFound,
                    format!(
                        "No MCU client found to send message to: {publisher} did not publish a {} stream within {} ms ([mcu] timeout)",
                        d.stream.as_str(),
                        self.cfg.mcu_timeout.as_millis()
                    ),
                ),
            );
        }
        if subscriber.state.lock().closed {
            return;
        }
        media.touch(&subscriber.public_id);
        let cmd = McuCommand::Subscribe {
            subscriber: subscriber.public_id.to_string(),
            publisher: publisher.to_string(),
            stream: d.stream,
            sid: d.sid.clone(),
            selection: sel,
        };
        let what = format!(
            "subscribing to the {} stream of {publisher}",
            d.stream.as_str()
        );
        match self.mcu_call(media, cmd, &what).await {
            Ok(McuReply::Offer { sdp, sid }) => {
                let known = {
                    let mut st = media.sessions.lock();
                    match st.get_mut(&subscriber.public_id) {
                        Some(m) => {
                            m.subscriptions.insert(
                                (publisher.clone(), d.stream),
                                Subscribed {
                                    sid: sid.clone(),
                                    room_type: d.room_type.clone(),
                                },
                            );
                            true
                        }
                        None => false,
                    }
                };
                if !known {
                    media.fire(
                        McuCommand::CloseSession {
                            session: subscriber.public_id.to_string(),
                        },
                        self.cfg.mcu_timeout,
                    );
                    return;
                }
                let frame = offer_frame(&subscriber.public_id, publisher, &d.room_type, &sid, &sdp);
                self.deliver(subscriber, &frame.into());
            }
            Ok(other) => self.media_refuse(
                requester,
                id,
                Refusal::new(
                    ErrorCode::ProcessingFailed,
                    format!("The media server answered the subscription with {} instead of an SDP offer", reply_kind(&other)),
                ),
            ),
            Err(r) => self.media_refuse(requester, id, r),
        }
    }

    /// The session left the room or closed: close everything it has on the media plane.
    pub fn media_session_gone(self: &Arc<Self>, s: &Session) {
        let Some(media) = &self.media else { return };
        let known = {
            let mut st = media.sessions.lock();
            let known = st.remove(&s.public_id).is_some();
            for m in st.values_mut() {
                m.subscriptions.retain(|(p, _), _| **p != *s.public_id);
            }
            known
        };
        if known {
            tracing::debug!(session = %s.public_id, "closing the session's media");
            media.fire(
                McuCommand::CloseSession {
                    session: s.public_id.to_string(),
                },
                self.cfg.mcu_timeout,
            );
        }
    }

    /// The session's call flags changed from `old` to `new`: leaving the call (bit 1
    /// cleared) closes its media, like upstream's LeaveCall.
    pub fn media_call_flags(self: &Arc<Self>, s: &Session, old: i64, new: i64) {
        if old & 1 != 0 && new & 1 == 0 {
            self.media_session_gone(s);
        }
    }

    /// The session's permissions changed: close the publishers it may no longer send.
    pub fn media_permissions_changed(self: &Arc<Self>, s: &Session) {
        let Some(media) = &self.media else { return };
        let publishers: Vec<(StreamType, Published)> = media
            .sessions
            .lock()
            .get(&s.public_id)
            .map(|m| m.publishers.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        for (stream, p) in publishers {
            let sdp = (stream == StreamType::Video).then_some((p.audio, p.video));
            if let Err(perm) = may_publish(s, stream, sdp)
                && media.remove_publisher(&s.public_id, stream)
            {
                tracing::info!(session = %s.public_id, stream = stream.as_str(), missing = perm, "permission withdrawn: closing the publisher");
                media.fire(
                    McuCommand::Unpublish {
                        session: s.public_id.to_string(),
                        stream,
                    },
                    self.cfg.mcu_timeout,
                );
            }
        }
    }

    /// Read the media plane's events until the hub or the channel goes away.
    pub fn spawn_media_events(self: &Arc<Self>, mut events: UnboundedReceiver<McuEvent>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(hub) = weak.upgrade() else { break };
                hub.media_event(ev);
            }
        });
    }

    fn media_event(self: &Arc<Self>, ev: McuEvent) {
        let Some(media) = self.media.clone() else {
            return;
        };
        match ev {
            McuEvent::Candidate {
                session,
                publisher,
                stream,
                sid,
                candidate,
            } => {
                let Some(s) = self.session(&session) else {
                    return;
                };
                let room_type = {
                    let st = media.sessions.lock();
                    let m = st.get(&*s.public_id);
                    if session == publisher {
                        m.and_then(|m| m.publishers.get(&stream))
                            .map(|p| p.room_type.clone())
                    } else {
                        m.and_then(|m| {
                            m.subscriptions
                                .get(&(Arc::from(publisher.as_str()), stream))
                        })
                        .map(|x| x.room_type.clone())
                    }
                }
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| stream.as_str().to_string());
                let frame = message_frame(
                    sender(&publisher, ""),
                    json!({"to": session, "from": publisher, "type": "candidate", "roomType": room_type,
                        "sid": sid, "payload": {"candidate": candidate}}),
                );
                self.deliver(&s, &frame.into());
            }
            McuEvent::Offer {
                subscriber,
                publisher,
                stream,
                sid,
                sdp,
            } => {
                let Some(s) = self.session(&subscriber) else {
                    return;
                };
                let room_type = {
                    let mut st = media.sessions.lock();
                    st.get_mut(&*s.public_id)
                        .and_then(|m| {
                            m.subscriptions
                                .get_mut(&(Arc::from(publisher.as_str()), stream))
                        })
                        .map(|x| {
                            x.sid = sid.clone();
                            x.room_type.clone()
                        })
                }
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| stream.as_str().to_string());
                let frame = offer_frame(&subscriber, &publisher, &room_type, &sid, &sdp);
                self.deliver(&s, &frame.into());
            }
            McuEvent::PublisherUp { session, stream } => {
                tracing::debug!(session = %session, stream = stream.as_str(), "publisher connected");
            }
            McuEvent::PublisherClosed { session, stream } => {
                media.remove_publisher(&session, stream);
                tracing::debug!(session = %session, stream = stream.as_str(), "publisher closed by the media server");
            }
            McuEvent::SubscriberClosed {
                subscriber,
                publisher,
                stream,
            } => {
                if let Some(m) = media.sessions.lock().get_mut(subscriber.as_str()) {
                    m.subscriptions
                        .remove(&(Arc::from(publisher.as_str()), stream));
                }
            }
            McuEvent::MediaReceiving {
                session,
                stream,
                kind,
                receiving,
            } => {
                tracing::info!(session = %session, stream = stream.as_str(), kind = kind.as_str(), receiving, "publisher media");
            }
            McuEvent::SlowLink {
                session,
                publisher,
                stream,
                uplink,
                nacks,
            } => {
                let direction = if uplink {
                    "packets from the client are lost"
                } else {
                    "packets to the client are lost"
                };
                tracing::info!(session = %session, publisher = %publisher, stream = stream.as_str(), nacks, "slow link: {direction}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_check_is_light_but_catches_garbage() {
        let ok = check_sdp("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
            .expect("valid");
        assert!(ok.audio && ok.video);
        assert!(check_sdp("hello").is_err());
        assert!(check_sdp("v=0\r\ns=-\r\n").is_err());
    }

    #[test]
    fn candidates_need_the_ice_grammar() {
        assert!(check_candidate("candidate:1 1 UDP 2122252543 192.0.2.1 5000 typ host").is_ok());
        assert!(check_candidate("candidate:1 1 UDP x 192.0.2.1 5000 typ host").is_err());
        assert!(check_candidate("garbage").is_err());
    }

    #[test]
    fn selection_rejects_non_numeric_layers() {
        let p: Map<String, Value> =
            serde_json::from_value(json!({"substream": 2, "temporal": 1.0, "audio": true}))
                .expect("map");
        let s = selection(&p).ok().expect("valid");
        assert_eq!(
            (s.substream, s.temporal, s.audio, s.video),
            (Some(2), Some(1), Some(true), None)
        );
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"substream": "high"})).expect("map");
        assert!(selection(&bad).is_err());
    }
}
