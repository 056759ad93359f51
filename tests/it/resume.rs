//! End-to-end: resume within the window, takeover of the old connection, failed resume followed by a fresh hello, bye.

use std::time::Duration;

use hpb_test_support::{
    DEFAULT_TIMEOUT, FakeNextcloud, HelloInfo, Hpb, TestClient, error_code, free_config,
};
use serde_json::{Value, json};

/// Debug logging of the hub, so tests can wait for "connection lost" instead of sleeping.
const DEBUG_LOG: &str = "[log]\nlevel = \"info,hpb_signaling=debug\"\n";

/// Resume exactly like Talk's clients do, even after a v2 hello: `{"version":"1.0","resumeid":..}`.
async fn try_resume_v1(c: &mut TestClient, resumeid: &str) -> Result<HelloInfo, Value> {
    c.try_hello(json!({"version": "1.0", "resumeid": resumeid}))
        .await
}

/// Waits until hpb logged that the connection of `session` was lost (the session is then
/// offline and buffers its messages).
async fn wait_offline(hpb: &Hpb, session: &str) {
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let seen = hpb
            .logs()
            .lines()
            .any(|l| l.contains("connection lost") && l.contains(session));
        if seen {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hpb did not notice that the connection of {session} was lost:\n{}",
            hpb.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request that is answered without side effects: once its reply is there, everything
/// `c` sent before it was processed (one connection's messages are handled in order).
async fn probe(c: &mut TestClient) {
    let reply = c
        .request(
            json!({"type": "message", "message": {"recipient": {"type": "bogus"}, "data": {}}}),
        )
        .await;
    assert_eq!(error_code(&reply), "invalid_format", "{reply}");
}

fn assert_no_such_session(frame: &Value, id: &str) {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(error_code(frame), "no_such_session", "{frame}");
    assert_eq!(frame["id"], id, "the error must echo the id: {frame}");
    let message = frame["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("hello"),
        "the message should say to send a new hello: {frame}"
    );
}

#[tokio::test]
async fn resume_on_a_new_socket_delivers_the_buffered_messages_in_order() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, DEBUG_LOG)).await;

    // alice uses hello v2 (like the web client); the resume still uses the 1.0 syntax.
    let mut alice = TestClient::connect(hpb.addr()).await;
    let token = nc.token(Some("alice"), Default::default());
    let a = alice.hello_v2(&nc.backend_url(), &token).await;
    alice.join("room1", "alice-room-session").await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let b = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-room-session").await;

    alice.close().await;
    assert!(alice.is_closed());
    wait_offline(&hpb, &a.sessionid).await;

    for n in 1..=5 {
        bob.message_session(&a.sessionid, json!({"n": n})).await;
    }
    bob.message_room(json!({"to": "room"})).await;
    // bob's messages are processed in order; a reply to bob proves they all were.
    probe(&mut bob).await;

    let mut again = TestClient::connect(hpb.addr()).await;
    let resumed = try_resume_v1(&mut again, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume within the window failed: {e}"));
    assert_eq!(resumed.raw["id"], "1", "{}", resumed.raw);
    assert_eq!(resumed.sessionid, a.sessionid, "same session");
    assert_eq!(resumed.resumeid, a.resumeid, "same resume id");
    assert_eq!(resumed.userid, "alice");
    assert_eq!(resumed.raw["hello"]["version"], "1.0");
    assert!(resumed.raw["hello"]["server"]["features"].is_array());

    let mut got = Vec::new();
    while got.len() < 6 {
        let f = again
            .recv(DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("buffered messages missing; got {got:?}"));
        if f["type"] == "message" {
            assert_eq!(f["message"]["sender"]["sessionid"], b.sessionid.as_str());
            got.push(f["message"]["data"].clone());
        }
    }
    assert_eq!(
        got,
        vec![
            json!({"n": 1}),
            json!({"n": 2}),
            json!({"n": 3}),
            json!({"n": 4}),
            json!({"n": 5}),
            json!({"to": "room"})
        ],
        "buffered messages in order"
    );

    // The resumed session is still in the room and live: no rejoin needed.
    bob.message_room(json!({"live": true})).await;
    let m = again
        .wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .expect("live message after resume");
    assert_eq!(m["message"]["data"], json!({"live": true}));
    assert_eq!(
        nc.requests()
            .iter()
            .filter(|r| r.kind == "room" && r.inner()["action"] == "leave")
            .count(),
        0,
        "a resumed session never left its room"
    );
}

