//! A WebSocket client for hpb's `/spreed` endpoint that speaks the signaling protocol
//! like Talk's clients: hello v1/v2/internal, resume, room join/leave, messages, and
//! helpers to wait for and assert on the frames the server sends.
//!
//! Requests get string ids `"1"`, `"2"`, …; the request helpers wait for the frame that
//! echoes the id and keep every other frame (events, messages) queued for [`TestClient::recv`].
//! The helpers panic with the frames seen when something unexpected happens; the `try_*`
//! variants return the server's error frame instead.

use std::collections::VecDeque;
use std::fmt::Display;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{hmac_sha256_hex, random_string};

/// The timeout of the request helpers (`hello_*`, `join`, `expect_error`, …).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a successful hello returned.
#[derive(Clone, Debug)]
pub struct HelloInfo {
    /// The public session id (`hello.sessionid`).
    pub sessionid: String,
    /// The private id to resume with (`hello.resumeid`).
    pub resumeid: String,
    /// `hello.userid` (empty for guests and internal clients).
    pub userid: String,
    /// The whole reply frame.
    pub raw: Value,
}

/// How the connection ended.
#[derive(Clone, Debug, Default)]
pub struct CloseInfo {
    /// Close code of the server's close frame (`None`: no close frame, e.g. TCP closed).
    pub code: Option<u16>,
    /// Reason of the close frame.
    pub reason: String,
    /// The last `bye` frame the server sent before closing, if any.
    pub bye: Option<Value>,
    /// Frames received while waiting for the close.
    pub frames: Vec<Value>,
    /// Transport error text if the connection failed instead of closing.
    pub error: Option<String>,
}

/// Why the WebSocket upgrade did not succeed.
#[derive(Clone, Debug)]
pub struct ConnectRefused {
    /// HTTP status if the server answered the upgrade with a non-101 response.
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The client's error text.
    pub error: String,
}

/// The `error.code` of an error frame (`""` for other frames).
pub fn error_code(frame: &Value) -> &str {
    frame["error"]["code"].as_str().unwrap_or("")
}

