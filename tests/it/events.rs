//! End-to-end: room, roomlist and participants events as Talk clients see them.

use hpb_test_support::barrier::{settle, sync};
use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, INTERNAL_SECRET, Room, TestClient,
    default_permissions, error_code, free_config,
};
use serde_json::{Value, json};

/// Connects and says hello v1 as `user` with these client features.
async fn connect_user(
    hpb: &Hpb,
    nc: &FakeNextcloud,
    user: &str,
    features: &[&str],
) -> (TestClient, HelloInfo) {
    let mut c = TestClient::connect(hpb.addr()).await;
    c.set_hello_features(features);
    let hello = c.hello_v1(&nc.backend_url(), user, &nc.ticket(user)).await;
    (c, hello)
}

/// Posts a signed backend request like Talk's `BackendNotifier`; expects 200.
async fn post(nc: &FakeNextcloud, hpb: &Hpb, room: &str, body: Value) {
    let (status, _, text) = nc.post_room(&hpb.http_url(), room, body.clone()).await;
    assert_eq!(status, 200, "{body} -> {text}");
}

fn event(target: &str, kind: &str, payload: Value) -> Value {
    json!({"type": "event", "event": {"target": target, "type": kind, kind: payload}})
}

/// Alice (features `chat-relay`) and bob in room1, settled.
async fn alice_and_bob(
    hpb: &Hpb,
    nc: &FakeNextcloud,
) -> (TestClient, HelloInfo, TestClient, HelloInfo) {
    let (mut alice, a) = connect_user(hpb, nc, "alice", &["chat-relay"]).await;
    let (mut bob, b) = connect_user(hpb, nc, "bob", &[]).await;
    alice.join("room1", "alice-talk").await;
    bob.join("room1", "bob-talk").await;
    settle(&mut [&mut alice, &mut bob]).await;
    (alice, a, bob, b)
}

async fn setup() -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    nc.add_public_room("room2");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    (nc, hpb)
}

#[tokio::test]
async fn join_events_describe_the_session_to_itself_and_to_the_others() {
    let (nc, hpb) = setup().await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice", &["chat-relay"]).await;
    alice.join("room1", "alice-talk").await;
    let alice_entry = json!({"sessionid": a.sessionid, "userid": "alice",
        "user": {"displayname": "Alice"}, "roomsessionid": "alice-talk", "features": ["chat-relay"]});
    assert_eq!(
        sync(&mut alice).await,
        vec![event("room", "join", json!([alice_entry]))]
    );

    let (mut bob, b) = connect_user(&hpb, &nc, "bob", &[]).await;
    bob.join("room1", "bob-talk").await;
    let bob_entry = json!({"sessionid": b.sessionid, "userid": "bob",
        "user": {"displayname": "Bob"}, "roomsessionid": "bob-talk"});
    assert_eq!(
        sync(&mut bob).await,
        vec![
            event("room", "join", json!([bob_entry])),
            event("room", "join", json!([alice_entry])),
        ]
    );
    assert_eq!(
        sync(&mut alice).await,
        vec![event("room", "join", json!([bob_entry]))]
    );
}

#[tokio::test]
async fn leave_events_reach_the_remaining_members() {
    let (nc, hpb) = setup().await;
    let (mut alice, _, mut bob, b) = alice_and_bob(&hpb, &nc).await;
    let bye = bob.bye().await;
    assert_eq!(bye["type"], "bye");
    // The bye is answered before the session is torn down: wait for the event.
    let leave = alice
        .wait_for(|f| f["type"] == "event", DEFAULT_TIMEOUT)
        .await
        .expect("leave event");
    assert_eq!(leave, event("room", "leave", json!([b.sessionid])));
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn participants_updates_map_talk_sessions_and_strip_permissions() {
    let (nc, hpb) = setup().await;
    let (mut alice, a, mut bob, b) = alice_and_bob(&hpb, &nc).await;
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "participants", "participants": {
            "changed": [
                {"inCall": 0, "lastPing": 100, "sessionId": "alice-talk", "participantType": 1,
                 "userId": "alice", "participantPermissions": 254,
                 "permissions": ["publish-audio", "control"]},
            ],
            "users": [
                {"inCall": 0, "lastPing": 100, "sessionId": "bob-talk", "participantType": 3,
                 "userId": "bob", "permissions": ["publish-audio"]},
                {"inCall": 0, "lastPing": 0, "sessionId": "0", "participantType": 3, "userId": "carol"},
                {"inCall": 0, "lastPing": 0, "sessionId": "gone-talk", "participantType": 3, "userId": "carol"},
            ],
        }}),
    )
    .await;
    let expected = event(
        "participants",
        "update",
        json!({"roomid": "room1", "users": [
            {"inCall": 0, "lastPing": 100, "sessionId": b.sessionid, "participantType": 3, "userId": "bob"},
            {"inCall": 0, "lastPing": 100, "sessionId": a.sessionid, "participantType": 1,
             "userId": "alice", "participantPermissions": 254},
        ]}),
    );
    assert_eq!(sync(&mut alice).await, vec![expected.clone()]);
    assert_eq!(sync(&mut bob).await, vec![expected]);

    // The permissions of `changed` were applied: alice may now send control messages.
    alice
        .control_session(&b.sessionid, json!({"type": "mute", "audio": 1}))
        .await;
    assert!(sync(&mut alice).await.is_empty());
    let got = sync(&mut bob).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "control");
}

