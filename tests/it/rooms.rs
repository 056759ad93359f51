//! End-to-end: room join, leave and switch with Nextcloud's room requests, room-session takeover, periodic pings.

use std::collections::BTreeSet;
use std::time::Duration;

use hpb_test_support::barrier::{connect_user, settle, sync};
use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, Hpb, RawReply, Recorded, Room, TestClient, error_code,
    free_config,
};
use serde_json::{Value, json};

fn leave_event(sessionid: &str) -> Value {
    json!({"type": "event", "event": {"target": "room", "type": "leave", "leave": [sessionid]}})
}

fn is_join_of(frame: &Value, sessionid: &str) -> bool {
    frame["type"] == "event"
        && frame["event"]["target"] == "room"
        && frame["event"]["type"] == "join"
        && frame["event"]["join"]
            .as_array()
            .is_some_and(|j| j.iter().any(|e| e["sessionid"] == sessionid))
}

async fn room_request(nc: &FakeNextcloud, pred: impl Fn(&Value) -> bool) -> Recorded {
    nc.wait_for(|r| r.kind == "room" && pred(r.inner()), DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "Nextcloud got no such room request; room requests: {:?}",
                nc.requests_of_type("room")
                    .iter()
                    .map(|r| r.body.clone())
                    .collect::<Vec<_>>()
            )
        })
}

#[tokio::test]
async fn join_sends_a_signed_room_request_and_replies_with_properties_and_bandwidth() {
    let nc = FakeNextcloud::start().await;
    let props = json!({"name": "Room one", "type": 3, "lobby-state": 0});
    nc.add_room(Room::public("room1").with_properties(props.clone()));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;

    let id = alice
        .send_with_id(
            json!({"type": "room", "room": {"roomid": "room1", "sessionid": "alice-talk"}}),
        )
        .await;
    let reply = alice
        .wait_reply(&id, DEFAULT_TIMEOUT)
        .await
        .expect("room reply");
    assert_eq!(
        reply,
        json!({"id": id, "type": "room", "room": {
            "roomid": "room1",
            "properties": props,
            "bandwidth": {"maxstreambitrate": 1_048_576, "maxscreenbitrate": 2_097_152},
        }})
    );

    let req = room_request(&nc, |_| true).await;
    assert!(req.authenticated, "the room request must be signed");
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/ocs/v2.php/apps/spreed/api/v3/signaling/backend");
    assert_eq!(req.header("OCS-APIRequest"), Some("true"));
    assert_eq!(
        req.body,
        json!({"type": "room", "room": {
            "version": "1.0", "roomid": "room1", "userid": "alice", "sessionid": "alice-talk",
        }})
    );
}

#[tokio::test]
async fn bandwidth_is_the_smaller_nonzero_limit_and_absent_without_limits() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(
        &nc,
        "[backends.nc1]\nmaxstreambitrate = 500000\nmaxscreenbitrate = 0\n",
    ))
    .await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    let reply = alice.join("room1", "alice-talk").await;
    assert_eq!(
        reply["room"]["bandwidth"],
        json!({"maxstreambitrate": 500_000, "maxscreenbitrate": 2_097_152})
    );

    let hpb = Hpb::start(&free_config(
        &nc,
        "[mcu]\nmaxstreambitrate = 0\nmaxscreenbitrate = 0\n",
    ))
    .await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let reply = bob.join("room1", "bob-talk").await;
    assert!(
        reply["room"].get("bandwidth").is_none(),
        "no limits, no bandwidth: {reply}"
    );
}

#[tokio::test]
async fn a_join_without_room_session_id_is_checked_with_the_public_session_id() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut guest = TestClient::connect(hpb.addr()).await;
    let hello = guest
        .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
        .await;
    assert_eq!(hello.userid, "");
    guest.join("room1", None).await;
    let req = room_request(&nc, |_| true).await;
    assert_eq!(
        req.body,
        json!({"type": "room", "room": {
            "version": "1.0", "roomid": "room1", "userid": "", "sessionid": hello.sessionid,
        }})
    );
    // The own join event carries no room session id (none was sent).
    let frames = sync(&mut guest).await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "event", "event": {"target": "room", "type": "join", "join": [
            {"sessionid": hello.sessionid, "userid": ""}]}})
        ]
    );
}

