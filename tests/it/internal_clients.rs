//! End-to-end: internal clients and their virtual sessions.

use std::collections::BTreeSet;
use std::time::Duration;

use hpb_test_support::barrier::{connect_user, sync};
use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, INTERNAL_SECRET, Recorded, Room, TestClient,
    default_permissions, free_config,
};
use serde_json::{Value, json};

async fn connect_internal(hpb: &Hpb, nc: &FakeNextcloud) -> (TestClient, HelloInfo) {
    let mut c = TestClient::connect(hpb.addr()).await;
    let hello = c.hello_internal(&nc.backend_url(), INTERNAL_SECRET).await;
    (c, hello)
}

fn event(target: &str, kind: &str, payload: Value) -> Value {
    json!({"type": "event", "event": {"target": target, "type": kind, kind: payload}})
}

fn is_event(frame: &Value, target: &str, kind: &str) -> bool {
    frame["type"] == "event" && frame["event"]["target"] == target && frame["event"]["type"] == kind
}

/// The `users` of the participants updates among `frames`, each as a set of entries with
/// `lastPing` (a timestamp the server sets) checked and removed.
fn participant_updates(frames: &[Value]) -> Vec<BTreeSet<String>> {
    frames
        .iter()
        .filter(|f| is_event(f, "participants", "update"))
        .map(|f| {
            assert_eq!(f["event"]["update"]["roomid"], "room1", "{f}");
            f["event"]["update"]["users"]
                .as_array()
                .unwrap_or_else(|| panic!("users list: {f}"))
                .iter()
                .map(|u| {
                    let mut u = u.clone();
                    let ping = u
                        .as_object_mut()
                        .and_then(|m| m.remove("lastPing"))
                        .unwrap_or_else(|| panic!("lastPing in {f}"));
                    assert!(ping.is_i64(), "lastPing is a unix time: {f}");
                    u.to_string()
                })
                .collect()
        })
        .collect()
}

fn set_of(entries: &[Value]) -> BTreeSet<String> {
    entries.iter().map(Value::to_string).collect()
}

async fn setup(extra: &str) -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    let mut moderator = default_permissions();
    moderator.push("control".into());
    let moderator: Vec<&str> = moderator.iter().map(String::as_str).collect();
    nc.add_room(Room::public("room1").with_user_permissions("alice", &moderator));
    let hpb = Hpb::start(&free_config(&nc, extra)).await;
    (nc, hpb)
}

async fn session_request(nc: &FakeNextcloud, action: &str) -> Recorded {
    nc.wait_for(
        |r| r.kind == "session" && r.inner()["action"] == action,
        DEFAULT_TIMEOUT,
    )
    .await
    .unwrap_or_else(|| panic!("no session {action} request: {:?}", nc.requests()))
}