#[tokio::test]
async fn resume_after_an_abrupt_drop_keeps_the_session() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, DEBUG_LOG)).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    drop(alice); // TCP gone without a close frame.
    wait_offline(&hpb, &a.sessionid).await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.message_user("alice", json!({"while": "offline"})).await;
    probe(&mut bob).await;

    let mut again = TestClient::connect(hpb.addr()).await;
    let resumed = try_resume_v1(&mut again, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume failed: {e}"));
    assert_eq!(resumed.sessionid, a.sessionid);
    let m = again.expect("message", DEFAULT_TIMEOUT).await;
    assert_eq!(m["message"]["data"], json!({"while": "offline"}));
}

#[tokio::test]
async fn resume_while_the_old_connection_is_open_takes_it_over() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut old = TestClient::connect(hpb.addr()).await;
    let a = old
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    old.join("room1", "alice-room-session").await;

    let mut new = TestClient::connect(hpb.addr()).await;
    let resumed = try_resume_v1(&mut new, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("takeover resume failed: {e}"));
    assert_eq!(resumed.sessionid, a.sessionid);
    assert_eq!(resumed.raw["id"], "1");

    let close = old
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("the old connection is closed");
    let bye = close.bye.expect("the old connection gets a bye");
    assert_eq!(
        bye,
        json!({"type": "bye", "bye": {"reason": "session_resumed"}}),
        "exact bye shape"
    );

    // The session lives on through the new connection, still in its room.
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-room-session").await;
    bob.message_session(&a.sessionid, json!({"hi": "new"}))
        .await;
    let m = new
        .wait_for(|f| f["type"] == "message", DEFAULT_TIMEOUT)
        .await
        .expect("message reaches the new connection");
    assert_eq!(m["message"]["data"], json!({"hi": "new"}));
    assert!(
        nc.requests()
            .iter()
            .all(|r| !(r.kind == "room" && r.inner()["action"] == "leave")),
        "takeover is no leave"
    );
}

#[tokio::test]
async fn failed_resume_then_a_full_hello_on_the_same_socket() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut c = TestClient::connect(hpb.addr()).await;

    let err = try_resume_v1(&mut c, "garbled-resume-id")
        .await
        .expect_err("garbled id");
    assert_no_such_session(&err, "1");

    // A well-formed id of another server (different hashkey) does not decode either.
    let other_nc = FakeNextcloud::start().await;
    let other = Hpb::start(&free_config(&other_nc, "")).await;
    let mut o = TestClient::connect(other.addr()).await;
    let foreign = o
        .hello_v1(&other_nc.backend_url(), "alice", &other_nc.ticket("alice"))
        .await;
    let err = try_resume_v1(&mut c, &foreign.resumeid)
        .await
        .expect_err("foreign id");
    assert_no_such_session(&err, "2");

    // The public id is not a resume id.
    let mut x = TestClient::connect(hpb.addr()).await;
    let mine = x
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    let err = try_resume_v1(&mut c, &mine.sessionid)
        .await
        .expect_err("public id");
    assert_no_such_session(&err, "3");

    // Talk then sends a full hello on the same socket.
    let hello = c
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_eq!(hello.raw["id"], "4");
    assert_eq!(hello.userid, "alice");
    assert_ne!(hello.sessionid, mine.sessionid);
}