#[tokio::test]
async fn nextcloud_errors_are_forwarded_with_their_message() {
    let nc = FakeNextcloud::start().await;
    nc.add_room(
        Room::public("taken").with_error("duplicate_session", "The session is already in use."),
    );
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;

    let err = alice
        .try_join("nowhere", "alice-talk")
        .await
        .expect_err("unknown room");
    assert_eq!(err["id"], "2");
    assert_eq!(error_code(&err), "no_such_room", "{err}");
    let msg = err["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("The user is not invited to this room."),
        "{err}"
    );

    let err = alice
        .try_join("taken", "alice-talk")
        .await
        .expect_err("duplicate session");
    assert_eq!(err["id"], "3");
    assert_eq!(error_code(&err), "duplicate_session", "{err}");
    let msg = err["error"]["message"].as_str().expect("message");
    assert!(msg.contains("The session is already in use."), "{err}");

    // Not in any room afterwards.
    let id = alice.transient_set("k", json!(1)).await;
    let err = alice.expect_error("not_in_room").await;
    assert_eq!(err["id"], id.as_str());
}

#[tokio::test]
async fn a_reply_that_is_not_a_room_is_room_join_failed() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    let body = json!({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"},
        "data": {"type": "auth", "auth": {"version": "1.0", "userid": "alice"}}}});
    nc.set_raw_reply(
        "room",
        Some(RawReply {
            status: 200,
            content_type: "application/json; charset=utf-8".into(),
            body: body.to_string(),
        }),
    );
    let err = alice
        .try_join("room1", "alice-talk")
        .await
        .expect_err("not a room reply");
    assert_eq!(err["id"], "2");
    assert_eq!(error_code(&err), "room_join_failed", "{err}");
    let id = alice.transient_set("k", json!(1)).await;
    assert_eq!(alice.expect_error("not_in_room").await["id"], id.as_str());
}

#[tokio::test]
async fn joining_the_same_room_again_is_already_joined_with_the_room_details() {
    let nc = FakeNextcloud::start().await;
    let props = json!({"name": "Room one", "type": 3});
    nc.add_room(Room::public("room1").with_properties(props.clone()));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;

    let err = alice
        .try_join("room1", "alice-talk")
        .await
        .expect_err("already joined");
    assert_eq!(error_code(&err), "already_joined", "{err}");
    assert_eq!(
        err["error"]["details"],
        json!({"room": {"roomid": "room1", "properties": props}})
    );
    assert_eq!(
        nc.requests_of_type("room").len(),
        1,
        "an already joined room is not checked with Nextcloud again"
    );
    // Still in the room.
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn leave_replies_tells_nextcloud_and_the_others() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    settle(&mut [&mut alice, &mut bob]).await;

    let id = alice
        .send_with_id(json!({"type": "room", "room": {"roomid": ""}}))
        .await;
    let reply = alice
        .wait_reply(&id, DEFAULT_TIMEOUT)
        .await
        .expect("leave reply");
    assert_eq!(
        reply,
        json!({"id": id, "type": "room", "room": {"roomid": ""}})
    );
    assert_eq!(sync(&mut bob).await, vec![leave_event(&a.sessionid)]);
    let leave = room_request(&nc, |r| r["action"] == "leave").await;
    assert!(leave.authenticated);
    assert_eq!(
        leave.body,
        json!({"type": "room", "room": {
            "version": "1.0", "roomid": "room1", "userid": "alice", "sessionid": "alice-talk",
            "action": "leave",
        }})
    );
    // Alice is no longer in the room: room messages from bob do not reach her.
    bob.message_room(json!({"type": "hello"})).await;
    assert!(sync(&mut bob).await.is_empty());
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn leaving_without_a_room_sends_nothing() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice
        .send_with_id(json!({"type": "room", "room": {"roomid": ""}}))
        .await;
    assert_eq!(sync(&mut alice).await, Vec::<Value>::new());

    alice.join("room1", "alice-talk").await;
    alice.leave().await;
    sync(&mut alice).await;
    alice
        .send_with_id(json!({"type": "room", "room": {"roomid": ""}}))
        .await;
    assert_eq!(sync(&mut alice).await, Vec::<Value>::new());
}

#[tokio::test]
async fn joining_another_room_leaves_the_first() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    nc.add_public_room("room2");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, c) = connect_user(&hpb, &nc, "carol").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    carol.join("room2", "carol-talk").await;
    settle(&mut [&mut alice, &mut bob, &mut carol]).await;

    let reply = alice.join("room2", "alice-talk").await;
    assert_eq!(reply["room"]["roomid"], "room2");
    let alice_frames = sync(&mut alice).await;
    assert_eq!(sync(&mut bob).await, vec![leave_event(&a.sessionid)]);
    let carol_frames = sync(&mut carol).await;
    assert_eq!(carol_frames.len(), 1, "{carol_frames:?}");
    assert!(
        is_join_of(&carol_frames[0], &a.sessionid),
        "{carol_frames:?}"
    );
    assert!(
        alice_frames.iter().any(|f| is_join_of(f, &a.sessionid))
            && alice_frames.iter().any(|f| is_join_of(f, &c.sessionid)),
        "alice sees herself and carol in room2: {alice_frames:?}"
    );
    room_request(&nc, |r| r["roomid"] == "room1" && r["action"] == "leave").await;
    room_request(&nc, |r| r["roomid"] == "room2" && r["userid"] == "alice").await;

    // Room messages now go to room2 only.
    alice.message_room(json!({"type": "ping"})).await;
    assert!(sync(&mut alice).await.is_empty());
    assert!(sync(&mut bob).await.is_empty());
    let got = sync(&mut carol).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["message"]["sender"]["sessionid"],
        a.sessionid.as_str()
    );
}

