//! End-to-end: POST /api/v1/room/{token} from Nextcloud: authentication, every request type, status codes.

use std::net::SocketAddr;
use std::time::Duration;

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, HeaderMap, Hpb, RawReply, TestClient, backend_checksum,
    free_config, random_string,
};
use serde_json::{Value, json};

use crate::http_endpoints::{HttpReply, TALK_REQUIRED, http_raw};

/// Everything about one backend request, defaulting to a correct one from `nc`.
#[derive(Clone, Debug)]
pub(crate) struct Post {
    body: String,
    secret: String,
    /// `Spreed-Signaling-Backend`; `None` leaves the header out.
    backend: Option<String>,
    /// `Content-Type`; `None` leaves the header out.
    content_type: Option<String>,
    random: Option<String>,
    checksum: Option<String>,
    omit_random: bool,
    omit_checksum: bool,
    /// Sent as `X-Real-IP` (hpb trusts loopback as a proxy by default), to give each
    /// case its own brute-force counter.
    client_ip: Option<String>,
    /// Send the body chunked, without Content-Length.
    chunked: bool,
}

impl Post {
    pub(crate) fn new(nc: &FakeNextcloud, body: Value) -> Post {
        Post {
            body: body.to_string(),
            secret: nc.secret(),
            backend: Some(nc.base_url()),
            content_type: Some("application/json".into()),
            random: None,
            checksum: None,
            omit_random: false,
            omit_checksum: false,
            client_ip: None,
            chunked: false,
        }
    }

    fn raw_body(mut self, body: &str) -> Post {
        self.body = body.to_string();
        self
    }

    fn ip(mut self, ip: &str) -> Post {
        self.client_ip = Some(ip.to_string());
        self
    }

    pub(crate) async fn send(&self, addr: SocketAddr, room: &str) -> HttpReply {
        let random = self.random.clone().unwrap_or_else(|| random_string(64));
        let checksum = self
            .checksum
            .clone()
            .unwrap_or_else(|| backend_checksum(&self.secret, &random, self.body.as_bytes()));
        let mut head = format!("POST /api/v1/room/{room} HTTP/1.1");
        let mut add = |n: &str, v: &str| head.push_str(&format!("\r\n{n}: {v}"));
        if let Some(ct) = &self.content_type {
            add("Content-Type", ct);
        }
        if !self.omit_random {
            add("Spreed-Signaling-Random", &random);
        }
        if !self.omit_checksum {
            add("Spreed-Signaling-Checksum", &checksum);
        }
        if let Some(b) = &self.backend {
            add("Spreed-Signaling-Backend", b);
        }
        if let Some(ip) = &self.client_ip {
            add("X-Real-IP", ip);
        }
        let body = if self.chunked {
            add("Transfer-Encoding", "chunked");
            format!("{:x}\r\n{}\r\n0\r\n\r\n", self.body.len(), self.body).into_bytes()
        } else {
            add("Content-Length", &self.body.len().to_string());
            self.body.clone().into_bytes()
        };
        http_raw(addr, &head, &body).await
    }
}

/// Asserts a successful room request: 200, `{}`, JSON with charset, signaling headers.
fn assert_ok(r: &HttpReply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(r.body.trim(), "{}", "{what}: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{what}: {r:?}"
    );
    r.assert_signaling_headers(what);
}

/// Asserts the Talk-required features in a reqwest header map (replies to `post_room`).
fn assert_features(h: &HeaderMap, what: &str) {
    let v = h
        .get("x-spreed-signaling-features")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no X-Spreed-Signaling-Features: {h:?}"));
    let features: Vec<&str> = v.split(',').map(str::trim).collect();
    for f in TALK_REQUIRED {
        assert!(features.contains(f), "{what}: {f} missing in {v:?}");
    }
    assert!(h.contains_key("server"), "{what}: no Server header");
}

async fn start() -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    nc.add_public_room("room2");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    (nc, hpb)
}

/// alice (room session `alice-talk`) and bob (`bob-talk`) in room1, join events drained.
async fn alice_and_bob(nc: &FakeNextcloud, hpb: &Hpb) -> (TestClient, TestClient) {
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-talk").await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-talk").await;
    let bob_id = bob.sessionid().to_string();
    alice
        .wait_for(
            |f| {
                f["event"]["type"] == "join"
                    && f["event"]["join"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|e| e["sessionid"] == bob_id.as_str()))
            },
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("alice sees bob join");
    alice.drain(Duration::from_millis(100)).await;
    bob.drain(Duration::from_millis(100)).await;
    (alice, bob)
}

/// The first event `target`/`ty` (earlier frames are dropped); panics after the timeout.
async fn ev(c: &mut TestClient, target: &str, ty: &str) -> Value {
    c.wait_event(target, ty, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no {target}/{ty} event within {DEFAULT_TIMEOUT:?}"))
}

/// Frames matching each predicate, in any order (other frames are dropped).
async fn wait_all(c: &mut TestClient, preds: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; preds.len()];
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(f) = c.recv(left).await else {
            panic!("not all expected frames arrived; got {found:?}");
        };
        for (i, p) in preds.iter().enumerate() {
            if found[i].is_none() && p(&f) {
                found[i] = Some(f);
                break;
            }
        }
    }
    found.into_iter().flatten().collect()
}

