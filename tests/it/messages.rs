//! End-to-end: message and control relay to session, user, room and call recipients.

use hpb_test_support::barrier::{connect_user, settle, sync};
use hpb_test_support::{
    FakeNextcloud, HelloInfo, Hpb, INTERNAL_SECRET, Room, TestClient, default_permissions,
    free_config, free_config_multi,
};
use serde_json::{Value, json};

fn message(kind: &str, from: &HelloInfo, data: Value) -> Value {
    json!({"type": "message", "message": {
        "sender": {"type": kind, "sessionid": from.sessionid, "userid": from.userid},
        "data": data,
    }})
}

async fn setup() -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    (nc, hpb)
}

#[tokio::test]
async fn a_message_to_a_session_reaches_only_that_session() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    let data = json!({"type": "hello", "n": 1, "nested": {"x": [1, 2]}});
    alice.message_session(&b.sessionid, data.clone()).await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(sync(&mut bob).await, vec![message("session", &a, data)]);
    assert!(sync(&mut carol).await.is_empty());

    // To oneself and to sessions that do not exist: dropped without an error.
    alice
        .message_session(&a.sessionid, json!({"type": "self"}))
        .await;
    alice
        .message_session("no-such-session", json!({"type": "x"}))
        .await;
    assert!(sync(&mut alice).await.is_empty());
    assert!(sync(&mut bob).await.is_empty());
}

#[tokio::test]
async fn a_message_to_a_user_reaches_all_their_sessions_but_not_the_own_user() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob1, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut bob2, _) = connect_user(&hpb, &nc, "bob").await;
    let data = json!({"type": "to-bob"});
    alice.message_user("bob", data.clone()).await;
    let expected = message("user", &a, data);
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(sync(&mut bob1).await, vec![expected.clone()]);
    assert_eq!(sync(&mut bob2).await, vec![expected]);

    bob1.message_user("bob", json!({"type": "to-myself"})).await;
    assert!(sync(&mut bob1).await.is_empty());
    assert!(sync(&mut bob2).await.is_empty());
    alice.message_user("nobody", json!({"type": "x"})).await;
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn a_message_to_the_room_reaches_everyone_else_in_it() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    let (mut outside, _) = connect_user(&hpb, &nc, "bob").await;
    for (c, rs) in [
        (&mut alice, "alice-talk"),
        (&mut bob, "bob-talk"),
        (&mut carol, "carol-talk"),
    ] {
        c.join("room1", rs).await;
    }
    settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let data = json!({"type": "nickChanged", "payload": {"name": "A"}});
    alice.message_room(data.clone()).await;
    let expected = message("room", &a, data);
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(sync(&mut bob).await, vec![expected.clone()]);
    assert_eq!(sync(&mut carol).await, vec![expected]);
    assert!(sync(&mut outside).await.is_empty());

    // Without a room, room messages go nowhere.
    outside.message_room(json!({"type": "x"})).await;
    assert!(sync(&mut outside).await.is_empty());
    assert!(sync(&mut bob).await.is_empty());
}

#[tokio::test]
async fn a_message_to_the_call_reaches_only_sessions_in_the_call() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    for (c, rs) in [
        (&mut alice, "alice-talk"),
        (&mut bob, "bob-talk"),
        (&mut carol, "carol-talk"),
    ] {
        c.join("room1", rs).await;
    }
    let (status, _, text) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "incall", "incall": {"incall": 7,
            "changed": [
                {"inCall": 7, "sessionId": "alice-talk", "userId": "alice"},
                {"inCall": 3, "sessionId": "bob-talk", "userId": "bob"},
            ],
            "users": [
                {"inCall": 7, "sessionId": "alice-talk", "userId": "alice"},
                {"inCall": 3, "sessionId": "bob-talk", "userId": "bob"},
                {"inCall": 0, "sessionId": "carol-talk", "userId": "carol"},
            ]}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let data = json!({"type": "raiseHand", "raised": true});
    alice.message_call(data.clone()).await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(sync(&mut bob).await, vec![message("call", &a, data)]);
    assert!(sync(&mut carol).await.is_empty());
}

