//! End-to-end: several backends: isolation, per-backend secrets, allowall, several URLs, signaling-v3 and capabilities.

use std::time::Duration;

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeConfig, FakeNextcloud, Hpb, RawOpts, TestClient, error_code,
    free_config_multi, random_string,
};
use serde_json::{Value, json};

use crate::http_endpoints::http_get;

async fn hello(hpb: &Hpb, nc: &FakeNextcloud, user: &str) -> TestClient {
    let mut c = TestClient::connect(hpb.addr()).await;
    let h = c.hello_v1(&nc.backend_url(), user, &nc.ticket(user)).await;
    assert_eq!(h.userid, user);
    c
}

async fn hello_and_join(hpb: &Hpb, nc: &FakeNextcloud, user: &str, talk: &str) -> TestClient {
    let mut c = hello(hpb, nc, user).await;
    c.join("room1", talk).await;
    c
}

fn is_join_of(f: &Value, sessionid: &str) -> bool {
    f["event"]["target"] == "room"
        && f["event"]["type"] == "join"
        && f["event"]["join"]
            .as_array()
            .is_some_and(|j| j.iter().any(|e| e["sessionid"] == sessionid))
}

/// Two fakes sharing one secret (they play one Nextcloud reachable under two URLs, or
/// two Nextclouds using a common secret).
async fn fakes_with_secret(secret: &str) -> (FakeNextcloud, FakeNextcloud) {
    let cfg = FakeConfig {
        secret: secret.to_string(),
        ..FakeConfig::default()
    };
    let a = FakeNextcloud::start_with(cfg.clone()).await;
    let b = FakeNextcloud::start_with(cfg).await;
    for nc in [&a, &b] {
        nc.add_public_room("room1");
    }
    (a, b)
}