#[tokio::test]
async fn incall_updates_and_incall_all() {
    let (nc, hpb) = setup().await;
    let (mut alice, a, mut bob, b) = alice_and_bob(&hpb, &nc).await;
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "incall", "incall": {
            "incall": 7,
            "changed": [{"inCall": 7, "sessionId": "alice-talk", "userId": "alice", "lastPing": 5}],
            "users": [
                {"inCall": 7, "sessionId": "alice-talk", "userId": "alice", "lastPing": 5},
                {"inCall": 0, "sessionId": "bob-talk", "userId": "bob", "lastPing": 5},
            ],
        }}),
    )
    .await;
    let expected = event(
        "participants",
        "update",
        json!({"roomid": "room1", "users": [
            {"inCall": 7, "sessionId": a.sessionid, "userId": "alice", "lastPing": 5},
            {"inCall": 0, "sessionId": b.sessionid, "userId": "bob", "lastPing": 5},
        ]}),
    );
    assert_eq!(sync(&mut alice).await, vec![expected.clone()]);
    assert_eq!(sync(&mut bob).await, vec![expected]);
    // Only alice is in the call: she receives call messages, bob does not.
    bob.message_call(json!({"type": "to-call"})).await;
    assert!(sync(&mut bob).await.is_empty());
    let got = sync(&mut alice).await;
    assert_eq!(got.len(), 1, "{got:?}");
    alice.message_call(json!({"type": "to-call"})).await;
    assert!(sync(&mut alice).await.is_empty());
    assert!(sync(&mut bob).await.is_empty());

    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "incall", "incall": {"incall": 7, "all": true}}),
    )
    .await;
    let all = event(
        "participants",
        "update",
        json!({"roomid": "room1", "incall": 7, "all": true}),
    );
    assert_eq!(sync(&mut alice).await, vec![all.clone()]);
    assert_eq!(sync(&mut bob).await, vec![all]);
    // Now both are in the call.
    alice.message_call(json!({"type": "to-call"})).await;
    assert!(sync(&mut alice).await.is_empty());
    let got = sync(&mut bob).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["message"]["sender"]["type"], "call");
}