// ----- the checks before the request is read, in upstream's order -----

#[tokio::test]
async fn missing_content_length_is_411() {
    let (nc, hpb) = start().await;
    let mut p = Post::new(&nc, json!({"type": "message", "message": {"data": {}}}));
    p.chunked = true;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 411, "{r:?}");
    assert!(r.body.contains("Content-Length"), "{r:?}");
    r.assert_signaling_headers("411");

    // Also when the chunked body is larger than the limit.
    let mut big = Post::new(
        &nc,
        json!({"type": "message", "message": {"data": {"pad": "x".repeat(300 * 1024)}}}),
    );
    big.chunked = true;
    let r = big.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 411, "no Content-Length comes first: {r:?}");

    // The length check comes first: even without any other header.
    p.content_type = None;
    p.omit_random = true;
    p.omit_checksum = true;
    p.backend = None;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 411, "{r:?}");
}

#[tokio::test]
async fn body_over_256_kib_is_413() {
    let (nc, hpb) = start().await;
    const MAX: usize = 256 * 1024;
    let pad = |total: usize| {
        let head = r#"{"type":"message","message":{"data":{"pad":""#;
        let tail = r#""}}}"#;
        format!(
            "{head}{}{tail}",
            "x".repeat(total - head.len() - tail.len())
        )
    };
    let exact = pad(MAX);
    assert_eq!(exact.len(), MAX);
    let r = Post::new(&nc, Value::Null)
        .raw_body(&exact)
        .send(hpb.addr(), "room1")
        .await;
    assert_ok(&r, "exactly 256 KiB");

    let over = pad(MAX + 1);
    let r = Post::new(&nc, Value::Null)
        .raw_body(&over)
        .send(hpb.addr(), "room1")
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains(&MAX.to_string()), "names the limit: {r:?}");
    r.assert_signaling_headers("413");

    // A Content-Length over the limit is refused without reading the body.
    let huge = pad(4 * MAX);
    let r = Post::new(&nc, Value::Null)
        .raw_body(&huge)
        .send(hpb.addr(), "room1")
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains(&MAX.to_string()), "names the limit: {r:?}");
    r.assert_signaling_headers("413 huge");

    // Size before content type and authentication.
    let mut p = Post::new(&nc, Value::Null).raw_body(&over);
    p.content_type = Some("text/plain".into());
    p.omit_checksum = true;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 413, "{r:?}");
}

#[tokio::test]
async fn content_type_must_be_json() {
    let (nc, hpb) = start().await;
    let body = json!({"type": "message", "message": {"data": {}}});
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut p = Post::new(&nc, body.clone());
        p.content_type = ct.map(str::to_string);
        // The content type is checked before authentication.
        p.omit_checksum = true;
        let r = p.send(hpb.addr(), "room1").await;
        assert_eq!(r.status, 400, "{ct:?}: {r:?}");
        assert!(
            r.body.contains("application/json"),
            "says what to send: {r:?}"
        );
        r.assert_signaling_headers("400 content type");
    }
    let mut p = Post::new(&nc, body);
    p.content_type = Some("application/json; charset=utf-8".into());
    assert_ok(&p.send(hpb.addr(), "room1").await, "json with charset");
}

// ----- authentication -----

#[tokio::test]
async fn missing_random_or_checksum_is_403_naming_the_header() {
    let (nc, hpb) = start().await;
    let body = json!({"type": "message", "message": {"data": {}}});

    let mut p = Post::new(&nc, body.clone()).ip("192.0.2.1");
    p.omit_random = true;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.starts_with("Authentication check failed"),
        "upstream's text first: {r:?}"
    );
    assert!(r.body.contains("Spreed-Signaling-Random"), "{r:?}");
    assert!(
        !r.body.contains("Spreed-Signaling-Checksum"),
        "only the random is missing: {r:?}"
    );
    r.assert_signaling_headers("403 no random");

    let mut p = Post::new(&nc, body.clone()).ip("192.0.2.2");
    p.omit_checksum = true;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.starts_with("Authentication check failed"), "{r:?}");
    assert!(r.body.contains("Spreed-Signaling-Checksum"), "{r:?}");
    assert!(
        !r.body.contains("Spreed-Signaling-Random"),
        "only the checksum is missing: {r:?}"
    );

    let mut p = Post::new(&nc, body).ip("192.0.2.3");
    p.omit_checksum = true;
    p.omit_random = true;
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("Spreed-Signaling-Random") && r.body.contains("Spreed-Signaling-Checksum"),
        "{r:?}"
    );
}

