//! End-to-end: hello and anonymous-join timeouts, message size cap, rate limit, brute-force blocking, origin check, session limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hpb_test_support::{
    CloseInfo, DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, INTERNAL_SECRET, TestClient,
    error_code, free_config, hmac_sha256_hex, random_string,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// Asserts `frame` is an error with `code` echoing `id` whose message mentions `mentions`.
fn assert_error(frame: &Value, id: &str, code: &str, mentions: &[&str]) {
    assert_eq!(frame["type"], "error", "not an error frame: {frame}");
    assert_eq!(error_code(frame), code, "unexpected error code: {frame}");
    assert_eq!(frame["id"], id, "the error must echo the id: {frame}");
    let message = frame["error"]["message"].as_str().unwrap_or("");
    for m in mentions {
        assert!(
            message.contains(m),
            "the error message should mention {m:?}: {frame}"
        );
    }
}

/// A request answered by the server without side effects (a message with a bogus
/// recipient is refused as `invalid_format`); returns the reply.
async fn probe(c: &mut TestClient) -> Value {
    c.request(json!({"type": "message", "message": {"recipient": {"type": "bogus"}, "data": {}}}))
        .await
}

async fn assert_alive(c: &mut TestClient, who: &str) {
    let reply = probe(c).await;
    assert_eq!(
        error_code(&reply),
        "invalid_format",
        "{who} should still be connected: {reply}"
    );
}

fn assert_bye(close: &CloseInfo, reason: &str) {
    let bye = close
        .bye
        .as_ref()
        .unwrap_or_else(|| panic!("no bye before the close: {close:?}"));
    assert_eq!(
        *bye,
        json!({"type": "bye", "bye": {"reason": reason}}),
        "exact bye shape"
    );
}

async fn resume_v1(c: &mut TestClient, resumeid: &str) -> Result<HelloInfo, Value> {
    c.try_hello(json!({"version": "1.0", "resumeid": resumeid}))
        .await
}

// ----- hello deadline -----

#[tokio::test]
async fn no_hello_in_time_gets_bye_hello_timeout_and_close() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nhello_timeout_ms = 1000\n")).await;

    let mut idle = TestClient::connect(hpb.addr()).await;
    let close = idle
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("closed after the hello timeout");
    assert_bye(&close, "hello_timeout");
    assert_eq!(
        close.frames.first().map(|f| &f["type"]),
        Some(&json!("welcome"))
    );
    assert_eq!(close.code, Some(1000), "{close:?}");
    assert!(
        close.reason.contains("[limits] hello_timeout_ms"),
        "the close reason names the setting: {close:?}"
    );

    // A failed hello restarts the timer; the connection is closed later all the same.
    let mut failed = TestClient::connect(hpb.addr()).await;
    let err = failed
        .try_hello_v1(&nc.backend_url(), "alice", "wrong-ticket")
        .await
        .expect_err("wrong ticket");
    assert_eq!(error_code(&err), "invalid_ticket");
    let close = failed
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("closed after the restarted hello timeout");
    assert_bye(&close, "hello_timeout");

    // A successful hello stops it.
    let mut ok = TestClient::connect(hpb.addr()).await;
    ok.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_alive(&mut ok, "a client after its hello").await;
}

#[tokio::test]
async fn default_hello_timeout_is_two_seconds() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let start = Instant::now();
    let mut idle = TestClient::connect(hpb.addr()).await;
    let close = idle
        .recv_close(Duration::from_secs(10))
        .await
        .expect("closed after the default hello timeout");
    let elapsed = start.elapsed();
    assert_bye(&close, "hello_timeout");
    // A lower bound only: the server cannot close earlier than its deadline.
    assert!(
        elapsed >= Duration::from_millis(1900),
        "closed after {elapsed:?}, before upstream's 2 s"
    );
}

#[tokio::test]
async fn defaults_are_upstreams_in_config_show() {
    let out = Hpb::run(&["config", "show"], &[], Duration::from_secs(20)).await;
    assert!(out.success, "hpb config show failed: {out:?}");
    for line in [
        "limits.hello_timeout_ms = 2000 ",
        "limits.room_join_timeout_ms = 10000 ",
        "limits.resume_window_ms = 30000 ",
        "limits.max_message_size = 65536 ",
        "limits.ws_ping_interval_ms = 54000 ",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(line) && l.contains("# default")),
            "`hpb config show` lacks {line:?}:\n{}",
            out.stdout
        );
    }
}

