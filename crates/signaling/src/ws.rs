//! One client WebSocket on `/spreed`: the upgrade (with the optional origin check),
//! the welcome frame, the read loop (size limit, rate limit, hello deadline, pong
//! deadline) dispatching to the hub, and the writer task that drains the outbox in
//! batches and sends the WebSocket pings.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hpb_proto::ErrorCode;
use hpb_proto::client::{self, ClientBody};
use hpb_proto::server::{self, Welcome};
use serde_json::value::RawValue;

use crate::client_ip::client_ip;
use crate::hub::{CloseReason, Hub};
use crate::outbox::{CloseRequest, Outbox, Push};
use crate::session::Session;

/// Bytes read from the socket at a time (a larger message still arrives whole).
const READ_BUFFER: usize = 4096;
/// Bytes collected before the writer flushes to the socket within a batch.
const WRITE_BUFFER: usize = 4096;

/// How long a connection we closed waits for the client's Close frame (RFC 6455 §7.1.1)
/// before the socket is dropped.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// The state of one connection, handed to hub operations for replies.
pub struct Conn {
    pub outbox: Arc<Outbox>,
    pub ip: IpAddr,
    /// The client's `User-Agent` (empty without one).
    pub user_agent: Arc<str>,
}

impl Conn {
    pub fn reply(&self, frame: String) {
        if self.outbox.push(frame.into()) == Push::Overflow {
            self.outbox.abort(CloseRequest {
                code: 1008,
                reason: "client too slow: too many frames waiting".into(),
            });
        }
    }

    pub fn error(
        &self,
        id: Option<&str>,
        code: ErrorCode,
        message: &str,
        details: Option<&RawValue>,
    ) {
        self.reply(server::error(id, code, message, details));
    }
}

/// A token bucket for inbound client messages.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = client_ip(&hub.cfg.trusted_proxies, peer.ip(), &headers);
    if !hub.cfg.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !hub.cfg.allowed_origins.iter().any(|o| {
            o.trim_end_matches('/')
                .eq_ignore_ascii_case(origin.trim_end_matches('/'))
        })
    {
        tracing::warn!(remote = %ip, origin, "WebSocket refused: origin not allowed");
        return (
            StatusCode::FORBIDDEN,
            format!("origin {origin} is not in [http] allowed_origins; add it there or leave the list empty to allow all origins\n"),
        )
            .into_response();
    }
    let user_agent: Arc<str> = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .into();
    let max = hub.cfg.limits.max_message_size;
    // Small per-connection buffers: tungstenite's defaults (128 KiB each way) would cost a
    // quarter of a megabyte per idle client; messages are small and writes are batched.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| run(hub, socket, ip, user_agent))
}

/// A close frame's reason may have at most 123 bytes (RFC 6455 §5.5): longer explanations
/// are cut at a character boundary so the close frame stays valid.
fn close_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

fn ping_payload() -> axum::body::Bytes {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    axum::body::Bytes::from(nanos.to_string())
}