#[tokio::test]
async fn roomlist_invite_disinvite_and_update_reach_the_users() {
    let (nc, hpb) = setup().await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice", &[]).await;
    let (mut alice2, _) = connect_user(&hpb, &nc, "alice", &[]).await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob", &[]).await;
    let (mut carol, _) = connect_user(&hpb, &nc, "carol", &[]).await;
    let props = json!({"name": "New room", "type": 2});

    post(
        &nc,
        &hpb,
        "room3",
        json!({"type": "invite", "invite": {
            "userids": ["alice"], "alluserids": ["alice", "bob"], "properties": props}}),
    )
    .await;
    let invite = event(
        "roomlist",
        "invite",
        json!({"roomid": "room3", "properties": props}),
    );
    let update = event(
        "roomlist",
        "update",
        json!({"roomid": "room3", "properties": props}),
    );
    assert_eq!(sync(&mut alice).await, vec![invite.clone()]);
    assert_eq!(sync(&mut alice2).await, vec![invite]);
    assert_eq!(sync(&mut bob).await, vec![update.clone()]);
    assert!(sync(&mut carol).await.is_empty());

    post(
        &nc,
        &hpb,
        "room3",
        json!({"type": "disinvite", "disinvite": {
            "userids": ["alice"], "sessionids": [], "alluserids": ["bob"], "properties": props}}),
    )
    .await;
    let disinvite = event(
        "roomlist",
        "disinvite",
        json!({"roomid": "room3", "reason": "disinvited"}),
    );
    assert_eq!(sync(&mut alice).await, vec![disinvite.clone()]);
    assert_eq!(sync(&mut alice2).await, vec![disinvite]);
    assert_eq!(sync(&mut bob).await, vec![update.clone()]);

    let renamed = json!({"name": "Renamed", "type": 2});
    post(
        &nc,
        &hpb,
        "room3",
        json!({"type": "update", "update": {"userids": ["bob", "carol"], "properties": renamed}}),
    )
    .await;
    let update = event(
        "roomlist",
        "update",
        json!({"roomid": "room3", "properties": renamed}),
    );
    assert_eq!(sync(&mut bob).await, vec![update.clone()]);
    assert_eq!(sync(&mut carol).await, vec![update]);
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn disinviting_a_session_in_the_room_closes_it() {
    let (nc, hpb) = setup().await;
    let (mut alice, a, mut bob, _) = alice_and_bob(&hpb, &nc).await;
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "disinvite", "disinvite": {
            "userids": [], "sessionids": ["alice-talk", "0"], "alluserids": ["bob"],
            "properties": {"name": "room1"}}}),
    )
    .await;
    let closed = alice
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("alice's connection is closed");
    assert_eq!(
        closed.frames,
        vec![event(
            "roomlist",
            "disinvite",
            json!({"roomid": "room1", "reason": "disinvited"})
        )],
        "{closed:?}"
    );
    let got = sync(&mut bob).await;
    assert!(
        got.contains(&event("room", "leave", json!([a.sessionid]))),
        "{got:?}"
    );
    assert!(
        got.contains(&event(
            "roomlist",
            "update",
            json!({"roomid": "room1", "properties": {"name": "room1"}})
        )),
        "{got:?}"
    );
    // The session is gone for good: it cannot be resumed.
    let mut again = TestClient::connect(hpb.addr()).await;
    let err = again.try_resume(&a.resumeid).await.expect_err("no resume");
    assert_eq!(error_code(&err), "no_such_session", "{err}");
}

#[tokio::test]
async fn backend_update_sends_the_new_properties_to_the_members() {
    let (nc, hpb) = setup().await;
    let (mut alice, _, mut bob, _) = alice_and_bob(&hpb, &nc).await;
    let props = json!({"name": "Renamed", "type": 3});
    let body = json!({"type": "update", "update": {"userids": [], "properties": props}});
    post(&nc, &hpb, "room1", body.clone()).await;
    let room = json!({"type": "room", "room": {"roomid": "room1", "properties": props}});
    assert_eq!(sync(&mut alice).await, vec![room.clone()]);
    assert_eq!(sync(&mut bob).await, vec![room]);
    // Unchanged properties: nothing to tell.
    post(&nc, &hpb, "room1", body).await;
    assert!(sync(&mut alice).await.is_empty());
}

#[tokio::test]
async fn backend_delete_moves_members_out_and_disinvites_them() {
    let (nc, hpb) = setup().await;
    let (mut alice, _, mut bob, _) = alice_and_bob(&hpb, &nc).await;
    let mut internal = TestClient::connect(hpb.addr()).await;
    internal
        .hello_internal(&nc.backend_url(), INTERNAL_SECRET)
        .await;
    internal.join("room1", None).await;
    settle(&mut [&mut internal, &mut alice, &mut bob]).await;

    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "delete", "delete": {"userids": ["alice", "bob"]}}),
    )
    .await;
    let moved = json!({"type": "room", "room": {"roomid": ""}});
    let deleted = event(
        "roomlist",
        "disinvite",
        json!({"roomid": "room1", "reason": "deleted"}),
    );
    for c in [&mut alice, &mut bob] {
        let got: Vec<Value> = sync(c)
            .await
            .into_iter()
            .filter(|f| {
                !(f["type"] == "event"
                    && (f["event"]["type"] == "leave" || f["event"]["target"] == "participants"))
            })
            .collect();
        assert_eq!(got, vec![moved.clone(), deleted.clone()]);
        let id = c.transient_set("k", json!(1)).await;
        assert_eq!(c.expect_error("not_in_room").await["id"], id.as_str());
    }
    let got = sync(&mut internal).await;
    assert!(
        got.contains(&json!({"type": "event", "event": {"target": "room", "type": "delete"}})),
        "{got:?}"
    );
    assert!(got.contains(&moved), "{got:?}");
}