#[tokio::test]
async fn two_backends_are_isolated() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    nc1.add_public_room("room1");
    nc2.add_public_room("room1");
    let hpb = Hpb::start(&free_config_multi(&[("nc1", &nc1), ("nc2", &nc2)], "")).await;

    let mut alice1 = hello_and_join(&hpb, &nc1, "alice", "a1").await;
    let mut bob1 = hello_and_join(&hpb, &nc1, "bob", "b1").await;
    let mut alice2 = hello_and_join(&hpb, &nc2, "alice", "a2").await;
    let bob1_id = bob1.sessionid().to_string();
    alice1
        .wait_for(|f| is_join_of(f, &bob1_id), DEFAULT_TIMEOUT)
        .await
        .expect("alice1 sees bob1 join");
    bob1.drain(Duration::from_millis(100)).await;
    alice1.drain(Duration::from_millis(100)).await;
    let early = alice2.drain(Duration::from_millis(200)).await;
    assert!(
        early.iter().all(|f| !is_join_of(f, &bob1_id)),
        "the same room token on another backend is another room: {early:?}"
    );
    let stats = http_get(hpb.addr(), "/api/v1/stats", &[]).await.json();
    assert_eq!(stats["rooms"], 2, "{stats}");

    // Users are per backend: "alice" on nc1 is not "alice" on nc2.
    bob1.message_user("alice", json!({"to": "alice"})).await;
    let got = alice1.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(got["message"]["data"], json!({"to": "alice"}));
    // Room messages stay in the backend's room.
    bob1.message_room(json!({"to": "room"})).await;
    let got = alice1.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(got["message"]["data"], json!({"to": "room"}));

    // Requests from Nextcloud reach only that backend's room.
    let (status, _, body) = nc1
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "message", "message": {"data": {"from": "nc1"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let e = alice1
        .wait_event("room", "message", DEFAULT_TIMEOUT)
        .await
        .expect("nc1's room message");
    assert_eq!(e["event"]["message"]["data"], json!({"from": "nc1"}));
    let (status, _, body) = nc2
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "invite", "invite": {"userids": ["alice"], "alluserids": ["alice"], "properties": {}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let e = alice2
        .wait_event("roomlist", "invite", DEFAULT_TIMEOUT)
        .await
        .expect("nc2's invite for nc2's alice");
    assert_eq!(e["event"]["invite"]["roomid"], "room1");

    let leaked = alice2.drain(Duration::from_millis(300)).await;
    assert!(
        leaked
            .iter()
            .all(|f| f["type"] != "message" && f["event"]["type"] != "message"),
        "nc2's alice got nc1's traffic: {leaked:?}"
    );
    let leaked = alice1.drain(Duration::from_millis(100)).await;
    assert!(
        leaked.iter().all(|f| f["event"]["target"] != "roomlist"),
        "nc1's alice got nc2's invite: {leaked:?}"
    );

    // Each backend is asked with its own secret: both fakes verified their requests.
    for nc in [&nc1, &nc2] {
        let posts: Vec<_> = nc
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        assert!(!posts.is_empty());
        assert!(posts.iter().all(|r| r.authenticated), "{posts:?}");
    }
}

#[tokio::test]
async fn a_request_signed_with_another_backends_secret_is_refused() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    nc2.add_public_room("room1");
    let hpb = Hpb::start(&free_config_multi(&[("nc1", &nc1), ("nc2", &nc2)], "")).await;
    let body = json!({"type": "message", "message": {"data": {}}}).to_string();
    // nc1's secret, claiming to be nc2.
    let (status, headers, text) = nc1
        .post_room_raw(
            &hpb.http_url(),
            "room1",
            body.clone(),
            RawOpts {
                backend: Some(nc2.base_url()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("Authentication check failed"), "{text}");
    assert!(text.contains(&nc2.base_url()), "names the backend: {text}");
    assert!(text.contains("secret"), "names the secret: {text}");
    assert!(headers.contains_key("x-spreed-signaling-features"));
    // Each with its own secret is fine.
    for nc in [&nc1, &nc2] {
        let (status, _, text) = nc
            .post_room_raw(&hpb.http_url(), "room1", body.clone(), RawOpts::default())
            .await;
        assert_eq!(status, 200, "{text}");
    }
    // Old Talk without the backend header: the backend whose secret matches.
    let mut member = TestClient::connect(hpb.addr()).await;
    member
        .hello_v1(&nc2.backend_url(), "alice", &nc2.ticket("alice"))
        .await;
    member.join("room1", "alice-talk").await;
    let legacy = json!({"type": "message", "message": {"data": {"legacy": true}}}).to_string();
    let (status, _, text) = nc2
        .post_room_raw(
            &hpb.http_url(),
            "room1",
            legacy,
            RawOpts {
                omit_backend: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let e = member
        .wait_event("room", "message", DEFAULT_TIMEOUT)
        .await
        .expect("nc2's message without backend header reaches nc2's room");
    assert_eq!(e["event"]["message"]["data"]["legacy"], true);
}

#[tokio::test]
async fn unknown_nextclouds_are_refused_with_the_setting_to_change() {
    let nc = FakeNextcloud::start().await;
    let stranger = FakeNextcloud::start().await;
    // A backend configured with https: plain http under the same host is not it.
    let https_url = format!("https://{}/", nc.addr());
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backends.tls]\nurls = [\"{https_url}\"]\nsecret = \"{}\"\n",
        random_string(32),
        nc.secret()
    );
    let hpb = Hpb::start(&cfg).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&stranger.backend_url(), "alice", &stranger.ticket("alice"))
        .await
        .expect_err("not a configured backend");
    assert_eq!(error_code(&err), "invalid_backend", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&stranger.base_url()), "names the URL: {msg}");
    assert!(msg.contains("urls"), "names the setting: {msg}");
    assert!(
        stranger.requests().is_empty(),
        "hpb never asked the stranger"
    );

    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("http where https is configured");
    assert_eq!(error_code(&err), "invalid_backend", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("https"), "explains the scheme: {msg}");
    let (status, _, text) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "message", "message": {"data": {}}}),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("https"), "explains the scheme: {text}");
    // The same host with https in the header is the configured backend.
    let (status, _, text) = nc
        .post_room_raw(
            &hpb.http_url(),
            "room1",
            json!({"type": "message", "message": {"data": {}}}).to_string(),
            RawOpts {
                backend: Some(https_url.clone()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn allowall_accepts_any_nextcloud_with_the_common_secret() {
    let secret = format!("common-{}", random_string(24));
    let (nc_a, nc_b) = fakes_with_secret(&secret).await;
    let other = FakeNextcloud::start().await;
    other.add_public_room("room1");
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backend]\nallowall = true\nallowhttp = true\nsecret = \"{secret}\"\n",
        random_string(32)
    );
    let hpb = Hpb::start(&cfg).await;
    let _a = hello_and_join(&hpb, &nc_a, "alice", "a").await;
    let _b = hello_and_join(&hpb, &nc_b, "bob", "b").await;
    for nc in [&nc_a, &nc_b] {
        let (status, _, text) = nc
            .post_room(
                &hpb.http_url(),
                "room1",
                json!({"type": "message", "message": {"data": {}}}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
    }
    // A Nextcloud with another secret: its requests are refused, and it refuses hpb's.
    let (status, _, text) = other
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "message", "message": {"data": {}}}),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&other.backend_url(), "alice", &other.ticket("alice"))
        .await
        .expect_err("the other Nextcloud does not know the common secret");
    assert_eq!(error_code(&err), "invalid_request", "{err}");
}