async fn writer(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    ping_every: Duration,
    write_timeout: Duration,
) {
    let mut batch: Vec<Utf8Bytes> = Vec::with_capacity(64);
    let mut ping = tokio::time::interval(ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            close = outbox.next_batch(&mut batch) => {
                let n = batch.len();
                let mut ok = true;
                for frame in batch.drain(..) {
                    match tokio::time::timeout(write_timeout, sink.feed(Message::Text(frame))).await {
                        Ok(Ok(())) => {}
                        _ => { ok = false; break; }
                    }
                }
                if n > 0 && ok && !matches!(tokio::time::timeout(write_timeout, sink.flush()).await, Ok(Ok(()))) {
                    ok = false;
                }
                if !ok {
                    return;
                }
                if batch.capacity() > crate::outbox::KEEP_CAPACITY {
                    batch = Vec::with_capacity(crate::outbox::KEEP_CAPACITY);
                }
                if let Some(c) = close {
                    let frame = CloseFrame { code: c.code, reason: close_reason(c.reason).into() };
                    let _ = tokio::time::timeout(write_timeout, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
            }
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(write_timeout, sink.send(Message::Ping(ping_payload()))).await, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

/// Counts a connection in `Counters::connections` while it lives.
struct OpenConnection(Arc<Hub>);

impl OpenConnection {
    fn new(hub: &Arc<Hub>) -> Self {
        hub.counters
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(hub.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .counters
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn run(hub: Arc<Hub>, socket: WebSocket, ip: IpAddr, user_agent: Arc<str>) {
    let _open = OpenConnection::new(&hub);
    let mut shutdown = hub.shutdown_signal();
    let limits = hub.cfg.limits.clone();
    let (sink, mut stream) = socket.split();
    let outbox = Arc::new(Outbox::new(limits.max_queued_messages));
    outbox.push(
        server::frame(
            None,
            "welcome",
            Some(&Welcome {
                version: hpb_proto::COMPAT_VERSION,
                features: &hub.welcome_features,
            }),
        )
        .into(),
    );
    let mut writer_task = tokio::spawn(writer(
        sink,
        outbox.clone(),
        limits.ws_ping_interval,
        limits.write_timeout,
    ));
    let conn = Conn {
        outbox: outbox.clone(),
        ip,
        user_agent,
    };
    let mut session: Option<Arc<Session>> = None;
    let mut hello_deadline = tokio::time::Instant::now() + limits.hello_timeout;
    let mut last_seen = tokio::time::Instant::now();
    let mut rate = RateLimit::new(limits.client_rate, limits.client_burst);
    let mut said_bye = false;
    // The client closed, vanished or broke the protocol: nothing more to read from it.
    let mut client_done = false;
    loop {
        let pong_deadline = last_seen + limits.ws_pong_timeout;
        tokio::select! {
            msg = stream.next() => {
                last_seen = tokio::time::Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        conn.error(None, ErrorCode::InvalidFormat, "binary frames are not supported: send JSON as text frames", None);
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => {
                        client_done = true;
                        break;
                    }
                    Some(Err(e)) => {
                        client_done = true;
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                            let reason = format!(
                                "message too big: the limit is {} bytes ([limits] max_message_size)",
                                limits.max_message_size
                            );
                            tracing::warn!(remote = %ip, "{reason}");
                            outbox.abort(CloseRequest { code: 1009, reason });
                            let _ = tokio::time::timeout(Duration::from_secs(1), &mut writer_task).await;
                        }
                        break;
                    }
                };
                hub.counters.messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !rate.allow() {
                    // Echo the id even when the refused message would not pass validation.
                    let id = match client::parse(text.as_str()) {
                        Ok(m) => m.id,
                        Err(e) => e.id,
                    };
                    conn.error(
                        id.as_deref(),
                        ErrorCode::TooManyRequests,
                        &format!(
                            "rate limit: more than {} messages per second (burst {}) on this connection; this message was not processed ([limits] client_rate, client_burst)",
                            limits.client_rate, limits.client_burst
                        ),
                        None,
                    );
                    continue;
                }
                // Boxed: the hello and room handlers await Nextcloud and their state is large;
                // kept inline it would be part of every idle connection's memory.
                match Box::pin(dispatch(&hub, &conn, &mut session, text.as_str())).await {
                    Flow::Continue => {}
                    Flow::HelloFailed => hello_deadline = tokio::time::Instant::now() + limits.hello_timeout,
                    Flow::Bye => { said_bye = true; break; }
                }
            }
            _ = tokio::time::sleep_until(hello_deadline), if session.is_none() => {
                let bye = server::frame(None, "bye", Some(&server::Bye { reason: "hello_timeout" }));
                outbox.close_with(
                    Some(bye.into()),
                    CloseRequest {
                        code: 1000,
                        reason: format!("no hello within {} ms of connecting ([limits] hello_timeout_ms)", limits.hello_timeout.as_millis()),
                    },
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
                break;
            }
            _ = tokio::time::sleep_until(pong_deadline) => {
                tracing::debug!(remote = %ip, "no data or pong within the pong timeout, closing");
                client_done = true;
                break;
            }
            _ = &mut writer_task => {
                // Closed by the hub (bye, takeover, slow client) or a write error.
                break;
            }
            () = async {
                if shutdown.wait_for(|down| *down).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                // Shutdown: also a connection whose hello raced `close_all`, or without one.
                match &session {
                    Some(s) => hub.close_session(s, CloseReason::Shutdown).await,
                    None => {
                        let bye = server::frame(None, "bye", Some(&server::Bye { reason: "shutdown" }));
                        outbox.close_with(
                            Some(bye.into()),
                            CloseRequest {
                                code: CloseReason::Shutdown.close_code(),
                                reason: "service restart: the signaling server is shutting down; reconnect".into(),
                            },
                        );
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
                said_bye = true;
                break;
            }
        }
    }
    if !said_bye && let Some(s) = &session {
        hub.connection_lost(s, &outbox);
    }
    if !writer_task.is_finished() {
        // Give queued frames (a bye reply) a moment, then stop.
        if said_bye {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer_task).await;
        }
        writer_task.abort();
    }
    if !client_done {
        // We closed: read on until the client's Close (or its end of the connection).
        // Dropping a socket with unread input resets it, and a reset can discard our Close
        // frame before the client read it: the client would see "connection reset" instead
        // of the close code that tells it to reconnect.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

enum Flow {
    Continue,
    HelloFailed,
    Bye,
}

async fn dispatch(
    hub: &Arc<Hub>,
    conn: &Conn,
    session: &mut Option<Arc<Session>>,
    text: &str,
) -> Flow {
    let msg = match client::parse(text) {
        Ok(m) => m,
        Err(e) => {
            conn.error(e.id.as_deref(), e.code, &e.message, None);
            return if session.is_none() && e.code == ErrorCode::InvalidHelloVersion {
                Flow::HelloFailed
            } else {
                Flow::Continue
            };
        }
    };
    let id = msg.id.as_deref();
    let Some(s) = session.clone() else {
        return match msg.body {
            ClientBody::Hello(h) => match hub.handle_hello(conn, id, h).await {
                Some(s) => {
                    *session = Some(s);
                    Flow::Continue
                }
                None => Flow::HelloFailed,
            },
            other => {
                conn.error(
                    id,
                    ErrorCode::HelloExpected,
                    &format!("send a hello before \"{}\" messages", other.kind()),
                    None,
                );
                Flow::Continue
            }
        };
    };
    if s.state.lock().closed {
        return Flow::Continue;
    }
    let federation = s.federation.lock().clone();
    if let Some(link) = federation
        && matches!(
            msg.body,
            ClientBody::Message(_)
                | ClientBody::Control(_)
                | ClientBody::Transient(_)
                | ClientBody::Internal(_)
        )
    {
        link.forward(&s.public_id, text);
        return Flow::Continue;
    }
    match msg.body {
        ClientBody::Hello(_) | ClientBody::Unknown(_) => {}
        ClientBody::Bye => {
            let bye = server::frame::<()>(id, "bye", None);
            conn.outbox.close_with(
                Some(bye.into()),
                CloseRequest {
                    code: 1000,
                    reason: "bye".into(),
                },
            );
            *s.delivery.lock() = crate::session::Delivery::Closed;
            hub.close_session(&s, CloseReason::Bye).await;
            return Flow::Bye;
        }
        ClientBody::Room(r) => hub.handle_room(conn, &s, id, r).await,
        ClientBody::Message(m) => hub.handle_message(&s, id, m).await,
        ClientBody::Control(m) => hub.handle_relay(&s, "control", m),
        ClientBody::Internal(m) => hub.handle_internal(conn, &s, id, m).await,
        ClientBody::Transient(t) => hub.handle_transient(conn, &s, id, t),
    }
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::close_reason;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("short".into()), "short");
        let long = "é".repeat(100);
        let cut = close_reason(long);
        assert!(cut.len() <= 123 && cut.len() >= 122, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