#[tokio::test]
async fn resume_after_the_window_fails_and_nextcloud_gets_the_leave() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(
        &nc,
        &format!("{DEBUG_LOG}[limits]\nresume_window_ms = 300\n"),
    ))
    .await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-room-session").await;

    let mut alice = TestClient::connect(hpb.addr()).await;
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-room-session").await;
    bob.wait_for(
        |f| {
            f["event"]["type"] == "join"
                && f["event"]["join"]
                    .as_array()
                    .is_some_and(|j| j.iter().any(|e| e["sessionid"] == a.sessionid.as_str()))
        },
        DEFAULT_TIMEOUT,
    )
    .await
    .expect("bob sees alice join");
    alice.close().await;
    wait_offline(&hpb, &a.sessionid).await;

    let leave = nc
        .wait_for(
            |r| {
                r.kind == "room"
                    && r.inner()["action"] == "leave"
                    && r.inner()["sessionid"] == "alice-room-session"
            },
            Duration::from_secs(10),
        )
        .await
        .expect("Nextcloud is told that the expired session left the room");
    assert!(leave.authenticated);
    assert_eq!(leave.inner()["roomid"], "room1");
    assert_eq!(leave.inner()["userid"], "alice");

    let ev = bob
        .wait_event("room", "leave", DEFAULT_TIMEOUT)
        .await
        .expect("bob sees the expired session leave");
    assert_eq!(ev["event"]["leave"], json!([a.sessionid]));

    let mut again = TestClient::connect(hpb.addr()).await;
    let err = try_resume_v1(&mut again, &a.resumeid)
        .await
        .expect_err("expired");
    assert_no_such_session(&err, "1");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired") && m.contains("[limits] resume_window_ms")),
        "{err}"
    );
    // And a fresh hello on that socket works.
    let fresh = again
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    assert_ne!(fresh.sessionid, a.sessionid);
}

#[tokio::test]
async fn client_bye_ends_the_session_at_once() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, "")).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-room-session").await;

    let reply = alice.bye().await;
    assert_eq!(
        reply,
        json!({"id": "3", "type": "bye"}),
        "bye reply without a body"
    );
    let close = alice
        .recv_close(DEFAULT_TIMEOUT)
        .await
        .expect("the socket is closed after bye");
    assert!(
        close.frames.iter().all(|f| f["type"] != "bye"),
        "only one bye: {:?}",
        close.frames
    );

    nc.wait_for(
        |r| {
            r.kind == "room"
                && r.inner()["action"] == "leave"
                && r.inner()["sessionid"] == "alice-room-session"
        },
        DEFAULT_TIMEOUT,
    )
    .await
    .expect("bye leaves the room at once");

    let mut again = TestClient::connect(hpb.addr()).await;
    let err = try_resume_v1(&mut again, &a.resumeid)
        .await
        .expect_err("no resume after bye");
    assert_no_such_session(&err, "1");
}

/// A Talk `participants` update for the two sessions (Talk session ids).
fn participants_body(users: &[(&str, &str)]) -> Value {
    let entries: Vec<Value> = users
        .iter()
        .map(|(user, talk_session)| {
            json!({"inCall": 0, "lastPing": 1_700_000_000, "sessionId": talk_session,
                "participantType": 3, "participantPermissions": 254, "userId": user,
                "actorType": "users", "actorId": user, "displayName": user})
        })
        .collect();
    json!({"type": "participants", "participants": {"changed": [], "users": entries}})
}