#[tokio::test]
async fn allowall_refuses_http_nextclouds_unless_allowhttp() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backend]\nallowall = true\nsecret = \"{}\"\n",
        random_string(32),
        nc.secret()
    );
    let hpb = Hpb::start(&cfg).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await
        .expect_err("http is refused");
    assert_eq!(error_code(&err), "invalid_backend", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("allowhttp"), "names the setting: {msg}");
}

#[tokio::test]
async fn one_backend_with_several_urls() {
    let secret = format!("shared-{}", random_string(24));
    let (url_a, url_b) = fakes_with_secret(&secret).await;
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backends.nc]\nurls = [\"{}\", \"{}\"]\nsecret = \"{secret}\"\n",
        random_string(32),
        url_a.base_url(),
        url_b.base_url()
    );
    let hpb = Hpb::start(&cfg).await;
    let mut alice = hello_and_join(&hpb, &url_a, "alice", "alice-talk").await;
    let bob = hello_and_join(&hpb, &url_b, "bob", "bob-talk").await;
    // One backend: the same room, whichever URL the client used.
    alice
        .wait_for(|f| is_join_of(f, bob.sessionid()), DEFAULT_TIMEOUT)
        .await
        .expect("alice (URL A) sees bob (URL B) in the same room");
    // Requests under either URL are accepted for that backend's rooms.
    for nc in [&url_a, &url_b] {
        let (status, _, text) = nc
            .post_room(
                &hpb.http_url(),
                "room1",
                json!({"type": "message", "message": {"data": {"via": nc.base_url()}}}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let e = alice
            .wait_event("room", "message", DEFAULT_TIMEOUT)
            .await
            .expect("room message");
        assert_eq!(e["event"]["message"]["data"]["via"], nc.base_url());
    }
    // Each client's requests went to the URL it used.
    assert!(url_a.requests_of_type("auth").len() == 1);
    assert!(url_b.requests_of_type("auth").len() == 1);
}

#[tokio::test]
async fn sessionlimit_is_per_backend() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config_multi(
        &[("nc1", &nc1), ("nc2", &nc2)],
        "[backends.nc1]\nsessionlimit = 1\n",
    ))
    .await;
    let mut alice = hello(&hpb, &nc1, "alice").await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let err = bob
        .try_hello_v1(&nc1.backend_url(), "bob", &nc1.ticket("bob"))
        .await
        .expect_err("nc1 is full");
    assert_eq!(error_code(&err), "session_limit_exceeded", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("sessionlimit"), "names the setting: {msg}");
    // nc2 has no limit; internal clients do not count.
    let _b2 = hello(&hpb, &nc2, "bob").await;
    let _c2 = hello(&hpb, &nc2, "carol").await;
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc1.backend_url(), hpb_test_support::INTERNAL_SECRET)
        .await;
    // When alice leaves, there is room again.
    alice.bye().await;
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let mut c = TestClient::connect(hpb.addr()).await;
        match c
            .try_hello_v1(&nc1.backend_url(), "bob", &nc1.ticket("bob"))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(error_code(&e), "session_limit_exceeded", "{e}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot of alice's session was not freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn capabilities_and_endpoint_version_are_per_backend() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    nc2.set_features(&["audio", "video", "federation-v2"]);
    let hpb = Hpb::start(&free_config_multi(&[("nc1", &nc1), ("nc2", &nc2)], "")).await;
    for _ in 0..2 {
        let _a = hello(&hpb, &nc1, "alice").await;
        let _b = hello(&hpb, &nc2, "bob").await;
    }
    for (nc, version) in [(&nc1, "v3"), (&nc2, "v1")] {
        let auth = nc.requests_of_type("auth");
        assert_eq!(auth.len(), 2);
        for r in auth {
            assert_eq!(
                r.path,
                format!("/ocs/v2.php/apps/spreed/api/{version}/signaling/backend")
            );
            assert!(r.authenticated);
        }
        assert_eq!(nc.capabilities_fetches(), 1, "cached per backend");
    }
}

