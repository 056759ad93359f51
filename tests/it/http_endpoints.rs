//! End-to-end: welcome, stats, serverinfo and TURN credentials endpoints.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hpb_test_support::{DEFAULT_TIMEOUT, FakeNextcloud, Hpb, TestClient, free_config};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ----- a raw HTTP/1.1 client shared by the backend, config and backend-isolation tests -----

/// Features Talk's PHP requires in `X-Spreed-Signaling-Features` of every reply.
pub(crate) const TALK_REQUIRED: &[&str] = &[
    "audio-video-permissions",
    "federation",
    "incall-all",
    "hello-v2",
    "switchto",
];

/// One HTTP reply as received on the wire.
#[derive(Debug, Clone)]
pub(crate) struct HttpReply {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the reply when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {self:?}"))
    }

    /// The features of `X-Spreed-Signaling-Features` (empty if the header is missing).
    pub fn features(&self) -> Vec<String> {
        self.header("x-spreed-signaling-features")
            .map(|v| {
                v.split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the headers Talk and federation peers read on every reply: a `Server`
    /// header and every feature Talk requires.
    pub fn assert_signaling_headers(&self, what: &str) {
        let server = self
            .header("server")
            .unwrap_or_else(|| panic!("{what}: no Server header: {self:?}"));
        assert!(
            server.starts_with("nextcloud-spreed-signaling/"),
            "{what}: Server header {server:?}"
        );
        let features = self.features();
        for f in TALK_REQUIRED {
            assert!(
                features.iter().any(|x| x == f),
                "{what}: X-Spreed-Signaling-Features lacks {f}: {self:?}"
            );
        }
    }
}

fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_line = String::from_utf8_lossy(&raw[..end]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return out;
        };
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// Sends `head` (request line and headers, without the final empty line; `Host` and
/// `Connection: close` are added) and `body` exactly as given, and reads the reply.
pub(crate) async fn http_raw(addr: SocketAddr, head: &str, body: &[u8]) -> HttpReply {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
        req.extend_from_slice(body);
        let (mut rd, mut wr) = stream.into_split();
        // The server may answer (e.g. 413) before reading the whole body: write and read
        // at the same time and ignore a write that fails once it has closed.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&req).await;
            wr
        });
        let mut raw = Vec::new();
        let read = rd.read_to_end(&mut raw).await;
        if raw.is_empty() {
            read.expect("read the reply until the server closes");
        }
        drop(writer.await);
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(40), fut)
        .await
        .unwrap_or_else(|_| panic!("no reply to {head:?} within 40 s"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "reply without header end: {}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body_raw = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(body_raw)
    } else {
        body_raw.to_vec()
    };
    HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path` with extra headers.
pub(crate) async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpReply {
    let mut head = format!("GET {path} HTTP/1.1");
    for (n, v) in headers {
        head.push_str(&format!("\r\n{n}: {v}"));
    }
    http_raw(addr, &head, b"").await
}

/// `POST path` with a Content-Length and extra headers.
pub(crate) async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut head = format!("POST {path} HTTP/1.1\r\nContent-Length: {}", body.len());
    for (n, v) in headers {
        head.push_str(&format!("\r\n{n}: {v}"));
    }
    http_raw(addr, &head, body).await
}

/// A backend room request signed like Talk's `BackendNotifier`: random of 64
/// characters, checksum with `secret`, `Spreed-Signaling-Backend: backend` (if given),
/// plus `extra` headers.
pub(crate) async fn signed_room_post(
    addr: SocketAddr,
    room: &str,
    secret: &str,
    backend: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> HttpReply {
    let random = hpb_test_support::random_string(64);
    let checksum = hpb_test_support::backend_checksum(secret, &random, body.as_bytes());
    let mut headers: Vec<(&str, &str)> = vec![
        ("Content-Type", "application/json"),
        ("Spreed-Signaling-Random", &random),
        ("Spreed-Signaling-Checksum", &checksum),
    ];
    if let Some(b) = backend {
        headers.push(("Spreed-Signaling-Backend", b));
    }
    headers.extend_from_slice(extra);
    http_post(
        addr,
        &format!("/api/v1/room/{room}"),
        &headers,
        body.as_bytes(),
    )
    .await
}

// ----- SHA-1, HMAC-SHA1 and base64, written out so the test does not share hpb's code -----

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn sha1_hmac_and_base64_match_known_vectors() {
    assert_eq!(
        hex(&sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    // RFC 2202 test case 2.
    assert_eq!(
        hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Unix seconds of an IMF-fixdate (`Tue, 01 Dec 2026 07:15:30 GMT`).
fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()
}

#[test]
fn http_dates_parse() {
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        parse_http_date("Tue, 01 Dec 2026 07:15:30 GMT"),
        Some(1_796_109_330)
    );
}

// ----- welcome -----

#[tokio::test]
async fn welcome_has_version_date_and_features() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let r = http_get(hpb.addr(), "/api/v1/welcome", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
    let v = r.json();
    assert_eq!(v["nextcloud-spreed-signaling"], "Welcome", "{v}");
    let version = v["version"].as_str().expect("version is a string");
    assert!(!version.is_empty());
    r.assert_signaling_headers("welcome");
    let date = r
        .header("date")
        .expect("Date header (Talk checks the clock)");
    let t = parse_http_date(date).unwrap_or_else(|| panic!("Date {date:?} is not an HTTP date"));
    let now = unix_now();
    assert!(
        t.abs_diff(now) <= 5,
        "Date {date} is {t}, now is {now}: Talk refuses more than 45 s offset"
    );
}

#[tokio::test]
async fn standalone_signaling_prefix_serves_the_same_endpoints() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    let r = http_get(hpb.addr(), "/standalone-signaling/api/v1/welcome", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["nextcloud-spreed-signaling"], "Welcome");
    r.assert_signaling_headers("prefixed welcome");

    let r = http_get(hpb.addr(), "/standalone-signaling/api/v1/stats", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["sessions"].is_u64(), "{r:?}");

    // The AIO setup: Talk is configured with https://host/standalone-signaling/.
    let base = format!("{}/standalone-signaling/", hpb.http_url());
    let (status, headers, body) = nc
        .post_room(
            &base,
            "room1",
            serde_json::json!({"type": "message", "message": {"data": {"type": "x"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-spreed-signaling-features"));

    let mut alice =
        TestClient::connect(format!("ws://{}/standalone-signaling/spreed", hpb.addr())).await;
    let hello = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_eq!(hello.userid, "alice");
    alice.join("room1", "alice-talk").await;
}

// ----- stats and serverinfo -----

#[tokio::test]
async fn stats_and_serverinfo_are_open_to_loopback() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-talk").await;

    let r = http_get(hpb.addr(), "/api/v1/stats", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["sessions"], 1, "{v}");
    assert_eq!(v["rooms"], 1, "{v}");
    r.assert_signaling_headers("stats");

    let r = http_get(hpb.addr(), "/api/v1/serverinfo", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert!(v["version"].is_string(), "{v}");
    let features = v["features"].as_array().expect("features array");
    assert!(features.iter().any(|f| f == "hello-v2"), "{v}");
}

#[tokio::test]
async fn stats_refused_when_loopback_is_not_allowed() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(
        &nc,
        "[stats]\nallowed_ips = [\"192.0.2.1\"]\n",
    ))
    .await;
    for path in ["/api/v1/stats", "/api/v1/serverinfo"] {
        let r = http_get(hpb.addr(), path, &[]).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(r.body.contains("[stats] allowed_ips"), "{path}: {r:?}");
        assert!(r.body.contains("127.0.0.1"), "names the address: {r:?}");
        r.assert_signaling_headers(path);
    }
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let nc = FakeNextcloud::start().await;
    // Loopback is a trusted proxy by default (upstream: loopback + RFC 1918).
    let hpb = Hpb::start(&free_config(
        &nc,
        "[stats]\nallowed_ips = [\"203.0.113.9\"]\n",
    ))
    .await;
    let r = http_get(hpb.addr(), "/api/v1/stats", &[]).await;
    assert_eq!(r.status, 403, "loopback itself is not allowed: {r:?}");
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(r.status, 200, "X-Forwarded-For from a trusted proxy: {r:?}");
    let r = http_get(hpb.addr(), "/api/v1/stats", &[("X-Real-IP", "203.0.113.9")]).await;
    assert_eq!(r.status, 200, "X-Real-IP from a trusted proxy: {r:?}");
    // A chain of proxies: the right-most address that is not a trusted proxy counts.
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "198.51.100.7, 203.0.113.9, 10.0.0.5")],
    )
    .await;
    assert_eq!(r.status, 200, "right-most untrusted hop: {r:?}");
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "203.0.113.9, 198.51.100.7")],
    )
    .await;
    assert_eq!(
        r.status, 403,
        "a client cannot prepend an allowed address: {r:?}"
    );
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("198.51.100.7"), "names the client: {r:?}");

    // The other way round: loopback allowed, but a client behind a trusted proxy is not.
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(
        r.status, 403,
        "forwarded client is not in allowed_ips: {r:?}"
    );

    // When loopback is not a trusted proxy, the headers are ignored.
    let hpb = Hpb::start(&free_config(
        &nc,
        "[app]\ntrustedproxies = [\"192.0.2.1\"]\n[stats]\nallowed_ips = [\"203.0.113.9\"]\n",
    ))
    .await;
    for h in ["X-Forwarded-For", "X-Real-IP"] {
        let r = http_get(hpb.addr(), "/api/v1/stats", &[(h, "203.0.113.9")]).await;
        assert_eq!(
            r.status, 403,
            "{h} from an untrusted peer must be ignored: {r:?}"
        );
        assert!(r.body.contains("127.0.0.1"), "{r:?}");
    }
    let hpb = Hpb::start(&free_config(
        &nc,
        "[app]\ntrustedproxies = [\"192.0.2.1\"]\n",
    ))
    .await;
    let r = http_get(
        hpb.addr(),
        "/api/v1/stats",
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(r.status, 200, "untrusted peer's own address counts: {r:?}");
}

// ----- TURN credentials -----

const TURN_CONFIG: &str = "[turn]\napikey = \"the-api-key\"\nsecret = \"turn-shared-secret\"\nservers = [\"turn:turn.example.com:3478?transport=udp\", \"turn:turn.example.com:3478?transport=tcp\"]\n";

#[tokio::test]
async fn turn_credentials_follow_the_turn_rest_api() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, TURN_CONFIG)).await;

    for path in [
        "/turn/credentials",
        "/turn/credentials?service=turn",
        "/turn/credentials?key=the-api-key",
        "/turn/credentials?service=stun&key=the-api-key",
    ] {
        let r = http_get(hpb.addr(), path, &[]).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        r.assert_signaling_headers(path);
    }
    let r = http_get(
        hpb.addr(),
        "/turn/credentials?service=turn&key=wrong-key",
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("[turn] apikey"), "{r:?}");

    let before = unix_now();
    let r = http_get(
        hpb.addr(),
        "/turn/credentials?service=turn&username=alice&key=the-api-key",
        &[],
    )
    .await;
    let after = unix_now();
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_signaling_headers("turn credentials");
    let v = r.json();
    let username = v["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<user>");
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!(
        (before + 86_400..=after + 86_400).contains(&expiry),
        "expiry {expiry} is not now + 24 h ({before}..{after})"
    );
    assert_eq!(
        v["password"].as_str().expect("password"),
        base64(&hmac_sha1(b"turn-shared-secret", username.as_bytes())),
        "password must be base64(HMAC-SHA1(secret, username)) like coturn's use-auth-secret"
    );
    assert_eq!(v["ttl"], 86_400);
    assert_eq!(
        v["uris"],
        serde_json::json!([
            "turn:turn.example.com:3478?transport=udp",
            "turn:turn.example.com:3478?transport=tcp"
        ])
    );

    // Janus sends `api=` instead of `key=`; without a username a random one is used.
    let r = http_get(
        hpb.addr(),
        "/turn/credentials?service=turn&api=the-api-key",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let username = v["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("<expiry>:<random>");
    assert!(expiry.parse::<u64>().is_ok(), "{username}");
    assert!(user.len() >= 16, "random user part: {username}");
    assert_eq!(
        v["password"].as_str().expect("password"),
        base64(&hmac_sha1(b"turn-shared-secret", username.as_bytes()))
    );
    let r = http_get(hpb.addr(), "/turn/credentials?service=turn&api=wrong", &[]).await;
    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn turn_credentials_without_servers_are_404() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let r = http_get(
        hpb.addr(),
        "/turn/credentials?service=turn&key=anything",
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("[turn]"), "names the settings: {r:?}");
    r.assert_signaling_headers("turn 404");
}

// ----- the WebSocket upgrade -----

#[tokio::test]
async fn websocket_upgrade_carries_server_and_features_headers() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut client = TestClient::connect(hpb.addr()).await;
    let server = client.upgrade_header("server").expect("Server on the 101");
    assert!(
        server.starts_with("nextcloud-spreed-signaling/"),
        "{server}"
    );
    let features: Vec<String> = client
        .upgrade_header("x-spreed-signaling-features")
        .expect("features on the 101")
        .split(',')
        .map(|f| f.trim().to_string())
        .collect();
    for f in TALK_REQUIRED {
        assert!(features.iter().any(|x| x == f), "{f} missing: {features:?}");
    }
    let welcome = client
        .wait_welcome(DEFAULT_TIMEOUT)
        .await
        .expect("welcome frame");
    assert!(welcome["welcome"]["version"].is_string(), "{welcome}");
}