#[tokio::test]
async fn an_internal_client_joins_any_room_without_asking_nextcloud() {
    let (nc, hpb) = setup("").await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;

    let (mut internal, i) = connect_internal(&hpb, &nc).await;
    assert_eq!(i.userid, "");
    let features = i.raw["hello"]["server"]["features"].clone();
    assert!(
        features
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "virtual-sessions")),
        "{features}"
    );
    let reply = internal.join("room1", None).await;
    assert_eq!(
        reply["room"]["properties"],
        Room::public("room1").properties,
        "{reply}"
    );
    let reply = internal.join("not-in-nextcloud", None).await;
    assert_eq!(reply["room"]["roomid"], "not-in-nextcloud");
    assert_eq!(
        nc.requests_of_type("room").len(),
        1,
        "only alice's join was checked: {:?}",
        nc.requests_of_type("room")
    );

    // Back to room1: alice sees the internal session join and in the participants list.
    internal.join("room1", None).await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    assert!(
        frames.contains(&event(
            "room",
            "join",
            json!([{"sessionid": i.sessionid, "userid": ""}])
        )),
        "{frames:?}"
    );
    let internal_entry =
        json!({"inCall": 3, "sessionId": i.sessionid, "internal": true}).to_string();
    let updates = participant_updates(&frames);
    assert!(
        updates.iter().any(|u| u.contains(&internal_entry)),
        "{frames:?}"
    );

    // The internal session sets its own call flags.
    internal
        .internal(json!({"type": "incall", "incall": {"incall": 1}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let updates = participant_updates(&frames);
    let entry = json!({"inCall": 1, "sessionId": i.sessionid, "internal": true}).to_string();
    assert_eq!(updates, vec![BTreeSet::from([entry])], "{frames:?}");
}

#[tokio::test]
async fn virtual_sessions_are_added_updated_and_removed() {
    let (nc, hpb) = setup("").await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    let (mut internal, i) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    sync(&mut internal).await;
    sync(&mut alice).await;

    let user = json!({"type": "phone", "callid": "call-1", "number": "+491234"});
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "user": user, "flags": 1}}))
        .await;
    // The owner sees the same events.
    let own = sync(&mut internal).await;
    assert!(own.iter().any(|f| is_event(f, "room", "join")), "{own:?}");
    let frames = sync(&mut alice).await;
    let join = frames
        .iter()
        .find(|f| is_event(f, "room", "join"))
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"));
    let vid = join["event"]["join"][0]["sessionid"]
        .as_str()
        .expect("virtual public id")
        .to_string();
    assert_ne!(vid, "virt-1", "the virtual session gets its own public id");
    assert_eq!(
        *join,
        event(
            "room",
            "join",
            json!([{"sessionid": vid, "userid": "", "user": user}])
        )
    );
    assert!(
        frames.contains(&event(
            "participants",
            "flags",
            json!({"roomid": "room1", "sessionid": vid, "flags": 1})
        )),
        "{frames:?}"
    );
    let expected = set_of(&[
        json!({"inCall": 3, "sessionId": i.sessionid, "internal": true}),
        json!({"inCall": 9, "sessionId": vid, "virtual": true}),
    ]);
    assert_eq!(
        participant_updates(&frames).last(),
        Some(&expected),
        "{frames:?}"
    );
    let add = session_request(&nc, "add").await;
    assert!(add.authenticated);
    assert_eq!(
        add.body,
        json!({"type": "session", "session": {
            "version": "1.0", "roomid": "room1", "action": "add", "sessionid": vid, "user": user}})
    );

    internal
        .internal(json!({"type": "updatesession", "updatesession": {
            "sessionid": "virt-1", "roomid": "room1", "flags": 2}}))
        .await;
    sync(&mut internal).await;
    assert_eq!(
        sync(&mut alice).await,
        vec![event(
            "participants",
            "flags",
            json!({"roomid": "room1", "sessionid": vid, "flags": 2})
        )]
    );
    internal
        .internal(json!({"type": "updatesession", "updatesession": {
            "sessionid": "virt-1", "roomid": "room1", "incall": 1}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let expected = set_of(&[
        json!({"inCall": 3, "sessionId": i.sessionid, "internal": true}),
        json!({"inCall": 1, "sessionId": vid, "virtual": true}),
    ]);
    assert_eq!(participant_updates(&frames), vec![expected], "{frames:?}");

    internal
        .internal(json!({"type": "removesession", "removesession": {
            "sessionid": "virt-1", "roomid": "room1"}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    assert!(
        frames.contains(&event("room", "leave", json!([vid]))),
        "{frames:?}"
    );
    let remove = session_request(&nc, "remove").await;
    assert_eq!(
        remove.body,
        json!({"type": "session", "session": {
            "version": "1.0", "roomid": "room1", "action": "remove", "sessionid": vid}})
    );
}

#[tokio::test]
async fn virtual_sessions_with_an_actor_join_nextcloud_as_that_actor() {
    let (nc, hpb) = setup("").await;
    let (mut internal, _) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-2", "roomid": "room1", "flags": 0,
            "options": {"actorId": "+4930123", "actorType": "phones"}}}))
        .await;
    let frames = sync(&mut internal).await;
    let vid = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .filter_map(|f| f["event"]["join"][0]["sessionid"].as_str())
        .next_back()
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"))
        .to_string();
    let join = nc
        .wait_for(|r| r.kind == "room", DEFAULT_TIMEOUT)
        .await
        .expect("actor join request");
    assert_eq!(
        join.body,
        json!({"type": "room", "room": {
            "version": "1.0", "roomid": "room1", "userid": "", "sessionid": vid,
            "actorid": "+4930123", "actortype": "phones", "incall": 9}})
    );
    internal
        .internal(json!({"type": "removesession", "removesession": {
            "sessionid": "virt-2", "roomid": "room1"}}))
        .await;
    let leave = nc
        .wait_for(
            |r| r.kind == "room" && r.inner()["action"] == "leave",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("actor leave request");
    assert_eq!(leave.inner()["sessionid"], vid.as_str());
    assert_eq!(leave.inner()["actorid"], "+4930123");
    assert_eq!(leave.inner()["actortype"], "phones");
    assert!(
        nc.requests_of_type("session").is_empty(),
        "actor sessions use room requests"
    );
}

#[tokio::test]
async fn messages_to_a_virtual_session_reach_its_internal_client() {
    let (nc, hpb) = setup("").await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    let (mut internal, _) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "flags": 0}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let vid = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .filter_map(|f| f["event"]["join"][0]["sessionid"].as_str())
        .next_back()
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"))
        .to_string();
    sync(&mut internal).await;

    alice
        .message_session(&vid, json!({"type": "mute", "audio": 1}))
        .await;
    alice.control_session(&vid, json!({"type": "hangup"})).await;
    assert!(sync(&mut alice).await.is_empty());
    let sender = json!({"type": "session", "sessionid": a.sessionid, "userid": "alice"});
    let recipient = json!({"type": "session", "sessionid": "virt-1"});
    assert_eq!(
        sync(&mut internal).await,
        vec![
            json!({"type": "message", "message": {"sender": sender, "recipient": recipient,
                "data": {"type": "mute", "audio": 1}}}),
            json!({"type": "control", "control": {"sender": sender, "recipient": recipient,
                "data": {"type": "hangup"}}}),
        ]
    );
}

#[tokio::test]
async fn backend_participants_updates_include_internal_and_virtual_sessions() {
    let (nc, hpb) = setup("").await;
    let (mut alice, a) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    let (mut internal, i) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "flags": 0}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let vid = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .filter_map(|f| f["event"]["join"][0]["sessionid"].as_str())
        .next_back()
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"))
        .to_string();

    let (status, _, text) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "participants", "participants": {"changed": [], "users": [
                {"inCall": 7, "sessionId": "alice-talk", "userId": "alice", "lastPing": 1},
            ]}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let frames = sync(&mut alice).await;
    let expected = set_of(&[
        json!({"inCall": 7, "sessionId": a.sessionid, "userId": "alice"}),
        json!({"inCall": 3, "sessionId": i.sessionid, "internal": true}),
        json!({"inCall": 9, "sessionId": vid, "virtual": true}),
    ]);
    assert_eq!(participant_updates(&frames), vec![expected], "{frames:?}");
}