#[tokio::test]
async fn resume_resends_the_participants_list_unless_one_was_queued() {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room("room1");
    let hpb = Hpb::start(&free_config(&nc, DEBUG_LOG)).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    alice.join("room1", "alice-room-session").await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    let b = bob
        .hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    bob.join("room1", "bob-room-session").await;

    let body = participants_body(&[("alice", "alice-room-session"), ("bob", "bob-room-session")]);
    let (status, _, text) = nc.post_room(&hpb.http_url(), "room1", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    alice
        .wait_event("participants", "update", DEFAULT_TIMEOUT)
        .await
        .expect("alice gets the participants update");

    // 1. Nothing queued while offline: the current list is re-sent after the resume.
    alice.close().await;
    wait_offline(&hpb, &a.sessionid).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    let resumed = try_resume_v1(&mut alice, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume failed: {e}"));
    assert_eq!(resumed.sessionid, a.sessionid);
    let update = alice
        .expect_event("participants", "update", DEFAULT_TIMEOUT)
        .await;
    assert_eq!(update["event"]["update"]["roomid"], "room1");
    let ids: Vec<&str> = update["event"]["update"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["sessionId"].as_str())
        .collect();
    assert!(
        ids.contains(&a.sessionid.as_str()) && ids.contains(&b.sessionid.as_str()),
        "the re-sent list has the signaling ids of both: {update}"
    );

    // 2. An update was queued while offline: it is delivered, and no second list.
    alice.close().await;
    let lost = hpb
        .logs()
        .lines()
        .filter(|l| l.contains("connection lost") && l.contains(a.sessionid.as_str()))
        .count();
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    while hpb
        .logs()
        .lines()
        .filter(|l| l.contains("connection lost") && l.contains(a.sessionid.as_str()))
        .count()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second disconnect not noticed (seen {lost})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = participants_body(&[("alice", "alice-room-session")]);
    let (status, _, text) = nc.post_room(&hpb.http_url(), "room1", body).await;
    assert_eq!(status, 200, "{text}");
    let mut alice = TestClient::connect(hpb.addr()).await;
    try_resume_v1(&mut alice, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("second resume failed: {e}"));
    bob.message_session(&a.sessionid, json!({"marker": 1}))
        .await;
    let mut updates = Vec::new();
    loop {
        let f = alice
            .recv(DEFAULT_TIMEOUT)
            .await
            .expect("the marker arrives after the queued frames");
        if f["type"] == "message" && f["message"]["data"] == json!({"marker": 1}) {
            break;
        }
        if f["event"]["target"] == "participants" {
            updates.push(f);
        }
    }
    assert_eq!(updates.len(), 1, "only the queued update: {updates:?}");
    assert_eq!(
        updates[0]["event"]["update"]["users"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the queued (newer) list: {:?}",
        updates[0]
    );
}

#[tokio::test]
async fn messages_racing_with_the_resume_arrive_once_and_in_order() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(&nc, DEBUG_LOG)).await;
    let mut alice = TestClient::connect(hpb.addr()).await;
    let a = alice
        .hello_v1(&nc.backend_url(), "alice", &nc.ticket("alice"))
        .await;
    let mut bob = TestClient::connect(hpb.addr()).await;
    bob.hello_v1(&nc.backend_url(), "bob", &nc.ticket("bob"))
        .await;
    alice.close().await;
    wait_offline(&hpb, &a.sessionid).await;

    const TOTAL: u64 = 300;
    for n in 1..=TOTAL / 3 {
        bob.message_session(&a.sessionid, json!({ "n": n })).await;
    }
    // The rest is sent while alice resumes.
    let target = a.sessionid.clone();
    let sender = tokio::spawn(async move {
        for n in TOTAL / 3 + 1..=TOTAL {
            bob.message_session(&target, json!({ "n": n })).await;
            if n % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        probe(&mut bob).await;
        bob
    });
    let mut again = TestClient::connect(hpb.addr()).await;
    let resumed = try_resume_v1(&mut again, &a.resumeid)
        .await
        .unwrap_or_else(|e| panic!("resume failed: {e}"));
    assert_eq!(resumed.sessionid, a.sessionid);
    let _bob = sender.await.expect("sender task");

    let mut seen = Vec::new();
    while seen.len() < TOTAL as usize {
        let f = again
            .recv(DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("only {} of {TOTAL} messages arrived", seen.len()));
        if f["type"] == "message" {
            seen.push(f["message"]["data"]["n"].as_u64().expect("n"));
        }
    }
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected, "every message once, in order");
}
