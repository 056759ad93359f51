//! End-to-end: SIP dial-out through a SIP bridge (an internal client with `start-dialout`):
//! Nextcloud's `dialout` request, the bridge's answers, its call status as the room's
//! transient data, and what refuses a dial-out.

use std::time::Duration;

use hpb_test_support::barrier::connect_user;
use hpb_test_support::{DEFAULT_TIMEOUT, FakeNextcloud, Hpb, INTERNAL_SECRET, TestClient};
use hpb_test_support::{error_code, free_config};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::backend_api::Post;
use crate::http_endpoints::{HttpReply, http_get};

const ROOM: &str = "123";

async fn start() -> (FakeNextcloud, Hpb) {
    start_with("").await
}

/// [`start`] with more configuration.
async fn start_with(extra: &str) -> (FakeNextcloud, Hpb) {
    let nc = FakeNextcloud::start().await;
    nc.add_public_room(ROOM);
    let hpb = Hpb::start(&free_config(&nc, extra)).await;
    (nc, hpb)
}

const BRIDGE_AGENT: &str = "nextcloud-talk-sipbridge/1.2.3 (test)";

async fn bridge(hpb: &Hpb, nc: &FakeNextcloud) -> TestClient {
    let mut c = TestClient::connect_with_headers(hpb.addr(), &[("User-Agent", BRIDGE_AGENT)]).await;
    c.set_hello_features(&["start-dialout"]);
    c.hello_internal(&nc.backend_url(), INTERNAL_SECRET).await;
    c
}

/// Two bridges, in the order hpb asks them (the order of their session ids).
async fn two_bridges(hpb: &Hpb, nc: &FakeNextcloud) -> (TestClient, TestClient) {
    let a = bridge(hpb, nc).await;
    let b = bridge(hpb, nc).await;
    if a.sessionid() < b.sessionid() {
        (a, b)
    } else {
        (b, a)
    }
}

fn request_body() -> Value {
    json!({"type": "dialout", "dialout": {"number": "+4930123456", "options": {"attendeeId": 5, "actorType": "phones", "actorId": "p1", "caller": "+4930999"}}})
}

/// Nextcloud's dial-out request, in the background (it waits for the bridge).
fn post_dialout(nc: &FakeNextcloud, hpb: &Hpb) -> JoinHandle<HttpReply> {
    let post = Post::new(nc, request_body());
    let addr = hpb.addr();
    tokio::spawn(async move { post.send(addr, ROOM).await })
}

