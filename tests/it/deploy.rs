//! End-to-end: hpb as it is deployed. The AIO container's environment alone runs it (what
//! the image's entrypoint does); SIGTERM drains (clients told to reconnect with close code
//! 1012, exit 0 within `[http] shutdown_timeout`); liveness and readiness; systemd's
//! `Type=notify` (READY=1 / STOPPING=1 on `$NOTIFY_SOCKET`); SIGHUP does not end it.

use std::path::PathBuf;
use std::time::Duration;

use hpb_test_support::{
    CloseInfo, FakeNextcloud, Hpb, SIGHUP, SIGTERM, TestClient, free_config, random_string,
};
use serde_json::Value;

/// Longer than any drain these tests configure, plus start-up slack.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    // UDP and TCP both free on the same number.
    loop {
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

fn http() -> reqwest::Client {
    hpb_test_support::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// GET `path` on hpb: status and body.
async fn get(hpb: &Hpb, path: &str) -> (u16, String) {
    let r = http()
        .get(format!("{}{path}", hpb.http_url()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", hpb.logs()));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The line of `config show` for `key`, split into value and source.
fn shown(show: &str, key: &str) -> (String, String) {
    let prefix = format!("{key} = ");
    let line = show
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{show}"));
    let (left, source) = line
        .rsplit_once("# ")
        .unwrap_or_else(|| panic!("line without a source: {line}"));
    let value = left
        .split_once(" = ")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (value, source.trim().to_string())
}

async fn hello_and_join(hpb: &Hpb, nc: &FakeNextcloud, user: &str, room: &str) -> TestClient {
    let mut c = TestClient::connect(hpb.addr()).await;
    c.hello_v1(&nc.backend_url(), user, &nc.ticket(user)).await;
    c.join(room, format!("{user}-talk").as_str()).await;
    c
}

fn bye_reason(close: &CloseInfo) -> Value {
    close
        .bye
        .as_ref()
        .map(|b| b["bye"]["reason"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_aio_environment_alone_runs_hpb_like_the_talk_container() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let secret = nc.secret();
    let domain = nc.base_url();
    let port = free_port().to_string();
    // Exactly what the AIO master passes to the talk container, nothing hpb-specific.
    let env = [
        ("NC_DOMAIN", domain.as_str()),
        ("SIGNALING_SECRET", secret.as_str()),
        ("TURN_SECRET", "aio-turn-secret"),
        ("INTERNAL_SECRET", "aio-internal-secret"),
        ("TALK_PORT", port.as_str()),
        ("TALK_HOST", "nextcloud-aio-talk"),
        ("TURN_DOMAIN", "turn.example.com"),
        ("TALK_MAX_STREAM_BITRATE", "1048576"),
        ("TALK_MAX_SCREEN_BITRATE", "2097152"),
        ("SKIP_CERT_VERIFY", "false"),
        ("AIO_LOG_LEVEL", "warn"),
    ];
    let out = Hpb::run(&["config", "show"], &env, Duration::from_secs(20)).await;
    assert!(out.success, "config show failed: {out:?}");
    let show = out.stdout;
    // Signaling on [::]:8081 behind the AIO reverse proxy, as the talk container.
    assert_eq!(
        shown(&show, "http.listen"),
        (
            "\"[::]:8081\"".to_string(),
            "AIO default (NC_DOMAIN is set)".to_string()
        ),
        "{show}"
    );
    assert_eq!(shown(&show, "backend.connectionsperhost").0, "32", "{show}");
    // hashkey/blockkey random at every start, like the AIO start script.
    assert_eq!(shown(&show, "sessions.hashkey").1, "generated", "{show}");
    assert_eq!(shown(&show, "sessions.blockkey").1, "generated", "{show}");
    for (key, var) in [
        ("backends.backend-1.urls", "NC_DOMAIN"),
        ("backends.backend-1.secret", "SIGNALING_SECRET"),
        ("turn.secret", "TURN_SECRET"),
        ("clients.internalsecret", "INTERNAL_SECRET"),
        ("turn.port", "TALK_PORT"),
        ("turn.host", "TALK_HOST"),
        ("turn.domain", "TURN_DOMAIN"),
        ("mcu.maxstreambitrate", "TALK_MAX_STREAM_BITRATE"),
        ("mcu.maxscreenbitrate", "TALK_MAX_SCREEN_BITRATE"),
        ("backend.skipverify", "SKIP_CERT_VERIFY"),
        ("log.level", "AIO_LOG_LEVEL"),
    ] {
        assert_eq!(
            shown(&show, key).1,
            format!("env {var} (AIO)"),
            "{key}:\n{show}"
        );
    }
    for s in [secret.as_str(), "aio-turn-secret", "aio-internal-secret"] {
        assert!(!show.contains(s), "a secret is shown:\n{show}");
    }

    // And it serves with them (the test cannot own [::]:8081, so only the listen moves).
    let hpb = Hpb::start_args(&["--listen", "127.0.0.1:0"], &env).await;
    assert!(
        hpb.stdout()
            .contains(&format!("turn: udp+tcp 0.0.0.0:{port}")),
        "TURN on TALK_PORT: {}",
        hpb.stdout()
    );
    // The image's HEALTHCHECK: stats are open to loopback; health is open to all.
    assert_eq!(get(&hpb, "/api/v1/stats").await.0, 200);
    let (status, body) = get(&hpb, "/api/v1/health/ready").await;
    assert_eq!((status, body.trim()), (200, "{\"status\":\"ready\"}"));
    let listen = hpb.addr().to_string();
    let check = Hpb::run(
        &["--listen", &listen, "healthcheck"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    assert!(check.success, "hpb healthcheck: {check:?}");
    assert!(
        check.stdout.contains("/api/v1/stats answered 200"),
        "{check:?}"
    );
    let _alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.backend_url(), "aio-internal-secret")
        .await;
    hpb.signal(SIGTERM);
    let status = hpb.wait_exit(EXIT_TIMEOUT).await.expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", hpb.logs());
    let check = Hpb::run(
        &["--listen", &listen, "healthcheck"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    assert!(!check.success, "healthcheck of a stopped hpb: {check:?}");
    assert!(check.stderr.contains("does not answer"), "{check:?}");
}

#[tokio::test]
async fn sigterm_tells_every_client_to_reconnect_and_exits_0() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "[http]\nshutdown_timeout = 5\n")).await;
    let mut alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    // Connected, but no hello yet.
    let mut early = TestClient::connect(hpb.addr()).await;
    early
        .wait_welcome(Duration::from_secs(5))
        .await
        .expect("welcome");

    hpb.signal(SIGTERM);
    for (who, c) in [
        ("in a room", &mut alice),
        ("without a room", &mut bob),
        ("before its hello", &mut early),
    ] {
        let close = c
            .recv_close(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the client {who} was not closed:\n{}", hpb.logs()));
        // Talk reconnects on every close code but 1001 ("going away").
        assert_eq!(close.code, Some(1012), "{who}: {close:?}");
        assert_eq!(bye_reason(&close), "shutdown", "{who}: {close:?}");
        assert!(close.reason.contains("reconnect"), "{who}: {close:?}");
    }
    let status = hpb
        .wait_exit(EXIT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", hpb.logs()));
    assert!(status.success(), "exit status {status}:\n{}", hpb.logs());
    let logs = hpb.logs();
    assert!(logs.contains("SIGTERM: shutting down"), "{logs}");
    assert!(logs.contains("all clients are gone"), "{logs}");
}

#[tokio::test]
async fn health_says_live_and_ready_then_503_while_draining_within_the_bound() {
    let nc = FakeNextcloud::start().await;
    // A hello Nextcloud does not answer holds its connection open, so the drain lasts
    // until [http] shutdown_timeout.
    let hpb = Hpb::start(&free_config(
        &nc,
        "[http]\nshutdown_timeout = 3\n[backend]\ntimeout = 30\n[stats]\nallowed_ips = [\"192.0.2.1\"]\n",
    ))
    .await;
    for path in [
        "/api/v1/health/live",
        "/standalone-signaling/api/v1/health/live",
    ] {
        let (status, body) = get(&hpb, path).await;
        assert_eq!(
            (status, body.trim()),
            (200, "{\"status\":\"alive\"}"),
            "{path}"
        );
    }
    for path in [
        "/api/v1/health/ready",
        "/standalone-signaling/api/v1/health/ready",
    ] {
        let (status, body) = get(&hpb, path).await;
        assert_eq!(
            (status, body.trim()),
            (200, "{\"status\":\"ready\"}"),
            "{path}"
        );
    }
    // Not restricted by [stats] allowed_ips, unlike the stats.
    assert_eq!(get(&hpb, "/api/v1/stats").await.0, 403);

    nc.set_delay("auth", Some(Duration::from_secs(60)));
    let mut stuck = TestClient::connect(hpb.addr()).await;
    stuck
        .send(serde_json::json!({
            "type": "hello",
            "id": "1",
            "hello": {"version": "1.0", "auth": {"url": nc.backend_url(), "params": {"userid": "alice", "ticket": nc.ticket("alice")}}},
        }))
        .await;
    nc.wait_for(|r| r.kind == "auth", Duration::from_secs(10))
        .await
        .expect("the hello reached Nextcloud");

    let signalled = tokio::time::Instant::now();
    hpb.signal(SIGTERM);
    let mut saw_503 = None;
    while signalled.elapsed() < Duration::from_secs(3) {
        let (status, body) = get(&hpb, "/api/v1/health/ready").await;
        if status == 503 {
            saw_503 = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = saw_503.unwrap_or_else(|| panic!("readiness never said 503:\n{}", hpb.logs()));
    assert_eq!(body.trim(), "{\"status\":\"shutting down\"}");
    assert_eq!(get(&hpb, "/api/v1/health/live").await.0, 200);
    // New work is refused while draining.
    let (status, body) = get(&hpb, "/api/v1/welcome").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let refused = TestClient::try_connect(hpb.addr()).await;
    assert_eq!(
        refused.err().and_then(|e| e.status),
        Some(503),
        "WebSocket during the drain"
    );

    let status = hpb
        .wait_exit(EXIT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", hpb.logs()));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", hpb.logs());
    // The drain was bounded: 3 s, plus at most a second for open requests.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "exited after {took:?}:\n{}",
        hpb.logs()
    );
    assert!(hpb.logs().contains("exiting anyway"), "{}", hpb.logs());
}

/// A Unix datagram socket in a temp dir, removed on drop.
struct NotifySocket {
    dir: PathBuf,
    socket: tokio::net::UnixDatagram,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("hpb-notify-{}", random_string(10)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = tokio::net::UnixDatagram::bind(dir.join("notify")).expect("bind");
        NotifySocket { dir, socket }
    }

    fn path(&self) -> String {
        self.dir.join("notify").to_string_lossy().into_owned()
    }

    async fn recv(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.socket.recv(&mut buf))
            .await
            .expect("a notification within 10 s")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn systemd_is_told_ready_and_stopping_on_notify_socket() {
    let nc = FakeNextcloud::start().await;
    let notify = NotifySocket::new();
    let path = notify.path();
    let hpb = Hpb::start_toml_env(&free_config(&nc, ""), &[("NOTIFY_SOCKET", &path)]).await;
    let ready = notify.recv().await;
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first notification: {ready:?}"
    );
    assert!(ready.contains("STATUS=serving on"), "{ready:?}");
    // Only once every listener is up: health agrees.
    assert_eq!(get(&hpb, "/api/v1/health/ready").await.0, 200);
    hpb.signal(SIGTERM);
    let stopping = notify.recv().await;
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "second notification: {stopping:?}"
    );
    let status = hpb.wait_exit(EXIT_TIMEOUT).await.expect("exits");
    assert!(status.success(), "exit status {status}:\n{}", hpb.logs());
}

#[tokio::test]
async fn sighup_is_not_the_end() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut alice = hello_and_join(&hpb, &nc, "alice", "room1").await;
    // systemd's ExecReload sends SIGHUP; without [https] there is nothing to reload.
    hpb.signal(SIGHUP);
    assert!(
        hpb.wait_for_log("SIGHUP: nothing to reload", Duration::from_secs(5))
            .await,
        "{}",
        hpb.logs()
    );
    assert!(hpb.try_exit_status().is_none(), "{}", hpb.logs());
    assert_eq!(get(&hpb, "/api/v1/health/ready").await.0, 200);
    alice.drain(Duration::from_millis(200)).await;
    assert!(!alice.is_closed(), "the session survives a SIGHUP");
    let _bob = hello_and_join(&hpb, &nc, "bob", "room1").await;
}