#[tokio::test]
async fn the_same_talk_session_on_a_new_connection_takes_over() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    bob.join("room1", "bob-talk").await;
    let (mut first, f) = connect_user(&hpb, &nc, "alice").await;
    first.join("room1", "alice-talk").await;
    settle(&mut [&mut first, &mut bob]).await;

    let (mut second, s) = connect_user(&hpb, &nc, "alice").await;
    second.join("room1", "alice-talk").await;
    sync(&mut second).await;

    let closed = first
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("the first connection is closed");
    assert_eq!(
        closed.bye,
        Some(json!({"type": "bye", "bye": {"reason": "room_session_reconnected"}})),
        "{closed:?}"
    );
    let bob_frames = sync(&mut bob).await;
    assert!(
        bob_frames.contains(&leave_event(&f.sessionid)),
        "{bob_frames:?}"
    );
    assert!(
        bob_frames.iter().any(|x| is_join_of(x, &s.sessionid)),
        "{bob_frames:?}"
    );
    // The new session is the one in the room.
    bob.message_room(json!({"type": "hi"})).await;
    assert!(sync(&mut bob).await.is_empty());
    let got = sync(&mut second).await;
    assert!(
        got.iter().any(|x| x["type"] == "message"),
        "the new session gets room messages: {got:?}"
    );
}

#[tokio::test]
async fn permissions_from_the_join_reply_are_applied() {
    let nc = FakeNextcloud::start().await;
    nc.add_room(
        Room::public("room1")
            .with_user_permissions("alice", &["publish-audio", "control", "transient-data"])
            .with_user_permissions("bob", &["publish-audio", "publish-video"]),
    );
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    settle(&mut [&mut alice, &mut bob]).await;

    // Bob has neither control nor transient-data.
    bob.control_session(&a.sessionid, json!({"type": "mute", "audio": 1}))
        .await;
    let id = bob.transient_set("k", json!(1)).await;
    let err = bob.expect_error("not_allowed").await;
    assert_eq!(err["id"], id.as_str());
    assert!(sync(&mut alice).await.is_empty());

    // Alice has both.
    alice
        .control_session(&b.sessionid, json!({"type": "mute", "audio": 1}))
        .await;
    alice.transient_set("k", json!(1)).await;
    let set = json!({"type": "transient", "transient": {"type": "set", "key": "k", "value": 1}});
    assert_eq!(sync(&mut alice).await, vec![set.clone()]);
    let got = sync(&mut bob).await;
    assert_eq!(
        got,
        vec![
            json!({"type": "control", "control": {
                "sender": {"type": "session", "sessionid": a.sessionid, "userid": "alice"},
                "data": {"type": "mute", "audio": 1},
            }}),
            set,
        ]
    );
}

fn entries_of(r: &Recorded) -> BTreeSet<String> {
    r.inner()["entries"]
        .as_array()
        .map(|e| e.iter().map(Value::to_string).collect())
        .unwrap_or_default()
}

fn entry(sessionid: &str, userid: &str) -> String {
    json!({"sessionid": sessionid, "userid": userid}).to_string()
}

#[tokio::test]
async fn rooms_are_pinged_with_every_session_in_them() {
    let nc = FakeNextcloud::start().await;
    nc.set_session_ping_limit(None);
    nc.add_public_room("room1");
    nc.add_public_room("room2");
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nroom_ping_interval_ms = 200\n")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    carol.join("room2", "carol-talk").await;

    let room1: BTreeSet<String> = [entry("alice-talk", "alice"), entry("bob-talk", "bob")].into();
    let ping = nc
        .wait_for(
            |r| r.kind == "ping" && r.inner()["roomid"] == "room1" && entries_of(r) == room1,
            Duration::from_secs(10),
        )
        .await
        .expect("a ping of room1 with alice and bob");
    assert!(ping.authenticated);
    assert_eq!(ping.inner()["version"], "1.0");
    assert_eq!(ping.body["type"], "ping");
    let room2: BTreeSet<String> = [entry("carol-talk", "carol")].into();
    nc.wait_for(
        |r| r.kind == "ping" && r.inner()["roomid"] == "room2" && entries_of(r) == room2,
        Duration::from_secs(10),
    )
    .await
    .expect("a ping of room2 with carol");
    assert!(
        nc.requests_of_type("ping")
            .iter()
            .all(|r| r.inner()["roomid"] == "room1" || r.inner()["roomid"] == "room2"),
        "without session-ping-limit every ping names its room"
    );
}