#[tokio::test]
async fn a_wrong_secret_in_hpb_is_explained_to_the_client() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config_multi(
        &[("nc1", &nc1), ("nc2", &nc2)],
        "[backends.nc2]\nsecret = \"not-what-talk-has\"\n",
    ))
    .await;
    let _ok = hello(&hpb, &nc1, "alice").await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(&nc2.backend_url(), "alice", &nc2.ticket("alice"))
        .await
        .expect_err("Talk refuses hpb's checksum");
    assert_eq!(error_code(&err), "invalid_request", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&nc2.base_url()), "names the backend: {msg}");
    assert!(msg.contains("secret"), "names the secret: {msg}");
}

#[tokio::test]
async fn legacy_allowed_hosts_use_the_common_secret() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backend]\nallowed = [\"127.0.0.1\"]\nallowhttp = true\nsecret = \"{}\"\n",
        random_string(32),
        nc.secret()
    );
    let hpb = Hpb::start(&cfg).await;
    let _alice = hello_and_join(&hpb, &nc, "alice", "alice-talk").await;
    let body = json!({"type": "message", "message": {"data": {}}}).to_string();
    let (status, _, text) = nc
        .post_room_raw(&hpb.http_url(), "room1", body.clone(), RawOpts::default())
        .await;
    assert_eq!(status, 200, "{text}");
    // A host that is not in the list is refused, even with the right secret.
    let other = format!("http://localhost:{}/", nc.addr().port());
    let (status, _, text) = nc
        .post_room_raw(
            &hpb.http_url(),
            "room1",
            body,
            RawOpts {
                backend: Some(other.clone()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains(&other), "{text}");
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(
            &format!("{other}ocs/v2.php/apps/spreed/api/v3/signaling/backend"),
            "alice",
            &nc.ticket("alice"),
        )
        .await
        .expect_err("host not allowed");
    assert_eq!(error_code(&err), "invalid_backend", "{err}");
}

#[tokio::test]
async fn a_hanging_nextcloud_does_not_stall_the_other_backends() {
    let slow = FakeNextcloud::start().await;
    let fast = FakeNextcloud::start().await;
    // The slow Nextcloud takes longer than the test waits for anything.
    slow.set_delay("*", Some(Duration::from_secs(30)));
    let hpb = Hpb::start(&free_config_multi(
        &[("slow", &slow), ("fast", &fast)],
        "[backend]\ntimeout = 25\n",
    ))
    .await;
    let addr = hpb.addr();
    let slow_url = slow.backend_url();
    let ticket = slow.ticket("alice");
    let stuck = tokio::spawn(async move {
        let mut c = TestClient::connect(addr).await;
        c.request_timeout = Duration::from_secs(60);
        let _ = c.try_hello_v1(&slow_url, "alice", &ticket).await;
    });
    // Wait until hpb is busy with the slow Nextcloud.
    slow.wait_for(|r| r.kind == "capabilities", DEFAULT_TIMEOUT)
        .await
        .expect("hpb asks the slow Nextcloud");
    // Clients of the other backend are served meanwhile (within the default timeout).
    let bob = hello(&hpb, &fast, "bob").await;
    assert_eq!(bob.session().map(|s| s.userid.as_str()), Some("bob"));
    stuck.abort();
}

#[tokio::test]
async fn connectionsperhost_limits_the_requests_in_flight_to_one_nextcloud() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config_multi(
        &[("nc1", &nc)],
        "[backend]\nconnectionsperhost = 2\n",
    ))
    .await;
    // Fetch the capabilities first, so only auth requests are in flight below.
    let _first = hello(&hpb, &nc, "carol").await;
    nc.set_delay("auth", Some(Duration::from_millis(1500)));
    let mark = nc.requests_of_type("auth").len();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    const HELLOS: usize = 8;
    for _ in 0..HELLOS {
        let (addr, url, ticket, done) = (
            hpb.addr(),
            nc.backend_url(),
            nc.ticket("alice"),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect(addr).await;
            c.request_timeout = Duration::from_secs(30);
            let r = c.try_hello_v1(&url, "alice", &ticket).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r.map(|_| ())
        }));
    }
    // At most 2 requests are at Nextcloud, plus at most 2 whose answers are on their
    // way to the clients: requests that arrived minus answered hellos never exceeds 4.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut max_in_flight = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < HELLOS {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
        let arrived = nc.requests_of_type("auth").len() - mark;
        max_in_flight = max_in_flight.max(arrived.saturating_sub(finished));
        assert!(
            arrived <= finished + 4,
            "{arrived} requests reached Nextcloud while only {finished} were answered; connectionsperhost = 2"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "hellos did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(max_in_flight >= 1);
    for t in tasks {
        t.await
            .expect("hello task")
            .expect("every hello succeeds eventually");
    }
    assert_eq!(nc.requests_of_type("auth").len() - mark, HELLOS);
}

