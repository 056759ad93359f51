//! End-to-end: federated participants joining a room hosted on another hpb.
//!
//! Two Nextclouds, each with its own hpb. Alice is a user of the "local" Nextcloud; the
//! conversation lives on the "remote" one, where Bob is. Alice's Talk sends a room join
//! with a `federation` object (reference §1.6); her hpb connects to the remote hpb with a
//! federation hello and relays frames both ways. When that link drops (remote killed and
//! restarted, or a cuttable TCP proxy in between), Alice's hpb reconnects: resume, else a
//! fresh remote session (`federation_interrupted` / `federation_resumed`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hpb_test_support::free_port;
use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, Hpb, TestClient, TokenOpts, error_code, free_config,
};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Setup {
    local_nc: FakeNextcloud,
    remote_nc: FakeNextcloud,
    local: Hpb,
    remote: Hpb,
}

async fn setup() -> Setup {
    setup_with_remote("").await.0
}

/// Like [`setup`]; `remote_extra` is merged into the remote hpb's configuration, which
/// is returned too (to start the remote again after a kill).
async fn setup_with_remote(remote_extra: &str) -> (Setup, String) {
    let local_nc = FakeNextcloud::start().await;
    let remote_nc = FakeNextcloud::start().await;
    local_nc.add_public_room("local-token");
    remote_nc.add_public_room("remote-token");
    let local = Hpb::start(&free_config(&local_nc, "")).await;
    let remote_cfg = free_config(&remote_nc, remote_extra);
    let remote = Hpb::start(&remote_cfg).await;
    let s = Setup {
        local_nc,
        remote_nc,
        local,
        remote,
    };
    (s, remote_cfg)
}

/// The JWT the remote Nextcloud issues for a federated user (Talk puts the cloud id in
/// `sub` and the actor in `userdata`).
fn federation_token(s: &Setup, cloud_id: &str) -> String {
    s.remote_nc.token(
        Some(cloud_id),
        TokenOpts {
            userdata: Some(json!({"displayname": "Alice", "actorId": cloud_id, "actorType": "federated_users"})),
            ..TokenOpts::default()
        },
    )
}

fn federated_join(s: &Setup, token: &str) -> Value {
    federated_join_via(s, token, &s.remote.http_url())
}

/// A federated join whose remote signaling server is reached at `signaling`.
fn federated_join_via(s: &Setup, token: &str, signaling: &str) -> Value {
    json!({"type": "room", "room": {
        "roomid": "local-token",
        "sessionid": "alice-talk-session",
        "federation": {
            "signaling": signaling,
            "url": s.remote_nc.base_url(),
            "roomid": "remote-token",
            "token": token,
        }
    }})
}