#[tokio::test]
async fn wrong_checksum_is_403_naming_the_backend_and_the_secret() {
    let (nc, hpb) = start().await;
    let body = json!({"type": "message", "message": {"data": {}}});

    let mut p = Post::new(&nc, body.clone()).ip("192.0.2.10");
    p.secret = "not-the-secret".into();
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.starts_with("Authentication check failed"), "{r:?}");
    assert!(r.body.contains(&nc.base_url()), "names the backend: {r:?}");
    assert!(r.body.contains("secret"), "names the secret: {r:?}");
    r.assert_signaling_headers("403 wrong secret");

    // A checksum that is not even hex, and one over a different body.
    let mut p = Post::new(&nc, body.clone()).ip("192.0.2.11");
    p.checksum = Some("not-hex".into());
    assert_eq!(p.send(hpb.addr(), "room1").await.status, 403);
    let mut p = Post::new(&nc, body.clone()).ip("192.0.2.12");
    p.checksum = Some(backend_checksum(&nc.secret(), "r", b"other body"));
    assert_eq!(p.send(hpb.addr(), "room1").await.status, 403);

    // The checksum is lowercase hex in Talk; upper case is the same value.
    let random = random_string(64);
    let mut p = Post::new(&nc, body).ip("192.0.2.13");
    p.checksum = Some(backend_checksum(&nc.secret(), &random, p.body.as_bytes()).to_uppercase());
    p.random = Some(random);
    assert_ok(&p.send(hpb.addr(), "room1").await, "upper-case checksum");
}

#[tokio::test]
async fn unknown_backend_header_is_403_naming_the_setting() {
    let (nc, hpb) = start().await;
    let mut p =
        Post::new(&nc, json!({"type": "message", "message": {"data": {}}})).ip("192.0.2.20");
    p.backend = Some("https://other.example.com/".into());
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.starts_with("Authentication check failed"), "{r:?}");
    assert!(r.body.contains("https://other.example.com/"), "{r:?}");
    assert!(
        r.body.contains("urls"),
        "names the setting to change: {r:?}"
    );
    r.assert_signaling_headers("403 unknown backend");

    // Without the header (old Talk) the secret decides.
    let mut p = Post::new(&nc, json!({"type": "message", "message": {"data": {}}}));
    p.backend = None;
    assert_ok(&p.send(hpb.addr(), "room1").await, "no backend header");
    let mut p =
        Post::new(&nc, json!({"type": "message", "message": {"data": {}}})).ip("192.0.2.21");
    p.backend = None;
    p.secret = "wrong".into();
    let r = p.send(hpb.addr(), "room1").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("Spreed-Signaling-Backend"), "{r:?}");
}

#[tokio::test]
async fn backend_header_matches_like_a_url() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    // Nextcloud in a subdirectory, configured with a trailing slash.
    let base = format!("http://{}/nextcloud/", nc.addr());
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backends.nc]\nurls = [\"{base}\"]\nsecret = \"{}\"\n",
        random_string(32),
        nc.secret()
    );
    let hpb = Hpb::start(&cfg).await;
    let body = json!({"type": "message", "message": {"data": {}}});
    for header in [
        base.clone(),
        base.trim_end_matches('/').to_string(),
        format!("http://{}/nextcloud/index.php", nc.addr()),
        format!("HTTP://{}/nextcloud/", nc.addr()),
    ] {
        let mut p = Post::new(&nc, body.clone());
        p.backend = Some(header.clone());
        assert_ok(&p.send(hpb.addr(), "room1").await, &header);
    }
    for (i, header) in [
        format!("http://{}/", nc.addr()),
        format!("http://{}/nextcloud2/", nc.addr()),
        "not a url".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = Post::new(&nc, body.clone()).ip(&format!("192.0.2.{}", 30 + i));
        p.backend = Some(header.clone());
        let r = p.send(hpb.addr(), "room1").await;
        assert_eq!(r.status, 403, "{header}: {r:?}");
        assert!(r.body.starts_with("Authentication check failed"), "{r:?}");
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_429() {
    let (nc, hpb) = start().await;
    let addr = hpb.addr();
    let body = json!({"type": "message", "message": {"data": {}}});
    let attacker = "198.51.100.66";
    // Ten failures (each delays its own reply by up to 25 s, so they run concurrently and
    // are not waited for).
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut p = Post::new(&nc, body.clone()).ip(attacker);
        if i % 2 == 0 {
            p.secret = "guessed-secret".into();
        } else {
            // Unknown backends count as failures too.
            p.backend = Some(format!("https://guess{i}.example.com/"));
        }
        tasks.push(tokio::spawn(async move { p.send(addr, "room1").await }));
    }
    // Correct requests are not failures; once ten failures are counted they are refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let r = Post::new(&nc, body.clone())
            .ip(attacker)
            .send(addr, "room1")
            .await;
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 429 after ten failures"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(blocked.body.contains(attacker), "{blocked:?}");
    blocked.assert_signaling_headers("429");
    // Wrong ones are refused the same way, without the delay.
    let mut p = Post::new(&nc, body.clone()).ip(attacker);
    p.secret = "guessed-secret".into();
    assert_eq!(p.send(addr, "room1").await.status, 429);
    // Another address is unaffected.
    let r = Post::new(&nc, body)
        .ip("198.51.100.67")
        .send(addr, "room1")
        .await;
    assert_ok(&r, "other client address");
    for t in tasks {
        t.abort();
    }
}

// ----- the body -----