// ----- anonymous join deadline -----

#[tokio::test]
async fn anonymous_sessions_must_join_a_room_in_time() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nroom_join_timeout_ms = 2000\n")).await;

    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.base_url(), INTERNAL_SECRET)
        .await;
    let mut joined = TestClient::connect(hpb.addr()).await;
    joined
        .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
        .await;
    joined.join("room1", "guest-joined-session").await;

    let mut guest = TestClient::connect(hpb.addr()).await;
    let g = guest
        .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
        .await;
    let close = guest
        .recv_close(Duration::from_secs(10))
        .await
        .expect("the roomless guest is disconnected");
    assert_bye(&close, "room_join_timeout");
    assert!(
        close.reason.contains("[limits] room_join_timeout_ms"),
        "the close reason names the setting: {close:?}"
    );

    // Users, internal clients and guests in a room are not affected (all of them were
    // roomless for longer than the guest that was just kicked).
    assert_alive(&mut alice, "a user session").await;
    assert_alive(&mut internal, "an internal session").await;
    assert_alive(&mut joined, "a guest in a room").await;

    // The kicked session is gone for good.
    let mut again = TestClient::connect(hpb.addr()).await;
    let err = resume_v1(&mut again, &g.resumeid)
        .await
        .expect_err("no resume after room_join_timeout");
    assert_eq!(error_code(&err), "no_such_session", "{err}");

    // Leaving the room restarts the deadline.
    joined.leave().await;
    let close = joined
        .recv_close(Duration::from_secs(10))
        .await
        .expect("the guest that left is disconnected");
    assert_bye(&close, "room_join_timeout");
    assert_alive(&mut alice, "a user session").await;
}

// ----- message size -----

/// A `message` to `session` with a payload of `n` characters.
fn message_to(session: &str, n: usize) -> String {
    json!({"type": "message", "message": {"recipient": {"type": "session", "sessionid": session},
        "data": {"fill": "x".repeat(n)}}})
    .to_string()
}

#[tokio::test]
async fn a_message_over_max_message_size_closes_the_connection_with_the_reason() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nmax_message_size = 1024\n")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let a = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let h = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    let small = message_to(&h.sessionid, 800);
    assert!(small.len() <= 1024);
    c.send_text(&small).await;
    let m = bob.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(
        m["message"]["data"]["fill"].as_str().map(str::len),
        Some(800)
    );

    let big = message_to(&h.sessionid, 2000);
    c.send_text(&big).await;
    let close = c
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("an oversized message drops the connection");
    assert_eq!(
        close.code,
        Some(1009),
        "close code 1009 (too big): {close:?}"
    );
    assert!(
        close.reason.contains("1024") && close.reason.contains("[limits] max_message_size"),
        "the close reason names the limit and the setting: {close:?}"
    );
    assert!(
        bob.recv(Duration::from_millis(300)).await.is_none(),
        "the big message was not relayed"
    );
    assert_alive(&mut bob, "the receiver").await;

    // Only the connection was dropped: the session can be resumed like after any drop.
    let mut again = TestClient::connect(hpb.addr()).await;
    let resumed = resume_v1(&mut again, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume after an oversized message failed: {e}"));
    assert_eq!(resumed.sessionid, a.sessionid);
}

/// The close code reaches the client even when hpb closes with much of the client's input
/// unread (an oversized message it stopped reading): dropping a socket with unread input
/// resets it, and a reset discards the Close frame still in flight.
#[tokio::test]
async fn an_oversized_message_left_unread_still_gets_its_close_code_to_the_client() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nmax_message_size = 1024\n")).await;
    for round in 0..5 {
        let mut c = TestClient::connect(hpb.addr()).await;
        c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
            .await;
        // 1 MiB: hpb refuses it from the frame header and never reads the rest.
        c.send_text(&"x".repeat(1024 * 1024)).await;
        let close = c
            .recv_close(DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("round {round}: no Close frame, the connection was reset"));
        assert_eq!(close.code, Some(1009), "round {round}: {close:?}");
        assert!(
            close.reason.contains("[limits] max_message_size"),
            "{close:?}"
        );
    }
}

