//! The shortest path a Talk client takes: welcome, hello v1, join a room, see the other
//! participant join, exchange a message.

use hpb_test_support::{DEFAULT_TIMEOUT, FakeNextcloud, Hpb, TestClient, free_config};
use serde_json::json;

#[tokio::test]
async fn two_users_join_a_room_and_exchange_a_message() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;

    let mut alice = TestClient::connect(hpb.addr()).await;
    let welcome = alice
        .wait_welcome(DEFAULT_TIMEOUT)
        .await
        .expect("welcome frame");
    assert!(
        welcome["welcome"]["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "hello-v2")),
        "{welcome}"
    );
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_eq!(a.userid, "alice");
    alice.join("room1", "alice-talk-session").await;

    let mut bob = TestClient::connect(hpb.addr()).await;
    let b = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-talk-session").await;

    let bob_id = b.sessionid.clone();
    let join = alice
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
    assert_eq!(join["event"]["target"], "room");

    bob.message_session(&a.sessionid, json!({"type": "hi", "n": 1}))
        .await;
    let got = alice.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(got["message"]["sender"]["type"], "session");
    assert_eq!(got["message"]["sender"]["sessionid"], b.sessionid.as_str());
    assert_eq!(got["message"]["sender"]["userid"], "bob");
    assert_eq!(got["message"]["data"], json!({"type": "hi", "n": 1}));
}