/// A server that answers every request with `307` to the same path under `target`.
async fn redirector(target: String) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the redirector");
    let addr = listener.local_addr().expect("redirector address");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the request head (the body, if any, is left unread).
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let location = format!("{}{}", target.trim_end_matches('/'), path);
                let reply = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn signed_requests_are_not_redirected_to_another_host() {
    let nc = FakeNextcloud::start().await;
    let (addr, task) = redirector(nc.base_url()).await;
    let base = format!("http://{addr}/");
    let cfg = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[sessions]\nhashkey = \"{}\"\n[backends.nc]\nurls = [\"{base}\"]\nsecret = \"{}\"\n",
        random_string(32),
        nc.secret()
    );
    let hpb = Hpb::start(&cfg).await;
    let mut c = TestClient::connect(hpb.addr()).await;
    let err = c
        .try_hello_v1(
            &format!("{base}ocs/v2.php/apps/spreed/api/v3/signaling/backend"),
            "alice",
            &nc.ticket("alice"),
        )
        .await
        .expect_err("a redirect to another host is not followed");
    assert_eq!(error_code(&err), "internal_error", "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("redirect"), "says why: {msg}");
    assert!(
        nc.requests_of_type("auth").is_empty(),
        "the signed request reached another host: {:?}",
        nc.requests()
    );
    task.abort();
}