#[tokio::test]
async fn rooms_are_pinged_with_virtual_sessions_by_their_public_id() {
    let (nc, hpb) = setup("[limits]\nroom_ping_interval_ms = 200\n").await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    let (mut internal, _) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "userid": "phone-user", "flags": 0}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let vid = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .filter_map(|f| f["event"]["join"][0]["sessionid"].as_str())
        .next_back()
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"))
        .to_string();
    let want = set_of(&[
        json!({"sessionid": "alice-talk", "userid": "alice"}),
        json!({"sessionid": vid, "userid": "phone-user"}),
    ]);
    let entries = |r: &Recorded| {
        r.inner()["entries"]
            .as_array()
            .map(|e| set_of(e))
            .unwrap_or_default()
    };
    nc.wait_for(
        |r| r.kind == "ping" && entries(r) == want,
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no ping with alice and the virtual session: {:?}",
            nc.requests_of_type("ping")
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>()
        )
    });
}

#[tokio::test]
async fn adding_a_virtual_session_to_an_unknown_room_is_ignored() {
    let (nc, hpb) = setup("").await;
    let (mut internal, _) = connect_internal(&hpb, &nc).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "nobody-here", "flags": 0}}))
        .await;
    assert_eq!(sync(&mut internal).await, Vec::<Value>::new());
    assert!(nc.requests_of_type("session").is_empty());
}

#[tokio::test]
async fn a_regular_client_cannot_send_internal_messages() {
    let (nc, hpb) = setup("").await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    alice
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "flags": 0}}))
        .await;
    assert_eq!(sync(&mut alice).await, Vec::<Value>::new());
    assert!(nc.requests_of_type("session").is_empty());
}