/// The `ws://…/spreed` URL for `addr`: a `host:port` / `SocketAddr`, an `http(s)://` base
/// or a `ws(s)://` URL (a URL without path gets `/spreed`).
pub fn ws_url(addr: impl Display) -> String {
    let s = addr.to_string();
    let (scheme, rest) = if let Some(r) = s.strip_prefix("ws://") {
        ("ws", r)
    } else if let Some(r) = s.strip_prefix("wss://") {
        ("wss", r)
    } else if let Some(r) = s.strip_prefix("http://") {
        ("ws", r)
    } else if let Some(r) = s.strip_prefix("https://") {
        ("wss", r)
    } else {
        ("ws", s.as_str())
    };
    match rest.find('/') {
        Some(i) if rest[i..].len() > 1 => format!("{scheme}://{rest}"),
        Some(i) => format!("{scheme}://{}/spreed", &rest[..i]),
        None => format!("{scheme}://{rest}/spreed"),
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A signaling client (see the module documentation).
pub struct TestClient {
    ws: Ws,
    url: String,
    next_id: u64,
    pending: VecDeque<Value>,
    upgrade_headers: Vec<(String, String)>,
    welcome: Option<Value>,
    last_bye: Option<Value>,
    closed: Option<CloseInfo>,
    features: Vec<String>,
    session: Option<HelloInfo>,
    /// Timeout of the request helpers (default [`DEFAULT_TIMEOUT`]).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("url", &self.url)
            .field("session", &self.session.as_ref().map(|s| &s.sessionid))
            .field("pending", &self.pending)
            .field("closed", &self.closed)
            .finish()
    }
}

impl TestClient {
    // ----- connecting -----

    /// Connects to `ws://ADDR/spreed` (see [`ws_url`] for accepted forms); panics on failure.
    pub async fn connect(addr: impl Display) -> TestClient {
        Self::connect_with_headers(addr, &[]).await
    }

    /// Connects with extra request headers (e.g. `Origin`); panics on failure.
    pub async fn connect_with_headers(addr: impl Display, headers: &[(&str, &str)]) -> TestClient {
        let url = ws_url(&addr);
        match Self::try_connect_with_headers(addr, headers).await {
            Ok(client) => client,
            Err(e) => panic!("WebSocket connect to {url} failed: {e:?}"),
        }
    }

    /// Connects, returning why the upgrade failed instead of panicking.
    pub async fn try_connect(addr: impl Display) -> Result<TestClient, ConnectRefused> {
        Self::try_connect_with_headers(addr, &[]).await
    }

    /// Connects with extra request headers, returning why the upgrade failed.
    pub async fn try_connect_with_headers(
        addr: impl Display,
        headers: &[(&str, &str)],
    ) -> Result<TestClient, ConnectRefused> {
        let url = ws_url(addr);
        let mut req = url
            .as_str()
            .into_client_request()
            .unwrap_or_else(|e| panic!("bad WebSocket URL {url}: {e}"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("bad header name {name}: {e}"));
            let value = HeaderValue::from_str(value)
                .unwrap_or_else(|e| panic!("bad header value {value}: {e}"));
            req.headers_mut().insert(name, value);
        }
        let refused = |status, headers, body, error: String| ConnectRefused {
            status,
            headers,
            body,
            error,
        };
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        {
            Err(_) => Err(refused(
                None,
                Vec::new(),
                String::new(),
                "timed out after 10 s".into(),
            )),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(refused(
                    Some(resp.status().as_u16()),
                    http_headers(resp.headers()),
                    body,
                    format!("HTTP {}", resp.status()),
                ))
            }
            Ok(Err(e)) => Err(refused(None, Vec::new(), String::new(), e.to_string())),
            Ok(Ok((ws, resp))) => Ok(TestClient {
                ws,
                url,
                next_id: 0,
                pending: VecDeque::new(),
                upgrade_headers: http_headers(resp.headers()),
                welcome: None,
                last_bye: None,
                closed: None,
                features: Vec::new(),
                session: None,
                request_timeout: DEFAULT_TIMEOUT,
            }),
        }
    }

    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Headers of the HTTP 101 upgrade response (names lower case).
    pub fn upgrade_headers(&self) -> &[(String, String)] {
        &self.upgrade_headers
    }

    /// One header of the upgrade response (case-insensitive).
    pub fn upgrade_header(&self, name: &str) -> Option<&str> {
        self.upgrade_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Client features sent in every following hello (`hello.features`).
    pub fn set_hello_features(&mut self, features: &[&str]) {
        self.features = features.iter().map(|f| f.to_string()).collect();
    }

    /// The session of the last successful hello.
    pub fn session(&self) -> Option<&HelloInfo> {
        self.session.as_ref()
    }

    /// The public session id of the last successful hello (panics before one).
    pub fn sessionid(&self) -> &str {
        &self
            .session
            .as_ref()
            .expect("no successful hello yet")
            .sessionid
    }

    /// The `welcome` frame if one was absorbed by a hello helper or [`Self::wait_welcome`].
    pub fn welcome(&self) -> Option<&Value> {
        self.welcome.as_ref()
    }

    /// Waits for the `welcome` frame (keeping other frames queued).
    pub async fn wait_welcome(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(w) = &self.welcome {
            return Some(w.clone());
        }
        if let Some(pos) = self.pending.iter().position(|f| f["type"] == "welcome") {
            let w = self.pending.remove(pos);
            self.welcome = w.clone();
            return w;
        }
        let deadline = Instant::now() + timeout;
        let mut stash = Vec::new();
        let mut found = None;
        while let Some(frame) = self.read_wire(deadline).await {
            if frame["type"] == "welcome" {
                found = Some(frame);
                break;
            }
            stash.push(frame);
        }
        self.pending.extend(stash);
        self.welcome = found.clone();
        found
    }

    // ----- sending -----

    /// The next request id (`"1"`, `"2"`, …).
    pub fn next_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    /// Sends a JSON frame as is.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        if let Err(e) = self.try_send(Message::text(text.to_string())).await {
            panic!("sending {text} failed: {e}");
        }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        if let Err(e) = self.try_send(Message::binary(data.to_vec())).await {
            panic!("sending a binary frame failed: {e}");
        }
    }

    /// Sends any WebSocket message, returning transport errors.
    pub async fn try_send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// Sends `frame` with a fresh `id` (returned) without waiting for a reply.
    pub async fn send_with_id(&mut self, mut frame: Value) -> String {
        let id = self.next_id();
        frame["id"] = json!(id);
        self.send(frame).await;
        id
    }

    /// Sends `frame` with a fresh `id` and returns the frame that echoes it (reply or
    /// error); other frames stay queued. Panics on timeout.
    pub async fn request(&mut self, frame: Value) -> Value {
        let id = self.send_with_id(frame.clone()).await;
        match self.wait_reply(&id, self.request_timeout).await {
            Some(reply) => reply,
            None => panic!(
                "no reply with id {id:?} to {frame} within {:?}; queued frames: {:?}; closed: {:?}",
                self.request_timeout, self.pending, self.closed
            ),
        }
    }

    /// Waits for the frame whose `id` is `id` (other frames stay queued).
    pub async fn wait_reply(&mut self, id: &str, timeout: Duration) -> Option<Value> {
        self.wait_reply_inner(id, timeout, false).await
    }

    async fn wait_reply_inner(
        &mut self,
        id: &str,
        timeout: Duration,
        absorb_welcome: bool,
    ) -> Option<Value> {
        if absorb_welcome
            && let Some(pos) = self.pending.iter().position(|f| f["type"] == "welcome")
        {
            self.welcome = self.pending.remove(pos);
        }
        if let Some(pos) = self
            .pending
            .iter()
            .position(|f| f["id"].as_str() == Some(id))
        {
            return self.pending.remove(pos);
        }
        let deadline = Instant::now() + timeout;
        let mut stash = Vec::new();
        let mut found = None;
        while let Some(frame) = self.read_wire(deadline).await {
            if frame["id"].as_str() == Some(id) {
                found = Some(frame);
                break;
            }
            if absorb_welcome && frame["type"] == "welcome" {
                self.welcome = Some(frame);
                continue;
            }
            if absorb_welcome && frame["type"] == "hello" {
                panic!("hello reply does not echo the request id {id:?}: {frame}");
            }
            stash.push(frame);
        }
        self.pending.extend(stash);
        found
    }

    // ----- receiving -----

    /// The next frame (queued ones first), skipping WebSocket ping/pong; `None` on timeout
    /// or when the connection is closed. A binary frame is returned as
    /// `{"type":"__binary","hex":"…"}`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        self.read_wire(Instant::now() + timeout).await
    }

    async fn read_wire(&mut self, deadline: Instant) -> Option<Value> {
        if self.closed.is_some() {
            return None;
        }
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => {
                    self.mark_closed(None, None);
                    return None;
                }
                Ok(Some(Err(e))) => {
                    self.mark_closed(None, Some(e.to_string()));
                    return None;
                }
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("server sent a text frame that is not JSON ({e}): {text}")
                    });
                    if frame["type"] == "bye" {
                        self.last_bye = Some(frame.clone());
                    }
                    return Some(frame);
                }
                Message::Binary(data) => {
                    return Some(json!({"type": "__binary", "hex": hex::encode(&data)}));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(frame) => {
                    let frame = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_string()));
                    self.mark_closed(frame, None);
                    return None;
                }
            }
        }
    }

    fn mark_closed(&mut self, frame: Option<(u16, String)>, error: Option<String>) {
        if self.closed.is_none() {
            let (code, reason) = match frame {
                Some((code, reason)) => (Some(code), reason),
                None => (None, String::new()),
            };
            self.closed = Some(CloseInfo {
                code,
                reason,
                bye: None,
                frames: Vec::new(),
                error,
            });
        }
    }

    /// Whether the server closed the connection (as far as seen by reads so far).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Waits until the server closes the connection; returns the close code/reason, the
    /// `bye` it sent and the frames received meanwhile. `None` if still open at the timeout.
    pub async fn recv_close(&mut self, timeout: Duration) -> Option<CloseInfo> {
        let deadline = Instant::now() + timeout;
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        while self.read_wire_into(&mut frames, deadline).await {}
        let mut info = self.closed.clone()?;
        info.bye = self.last_bye.clone();
        info.frames = frames;
        Some(info)
    }

    async fn read_wire_into(&mut self, frames: &mut Vec<Value>, deadline: Instant) -> bool {
        match self.read_wire(deadline).await {
            Some(frame) => {
                frames.push(frame);
                true
            }
            None => false,
        }
    }

    /// The next frame, which must be of `ty` (panics with the frame otherwise).
    pub async fn expect(&mut self, ty: &str, timeout: Duration) -> Value {
        match self.recv(timeout).await {
            Some(frame) if frame["type"] == ty => frame,
            Some(frame) => panic!("expected a {ty:?} frame, got {frame}"),
            None => panic!(
                "expected a {ty:?} frame, got nothing within {timeout:?} (closed: {:?})",
                self.closed
            ),
        }
    }

    /// The next frame, which must be an error with `code` (within [`Self::request_timeout`]).
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.expect("error", self.request_timeout).await;
        assert_eq!(error_code(&frame), code, "unexpected error frame {frame}");
        frame
    }

    /// The next frame, which must be an `event` with this target and type.
    pub async fn expect_event(&mut self, target: &str, ty: &str, timeout: Duration) -> Value {
        let frame = self.expect("event", timeout).await;
        assert!(
            frame["event"]["target"] == target && frame["event"]["type"] == ty,
            "expected event {target}/{ty}, got {frame}"
        );
        frame
    }

    /// The first frame matching `pred` within `timeout`; frames before it are dropped.
    pub async fn wait_for(
        &mut self,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(frame) = self
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if pred(&frame) {
                return Some(frame);
            }
        }
        None
    }

    /// The first `event` with this target and type within `timeout` (earlier frames dropped).
    pub async fn wait_event(&mut self, target: &str, ty: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(
            |f| f["type"] == "event" && f["event"]["target"] == target && f["event"]["type"] == ty,
            timeout,
        )
        .await
    }

    /// Every frame until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv(quiet).await {
            frames.push(frame);
        }
        frames
    }

    /// Sends a WebSocket close frame (code 1000) and waits briefly for the server's close.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut frames = Vec::new();
        while self.read_wire_into(&mut frames, deadline).await {}
        self.pending.extend(frames);
    }

    // ----- hello -----

    /// Sends `{"type":"hello","hello":<hello>}` and returns the reply (hello or error),
    /// absorbing a `welcome` frame on the way.
    pub async fn hello_raw(&mut self, hello: Value) -> Value {
        let frame = json!({"type": "hello", "hello": hello});
        let id = self.send_with_id(frame.clone()).await;
        match self.wait_reply_inner(&id, self.request_timeout, true).await {
            Some(reply) => reply,
            None => panic!(
                "no reply to hello {frame} within {:?}; queued frames: {:?}; closed: {:?}",
                self.request_timeout, self.pending, self.closed
            ),
        }
    }

    /// Sends a hello and parses a successful reply; `Err(error frame)` otherwise.
    pub async fn try_hello(&mut self, hello: Value) -> Result<HelloInfo, Value> {
        let reply = self.hello_raw(hello).await;
        match reply["type"].as_str() {
            Some("hello") => {
                let h = &reply["hello"];
                let text = |k: &str| h[k].as_str().unwrap_or("").to_string();
                assert!(
                    h["userid"].is_string(),
                    "hello reply without userid: {reply}"
                );
                let info = HelloInfo {
                    sessionid: text("sessionid"),
                    resumeid: text("resumeid"),
                    userid: text("userid"),
                    raw: reply.clone(),
                };
                assert!(
                    !info.sessionid.is_empty(),
                    "hello reply without sessionid: {reply}"
                );
                self.session = Some(info.clone());
                Ok(info)
            }
            Some("error") => Err(reply),
            _ => panic!("unexpected reply to hello: {reply}"),
        }
    }

    fn with_features(&self, mut hello: Value) -> Value {
        if !self.features.is_empty() {
            hello["features"] = json!(self.features);
        }
        hello
    }

    /// hello v1 (ticket) like Talk's web client: `userid` `None` (sent as null) = guest.
    pub async fn try_hello_v1<'a>(
        &mut self,
        backend_url: &str,
        userid: impl Into<Option<&'a str>>,
        ticket: &str,
    ) -> Result<HelloInfo, Value> {
        let hello = self.with_features(json!({
            "version": "1.0",
            "auth": {"url": backend_url, "params": {"userid": userid.into(), "ticket": ticket}},
        }));
        self.try_hello(hello).await
    }

    /// hello v1; panics unless it succeeds.
    pub async fn hello_v1<'a>(
        &mut self,
        backend_url: &str,
        userid: impl Into<Option<&'a str>>,
        ticket: &str,
    ) -> HelloInfo {
        self.try_hello_v1(backend_url, userid, ticket)
            .await
            .unwrap_or_else(|e| panic!("hello v1 failed: {e}"))
    }

    /// hello v2 (JWT, `auth.type` client).
    pub async fn try_hello_v2(
        &mut self,
        backend_url: &str,
        token: &str,
    ) -> Result<HelloInfo, Value> {
        let hello = self.with_features(json!({
            "version": "2.0",
            "auth": {"type": "client", "url": backend_url, "params": {"token": token}},
        }));
        self.try_hello(hello).await
    }

    /// hello v2; panics unless it succeeds.
    pub async fn hello_v2(&mut self, backend_url: &str, token: &str) -> HelloInfo {
        self.try_hello_v2(backend_url, token)
            .await
            .unwrap_or_else(|e| panic!("hello v2 failed: {e}"))
    }

    /// hello v2 with `auth.type` federation.
    pub async fn try_hello_federation(
        &mut self,
        backend_url: &str,
        token: &str,
    ) -> Result<HelloInfo, Value> {
        let hello = self.with_features(json!({
            "version": "2.0",
            "auth": {"type": "federation", "url": backend_url, "params": {"token": token}},
        }));
        self.try_hello(hello).await
    }

    /// Internal client hello: random of 64 characters, token = hex(HMAC-SHA256(secret, random)).
    pub async fn try_hello_internal(
        &mut self,
        backend_url: &str,
        secret: &str,
    ) -> Result<HelloInfo, Value> {
        let random = random_string(64);
        let token = hmac_sha256_hex(secret.as_bytes(), random.as_bytes());
        let hello = self.with_features(json!({
            "version": "1.0",
            "auth": {"type": "internal", "params": {"random": random, "token": token, "backend": backend_url}},
        }));
        self.try_hello(hello).await
    }

    /// Internal client hello; panics unless it succeeds.
    pub async fn hello_internal(&mut self, backend_url: &str, secret: &str) -> HelloInfo {
        self.try_hello_internal(backend_url, secret)
            .await
            .unwrap_or_else(|e| panic!("internal hello failed: {e}"))
    }

    /// Resumes a session by its private id.
    pub async fn try_resume(&mut self, resumeid: &str) -> Result<HelloInfo, Value> {
        self.try_hello(json!({"version": "2.0", "resumeid": resumeid}))
            .await
    }

    /// Resumes; panics unless it succeeds.
    pub async fn resume(&mut self, resumeid: &str) -> HelloInfo {
        self.try_resume(resumeid)
            .await
            .unwrap_or_else(|e| panic!("resume failed: {e}"))
    }

    /// Sends `bye` and returns the reply frame.
    pub async fn bye(&mut self) -> Value {
        self.request(json!({"type": "bye", "bye": {}})).await
    }

    // ----- rooms -----

    /// Joins a room; returns the `room` reply frame or the error frame.
    pub async fn try_join<'a>(
        &mut self,
        roomid: &str,
        roomsessionid: impl Into<Option<&'a str>>,
    ) -> Result<Value, Value> {
        let mut room = json!({"roomid": roomid});
        if let Some(s) = roomsessionid.into() {
            room["sessionid"] = json!(s);
        }
        let reply = self.request(json!({"type": "room", "room": room})).await;
        match reply["type"].as_str() {
            Some("room") => Ok(reply),
            Some("error") => Err(reply),
            _ => panic!("unexpected reply to room join: {reply}"),
        }
    }

    /// Joins a room; panics unless the reply is a `room` frame for it.
    pub async fn join<'a>(
        &mut self,
        roomid: &str,
        roomsessionid: impl Into<Option<&'a str>>,
    ) -> Value {
        let reply = self
            .try_join(roomid, roomsessionid)
            .await
            .unwrap_or_else(|e| panic!("joining room {roomid:?} failed: {e}"));
        assert_eq!(
            reply["room"]["roomid"], roomid,
            "room reply for another room: {reply}"
        );
        reply
    }

    /// Leaves the current room (`roomid: ""`); returns the `room` reply (panics if there is
    /// none, e.g. when not in a room).
    pub async fn leave(&mut self) -> Value {
        let reply = self
            .request(json!({"type": "room", "room": {"roomid": ""}}))
            .await;
        assert!(
            reply["type"] == "room" && reply["room"]["roomid"] == "",
            "unexpected reply to leave: {reply}"
        );
        reply
    }

    // ----- messages -----

    /// Sends a `message` to `recipient`; returns the request id (errors echo it).
    pub async fn message(&mut self, recipient: Value, data: Value) -> String {
        self.send_with_id(
            json!({"type": "message", "message": {"recipient": recipient, "data": data}}),
        )
        .await
    }

    /// `message` to a session (public id).
    pub async fn message_session(&mut self, sessionid: &str, data: Value) -> String {
        self.message(json!({"type": "session", "sessionid": sessionid}), data)
            .await
    }

    /// `message` to every session of a user.
    pub async fn message_user(&mut self, userid: &str, data: Value) -> String {
        self.message(json!({"type": "user", "userid": userid}), data)
            .await
    }

    /// `message` to the current room.
    pub async fn message_room(&mut self, data: Value) -> String {
        self.message(json!({"type": "room"}), data).await
    }

    /// `message` to the participants in the call.
    pub async fn message_call(&mut self, data: Value) -> String {
        self.message(json!({"type": "call"}), data).await
    }

    /// `control` to a session.
    pub async fn control_session(&mut self, sessionid: &str, data: Value) -> String {
        self.send_with_id(json!({"type": "control", "control": {
            "recipient": {"type": "session", "sessionid": sessionid}, "data": data}}))
            .await
    }

    /// `transient` set of `key` in the current room.
    pub async fn transient_set(&mut self, key: &str, value: Value) -> String {
        self.send_with_id(
            json!({"type": "transient", "transient": {"type": "set", "key": key, "value": value}}),
        )
        .await
    }

    /// `transient` remove of `key` in the current room.
    pub async fn transient_remove(&mut self, key: &str) -> String {
        self.send_with_id(json!({"type": "transient", "transient": {"type": "remove", "key": key}}))
            .await
    }

    /// `internal` message (internal clients only), e.g. `{"type":"incall","incall":{"incall":3}}`.
    pub async fn internal(&mut self, body: Value) -> String {
        self.send_with_id(json!({"type": "internal", "internal": body}))
            .await
    }
}