#[tokio::test]
async fn invalid_json_unknown_type_and_transient_are_400() {
    let (nc, hpb) = start().await;
    for (body, needle) in [
        ("{not json", ""),
        ("[1,2]", ""),
        (
            r#"{"type":"nonsense","nonsense":{}}"#,
            "Unsupported request type: nonsense",
        ),
        (
            r#"{"type":"transient","transient":{"action":"set","key":"k","value":1}}"#,
            "Unsupported request type: transient",
        ),
    ] {
        let r = Post::new(&nc, Value::Null)
            .raw_body(body)
            .send(hpb.addr(), "room1")
            .await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.body.contains(needle), "{body}: {r:?}");
        r.assert_signaling_headers(body);
    }
}

#[tokio::test]
async fn post_room_of_the_fake_gets_the_talk_headers() {
    let (nc, hpb) = start().await;
    let (status, headers, body) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "update", "update": {"userids": [], "properties": {"name": "n"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "{}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    assert_features(&headers, "update via the fake");
}

// ----- request types -----

#[tokio::test]
async fn invite_notifies_invited_and_updates_the_others() {
    let (nc, hpb) = start().await;
    let (mut alice, _bob) = alice_and_bob(&nc, &hpb).await;
    let mut carol = TestClient::connect(hpb.addr()).await;
    carol
        .hello_v1(&nc.backend_url(), "carol", &nc.ticket("carol"))
        .await;
    let r = Post::new(
        &nc,
        json!({"type": "invite", "invite": {"userids": ["carol"], "alluserids": ["alice", "bob", "carol"], "properties": {"name": "Room One"}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "invite");
    let e = ev(&mut carol, "roomlist", "invite").await;
    assert_eq!(e["event"]["invite"]["roomid"], "room1", "{e}");
    assert_eq!(e["event"]["invite"]["properties"]["name"], "Room One");
    let e = ev(&mut alice, "roomlist", "update").await;
    assert_eq!(e["event"]["update"]["roomid"], "room1", "{e}");
}

#[tokio::test]
async fn disinvite_tells_the_user_and_disconnects_the_session_in_the_room() {
    let (nc, hpb) = start().await;
    let (mut alice, mut bob) = alice_and_bob(&nc, &hpb).await;
    let r = Post::new(
        &nc,
        json!({"type": "disinvite", "disinvite": {"userids": ["bob"], "alluserids": ["alice"], "properties": {"name": "room1"}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "disinvite");
    let e = ev(&mut bob, "roomlist", "disinvite").await;
    assert_eq!(e["event"]["disinvite"]["roomid"], "room1", "{e}");
    assert_eq!(e["event"]["disinvite"]["reason"], "disinvited", "{e}");
    assert!(
        bob.recv_close(DEFAULT_TIMEOUT).await.is_some(),
        "bob's connection is closed"
    );
    ev(&mut alice, "roomlist", "update").await;

    // By Talk session id ("0" = not in the meeting, ignored).
    let r = Post::new(
        &nc,
        json!({"type": "disinvite", "disinvite": {"sessionids": ["0", "alice-talk"], "alluserids": []}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "disinvite by session");
    let e = ev(&mut alice, "roomlist", "disinvite").await;
    assert_eq!(e["event"]["disinvite"]["reason"], "disinvited", "{e}");
    assert!(
        alice.recv_close(DEFAULT_TIMEOUT).await.is_some(),
        "alice's connection is closed"
    );
}

#[tokio::test]
async fn disinvite_leaves_sessions_in_other_rooms_connected() {
    let (nc, hpb) = start().await;
    let (_alice, mut bob) = alice_and_bob(&nc, &hpb).await;
    let bob_resume = bob.session().expect("bob's session").resumeid.clone();
    // carol is online but in room2.
    let mut carol = TestClient::connect(hpb.addr()).await;
    carol
        .hello_v1(&nc.backend_url(), "carol", &nc.ticket("carol"))
        .await;
    carol.join("room2", "carol-talk").await;
    let r = Post::new(
        &nc,
        json!({"type": "disinvite", "disinvite": {"userids": ["bob", "carol"], "alluserids": []}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "disinvite");
    let e = ev(&mut carol, "roomlist", "disinvite").await;
    assert_eq!(e["event"]["disinvite"]["roomid"], "room1", "{e}");
    ev(&mut bob, "roomlist", "disinvite").await;
    bob.recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("bob (in room1) is disconnected");
    // carol stays: she can still talk to the server.
    let reply = carol
        .request(json!({"type": "room", "room": {"roomid": "room2", "sessionid": "carol-talk"}}))
        .await;
    assert_eq!(reply["error"]["code"], "already_joined", "{reply}");
    // bob's session is gone, not resumable.
    let mut again = TestClient::connect(hpb.addr()).await;
    let err = again
        .try_resume(&bob_resume)
        .await
        .expect_err("a disinvited session cannot be resumed");
    assert_eq!(err["error"]["code"], "no_such_session", "{err}");
}

#[tokio::test]
async fn update_sends_new_properties_to_the_room() {
    let (nc, hpb) = start().await;
    let (mut alice, mut bob) = alice_and_bob(&nc, &hpb).await;
    let r = Post::new(
        &nc,
        json!({"type": "update", "update": {"userids": ["alice"], "properties": {"name": "Renamed", "type": 3}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "update");
    let got = wait_all(
        &mut alice,
        &[&|f| f["type"] == "room", &|f| {
            f["event"]["target"] == "roomlist" && f["event"]["type"] == "update"
        }],
    )
    .await;
    assert_eq!(got[0]["room"]["roomid"], "room1", "{}", got[0]);
    assert_eq!(
        got[0]["room"]["properties"]["name"], "Renamed",
        "{}",
        got[0]
    );
    assert_eq!(got[1]["event"]["update"]["properties"]["name"], "Renamed");
    let f = bob
        .wait_for(|f| f["type"] == "room", DEFAULT_TIMEOUT)
        .await
        .expect("bob gets the new properties");
    assert_eq!(f["room"]["properties"]["name"], "Renamed", "{f}");

    // The same properties again change nothing: no room message.
    bob.drain(Duration::from_millis(100)).await;
    let r = Post::new(
        &nc,
        json!({"type": "update", "update": {"userids": [], "properties": {"name": "Renamed", "type": 3}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "same update");
    let frames = bob.drain(Duration::from_millis(300)).await;
    assert!(
        frames.iter().all(|f| f["type"] != "room"),
        "unchanged properties are not resent: {frames:?}"
    );
}

#[tokio::test]
async fn delete_moves_members_out_of_the_room() {
    let (nc, hpb) = start().await;
    let (mut alice, mut bob) = alice_and_bob(&nc, &hpb).await;
    let r = Post::new(
        &nc,
        json!({"type": "delete", "delete": {"userids": ["alice", "bob"]}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "delete");
    for c in [&mut alice, &mut bob] {
        let got = wait_all(
            c,
            &[&|f| f["type"] == "room", &|f| {
                f["event"]["target"] == "roomlist" && f["event"]["type"] == "disinvite"
            }],
        )
        .await;
        assert_eq!(got[0]["room"]["roomid"], "", "moved out: {}", got[0]);
        assert_eq!(
            got[1]["event"]["disinvite"]["reason"], "deleted",
            "{}",
            got[1]
        );
    }
    let stats = crate::http_endpoints::http_get(hpb.addr(), "/api/v1/stats", &[]).await;
    assert_eq!(stats.json()["rooms"], 0, "{stats:?}");
}

#[tokio::test]
async fn delete_tells_internal_clients() {
    let (nc, hpb) = start().await;
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.backend_url(), hpb_test_support::INTERNAL_SECRET)
        .await;
    internal.join("room1", None).await;
    internal.drain(Duration::from_millis(100)).await;
    let r = Post::new(&nc, json!({"type": "delete", "delete": {"userids": []}}))
        .send(hpb.addr(), "room1")
        .await;
    assert_ok(&r, "delete");
    // Upstream's event has no payload: the internal client knows its room.
    ev(&mut internal, "room", "delete").await;
    let stats = crate::http_endpoints::http_get(hpb.addr(), "/api/v1/stats", &[]).await;
    assert_eq!(stats.json()["rooms"], 0, "{stats:?}");
}

#[tokio::test]
async fn participants_and_incall_updates_reach_the_room() {
    let (nc, hpb) = start().await;
    let (mut alice, bob) = alice_and_bob(&nc, &hpb).await;
    let bob_id = bob.sessionid().to_string();
    let entry = |talk: &str, user: &str, in_call: u64| json!({"inCall": in_call, "lastPing": 1, "sessionId": talk, "participantType": 3, "userId": user, "actorType": "users", "actorId": user, "participantPermissions": 254});
    let r = Post::new(
        &nc,
        json!({"type": "participants", "participants": {"changed": [entry("bob-talk", "bob", 0)], "users": [entry("alice-talk", "alice", 0), entry("bob-talk", "bob", 0), entry("0", "carol", 0)]}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "participants");
    let e = ev(&mut alice, "participants", "update").await;
    let users = e["event"]["update"]["users"]
        .as_array()
        .expect("users")
        .clone();
    assert_eq!(e["event"]["update"]["roomid"], "room1", "{e}");
    assert!(
        users.iter().any(|u| u["sessionId"] == bob_id.as_str()),
        "Talk session ids are mapped to signaling ids: {e}"
    );
    assert!(users.iter().all(|u| u["sessionId"] != "bob-talk"), "{e}");

    let r = Post::new(
        &nc,
        json!({"type": "incall", "incall": {"incall": 7, "changed": [entry("bob-talk", "bob", 7)], "users": [entry("bob-talk", "bob", 7)]}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "incall");
    let e = ev(&mut alice, "participants", "update").await;
    let users = e["event"]["update"]["users"].as_array().expect("users");
    assert!(
        users
            .iter()
            .any(|u| u["sessionId"] == bob_id.as_str() && u["inCall"] == 7),
        "{e}"
    );

    let r = Post::new(
        &nc,
        json!({"type": "incall", "incall": {"incall": 0, "all": true}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "incall all");
    let e = ev(&mut alice, "participants", "update").await;
    assert_eq!(e["event"]["update"]["all"], true, "{e}");
    assert_eq!(e["event"]["update"]["incall"], 0, "{e}");
}

#[tokio::test]
async fn message_reaches_room_members() {
    let (nc, hpb) = start().await;
    let (mut alice, _bob) = alice_and_bob(&nc, &hpb).await;
    let r = Post::new(
        &nc,
        json!({"type": "message", "message": {"data": {"type": "recording", "recording": {"status": 1}}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "message");
    let e = ev(&mut alice, "room", "message").await;
    assert_eq!(e["event"]["message"]["roomid"], "room1", "{e}");
    assert_eq!(
        e["event"]["message"]["data"],
        json!({"type": "recording", "recording": {"status": 1}})
    );
    // A message for another room of the backend does not reach alice.
    let r = Post::new(
        &nc,
        json!({"type": "message", "message": {"data": {"type": "other-room"}}}),
    )
    .send(hpb.addr(), "room2")
    .await;
    assert_ok(&r, "message to an empty room");
    let frames = alice.drain(Duration::from_millis(200)).await;
    assert!(frames.is_empty(), "{frames:?}");
}

#[tokio::test]
async fn switchto_reaches_the_named_sessions() {
    let (nc, hpb) = start().await;
    let (mut alice, mut bob) = alice_and_bob(&nc, &hpb).await;
    let r = Post::new(
        &nc,
        json!({"type": "switchto", "switchto": {"roomid": "room2", "sessions": ["alice-talk"]}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "switchto list");
    let e = ev(&mut alice, "room", "switchto").await;
    assert_eq!(e["event"]["switchto"]["roomid"], "room2", "{e}");
    let r = Post::new(
        &nc,
        json!({"type": "switchto", "switchto": {"roomid": "room2", "sessions": {"bob-talk": {"breakout": 1}, "alice-talk": null}}}),
    )
    .send(hpb.addr(), "room1")
    .await;
    assert_ok(&r, "switchto map");
    let e = ev(&mut bob, "room", "switchto").await;
    assert_eq!(e["event"]["switchto"]["details"], json!({"breakout": 1}));
    let e = ev(&mut alice, "room", "switchto").await;
    assert!(e["event"]["switchto"].get("details").is_none(), "{e}");
}

#[tokio::test]
async fn dialout_without_a_sip_bridge_is_404_no_client_available() {
    let (nc, hpb) = start().await;
    let dialout = |number: Value| json!({"type": "dialout", "dialout": {"number": number, "options": {"attendeeId": 5, "actorType": "phones", "actorId": "p1", "caller": "+4930123"}}});
    let r = Post::new(&nc, dialout(json!("+4912345678")))
        .send(hpb.addr(), "42")
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    r.assert_signaling_headers("dialout 404");
    let v = r.json();
    assert_eq!(v["type"], "dialout", "{v}");
    assert_eq!(v["dialout"]["error"]["code"], "no_client_available", "{v}");
    assert!(v["dialout"]["error"]["message"].is_string(), "{v}");

    for (number, room, code) in [
        (json!(""), "42", "number_missing"),
        (Value::Null, "42", "number_missing"),
        (json!("0301234"), "42", "invalid_number"),
        (json!("+4"), "42", "invalid_number"),
        (json!("+49 30 1234"), "42", "invalid_number"),
        (json!("+4912345678"), "room1", "invalid_roomid"),
    ] {
        let r = Post::new(&nc, dialout(number.clone()))
            .send(hpb.addr(), room)
            .await;
        assert_eq!(r.status, 400, "{number} in {room}: {r:?}");
        let v = r.json();
        assert_eq!(v["type"], "dialout", "{v}");
        assert_eq!(v["dialout"]["error"]["code"], code, "{number}: {v}");
    }
}

// ----- hpb → Nextcloud -----

fn assert_talk_request(rec: &hpb_test_support::Recorded, nc: &FakeNextcloud) {
    let what = &rec.kind;
    assert!(rec.authenticated, "{what}: checksum must verify: {rec:?}");
    assert_eq!(rec.header("ocs-apirequest"), Some("true"), "{what}");
    assert!(
        rec.header("accept")
            .is_some_and(|a| a.contains("application/json")),
        "{what}: Accept {:?}",
        rec.header("accept")
    );
    assert!(
        rec.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}"
    );
    assert!(
        rec.header("user-agent")
            .is_some_and(|u| u.starts_with("nextcloud-spreed-signaling/")),
        "{what}: User-Agent {:?}",
        rec.header("user-agent")
    );
    let features: Vec<&str> = rec
        .header("x-spreed-signaling-features")
        .unwrap_or_else(|| panic!("{what}: no features header"))
        .split(',')
        .map(str::trim)
        .collect();
    for f in TALK_REQUIRED {
        assert!(features.contains(f), "{what}: {f} missing: {features:?}");
    }
    let random = rec
        .header("spreed-signaling-random")
        .expect("random header");
    assert!(
        random.len() >= 32,
        "{what}: random {random:?} is too short for Talk"
    );
    assert_eq!(
        rec.header("spreed-signaling-backend"),
        Some(nc.base_url().as_str()),
        "{what}"
    );
    assert_eq!(rec.body["type"], rec.kind.as_str(), "{what}");
    assert_eq!(rec.inner()["version"], "1.0", "{what}: {}", rec.body);
}

#[tokio::test]
async fn requests_to_nextcloud_are_signed_and_shaped_like_upstream() {
    let (nc, hpb) = start().await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-talk").await;
    alice.leave().await;

    let auth = nc.requests_of_type("auth");
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(
        auth[0].path,
        "/ocs/v2.php/apps/spreed/api/v3/signaling/backend"
    );
    assert_talk_request(&auth[0], &nc);
    assert_eq!(
        auth[0].inner()["params"],
        json!({"userid": "alice", "ticket": nc.ticket("alice")}),
        "params verbatim"
    );
    let leave = nc
        .wait_for(
            |r| r.kind == "room" && r.inner()["action"] == "leave",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("a leave request");
    let rooms = nc.requests_of_type("room");
    let join = &rooms[0];
    assert_eq!(
        join.path,
        "/ocs/v2.php/apps/spreed/api/v3/signaling/backend"
    );
    assert_talk_request(join, &nc);
    assert_eq!(join.inner()["roomid"], "room1");
    assert_eq!(join.inner()["userid"], "alice");
    assert_eq!(join.inner()["sessionid"], "alice-talk");
    assert!(
        join.inner().get("action").is_none() || join.inner()["action"] == "join",
        "{}",
        join.body
    );
    assert_talk_request(&leave, &nc);
    assert_eq!(leave.inner()["sessionid"], "alice-talk");

    let caps = nc.requests_of_type("capabilities");
    assert!(!caps.is_empty());
    assert_eq!(caps[0].header("ocs-apirequest"), Some("true"));
    assert!(
        caps[0]
            .header("accept")
            .is_some_and(|a| a.contains("application/json"))
    );
}

#[tokio::test]
async fn room_pings_follow_the_session_ping_limit() {
    for limit in [Some(200), None, Some(1)] {
        let (nc, hpb) = {
            let nc = FakeNextcloud::start().await;
            nc.add_public_room("room1");
            nc.add_public_room("room2");
            nc.set_session_ping_limit(limit);
            let hpb =
                Hpb::start(&free_config(&nc, "[limits]\nroom_ping_interval_ms = 200\n")).await;
            (nc, hpb)
        };
        let mut alice = TestClient::connect(hpb.addr()).await;
        alice
            .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
            .await;
        alice.join("room1", "alice-talk").await;
        let mut bob = TestClient::connect(hpb.addr()).await;
        bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
            .await;
        bob.join("room2", "bob-talk").await;
        let mut guest = TestClient::connect(hpb.addr()).await;
        guest
            .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
            .await;
        guest.join("room2", "guest-talk").await;
        let mark = nc.request_count();

        // Collect pings until every session has been pinged.
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        let mut pings: Vec<hpb_test_support::Recorded> = Vec::new();
        let mut processed = mark;
        loop {
            let all = nc.requests();
            pings.extend(
                all[processed..]
                    .iter()
                    .filter(|r| r.kind == "ping")
                    .cloned(),
            );
            processed = all.len();
            let sessions: Vec<String> = pings
                .iter()
                .flat_map(|p| p.inner()["entries"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["sessionid"].as_str().map(str::to_string))
                .collect();
            if ["alice-talk", "bob-talk", "guest-talk"]
                .iter()
                .all(|s| sessions.iter().any(|x| x == s))
            {
                break;
            }
            nc.wait_for_new(
                processed,
                |r| r.kind == "ping",
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            )
            .await
            .unwrap_or_else(|| panic!("limit {limit:?}: pings so far {pings:?}"));
        }
        for p in &pings {
            assert_talk_request(p, &nc);
            let entries = p.inner()["entries"].as_array().expect("entries");
            for e in entries {
                match e["sessionid"].as_str() {
                    Some("alice-talk") => assert_eq!(e["userid"], "alice", "{e}"),
                    Some("bob-talk") => assert_eq!(e["userid"], "bob", "{e}"),
                    Some("guest-talk") => assert!(e.get("userid").is_none(), "{e}"),
                    other => panic!("unexpected ping entry {other:?}"),
                }
            }
            match limit {
                Some(200) => assert_eq!(p.inner()["roomid"], "", "{}", p.body),
                Some(n) => {
                    assert_eq!(p.inner()["roomid"], "", "{}", p.body);
                    assert!(entries.len() <= n as usize, "{}", p.body);
                }
                None => {
                    let room = p.inner()["roomid"].as_str().unwrap_or_default();
                    let expected = if entries.iter().any(|e| e["sessionid"] == "alice-talk") {
                        "room1"
                    } else {
                        "room2"
                    };
                    assert_eq!(room, expected, "{}", p.body);
                    assert!(entries.len() <= 2, "one request per room: {}", p.body);
                }
            }
        }
        if limit == Some(200) {
            assert!(
                pings
                    .iter()
                    .any(|p| p.inner()["entries"].as_array().map(Vec::len) == Some(3)),
                "all rooms in one request: {pings:?}"
            );
        }
    }
}

#[tokio::test]
async fn v1_endpoint_is_used_without_signaling_v3() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    nc.set_features(&["audio", "video", "chat-v2", "federation-v2"]);
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-talk").await;
    for rec in nc.requests().iter().filter(|r| r.method == "POST") {
        assert_eq!(
            rec.path, "/ocs/v2.php/apps/spreed/api/v1/signaling/backend",
            "{}: {}",
            rec.kind, rec.body
        );
        assert_talk_request(rec, &nc);
    }
    assert!(!nc.requests_of_type("auth").is_empty());
}

#[tokio::test]
async fn unavailable_capabilities_fall_back_to_the_v1_endpoint() {
    let (nc, hpb) = start().await;
    nc.set_raw_reply(
        "capabilities",
        Some(RawReply {
            status: 404,
            content_type: "text/html".into(),
            body: "<html>not found</html>".into(),
        }),
    );
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let auth = nc.requests_of_type("auth");
    assert_eq!(auth.len(), 1);
    assert_eq!(
        auth[0].path,
        "/ocs/v2.php/apps/spreed/api/v1/signaling/backend"
    );
    assert_talk_request(&auth[0], &nc);
}

#[tokio::test]
async fn capabilities_are_fetched_once_and_cached() {
    for max_age in [Some(300), None] {
        let nc = FakeNextcloud::start().await;
        nc.add_public_room("room1");
        nc.set_max_age(max_age);
        let hpb = Hpb::start(&free_config(&nc, "")).await;
        let mut clients = Vec::new();
        for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
            let mut c = TestClient::connect(hpb.addr()).await;
            c.hello_v1(&nc.backend_url(), *user, &nc.ticket(user)).await;
            c.join("room1", format!("talk-{i}").as_str()).await;
            clients.push(c);
        }
        let mut v2 = TestClient::connect(hpb.addr()).await;
        v2.hello_v2(
            &nc.backend_url(),
            &nc.token(Some("alice"), Default::default()),
        )
        .await;
        assert_eq!(
            nc.capabilities_fetches(),
            1,
            "max-age {max_age:?}: capabilities must be cached (at least a minute)"
        );
    }
}

#[tokio::test]
async fn capabilities_are_revalidated_with_their_etag() {
    let (nc, hpb) = start().await;
    nc.configure(|c| {
        c.etag = Some("\"caps-1\"".into());
        c.max_age = Some(300);
        c.omit_token_key = true;
    });
    // A hello v2 without a key in the (cached) capabilities makes hpb look again once.
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v2(
            &nc.backend_url(),
            &nc.token(Some("alice"), Default::default()),
        )
        .await
        .expect_err("no key to verify the token");
    assert_eq!(err["error"]["code"], "invalid_token", "{err}");
    let caps = nc.requests_of_type("capabilities");
    assert_eq!(caps.len(), 2, "fetched, then revalidated once: {caps:?}");
    assert!(caps[0].header("if-none-match").is_none());
    assert_eq!(
        caps[1].header("if-none-match"),
        Some("\"caps-1\""),
        "the stored ETag is sent"
    );
    // The 304 keeps the cached capabilities: nothing is fetched for the next client.
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_eq!(nc.capabilities_fetches(), 2);
    let auth = nc.requests_of_type("auth");
    assert_eq!(
        auth[0].path, "/ocs/v2.php/apps/spreed/api/v3/signaling/backend",
        "the revalidated capabilities still say signaling-v3"
    );
}

#[tokio::test]
async fn a_slow_nextcloud_is_cut_off_at_the_backend_timeout() {
    let nc = FakeNextcloud::start().await;
    nc.set_delay("auth", Some(Duration::from_secs(60)));
    let hpb = Hpb::start(&free_config(&nc, "[backend]\ntimeout = 1\n")).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("Nextcloud did not answer");
    assert_eq!(err["error"]["code"], "internal_error", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("[backend] timeout"),
        "names the setting: {msg}"
    );
    assert!(msg.contains(&nc.base_url()), "names the Nextcloud: {msg}");
}

#[tokio::test]
async fn ocs_errors_from_nextcloud_are_explained_to_the_client() {
    let (nc, hpb) = start().await;
    let cases = [
        (
            RawReply {
                status: 200,
                content_type: "application/json; charset=utf-8".into(),
                body: json!({"ocs": {"meta": {"status": "failure", "statuscode": 429, "message": "Reached maximum delay"}, "data": []}}).to_string(),
            },
            "429",
        ),
        (
            RawReply {
                status: 200,
                content_type: "application/json; charset=utf-8".into(),
                body: json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"}, "data": []}}).to_string(),
            },
            "incomplete OCS response",
        ),
        (
            RawReply {
                status: 200,
                content_type: "text/html; charset=utf-8".into(),
                body: "<html>login</html>".into(),
            },
            "text/html",
        ),
        (
            RawReply {
                status: 500,
                content_type: "text/plain".into(),
                body: "boom".into(),
            },
            "500",
        ),
    ];
    for (reply, needle) in cases {
        nc.set_raw_reply("auth", Some(reply.clone()));
        let mut c = TestClient::connect(hpb.addr()).await;
        let err = c
            .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
            .await
            .expect_err("hello must fail");
        assert_eq!(err["error"]["code"], "internal_error", "{reply:?}: {err}");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{reply:?}: message {msg:?}");
        assert!(msg.contains(&nc.base_url()), "names the Nextcloud: {msg:?}");
    }
    // An OCS error in the data is Talk's answer and is forwarded.
    nc.set_raw_reply("auth", None);
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", "wrong-ticket")
        .await
        .expect_err("wrong ticket");
    assert_eq!(err["error"]["code"], "invalid_ticket", "{err}");
}