/// An internal client in room1 with virtual session `virt-1` of user `phone-user`, and
/// alice in room1; returns (alice, internal, virtual public id).
async fn with_virtual_session(hpb: &Hpb, nc: &FakeNextcloud) -> (TestClient, TestClient, String) {
    let (mut alice, _) = connect_user(hpb, nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    sync(&mut alice).await;
    let (mut internal, _) = connect_internal(hpb, nc).await;
    internal.join("room1", None).await;
    internal
        .internal(json!({"type": "addsession", "addsession": {
            "sessionid": "virt-1", "roomid": "room1", "userid": "phone-user", "flags": 2}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let vid = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .filter_map(|f| f["event"]["join"][0]["sessionid"].as_str())
        .next_back()
        .unwrap_or_else(|| panic!("join of the virtual session: {frames:?}"))
        .to_string();
    (alice, internal, vid)
}

#[tokio::test]
async fn a_joining_client_sees_existing_virtual_sessions_and_their_flags() {
    let (nc, hpb) = setup("").await;
    let (_alice, _internal, vid) = with_virtual_session(&hpb, &nc).await;
    let (mut bob, _) = connect_user(&hpb, &nc, "bob").await;
    bob.join("room1", "bob-talk").await;
    let frames = sync(&mut bob).await;
    let listed = frames
        .iter()
        .filter(|f| is_event(f, "room", "join"))
        .flat_map(|f| f["event"]["join"].as_array().cloned().unwrap_or_default())
        .any(|e| e == json!({"sessionid": vid, "userid": "phone-user"}));
    assert!(listed, "{frames:?}");
    assert!(
        frames.contains(&event(
            "participants",
            "flags",
            json!({"roomid": "room1", "sessionid": vid, "flags": 2})
        )),
        "{frames:?}"
    );
}

#[tokio::test]
async fn virtual_sessions_end_with_their_internal_client() {
    let (nc, hpb) = setup("").await;
    let (mut alice, mut internal, vid) = with_virtual_session(&hpb, &nc).await;
    let bye = internal.bye().await;
    assert_eq!(bye["type"], "bye");
    let leave = alice
        .wait_for(
            |f| is_event(f, "room", "leave") && f["event"]["leave"][0] == vid.as_str(),
            DEFAULT_TIMEOUT,
        )
        .await;
    assert!(leave.is_some(), "alice sees the virtual session leave");
    let remove = session_request(&nc, "remove").await;
    assert_eq!(
        remove.body,
        json!({"type": "session", "session": {"version": "1.0", "roomid": "room1",
            "action": "remove", "sessionid": vid, "userid": "phone-user"}})
    );
}

#[tokio::test]
async fn disinviting_the_user_of_a_virtual_session_asks_its_client_to_hang_up() {
    let (nc, hpb) = setup("").await;
    let (mut alice, mut internal, vid) = with_virtual_session(&hpb, &nc).await;
    let (status, _, text) = nc
        .post_room(
            &hpb.http_url(),
            "room1",
            json!({"type": "disinvite", "disinvite": {"userids": ["phone-user"], "sessionids": [],
                "alluserids": [], "properties": {}}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sync(&mut internal).await,
        vec![json!({"type": "control", "control": {
            "recipient": {"type": "session", "sessionid": "virt-1"},
            "data": {"type": "hangup", "hangup": {"reason": "disinvited"}}}})]
    );
    // The bridge decides: the virtual session stays until it is removed.
    assert!(sync(&mut alice).await.is_empty());
    alice
        .message_session(&vid, json!({"type": "still-there"}))
        .await;
    assert!(sync(&mut alice).await.is_empty());
    let got = sync(&mut internal).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["message"]["recipient"]["sessionid"], "virt-1");
}

#[tokio::test]
async fn incall_all_moves_clients_only_and_tells_internal_clients_when_the_call_ends() {
    let (nc, hpb) = setup("").await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join("room1", "alice-talk").await;
    let (mut internal, i) = connect_internal(&hpb, &nc).await;
    internal.join("room1", None).await;
    sync(&mut internal).await;
    sync(&mut alice).await;

    let post_all = |incall: i64| {
        let nc = &nc;
        let url = hpb.http_url();
        async move {
            let (status, _, text) = nc
                .post_room(
                    &url,
                    "room1",
                    json!({"type": "incall", "incall": {"incall": incall, "all": true}}),
                )
                .await;
            assert_eq!(status, 200, "{text}");
        }
    };
    post_all(7).await;
    let all = |incall: i64| {
        event(
            "participants",
            "update",
            json!({"roomid": "room1", "incall": incall, "all": true}),
        )
    };
    assert_eq!(sync(&mut alice).await, vec![all(7)]);
    assert!(sync(&mut internal).await.is_empty());
    // The internal session kept its own flags.
    internal
        .internal(json!({"type": "incall", "incall": {"incall": 3}}))
        .await;
    sync(&mut internal).await;
    let frames = sync(&mut alice).await;
    let entry = json!({"inCall": 3, "sessionId": i.sessionid, "internal": true}).to_string();
    assert_eq!(participant_updates(&frames), vec![BTreeSet::from([entry])]);

    post_all(0).await;
    assert_eq!(sync(&mut alice).await, vec![all(0)]);
    assert_eq!(sync(&mut internal).await, vec![all(0)]);
}