fn http_headers(headers: &tungstenite::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
    use axum::response::IntoResponse;

    #[test]
    fn urls() {
        assert_eq!(ws_url("127.0.0.1:8080"), "ws://127.0.0.1:8080/spreed");
        assert_eq!(
            ws_url("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080/spreed"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:8080/"),
            "ws://127.0.0.1:8080/spreed"
        );
        assert_eq!(
            ws_url("https://h/standalone-signaling/spreed"),
            "wss://h/standalone-signaling/spreed"
        );
        assert_eq!(ws_url("ws://127.0.0.1:1/spreed"), "ws://127.0.0.1:1/spreed");
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(ws_url(addr), "ws://127.0.0.1:9/spreed");
    }

    /// A tiny stand-in server: welcome, then replies to hello and room, an event before
    /// the room reply, a bye on "bye".
    async fn serve_socket(mut socket: WebSocket) {
        let send = |v: Value| AxMessage::Text(v.to_string().into());
        let _ = socket
            .send(send(
                json!({"type": "welcome", "welcome": {"version": "test"}}),
            ))
            .await;
        while let Some(Ok(msg)) = socket.recv().await {
            let AxMessage::Text(text) = msg else { continue };
            let frame: Value = serde_json::from_str(text.as_str()).expect("client sends JSON");
            let id = frame["id"].clone();
            match frame["type"].as_str() {
                Some("hello") => {
                    let reply = if frame["hello"]["auth"]["params"]["ticket"] == "bad" {
                        json!({"id": id, "type": "error", "error": {"code": "invalid_ticket", "message": "no"}})
                    } else {
                        json!({"id": id, "type": "hello", "hello": {"version": "1.0", "sessionid": "pub1", "resumeid": "priv1", "userid": "alice"}})
                    };
                    let _ = socket.send(send(reply)).await;
                }
                Some("room") => {
                    let _ = socket.send(send(json!({"type": "event", "event": {"target": "room", "type": "join", "join": []}}))).await;
                    let roomid = frame["room"]["roomid"].clone();
                    let _ = socket
                        .send(send(
                            json!({"id": id, "type": "room", "room": {"roomid": roomid}}),
                        ))
                        .await;
                }
                Some("bye") => {
                    let _ = socket
                        .send(send(json!({"type": "bye", "bye": {"reason": "test"}})))
                        .await;
                    let _ = socket
                        .send(AxMessage::Close(Some(axum::extract::ws::CloseFrame {
                            code: 4000,
                            reason: "done".into(),
                        })))
                        .await;
                    return;
                }
                _ => {}
            }
        }
    }

    async fn stand_in() -> std::net::SocketAddr {
        let app = axum::Router::new().route(
            "/spreed",
            axum::routing::get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(serve_socket).into_response()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn hello_join_events_and_close() {
        let addr = stand_in().await;
        let mut c = TestClient::connect(addr).await;
        let err = c
            .try_hello_v1("http://nc/", "alice", "bad")
            .await
            .expect_err("bad ticket");
        assert_eq!(error_code(&err), "invalid_ticket");
        assert_eq!(err["id"], "1");
        assert!(c.welcome().is_some());
        let hello = c.hello_v1("http://nc/", "alice", "good").await;
        assert_eq!(hello.sessionid, "pub1");
        assert_eq!(hello.raw["id"], "2");
        let room = c.join("r1", "rs1").await;
        assert_eq!(room["id"], "3");
        // The event sent before the reply stays queued.
        c.expect_event("room", "join", Duration::from_secs(1)).await;
        assert!(c.recv(Duration::from_millis(50)).await.is_none());
        c.send_with_id(json!({"type": "bye", "bye": {}})).await;
        let close = c.recv_close(Duration::from_secs(2)).await.expect("closed");
        assert_eq!(close.code, Some(4000));
        assert_eq!(close.reason, "done");
        assert_eq!(close.bye.expect("bye")["bye"]["reason"], "test");
        assert!(c.is_closed());
    }

    #[tokio::test]
    async fn refused_upgrade_reports_status() {
        let addr = stand_in().await;
        let refused = TestClient::try_connect(format!("ws://{addr}/nothing"))
            .await
            .expect_err("no route");
        assert_eq!(refused.status, Some(404));
    }
}