#[tokio::test]
async fn default_max_message_size_is_64_kib() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let h = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    let fits = message_to(&h.sessionid, 60 * 1024);
    assert!(fits.len() < 64 * 1024);
    c.send_text(&fits).await;
    let m = bob.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(
        m["message"]["data"]["fill"].as_str().map(str::len),
        Some(60 * 1024)
    );
    let too_big = message_to(&h.sessionid, 64 * 1024);
    assert!(too_big.len() > 64 * 1024);
    c.send_text(&too_big).await;
    let close = c
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("more than 64 KiB drops the connection");
    assert_eq!(close.code, Some(1009), "{close:?}");
    assert!(close.reason.contains("65536"), "{close:?}");
}

// ----- rate limit -----

#[tokio::test]
async fn per_connection_rate_limit_refuses_with_an_explanation() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(
        &nc,
        "[limits]\nclient_rate = 1\nclient_burst = 3\n",
    ))
    .await;
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            c.send_with_id(
                json!({"type": "message", "message": {"recipient": {"type": "bogus"}, "data": {}}}),
            )
            .await,
        );
    }
    let mut processed = 0;
    let mut refused = 0;
    for id in &ids {
        let reply = c
            .wait_reply(id, DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("every message gets one reply; none for {id}"));
        match error_code(&reply) {
            "invalid_format" => processed += 1,
            "too_many_requests" => {
                refused += 1;
                assert_error(
                    &reply,
                    id,
                    "too_many_requests",
                    &["[limits] client_rate", "not processed"],
                );
            }
            other => panic!("unexpected reply {other}: {reply}"),
        }
    }
    assert!(processed >= 1, "the burst lets some through");
    assert!(
        refused >= 5,
        "a burst of 10 at 1/s with burst 3: {refused} refused"
    );

    // The connection stays; after a while tokens are back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_alive(&mut c, "a rate-limited client").await;
}

// ----- brute-force protection -----

/// Sends a hello that fails on each of `n` new connections without waiting for the
/// replies (hpb delays each failure exponentially); returns the connections.
async fn fire_failures(hpb: &Hpb, n: usize, hello: impl Fn(usize) -> Value) -> Vec<TestClient> {
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = TestClient::connect(hpb.addr()).await;
        c.send_with_id(json!({"type": "hello", "hello": hello(i)}))
            .await;
        conns.push(c);
    }
    conns
}

