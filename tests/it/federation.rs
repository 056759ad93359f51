//! End-to-end: federated participants joining a room hosted on another hpb.
//!
//! Two Nextclouds, each with its own hpb. Alice is a user of the "local" Nextcloud; the
//! conversation lives on the "remote" one, where Bob is. Alice's Talk sends a room join
//! with a `federation` object (reference §1.6); her hpb connects to the remote hpb with a
//! federation hello and relays frames both ways.

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, Hpb, TestClient, TokenOpts, error_code, free_config,
};
use serde_json::{Value, json};

struct Setup {
    local_nc: FakeNextcloud,
    remote_nc: FakeNextcloud,
    local: Hpb,
    remote: Hpb,
}

async fn setup() -> Setup {
    let local_nc = FakeNextcloud::start().await;
    let remote_nc = FakeNextcloud::start().await;
    local_nc.add_public_room("local-token");
    remote_nc.add_public_room("remote-token");
    let local = Hpb::start(&free_config(&local_nc, "")).await;
    let remote = Hpb::start(&free_config(&remote_nc, "")).await;
    Setup {
        local_nc,
        remote_nc,
        local,
        remote,
    }
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
    json!({"type": "room", "room": {
        "roomid": "local-token",
        "sessionid": "alice-talk-session",
        "federation": {
            "signaling": s.remote.http_url(),
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