/// The dial-out request a bridge gets; checks its shape and returns its id.
async fn expect_request(bridge: &mut TestClient, nc: &FakeNextcloud) -> String {
    let f = bridge
        .wait_for(
            |f| f["type"] == "internal" && f["internal"]["type"] == "dialout",
            DEFAULT_TIMEOUT,
        )
        .await
        .expect("the bridge is asked to dial out");
    let id = f["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 32, "a request id to answer with: {f}");
    let d = &f["internal"]["dialout"];
    assert_eq!(d["roomid"], ROOM, "{f}");
    assert_eq!(d["request"], request_body()["dialout"], "{f}");
    let backend = d["backend"].as_str().unwrap_or_default();
    assert!(
        backend.starts_with(&nc.base_url()) && backend.ends_with('/'),
        "the Nextcloud to dial for: {f}"
    );
    id
}

fn dialout(id: Option<&str>, dialout: Value) -> Value {
    let mut f = json!({"type": "internal", "internal": {"type": "dialout", "dialout": dialout}});
    if let Some(id) = id {
        f["id"] = json!(id);
    }
    f
}

fn status(id: Option<&str>, callid: &str, status: &str) -> Value {
    dialout(
        id,
        json!({"type": "status", "roomid": ROOM, "status": {"callid": callid, "status": status}}),
    )
}

async fn transient(c: &mut TestClient, kind: &str, key: &str, timeout: Duration) -> Value {
    c.wait_for(
        |f| {
            f["type"] == "transient"
                && f["transient"]["type"] == kind
                && f["transient"]["key"] == key
        },
        timeout,
    )
    .await
    .unwrap_or_else(|| panic!("transient {kind} of {key}"))
}

#[tokio::test]
async fn a_sip_bridge_starts_the_dialout_and_its_call_status_reaches_the_room() {
    let (nc, hpb) = start().await;
    let (mut alice, _) = connect_user(&hpb, &nc, "alice").await;
    alice.join(ROOM, "alice-talk").await;
    let mut bridge = bridge(&hpb, &nc).await;

    let reply = post_dialout(&nc, &hpb);
    let id = expect_request(&mut bridge, &nc).await;
    bridge.send(status(Some(&id), "call-1", "accepted")).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"type": "dialout", "dialout": {"callid": "call-1"}})
    );
    let key = "callstatus_call-1";
    let f = transient(&mut alice, "set", key, DEFAULT_TIMEOUT).await;
    assert_eq!(
        f["transient"]["value"],
        json!({"callid": "call-1", "status": "accepted"}),
        "{f}"
    );

    // Later status updates carry no id; the last one goes away after a few seconds.
    bridge.send(status(None, "call-1", "ringing")).await;
    let f = transient(&mut alice, "set", key, DEFAULT_TIMEOUT).await;
    assert_eq!(f["transient"]["value"]["status"], "ringing", "{f}");
    assert_eq!(f["transient"]["oldvalue"]["status"], "accepted", "{f}");
    bridge
        .send(dialout(
            None,
            json!({"type": "status", "roomid": ROOM, "status": {"callid": "call-1", "status": "cleared", "cause": "hangup", "code": 16}}),
        ))
        .await;
    let f = transient(&mut alice, "set", key, DEFAULT_TIMEOUT).await;
    assert_eq!(f["transient"]["value"]["cause"], "hangup", "{f}");
    let f = transient(&mut alice, "remove", key, Duration::from_secs(10)).await;
    assert_eq!(f["transient"]["oldvalue"]["status"], "cleared", "{f}");

    // Any other dial-out message goes to the room as it came, without the room id.
    bridge
        .send(dialout(
            None,
            json!({"type": "hangup", "roomid": ROOM, "callid": "call-1"}),
        ))
        .await;
    let f = alice
        .wait_for(|f| f["type"] == "dialout", DEFAULT_TIMEOUT)
        .await
        .expect("the room gets the bridge's message");
    assert_eq!(
        f["dialout"],
        json!({"type": "hangup", "callid": "call-1"}),
        "{f}"
    );
}

#[tokio::test]
async fn a_refusing_bridge_is_passed_over_and_its_error_is_reported_when_none_accepts() {
    let (nc, hpb) = start().await;
    let (mut refusing, mut other) = two_bridges(&hpb, &nc).await;

    // The first bridge refuses; the next one accepts.
    let reply = post_dialout(&nc, &hpb);
    let id = expect_request(&mut refusing, &nc).await;
    let busy = json!({"code": "busy", "message": "all lines in use"});
    refusing
        .send(dialout(Some(&id), json!({"type": "error", "error": busy})))
        .await;
    let id = expect_request(&mut other, &nc).await;
    other.send(status(Some(&id), "call-2", "accepted")).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["dialout"]["callid"], "call-2", "{r:?}");

    // Both refuse: 502 with the first bridge's own error; a status other than accepted
    // is a refusal too.
    let reply = post_dialout(&nc, &hpb);
    let id = expect_request(&mut refusing, &nc).await;
    refusing
        .send(dialout(Some(&id), json!({"type": "error", "error": busy})))
        .await;
    let id = expect_request(&mut other, &nc).await;
    other.send(status(Some(&id), "call-3", "ringing")).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        r.json(),
        json!({"type": "dialout", "dialout": {"error": busy}}),
        "{r:?}"
    );
}