#[tokio::test]
async fn chat_messages_are_relayed_to_chat_relay_clients_and_refresh_the_others() {
    let (nc, hpb) = setup().await;
    let (mut alice, _, mut bob, _) = alice_and_bob(&hpb, &nc).await;
    let comment =
        json!({"id": 12, "message": "Hello", "actorId": "carol", "actorDisplayName": "Carol"});
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "message", "message": {"data": {
            "type": "chat", "chat": {"refresh": true, "comment": comment}}}}),
    )
    .await;
    let msg = |data: Value| event("room", "message", json!({"roomid": "room1", "data": data}));
    let refresh = msg(json!({"type": "chat", "chat": {"refresh": true}}));
    assert_eq!(
        sync(&mut alice).await,
        vec![msg(json!({"type": "chat", "chat": {"comment": comment}}))]
    );
    assert_eq!(sync(&mut bob).await, vec![refresh.clone()]);

    let second = json!({"id": 13, "message": "again"});
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "message", "message": {"data": {
            "type": "chat", "chat": {"refresh": true, "comments": [comment, second]}}}}),
    )
    .await;
    assert_eq!(
        sync(&mut alice).await,
        vec![
            msg(json!({"type": "chat", "chat": {"comment": comment}})),
            msg(json!({"type": "chat", "chat": {"comment": second}})),
        ]
    );
    assert_eq!(sync(&mut bob).await, vec![refresh]);

    // Other room messages go to everyone unchanged.
    let recording = json!({"type": "recording", "recording": {"status": 1}});
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "message", "message": {"data": recording}}),
    )
    .await;
    assert_eq!(sync(&mut alice).await, vec![msg(recording.clone())]);
    assert_eq!(sync(&mut bob).await, vec![msg(recording)]);
}

#[tokio::test]
async fn switchto_reaches_the_mapped_sessions() {
    let (nc, hpb) = setup().await;
    let (mut alice, _, mut bob, _) = alice_and_bob(&hpb, &nc).await;
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "switchto", "switchto": {"roomid": "room2", "sessions": ["alice-talk", "unknown"]}}),
    )
    .await;
    assert_eq!(
        sync(&mut alice).await,
        vec![event("room", "switchto", json!({"roomid": "room2"}))]
    );
    assert!(sync(&mut bob).await.is_empty());

    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "switchto", "switchto": {"roomid": "room2", "sessions": {
            "alice-talk": {"breakout": true}, "bob-talk": null}}}),
    )
    .await;
    assert_eq!(
        sync(&mut alice).await,
        vec![event(
            "room",
            "switchto",
            json!({"roomid": "room2", "details": {"breakout": true}})
        )]
    );
    assert_eq!(
        sync(&mut bob).await,
        vec![event("room", "switchto", json!({"roomid": "room2"}))]
    );
}

#[tokio::test]
async fn sessions_with_hide_displaynames_see_no_display_names() {
    let nc = FakeNextcloud::start().await;
    let mut hidden = default_permissions();
    hidden.push("hide-displaynames".into());
    let hidden: Vec<&str> = hidden.iter().map(String::as_str).collect();
    nc.add_room(Room::public("room1").with_user_permissions("bob", &hidden));
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice", &["chat-relay"]).await;
    let (mut bob, b) = connect_user(&hpb, &nc, "bob", &["chat-relay"]).await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    bob.join("room1", "bob-talk").await;
    assert_eq!(
        sync(&mut bob).await,
        vec![
            event(
                "room",
                "join",
                json!([{"sessionid": b.sessionid, "userid": "bob",
                    "roomsessionid": "bob-talk", "features": ["chat-relay"]}])
            ),
            event(
                "room",
                "join",
                json!([{"sessionid": a.sessionid, "userid": "alice",
                    "roomsessionid": "alice-talk", "features": ["chat-relay"]}])
            ),
        ]
    );
    assert_eq!(
        sync(&mut alice).await,
        vec![event(
            "room",
            "join",
            json!([{"sessionid": b.sessionid, "userid": "bob", "user": {"displayname": "Bob"},
                "roomsessionid": "bob-talk", "features": ["chat-relay"]}])
        )]
    );

    let comment =
        json!({"id": 1, "message": "hi", "actorId": "carol", "actorDisplayName": "Carol"});
    post(
        &nc,
        &hpb,
        "room1",
        json!({"type": "message", "message": {"data": {
            "type": "chat", "chat": {"refresh": true, "comment": comment}}}}),
    )
    .await;
    let msg = |c: Value| {
        event(
            "room",
            "message",
            json!({"roomid": "room1", "data": {"type": "chat", "chat": {"comment": c}}}),
        )
    };
    assert_eq!(sync(&mut alice).await, vec![msg(comment.clone())]);
    let mut blanked = comment;
    blanked["actorDisplayName"] = json!("");
    assert_eq!(sync(&mut bob).await, vec![msg(blanked)]);
}