#[tokio::test]
async fn ten_failed_resumes_from_one_address_are_blocked() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    // A well-formed resume id of a finished session: refused without counting as a failure.
    let mut gone = TestClient::connect(hpb.addr()).await;
    let g = gone
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    gone.bye().await;
    for _ in 0..12 {
        let mut c = TestClient::connect(hpb.addr()).await;
        let err = resume_v1(&mut c, &g.resumeid).await.expect_err("finished");
        assert_eq!(error_code(&err), "no_such_session", "{err}");
    }

    let _pending = fire_failures(
        &hpb,
        10,
        |_| json!({"version": "1.0", "resumeid": format!("garbage-{}", random_string(20))}),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let blocked = loop {
        let mut c = TestClient::connect(hpb.addr()).await;
        let err = resume_v1(&mut c, &g.resumeid)
            .await
            .expect_err("never resumes");
        match error_code(&err) {
            "too_many_requests" => break err,
            "no_such_session" => {}
            other => panic!("unexpected {other}: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "10 failed resumes did not block the address"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_error(&blocked, "1", "too_many_requests", &["resume", "wait"]);

    // Another client address (through a trusted proxy, 127.0.0.1 is one by default) is not
    // blocked, and other hellos from the blocked address still work.
    let mut proxied =
        TestClient::connect_with_headers(hpb.addr(), &[("X-Real-IP", "10.9.8.7")]).await;
    let err = resume_v1(&mut proxied, &g.resumeid)
        .await
        .expect_err("finished");
    assert_eq!(error_code(&err), "no_such_session", "{err}");
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    let mut i = TestClient::connect(hpb.addr()).await;
    i.hello_internal(&nc.base_url(), INTERNAL_SECRET).await;
}

#[tokio::test]
async fn ten_failed_internal_hellos_from_one_address_are_blocked() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let base = nc.base_url();
    // Wrong tokens and (with the right token) unknown backends both count, like upstream.
    let _pending = fire_failures(&hpb, 10, |i| {
        let random = random_string(64);
        let (secret, backend) = if i % 2 == 0 {
            (&b"a-wrong-secret"[..], base.as_str())
        } else {
            (INTERNAL_SECRET.as_bytes(), "https://unknown.example/")
        };
        let token = hmac_sha256_hex(secret, random.as_bytes());
        json!({"version": "1.0", "auth": {"type": "internal",
            "params": {"random": random, "token": token, "backend": backend}}})
    })
    .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let blocked = loop {
        let mut c = TestClient::connect(hpb.addr()).await;
        match c.try_hello_internal(&nc.base_url(), INTERNAL_SECRET).await {
            Err(err) if error_code(&err) == "too_many_requests" => break err,
            Err(err) => panic!("unexpected refusal: {err}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "10 failed internal hellos did not block the address"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Even the right secret is refused while blocked.
    assert_error(&blocked, "1", "too_many_requests", &["internal", "wait"]);

    let mut proxied =
        TestClient::connect_with_headers(hpb.addr(), &[("X-Real-IP", "10.9.8.7")]).await;
    proxied
        .hello_internal(&nc.base_url(), INTERNAL_SECRET)
        .await;
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
}

// ----- origin check -----

#[tokio::test]
async fn allowed_origins_refuse_other_origins_with_an_explanation() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(
        &nc,
        "[http]\nallowed_origins = [\"https://cloud.example\"]\n",
    ))
    .await;

    let refused =
        TestClient::try_connect_with_headers(hpb.addr(), &[("Origin", "https://evil.example")])
            .await
            .expect_err("a foreign origin is refused");
    assert_eq!(refused.status, Some(403), "{refused:?}");
    assert!(
        refused.body.contains("https://evil.example")
            && refused.body.contains("[http] allowed_origins"),
        "the body names the origin and the setting: {refused:?}"
    );

    let mut ok =
        TestClient::connect_with_headers(hpb.addr(), &[("Origin", "https://cloud.example")]).await;
    ok.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;

    // Talk's mobile and desktop apps send no Origin.
    let mut app = TestClient::connect(hpb.addr()).await;
    app.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
}

#[tokio::test]
async fn without_allowed_origins_every_origin_is_accepted() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c =
        TestClient::connect_with_headers(hpb.addr(), &[("Origin", "https://anything.example")])
            .await;
    c.hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
}

// ----- session limit -----

#[tokio::test]
async fn backend_sessionlimit_refuses_more_sessions_but_not_internal_ones() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "[backends.nc1]\nsessionlimit = 2\n")).await;
    let url = nc.backend_url();

    let mut alice = TestClient::connect(hpb.addr()).await;
    alice.hello_v1(&url, "alice", &nc.ticket("alice")).await;
    let mut guest = TestClient::connect(hpb.addr()).await;
    let g = guest.hello_v1(&url, None, &nc.guest_ticket()).await;

    let mut bob = TestClient::connect(hpb.addr()).await;
    let err = bob
        .try_hello_v1(&url, "bob", &nc.ticket("bob"))
        .await
        .expect_err("limit reached");
    assert_error(
        &err,
        "1",
        "session_limit_exceeded",
        &["[backends.nc1] sessionlimit", "2"],
    );
    let token = nc.token(Some("bob"), Default::default());
    let err = bob
        .try_hello_v2(&url, &token)
        .await
        .expect_err("v2 counts too");
    assert_error(&err, "2", "session_limit_exceeded", &[]);

    // Internal sessions are not counted.
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.base_url(), INTERNAL_SECRET)
        .await;
    let mut internal2 = TestClient::connect(hpb.addr()).await;
    internal2
        .hello_internal(&nc.base_url(), INTERNAL_SECRET)
        .await;

    // A resume takes no second slot.
    drop(guest);
    // Whether or not hpb already noticed the drop (offline or takeover), the resume
    // keeps the one slot of the session.
    let mut guest = TestClient::connect(hpb.addr()).await;
    let r = resume_v1(&mut guest, &g.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume at the limit failed: {e}"));
    assert_eq!(r.sessionid, g.sessionid);
    let mut dave = TestClient::connect(hpb.addr()).await;
    let err = dave
        .try_hello_v1(&url, "carol", &nc.ticket("carol"))
        .await
        .expect_err("still full after the resume");
    assert_error(&err, "1", "session_limit_exceeded", &[]);

    // A bye frees the slot; the refused socket may try again.
    alice.bye().await;
    let hello = bob
        .try_hello_v1(&url, "bob", &nc.ticket("bob"))
        .await
        .unwrap_or_else(|e| panic!("a freed slot is usable: {e}"));
    assert_eq!(hello.raw["id"], "3");
    let mut carol = TestClient::connect(hpb.addr()).await;
    let err = carol
        .try_hello_v1(&url, "carol", &nc.ticket("carol"))
        .await
        .expect_err("full again");
    assert_error(&err, "1", "session_limit_exceeded", &[]);
}