#[tokio::test]
async fn only_connected_bridges_in_no_room_take_dialouts_and_serverinfo_lists_them() {
    let (nc, hpb) = start().await;
    let welcome = TestClient::connect(hpb.addr())
        .await
        .wait_welcome(DEFAULT_TIMEOUT)
        .await
        .expect("welcome");
    assert!(
        welcome["welcome"]["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("dialout"))),
        "{welcome}"
    );
    // An internal client without the feature, and a bridge that joined a room, do not count.
    let mut plain = TestClient::connect(hpb.addr()).await;
    plain
        .hello_internal(&nc.backend_url(), INTERNAL_SECRET)
        .await;
    let mut in_room = bridge(&hpb, &nc).await;
    in_room.join(ROOM, None).await;
    let r = Post::new(&nc, request_body()).send(hpb.addr(), ROOM).await;
    assert_eq!(r.status, 404, "{r:?}");
    let e = &r.json()["dialout"]["error"];
    assert_eq!(e["code"], "no_client_available", "{r:?}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("start-dialout")),
        "says what is missing: {r:?}"
    );

    let bridge = bridge(&hpb, &nc).await;
    let info = http_get(hpb.addr(), "/api/v1/serverinfo", &[]).await.json();
    let listed = info["dialout"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{info}");
    assert_eq!(listed[0]["sessionid"], bridge.sessionid(), "{info}");
    assert_eq!(listed[0]["connected"], true, "{info}");
    assert_eq!(listed[0]["features"], json!(["start-dialout"]), "{info}");
    assert_eq!(listed[0]["address"], "127.0.0.1", "{info}");
    assert_eq!(listed[0]["useragent"], BRIDGE_AGENT, "{info}");
    assert_eq!(listed[0]["version"], "1.2.3", "{info}");
}

#[tokio::test]
async fn malformed_dialout_messages_of_a_bridge_are_refused_with_what_is_missing() {
    let (nc, hpb) = start().await;
    let mut bridge = bridge(&hpb, &nc).await;
    for (d, says) in [
        (Value::Null, "dialout"),
        (json!({"roomid": ROOM}), "type"),
        (json!({"type": "status", "roomid": ROOM}), "status"),
        (
            json!({"type": "status", "roomid": ROOM, "status": {"status": "ringing"}}),
            "callid",
        ),
        (json!({"type": "error", "roomid": ROOM}), "error"),
    ] {
        let mut f = dialout(None, d.clone());
        if d.is_null() {
            f["internal"].as_object_mut().map(|m| m.remove("dialout"));
        }
        let reply = bridge.request(f).await;
        assert_eq!(error_code(&reply), "invalid_format", "{d}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{d}: {reply}");
    }
}

#[tokio::test]
async fn a_bridge_that_leaves_before_answering_fails_the_dialout_at_once() {
    let (nc, hpb) = start().await;
    let mut bridge = bridge(&hpb, &nc).await;
    let reply = post_dialout(&nc, &hpb);
    expect_request(&mut bridge, &nc).await;
    bridge.send(json!({"type": "bye", "bye": {}})).await;
    // Well before the 45 s a silent bridge gets.
    let r = tokio::time::timeout(DEFAULT_TIMEOUT, reply)
        .await
        .expect("answered without waiting for the bridge's timeout")
        .expect("the request ends");
    assert_eq!(r.status, 502, "{r:?}");
    let e = &r.json()["dialout"]["error"];
    assert_eq!(e["code"], "error_notify", "{r:?}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("disconnected")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_silent_bridge_times_out_and_the_next_is_asked() {
    let (nc, hpb) = start_with("[limits]\ndialout_timeout_ms = 2000\n").await;
    let (mut silent, mut other) = two_bridges(&hpb, &nc).await;

    // The first bridge never answers: after its timeout the next one is asked.
    let reply = post_dialout(&nc, &hpb);
    expect_request(&mut silent, &nc).await;
    let id = expect_request(&mut other, &nc).await;
    other.send(status(Some(&id), "call-4", "accepted")).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["dialout"]["callid"], "call-4", "{r:?}");

    // Neither answers: 502 `timeout`, naming the bridge and the setting; an answer that
    // comes after its timeout is not taken for a later request's.
    let reply = post_dialout(&nc, &hpb);
    let late = expect_request(&mut silent, &nc).await;
    expect_request(&mut other, &nc).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.status, 502, "{r:?}");
    let e = &r.json()["dialout"]["error"];
    assert_eq!(e["code"], "timeout", "{r:?}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(silent.sessionid()) && message.contains("dialout_timeout_ms"),
        "{r:?}"
    );
    silent.send(status(Some(&late), "call-5", "accepted")).await;
    let reply = post_dialout(&nc, &hpb);
    let id = expect_request(&mut silent, &nc).await;
    assert_ne!(id, late, "a new request id");
    silent.send(status(Some(&id), "call-6", "accepted")).await;
    let r = reply.await.expect("the request ends");
    assert_eq!(r.json()["dialout"]["callid"], "call-6", "{r:?}");
}