#[tokio::test]
async fn pings_are_combined_across_rooms_up_to_the_session_ping_limit() {
    let nc = FakeNextcloud::start().await;
    nc.set_session_ping_limit(Some(2));
    nc.add_public_room("room1");
    nc.add_public_room("room2");
    let hpb = Hpb::start(&free_config(&nc, "[limits]\nroom_ping_interval_ms = 200\n")).await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol").await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    carol.join("room2", "carol-talk").await;
    let mark = nc.request_count();

    let all: BTreeSet<String> = [
        entry("alice-talk", "alice"),
        entry("bob-talk", "bob"),
        entry("carol-talk", "carol"),
    ]
    .into();
    // Wait for pings that together cover all three sessions.
    let covered = |nc: &FakeNextcloud| {
        let seen: BTreeSet<String> = nc.requests()[mark..]
            .iter()
            .filter(|r| r.kind == "ping")
            .flat_map(entries_of)
            .collect();
        seen == all
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !covered(&nc) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pings never covered all sessions: {:?}",
            nc.requests_of_type("ping")
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>()
        );
        nc.wait_for_new(
            nc.request_count(),
            |r| r.kind == "ping",
            Duration::from_secs(2),
        )
        .await;
    }
    let pings = nc.requests_of_type("ping");
    for p in &pings {
        assert_eq!(
            p.inner()["roomid"],
            "",
            "combined pings have no room: {}",
            p.body
        );
        let n = p.inner()["entries"].as_array().map_or(0, Vec::len);
        assert!((1..=2).contains(&n), "at most 2 entries: {}", p.body);
    }
    assert!(
        pings
            .iter()
            .any(|p| p.inner()["entries"].as_array().map_or(0, Vec::len) == 2),
        "a full batch of 2: {pings:?}"
    );
}

#[tokio::test]
async fn a_user_id_assigned_by_nextcloud_is_used_for_the_guest() {
    let nc = FakeNextcloud::start().await;
    nc.add_room(Room::public("room1").with_session(json!({"userid": "assigned"})));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob").await;
    let mut guest = TestClient::connect(hpb.addr()).await;
    let g = guest
        .hello_v1(&nc.backend_url(), None, &nc.guest_ticket())
        .await;
    bob.join("room1", "bob-talk").await;
    sync(&mut bob).await;
    guest.join("room1", "guest-talk").await;
    let frames = sync(&mut guest).await;
    assert_eq!(
        frames.first(),
        Some(
            &json!({"type": "event", "event": {"target": "room", "type": "join", "join": [
            {"sessionid": g.sessionid, "userid": "assigned", "roomsessionid": "guest-talk"}]}})
        ),
        "{frames:?}"
    );
    let got = sync(&mut bob).await;
    assert_eq!(
        got,
        vec![
            json!({"type": "event", "event": {"target": "room", "type": "join", "join": [
            {"sessionid": g.sessionid, "userid": "assigned", "roomsessionid": "guest-talk"}]}})
        ]
    );
    guest
        .message_session(&b.sessionid, json!({"type": "hi"}))
        .await;
    assert!(sync(&mut guest).await.is_empty());
    assert_eq!(
        sync(&mut bob).await,
        vec![json!({"type": "message", "message": {
            "sender": {"type": "session", "sessionid": g.sessionid, "userid": "assigned"},
            "data": {"type": "hi"}}})]
    );
}

#[tokio::test]
async fn joining_again_with_a_new_talk_session_id_replaces_the_old_one() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "old-talk").await;
    sync(&mut alice).await;
    let err = alice
        .try_join("room1", "new-talk")
        .await
        .expect_err("already joined");
    assert_eq!(error_code(&err), "already_joined", "{err}");

    let (status, _, text) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "participants", "participants": {"changed": [], "users": [
                {"inCall": 0, "sessionId": "new-talk", "userId": "alice"},
                {"inCall": 0, "sessionId": "old-talk", "userId": "alice"},
            ]}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sync(&mut alice).await,
        vec![
            json!({"type": "event", "event": {"target": "participants", "type": "update",
            "update": {"roomid": "room1", "users": [
                {"inCall": 0, "sessionId": a.sessionid, "userId": "alice"}]}}})
        ]
    );
}