// ----- WebSocket ping -----

/// Reads one WebSocket frame sent by the server (unmasked): (opcode, payload).
async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.expect("frame header");
    let opcode = head[0] & 0x0f;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.expect("16-bit length");
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.expect("64-bit length");
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let mut payload = vec![0u8; usize::try_from(len).expect("frame length fits")];
    s.read_exact(&mut payload).await.expect("frame payload");
    (opcode, payload)
}

#[tokio::test]
async fn the_server_pings_at_once_with_unix_nanoseconds() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut s = tokio::net::TcpStream::connect(hpb.addr())
        .await
        .expect("TCP connect");
    let request = format!(
        "GET /spreed HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        hpb.addr()
    );
    s.write_all(request.as_bytes()).await.expect("send upgrade");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("upgrade response");
        response.push(b[0]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");

    // The default interval is 54 s: a ping within 5 s is the one sent right after connect.
    let ping = tokio::time::timeout(DEFAULT_TIMEOUT, async {
        loop {
            let (opcode, payload) = read_frame(&mut s).await;
            if opcode == 0x9 {
                break payload;
            }
        }
    })
    .await
    .expect("a ping right after connect");
    let text = String::from_utf8(ping).expect("ping payload is text");
    let nanos: u128 = text
        .parse()
        .unwrap_or_else(|e| panic!("ping payload {text:?} is not a decimal number: {e}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let minute = 60 * 1_000_000_000u128;
    assert!(
        nanos + minute > now && nanos < now + minute,
        "ping payload {nanos} is not Unix time in nanoseconds (now {now})"
    );
}

#[tokio::test]
async fn brute_force_counts_ipv6_clients_by_their_64_prefix() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut gone = TestClient::connect(hpb.addr()).await;
    let g = gone
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    gone.bye().await;

    // Ten different addresses of one /64 (behind a trusted proxy: 127.0.0.1 is one).
    let mut pending = Vec::new();
    for i in 1..=10 {
        let ip = format!("2001:db8:1:2::{i:x}");
        let mut c = TestClient::connect_with_headers(hpb.addr(), &[("X-Real-IP", &ip)]).await;
        c.send_with_id(
            json!({"type": "hello", "hello": {"version": "1.0", "resumeid": "garbage"}}),
        )
        .await;
        pending.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut c =
            TestClient::connect_with_headers(hpb.addr(), &[("X-Real-IP", "2001:db8:1:2:ffff::1")])
                .await;
        let err = resume_v1(&mut c, &g.resumeid)
            .await
            .expect_err("never resumes");
        match error_code(&err) {
            "too_many_requests" => break,
            "no_such_session" => {}
            other => panic!("unexpected {other}: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "failures from one /64 did not block it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The neighbouring /64 and the proxy's own address are not blocked.
    for ip in ["2001:db8:1:3::1", "127.0.0.1"] {
        let mut c = TestClient::connect_with_headers(hpb.addr(), &[("X-Real-IP", ip)]).await;
        let err = resume_v1(&mut c, &g.resumeid).await.expect_err("finished");
        assert_eq!(error_code(&err), "no_such_session", "{ip}: {err}");
    }
    drop(pending);
}