fn joins(frame: &Value) -> Vec<String> {
    frame["event"]["join"]
        .as_array()
        .map(|j| {
            j.iter()
                .filter_map(|e| e["sessionid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_join_of(c: &mut TestClient, pred: impl Fn(&Value) -> bool) -> Value {
    c.wait_for(
        |f| {
            f["type"] == "event"
                && f["event"]["type"] == "join"
                && f["event"]["join"]
                    .as_array()
                    .is_some_and(|j| j.iter().any(&pred))
        },
        DEFAULT_TIMEOUT,
    )
    .await
    .expect("join event")
}

#[tokio::test]
async fn a_federated_user_joins_a_remote_room_and_exchanges_messages() {
    let s = setup().await;

    let mut bob = TestClient::connect(s.remote.addr()).await;
    let b = bob
        .hello_v1(
            &s.remote_nc.backend_url(),
            "bob",
            &s.remote_nc.ticket("bob"),
        )
        .await;
    bob.join("remote-token", "bob-talk-session").await;

    let mut alice = TestClient::connect(s.local.addr()).await;
    let a = alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let token = federation_token(&s, "alice@local.example");
    let reply = alice.request(federated_join(&s, &token)).await;
    assert_eq!(reply["type"], "room", "{reply}");
    // The client sees the room under its local token.
    assert_eq!(reply["room"]["roomid"], "local-token", "{reply}");

    // The remote Nextcloud was asked about the federated actor, in its own room.
    let room_req = s
        .remote_nc
        .wait_for(
            |r| {
                r.kind == "room"
                    && r.inner()["roomid"] == "remote-token"
                    && r.inner()["actorid"] == "alice@local.example"
            },
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("the remote Nextcloud gets a room request for the federated actor");
    assert_eq!(room_req.inner()["actortype"], "federated_users");
    assert_eq!(room_req.inner()["sessionid"], "alice-talk-session");

    // Bob sees a federated session join; Alice sees Bob (already in the room).
    let bob_sees = wait_join_of(&mut bob, |e| e["federated"] == true).await;
    let alice_remote_id = bob_sees["event"]["join"]
        .as_array()
        .and_then(|j| j.iter().find(|e| e["federated"] == true))
        .and_then(|e| e["sessionid"].as_str())
        .expect("federated entry")
        .to_string();
    assert_ne!(
        alice_remote_id, a.sessionid,
        "remote ids are the remote server's"
    );
    let bob_id = b.sessionid.clone();
    let alice_sees = wait_join_of(&mut alice, |e| e["sessionid"] == bob_id.as_str()).await;
    assert!(joins(&alice_sees).contains(&b.sessionid));

    // Bob → Alice (by the id Bob sees) arrives at Alice, from Bob.
    bob.message_session(&alice_remote_id, json!({"type": "hi", "from": "bob"}))
        .await;
    let got = alice
        .wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .expect("alice gets bob's message");
    assert_eq!(got["message"]["data"], json!({"type": "hi", "from": "bob"}));
    assert_eq!(got["message"]["sender"]["sessionid"], b.sessionid.as_str());

    // Alice → Bob arrives at Bob from Alice's remote session.
    alice
        .message_session(&b.sessionid, json!({"type": "hello", "from": "alice"}))
        .await;
    let got = bob
        .wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .expect("bob gets alice's message");
    assert_eq!(
        got["message"]["data"],
        json!({"type": "hello", "from": "alice"})
    );
    assert_eq!(
        got["message"]["sender"]["sessionid"],
        alice_remote_id.as_str()
    );

    // Room messages work across too.
    bob.message_room(json!({"type": "to-room"})).await;
    let got = alice
        .wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .expect("alice gets bob's room message");
    assert_eq!(got["message"]["data"]["type"], "to-room");

    // Alice leaves: Bob sees the federated session leave.
    alice.leave().await;
    let left = bob
        .wait_for(
            |f| {
                f["type"] == "event"
                    && f["event"]["type"] == "leave"
                    && f["event"]["leave"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == alice_remote_id.as_str()))
            },
            DEFAULT_TIMEOUT,
        )
        .await;
    assert!(left.is_some(), "bob sees alice's federated session leave");
}

#[tokio::test]
async fn a_federated_join_with_a_bad_token_is_refused_with_the_remote_reason() {
    let s = setup().await;
    let mut alice = TestClient::connect(s.local.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let token = s.remote_nc.token(
        Some("alice@local.example"),
        TokenOpts {
            wrong_key: true,
            ..TokenOpts::default()
        },
    );
    let reply = alice.request(federated_join(&s, &token)).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(error_code(&reply), "federation_error", "{reply}");
    assert_eq!(
        reply["error"]["details"]["code"], "invalid_token",
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("remote"), "{reply}");

    // An expired token gets token_expired so Talk fetches a fresh one and retries.
    let expired = s.remote_nc.token(
        Some("alice@local.example"),
        TokenOpts {
            iat_offset_secs: -600,
            exp_offset_secs: -300,
            ..TokenOpts::default()
        },
    );
    let reply = alice.request(federated_join(&s, &expired)).await;
    assert_eq!(error_code(&reply), "token_expired", "{reply}");
}

#[tokio::test]
async fn a_federated_join_to_an_unreachable_server_explains_the_network_error() {
    let s = setup().await;
    let mut alice = TestClient::connect(s.local.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let token = federation_token(&s, "alice@local.example");
    let mut join = federated_join(&s, &token);
    join["room"]["federation"]["signaling"] = json!(format!("http://127.0.0.1:{port}/"));
    let reply = alice.request(join).await;
    assert_eq!(error_code(&reply), "federation_error", "{reply}");
    assert_eq!(
        reply["error"]["details"]["code"], "network_error",
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&port.to_string()),
        "names the address: {reply}"
    );
}

#[tokio::test]
async fn federation_hello_needs_the_federation_v2_capability() {
    let s = setup().await;
    s.remote_nc
        .set_features(&["audio", "video", "signaling-v3"]);
    let mut alice = TestClient::connect(s.local.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let token = federation_token(&s, "alice@local.example");
    let reply = alice.request(federated_join(&s, &token)).await;
    assert_eq!(error_code(&reply), "federation_unsupported", "{reply}");
}

// ----- losing the link to the remote server -----

/// A TCP proxy between the local and the remote hpb that the test can cut: cutting
/// closes every open connection and makes new ones close right after the accept (so
/// reconnect attempts fail and are counted), restoring forwards again.
struct Proxy {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    forward: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let forward = Arc::new(AtomicBool::new(true));
        let generation = watch::channel(0u64).0;
        let (acc, fwd, gen_tx) = (accepts.clone(), forward.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                if !fwd.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            accepts,
            forward,
            generation,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.forward.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.forward.store(true, Ordering::SeqCst);
    }

    /// Waits (bounded) until more than `n` connections were accepted.
    async fn wait_accepts_above(&self, n: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.accepts() <= n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Bob (remote) and federated Alice (local) in the room; returns
/// (bob, bob's id, alice, alice's id as the remote sees it).
async fn federated_pair(s: &Setup, signaling: &str) -> (TestClient, String, TestClient, String) {
    let token = federation_token(s, "alice@local.example");
    federated_pair_with(s, signaling, &token).await
}

/// Like [`federated_pair`] with Alice's federation token.
async fn federated_pair_with(
    s: &Setup,
    signaling: &str,
    token: &str,
) -> (TestClient, String, TestClient, String) {
    let mut bob = TestClient::connect(s.remote.addr()).await;
    let b = bob
        .hello_v1(
            &s.remote_nc.backend_url(),
            "bob",
            &s.remote_nc.ticket("bob"),
        )
        .await;
    bob.join("remote-token", "bob-talk-session").await;
    let mut alice = TestClient::connect(s.local.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let reply = alice.request(federated_join_via(s, token, signaling)).await;
    assert_eq!(reply["type"], "room", "{reply}");
    let alice_remote_id = federated_id(&mut bob).await;
    let bob_id = b.sessionid.clone();
    wait_join_of(&mut alice, |e| e["sessionid"] == bob_id.as_str()).await;
    (bob, b.sessionid, alice, alice_remote_id)
}

/// The id of the federated session in the next join event `c` sees with one.
async fn federated_id(c: &mut TestClient) -> String {
    let ev = wait_join_of(c, |e| e["federated"] == true).await;
    ev["event"]["join"]
        .as_array()
        .and_then(|j| j.iter().find(|e| e["federated"] == true))
        .and_then(|e| e["sessionid"].as_str())
        .expect("federated entry")
        .to_string()
}

async fn wait_federation_event(c: &mut TestClient, ty: &str) -> Value {
    c.wait_event("room", ty, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no {ty} event"))
}

/// `from` messages `to_id`; `to` gets it from `from_id`.
async fn message_arrives(
    from: &mut TestClient,
    to: &mut TestClient,
    to_id: &str,
    from_id: &str,
    tag: &str,
) {
    from.message_session(to_id, json!({"type": "ping", "tag": tag}))
        .await;
    let got = to
        .wait_for(
            |f| f["type"] == "message" && f["message"]["data"]["tag"] == tag,
            DEFAULT_TIMEOUT,
        )
        .await
        .unwrap_or_else(|| panic!("message {tag} did not arrive"));
    assert_eq!(got["message"]["sender"]["sessionid"], from_id, "{got}");
}

#[tokio::test]
async fn a_restarted_remote_server_gets_a_new_federated_session() {
    let port = free_port();
    let (s, remote_cfg) =
        setup_with_remote(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    let (_bob, _, mut alice, old_remote_id) = federated_pair(&s, &s.remote.http_url()).await;

    s.remote.kill();
    wait_federation_event(&mut alice, "federation_interrupted").await;

    // The same server comes back on the same port; it knows nothing of the old sessions.
    let remote = Hpb::start(&remote_cfg).await;
    assert_eq!(remote.addr().port(), port);
    let mut bob = TestClient::connect(remote.addr()).await;
    let b = bob
        .hello_v1(
            &s.remote_nc.backend_url(),
            "bob",
            &s.remote_nc.ticket("bob"),
        )
        .await;
    bob.join("remote-token", "bob-talk-session").await;

    let resumed = wait_federation_event(&mut alice, "federation_resumed").await;
    assert_eq!(resumed["event"]["resumed"], false, "{resumed}");
    // Then the new room reply (under the local token) and the joins, like a new join.
    let room = alice
        .wait_for(|f| f["type"] == "room", DEFAULT_TIMEOUT)
        .await
        .expect("a room frame after the fresh remote join");
    assert_eq!(room["room"]["roomid"], "local-token", "{room}");
    let bob_id = b.sessionid.clone();
    wait_join_of(&mut alice, |e| e["sessionid"] == bob_id.as_str()).await;

    // The remote saw a new federated session, joined with the same Talk session id.
    let new_remote_id = federated_id(&mut bob).await;
    assert_ne!(new_remote_id, old_remote_id);
    let rejoin = s
        .remote_nc
        .requests_of_type("room")
        .into_iter()
        .filter(|r| r.inner()["actorid"] == "alice@local.example")
        .count();
    assert!(rejoin >= 2, "the remote Nextcloud saw the join again");

    // Messages flow again, with the new remote id mapped to Alice's local session.
    message_arrives(&mut bob, &mut alice, &new_remote_id, &b.sessionid, "b2a").await;
    message_arrives(&mut alice, &mut bob, &b.sessionid, &new_remote_id, "a2b").await;
}

#[tokio::test]
async fn a_transient_drop_resumes_the_remote_session() {
    let s = setup().await;
    let proxy = Proxy::start(s.remote.addr()).await;
    let (mut bob, bob_id, mut alice, alice_remote_id) = federated_pair(&s, &proxy.url()).await;

    let before = proxy.accepts();
    proxy.cut();
    wait_federation_event(&mut alice, "federation_interrupted").await;
    // At least one reconnect attempt fails while the link is cut.
    assert!(
        proxy.wait_accepts_above(before).await,
        "no reconnect attempt"
    );
    // Sent while the link is down: queued and sent after the resume.
    alice
        .message_session(&bob_id, json!({"type": "ping", "tag": "queued"}))
        .await;
    proxy.restore();

    let resumed = wait_federation_event(&mut alice, "federation_resumed").await;
    assert_eq!(resumed["event"]["resumed"], true, "{resumed}");
    let got = bob
        .wait_for(
            |f| f["type"] == "message" && f["message"]["data"]["tag"] == "queued",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("the queued message arrives after the resume");
    assert_eq!(
        got["message"]["sender"]["sessionid"],
        alice_remote_id.as_str()
    );

    // The same remote session keeps working both ways.
    message_arrives(&mut bob, &mut alice, &alice_remote_id, &bob_id, "b2a").await;
    message_arrives(&mut alice, &mut bob, &bob_id, &alice_remote_id, "a2b").await;
    let left = bob.drain(Duration::from_millis(300)).await;
    assert!(
        !left.iter().any(|f| f["event"]["type"] == "leave"),
        "bob saw no leave: {left:?}"
    );
}

#[tokio::test]
async fn leaving_during_an_outage_stops_the_reconnects() {
    let s = setup().await;
    let proxy = Proxy::start(s.remote.addr()).await;
    let (_bob, _, mut alice, _) = federated_pair(&s, &proxy.url()).await;

    let before = proxy.accepts();
    proxy.cut();
    wait_federation_event(&mut alice, "federation_interrupted").await;
    assert!(proxy.wait_accepts_above(before + 1).await, "reconnects run");

    alice.leave().await;
    let after_leave = proxy.accepts();
    proxy.restore();
    // Longer than the next backoff steps (they are well below 1 s after two attempts):
    // a running loop would have connected again, and through the restored proxy resumed.
    let frames = alice.drain(Duration::from_secs(3)).await;
    assert!(
        proxy.accepts() <= after_leave + 1,
        "no reconnect attempts after leaving: {} then {}",
        after_leave,
        proxy.accepts()
    );
    assert!(
        !frames
            .iter()
            .any(|f| f["event"]["type"] == "federation_resumed"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn an_expired_token_after_a_restart_tells_the_client_to_fetch_a_new_one() {
    let port = free_port();
    let (s, remote_cfg) =
        setup_with_remote(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    // Valid (with the server's 60 s leeway) for 6 more seconds only.
    let created = tokio::time::Instant::now();
    let token = s.remote_nc.token(
        Some("alice@local.example"),
        TokenOpts {
            userdata: Some(json!({"displayname": "Alice", "actorId": "alice@local.example", "actorType": "federated_users"})),
            iat_offset_secs: -60,
            exp_offset_secs: -54,
            ..TokenOpts::default()
        },
    );
    let (_bob, _, mut alice, _) = federated_pair_with(&s, &s.remote.http_url(), &token).await;

    s.remote.kill();
    wait_federation_event(&mut alice, "federation_interrupted").await;
    // The remote comes back only after the token expired: resuming fails (new server),
    // the fresh hello is refused.
    tokio::time::sleep_until(created + Duration::from_secs(8)).await;
    let _remote = Hpb::start(&remote_cfg).await;

    let err = alice
        .wait_for(|f| f["type"] == "error", Duration::from_secs(30))
        .await
        .expect("an error once the remote refuses the token");
    assert_eq!(error_code(&err), "token_expired", "{err}");
    assert!(err.get("id").is_none(), "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("remote"), "{err}");
    // And the session is out of the federated room.
    let room = alice
        .wait_for(|f| f["type"] == "room", DEFAULT_TIMEOUT)
        .await
        .expect("a room frame after the error");
    assert_eq!(room["room"]["roomid"], "", "{room}");
    // A new federated join with a fresh token works.
    let fresh = federation_token(&s, "alice@local.example");
    let reply = alice.request(federated_join(&s, &fresh)).await;
    assert_eq!(reply["type"], "room", "{reply}");
}

/// The remote hpb serves TLS with a self-signed certificate: the federated join is refused
/// with the certificate error and a hint at `[federation] skipverify`; with it set, the
/// join goes through.
#[tokio::test]
async fn skipverify_accepts_a_self_signed_remote_and_without_it_the_error_says_so() {
    let dir = std::env::temp_dir().join(format!(
        "hpb-federation-{}",
        hpb_test_support::random_string(10)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
    let (s, _) = setup_with_remote(&format!(
        "[https]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .await;
    let https = s
        .remote
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("listening: https://"))
        .map(|a| format!("https://{}", a.trim()))
        .expect("the remote's https listener");
    let token = federation_token(&s, "alice@local.example");
    let join = |s: &Setup| federated_join_via(s, &token, &https);

    let mut alice = TestClient::connect(s.local.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let reply = alice.request(join(&s)).await;
    assert_eq!(error_code(&reply), "federation_error", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("certificate") && message.contains("skipverify"),
        "{reply}"
    );

    let insecure = Hpb::start(&free_config(
        &s.local_nc,
        "[federation]\nskipverify = true\n",
    ))
    .await;
    let mut alice = TestClient::connect(insecure.addr()).await;
    alice
        .hello_v1(
            &s.local_nc.backend_url(),
            "alice",
            &s.local_nc.ticket("alice"),
        )
        .await;
    let reply = alice.request(join(&s)).await;
    assert_eq!(reply["type"], "room", "{reply}");
    assert_eq!(reply["room"]["roomid"], "local-token", "{reply}");
}