#[tokio::test]
async fn sessions_of_another_backend_are_out_of_reach() {
    let nc1 = FakeNextcloud::start().await;
    let nc2 = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config_multi(&[("nc1", &nc1), ("nc2", &nc2)], "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc1, "alice").await;
    let (mut bob1, _) = connect_user(&hpb, &nc1, "bob").await;
    let (mut bob2, b2) = connect_user(&hpb, &nc2, "bob").await;

    alice
        .message_session(&b2.sessionid, json!({"type": "cross"}))
        .await;
    alice.message_user("bob", json!({"type": "to-bob"})).await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(
        sync(&mut bob1).await,
        vec![message("user", &a, json!({"type": "to-bob"}))]
    );
    assert!(sync(&mut bob2).await.is_empty());
}

#[tokio::test]
async fn control_needs_the_control_permission_or_an_internal_client() {
    let nc = FakeNextcloud::start().await;
    let mut moderator = default_permissions();
    moderator.push("control".into());
    let moderator: Vec<&str> = moderator.iter().map(String::as_str).collect();
    nc.add_room(Room::public("room1").with_user_permissions("alice", &moderator));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    settle(&mut [&mut alice, &mut bob]).await;

    let mute = json!({"type": "mute", "audio": 1});
    alice.control_session(&b.sessionid, mute.clone()).await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(
        sync(&mut bob).await,
        vec![json!({"type": "control", "control": {
            "sender": {"type": "session", "sessionid": a.sessionid, "userid": "alice"},
            "data": mute,
        }})]
    );

    // Bob lacks the permission: ignored without an error.
    bob.control_session(
        &a.sessionid,
        json!({"action": "forceMute", "peerId": a.sessionid}),
    )
    .await;
    assert!(sync(&mut bob).await.is_empty());
    assert!(sync(&mut alice).await.is_empty());

    // Internal clients may always send control messages.
    let mut internal = TestClient::connect(hpb.addr()).await;
    let i = internal
        .hello_internal(&nc.backend_url(), INTERNAL_SECRET)
        .await;
    internal
        .control_session(&b.sessionid, json!({"type": "hangup"}))
        .await;
    assert!(sync(&mut internal).await.is_empty());
    assert_eq!(
        sync(&mut bob).await,
        vec![json!({"type": "control", "control": {
            "sender": {"type": "session", "sessionid": i.sessionid},
            "data": {"type": "hangup"},
        }})]
    );
}

#[tokio::test]
async fn without_an_sfu_webrtc_signaling_is_relayed_peer_to_peer() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    let features = a.raw["hello"]["server"]["features"]
        .as_array()
        .expect("hello server features")
        .clone();
    assert!(
        !features.iter().any(|f| f == "mcu"),
        "no SFU, no mcu feature: {features:?}"
    );
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    settle(&mut [&mut alice, &mut bob]).await;

    let offer = json!({"to": b.sessionid, "type": "offer", "sid": "1700000000", "roomType": "video",
        "payload": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "nick": "Alice"}});
    alice.message_session(&b.sessionid, offer.clone()).await;
    let candidate = json!({"to": b.sessionid, "type": "candidate", "sid": "1700000000", "roomType": "video",
        "payload": {"candidate": {"candidate": "candidate:1 1 UDP 1 127.0.0.1 5000 typ host", "sdpMLineIndex": 0, "sdpMid": "0"}}});
    alice.message_session(&b.sessionid, candidate.clone()).await;
    // Without an MCU the data is not validated.
    alice
        .message_session(&b.sessionid, json!({"no-type": true}))
        .await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(
        sync(&mut bob).await,
        vec![
            message("session", &a, offer.clone()),
            message("session", &a, candidate),
            message("session", &a, json!({"no-type": true})),
        ]
    );
    let answer = json!({"to": a.sessionid, "type": "answer", "sid": "1700000000", "roomType": "video",
        "payload": {"type": "answer", "sdp": "v=0\r\n"}});
    bob.message_session(&a.sessionid, answer.clone()).await;
    assert!(sync(&mut bob).await.is_empty());
    assert_eq!(sync(&mut alice).await, vec![message("session", &b, answer)]);

    // An offer to oneself (publishing to an SFU) goes nowhere and is not an error.
    let own = json!({"to": a.sessionid, "type": "offer", "sid": "1", "roomType": "video",
        "payload": {"type": "offer", "sdp": "v=0\r\n"}});
    alice.message_session(&a.sessionid, own).await;
    assert!(sync(&mut alice).await.is_empty());
    assert!(sync(&mut bob).await.is_empty());
}

#[tokio::test]
async fn nick_changes_are_not_shown_to_sessions_that_hide_display_names() {
    let nc = FakeNextcloud::start().await;
    let mut hidden = default_permissions();
    hidden.push("hide-displaynames".into());
    let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
    nc.add_room(Room::public("room1").with_user_permissions("bob", &hidden));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    carol.join("room1", "carol-talk").await;
    settle(&mut [&mut alice, &mut bob, &mut carol]).await;

    let nick = json!({"type": "nickChanged", "payload": {"name": "Alice A."}});
    alice.message_room(nick.clone()).await;
    alice.message_session(&b.sessionid, nick.clone()).await;
    alice.message_user("bob", nick.clone()).await;
    let other = json!({"type": "mute", "payload": {"name": "audio"}});
    alice.message_room(other.clone()).await;
    assert!(sync(&mut alice).await.is_empty());
    assert_eq!(
        sync(&mut bob).await,
        vec![message("room", &a, other.clone())]
    );
    assert_eq!(
        sync(&mut carol).await,
        vec![message("room", &a, nick), message("room", &a, other)]
    );
}
