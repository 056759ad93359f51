//! The signaling side of the MCU port against a fake media plane: what Talk clients see
//! (upstream's frames and refusals) and which commands reach the SFU (reference §1.10).

use std::time::Duration;

use hpb_proto::mcu::{IceCandidate, McuCommand, McuEvent, Selection, StreamType};
use hpb_test_support::{DEFAULT_TIMEOUT, HelloInfo, Room, TestClient, error_code};
use serde_json::{Value, json};

use crate::harness::{
    ANSWER_SDP, CANDIDATE, CLIENT_SDP_AUDIO, CLIENT_SDP_AV, Env, OFFER_SDP, kind, next_message,
    reply,
};

fn offer(to: &str, room_type: &str, sid: &str, sdp: &str) -> Value {
    json!({"to": to, "type": "offer", "sid": sid, "roomType": room_type,
        "payload": {"type": "offer", "sdp": sdp, "nick": "Alice"}})
}

fn candidate(to: &str, room_type: &str, text: &str) -> Value {
    candidate_sid(to, room_type, "1700000000", text)
}

fn candidate_sid(to: &str, room_type: &str, sid: &str, text: &str) -> Value {
    json!({"to": to, "type": "candidate", "sid": sid, "roomType": room_type,
        "payload": {"candidate": {"candidate": text, "sdpMid": "0", "sdpMLineIndex": 0}}})
}

/// Publishes a stream and returns the answer frame.
async fn publish(c: &mut TestClient, h: &HelloInfo, room_type: &str) -> Value {
    c.message_session(
        &h.sessionid,
        offer(&h.sessionid, room_type, "1700000000", CLIENT_SDP_AV),
    )
    .await;
    next_message(c).await
}

/// An error frame echoing `id` with `code`.
async fn refused(c: &mut TestClient, id: &str, code: &str) -> Value {
    let f = reply(c, id).await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(error_code(&f), code, "{f}");
    f
}

/// Frames of type `message` arriving within `d` (other frames are ignored).
async fn messages_within(c: &mut TestClient, d: Duration) -> Vec<Value> {
    c.drain(d)
        .await
        .into_iter()
        .filter(|f| f["type"] == "message" || f["type"] == "error")
        .collect()
}

fn features(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn mcu_features_are_advertised_only_with_an_mcu() {
    for with_mcu in [true, false] {
        let env = Env::start_with(with_mcu, |_| {}).await;
        let (c, hello) = env.user("alice").await;
        let welcome = features(&c.welcome().expect("welcome")["welcome"]["features"]);
        let server = features(&hello.raw["hello"]["server"]["features"]);
        let resp = reqwest::get(format!("{}/api/v1/welcome", env.http()))
            .await
            .expect("GET welcome");
        let header = resp
            .headers()
            .get("x-spreed-signaling-features")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let auth = env.nc.requests_of_type("auth");
        let to_nextcloud = auth
            .first()
            .and_then(|r| r.header("x-spreed-signaling-features"))
            .unwrap_or_default()
            .to_string();
        for f in ["mcu", "simulcast", "update-sdp"] {
            assert_eq!(
                welcome.iter().any(|x| x == f),
                with_mcu,
                "welcome {f}: {welcome:?}"
            );
            assert_eq!(
                server.iter().any(|x| x == f),
                with_mcu,
                "hello {f}: {server:?}"
            );
            assert_eq!(
                header.split(", ").any(|x| x == f),
                with_mcu,
                "header {f}: {header}"
            );
            assert_eq!(
                to_nextcloud.split(", ").any(|x| x == f),
                with_mcu,
                "backend header {f}: {to_nextcloud}"
            );
        }
        assert!(server.iter().any(|x| x == "hello-v2"), "{server:?}");
    }
}

#[tokio::test]
async fn without_an_mcu_offers_are_relayed_unvalidated() {
    let env = Env::start_with(false, |_| {}).await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    alice
        .message_session(&b.sessionid, json!({"no-type": true}))
        .await;
    let f = next_message(&mut bob).await;
    assert_eq!(f["message"]["data"], json!({"no-type": true}));
    alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    assert!(
        messages_within(&mut alice, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(env.mcu.commands().is_empty());
}

#[tokio::test]
async fn an_offer_is_published_and_answered_in_upstreams_shape() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let mut data = offer(&a.sessionid, "video", "1700000000", CLIENT_SDP_AV);
    data["bitrate"] = json!(300_000);
    alice.message_session(&a.sessionid, data).await;
    let answer = next_message(&mut alice).await;
    assert_eq!(
        answer,
        json!({"type": "message", "message": {
            "sender": {"type": "session", "sessionid": a.sessionid, "userid": "alice"},
            "data": {"to": a.sessionid, "from": a.sessionid, "type": "answer", "roomType": "video",
                "sid": "1700000000", "payload": {"type": "answer", "sdp": ANSWER_SDP}}}})
    );
    assert_eq!(
        env.mcu.of_kind("publish"),
        vec![McuCommand::Publish {
            session: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: "1700000000".into(),
            sdp: CLIENT_SDP_AV.into(),
            max_bitrate: 300_000,
        }]
    );
}

#[tokio::test]
async fn bitrates_are_capped_by_the_backend_and_the_sfu() {
    let env = Env::start_with(true, |cfg| {
        cfg.backends[0].max_stream_bitrate = 500_000;
        cfg.mcu_max_screen_bitrate = 2_000_000;
    })
    .await;
    let (mut alice, a) = env.in_room("alice").await;
    for (room_type, bitrate) in [
        ("video", Some(900_000)),
        ("video", None),
        ("screen", Some(3_000_000)),
        ("screen", Some(64_000)),
    ] {
        let mut data = offer(&a.sessionid, room_type, "1", CLIENT_SDP_AV);
        if let Some(b) = bitrate {
            data["bitrate"] = json!(b);
        }
        alice.message_session(&a.sessionid, data).await;
        next_message(&mut alice).await;
    }
    let caps: Vec<u64> = env
        .mcu
        .of_kind("publish")
        .into_iter()
        .map(|c| match c {
            McuCommand::Publish { max_bitrate, .. } => max_bitrate,
            _ => 0,
        })
        .collect();
    assert_eq!(caps, vec![500_000, 500_000, 2_000_000, 64_000]);
}

#[tokio::test]
async fn publishing_needs_the_publish_permissions() {
    let env = Env::start().await;
    env.nc.add_room(
        Room::public("room1")
            .with_user_permissions("alice", &["publish-audio"])
            .with_user_permissions("bob", &[])
            .with_user_permissions("carol", &["publish-media"]),
    );
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    let (mut carol, c) = env.in_room("carol").await;

    // Audio only may publish an audio-only offer, not video, not a screen.
    let id = alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    let f = refused(&mut alice, &id, "not_allowed").await;
    let msg = f["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("Not allowed to publish."), "{f}");
    assert!(msg.contains("publish-video"), "{f}");
    let id = alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "screen", "1", CLIENT_SDP_AV),
        )
        .await;
    refused(&mut alice, &id, "not_allowed").await;
    alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AUDIO),
        )
        .await;
    assert_eq!(
        next_message(&mut alice).await["message"]["data"]["type"],
        "answer"
    );

    // No permission at all: no offer, no own candidate.
    let id = bob
        .message_session(
            &b.sessionid,
            offer(&b.sessionid, "video", "1", CLIENT_SDP_AUDIO),
        )
        .await;
    refused(&mut bob, &id, "not_allowed").await;
    let id = bob
        .message_session(&b.sessionid, candidate(&b.sessionid, "video", CANDIDATE))
        .await;
    let f = refused(&mut bob, &id, "not_allowed").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Not allowed to send candidate."),
        "{f}"
    );

    // publish-media covers audio and video but not the screen.
    carol
        .message_session(
            &c.sessionid,
            offer(&c.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    assert_eq!(
        next_message(&mut carol).await["message"]["data"]["type"],
        "answer"
    );
    let id = carol
        .message_session(
            &c.sessionid,
            offer(&c.sessionid, "screen", "1", CLIENT_SDP_AV),
        )
        .await;
    refused(&mut carol, &id, "not_allowed").await;
    assert_eq!(
        env.mcu.of_kind("publish").len(),
        2,
        "{:?}",
        env.mcu.commands()
    );
}

#[tokio::test]
async fn malformed_media_messages_are_refused_with_upstreams_codes() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    let own = a.sessionid.clone();
    let cases = [
        (json!({"roomType": "video"}), "invalid_format"),
        (
            json!({"type": "offer", "roomType": "camera", "payload": {"sdp": CLIENT_SDP_AV}}),
            "invalid_format",
        ),
        (
            json!({"type": "offer", "roomType": "video", "payload": {"type": "offer"}}),
            "no_sdp",
        ),
        (
            json!({"type": "answer", "roomType": "video", "payload": {"sdp": 5}}),
            "invalid_sdp",
        ),
        (
            json!({"type": "offer", "roomType": "video", "payload": {"sdp": "hello"}}),
            "invalid_sdp",
        ),
        (
            json!({"type": "candidate", "roomType": "video", "payload": {}}),
            "no_candidate",
        ),
        (
            json!({"type": "candidate", "roomType": "video", "payload": {"candidate": "x"}}),
            "invalid_candidate",
        ),
        (
            json!({"type": "candidate", "roomType": "video", "payload": {"candidate": {"candidate": "garbage"}}}),
            "invalid_candidate",
        ),
        (
            json!({"type": "selectStream", "roomType": "video", "payload": {"substream": "high"}}),
            "processing_failed",
        ),
    ];
    for (data, code) in cases {
        for to in [own.as_str(), b.sessionid.as_str()] {
            if to == own && data["type"] == "selectStream" {
                // Selecting one's own stream is ignored (upstream), valid or not.
                continue;
            }
            let id = alice.message_session(to, data.clone()).await;
            let f = refused(&mut alice, &id, code).await;
            if data["payload"]["sdp"] == "hello" {
                assert!(f["error"]["details"]["error"].is_string(), "{f}");
            }
        }
    }
    // Room and call messages are validated too.
    let id = alice.message_room(json!({"raised": true})).await;
    refused(&mut alice, &id, "invalid_format").await;
    // Data that is not MCU-shaped at all is relayed like upstream.
    alice
        .message_session(&b.sessionid, json!("just a string"))
        .await;
    assert_eq!(
        next_message(&mut bob).await["message"]["data"],
        "just a string"
    );
    assert!(env.mcu.commands().is_empty(), "{:?}", env.mcu.commands());
}

#[tokio::test]
async fn other_message_types_are_relayed_as_before() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    for data in [
        json!({"type": "mute", "roomType": "video", "payload": {"name": "audio"}}),
        json!({"type": "nickChanged", "payload": {"name": "Al"}}),
        json!({"type": "unshareScreen", "roomType": "screen"}),
    ] {
        alice.message_session(&b.sessionid, data.clone()).await;
        let f = next_message(&mut bob).await;
        assert_eq!(
            f,
            json!({"type": "message", "message": {"sender": {"type": "session", "sessionid": a.sessionid, "userid": "alice"}, "data": data}})
        );
    }
    assert!(env.mcu.commands().is_empty());
}

#[tokio::test]
async fn requestoffer_needs_both_sessions_in_the_call() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    publish(&mut alice, &a, "video").await;

    let request = json!({"type": "requestoffer", "roomType": "video"});
    let id = bob.message_session(&a.sessionid, request.clone()).await;
    let f = refused(&mut bob, &id, "not_allowed").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Not allowed to request offer."),
        "{f}"
    );
    env.incall(&[("alice", 3)]).await;
    let id = bob.message_session(&a.sessionid, request.clone()).await;
    refused(&mut bob, &id, "not_allowed").await;
    env.incall(&[("alice", 3), ("bob", 3)]).await;

    let mut with_layers = request.clone();
    with_layers["payload"] = json!({"substream": 1, "temporal": 2, "audio": true, "video": false});
    bob.message_session(&a.sessionid, with_layers).await;
    let offer = next_message(&mut bob).await;
    assert_eq!(
        offer,
        json!({"type": "message", "message": {
            "sender": {"type": "session", "sessionid": a.sessionid},
            "data": {"to": b.sessionid, "from": a.sessionid, "type": "offer", "roomType": "video",
                "sid": "sub-1", "payload": {"type": "offer", "sdp": OFFER_SDP}}}})
    );
    assert_eq!(
        env.mcu.of_kind("subscribe"),
        vec![McuCommand::Subscribe {
            subscriber: b.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: String::new(),
            selection: Selection {
                substream: Some(1),
                temporal: Some(2),
                audio: Some(true),
                video: Some(false)
            },
        }]
    );

    // The subscriber answers, trickles and selects layers, all towards the publisher.
    let answer = json!({"to": a.sessionid, "type": "answer", "sid": "sub-1", "roomType": "video",
        "payload": {"type": "answer", "sdp": CLIENT_SDP_AV, "nick": "Bob"}});
    bob.message_session(&a.sessionid, answer).await;
    env.mcu
        .wait_command("subscriber answer", |c| kind(c) == "subscriber_answer")
        .await;
    // A candidate for another connection (sid) is refused.
    let id = bob
        .message_session(
            &a.sessionid,
            candidate_sid(&a.sessionid, "video", "other", CANDIDATE),
        )
        .await;
    refused(&mut bob, &id, "processing_failed").await;
    bob.message_session(
        &a.sessionid,
        candidate_sid(&a.sessionid, "video", "sub-1", CANDIDATE),
    )
    .await;
    let c = env
        .mcu
        .wait_command("candidate", |c| kind(c) == "candidate")
        .await;
    assert_eq!(
        c,
        McuCommand::Candidate {
            session: b.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: "sub-1".into(),
            candidate: IceCandidate {
                candidate: CANDIDATE.into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0)
            },
        }
    );
    bob.message_session(&a.sessionid, json!({"type": "selectStream", "roomType": "video", "payload": {"substream": 0, "temporal": 0}}))
        .await;
    let sel = env
        .mcu
        .wait_command("select", |c| kind(c) == "select_stream")
        .await;
    assert_eq!(
        sel,
        McuCommand::SelectStream {
            subscriber: b.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            selection: Selection {
                substream: Some(0),
                temporal: Some(0),
                audio: None,
                video: None
            },
        }
    );
    // From oneself: ignored, no command, no error.
    let before = env.mcu.commands().len();
    alice.message_session(&a.sessionid, request).await;
    assert!(
        messages_within(&mut alice, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert_eq!(env.mcu.commands().len(), before);
    assert!(
        messages_within(&mut bob, Duration::from_millis(100))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn requestoffer_waits_for_the_publisher_and_times_out_with_client_not_found() {
    let env = Env::start_with(true, |cfg| cfg.mcu_timeout = Duration::from_millis(1500)).await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    let (mut carol, c) = env.in_room("carol").await;
    env.incall(&[("alice", 3), ("bob", 3), ("carol", 3)]).await;
    bob.message_session(
        &a.sessionid,
        json!({"type": "requestoffer", "roomType": "video"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        env.mcu.of_kind("subscribe").is_empty(),
        "held until alice publishes"
    );
    publish(&mut alice, &a, "video").await;
    let offer = next_message(&mut bob).await;
    assert_eq!(offer["message"]["data"]["from"], a.sessionid.as_str());
    assert_eq!(offer["message"]["data"]["to"], b.sessionid.as_str());

    let id = bob
        .message_session(
            &c.sessionid,
            json!({"type": "requestoffer", "roomType": "screen"}),
        )
        .await;
    let f = refused(&mut bob, &id, "client_not_found").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("No MCU client found"),
        "{f}"
    );
    let _ = carol.drain(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn allowsubscribeany_lifts_the_call_check() {
    let env = Env::start_with(true, |cfg| cfg.allow_subscribe_any = true).await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, _) = env.user("bob").await;
    publish(&mut alice, &a, "video").await;
    bob.message_session(
        &a.sessionid,
        json!({"type": "requestoffer", "roomType": "video"}),
    )
    .await;
    assert_eq!(
        next_message(&mut bob).await["message"]["data"]["type"],
        "offer"
    );
}

#[tokio::test]
async fn sendoffer_subscribes_the_recipient_to_the_senders_stream() {
    let env = Env::start().await;
    env.nc
        .add_room(Room::public("room1").with_user_permissions("carol", &["publish-audio"]));
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    let (mut carol, c) = env.in_room("carol").await;
    publish(&mut alice, &a, "screen").await;
    alice
        .message_session(
            &b.sessionid,
            json!({"type": "sendoffer", "roomType": "screen"}),
        )
        .await;
    let f = next_message(&mut bob).await;
    assert_eq!(
        f,
        json!({"type": "message", "message": {
            "sender": {"type": "session", "sessionid": a.sessionid},
            "data": {"to": b.sessionid, "from": a.sessionid, "type": "offer", "roomType": "screen",
                "sid": "sub-1", "payload": {"type": "offer", "sdp": OFFER_SDP}}}})
    );
    assert!(matches!(
        &env.mcu.of_kind("subscribe")[..],
        [McuCommand::Subscribe { subscriber, publisher, stream: StreamType::Screen, .. }]
            if *subscriber == b.sessionid && *publisher == a.sessionid
    ));
    assert!(
        messages_within(&mut alice, Duration::from_millis(200))
            .await
            .is_empty()
    );

    let id = carol
        .message_session(
            &b.sessionid,
            json!({"type": "sendoffer", "roomType": "screen"}),
        )
        .await;
    let f = refused(&mut carol, &id, "not_allowed").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Not allowed to send offer"),
        "{f}"
    );
    let _ = c;
}

#[tokio::test]
async fn media_server_errors_reach_the_client_with_their_code() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    env.incall(&[("alice", 3), ("bob", 3)]).await;
    env.mcu
        .fail("publish", "processing_failed", "ICE gathering failed");
    let id = alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    let f = refused(&mut alice, &id, "processing_failed").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ICE gathering failed"),
        "{f}"
    );

    env.mcu.fail("publish", "strange_code", "odd");
    let id = alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    refused(&mut alice, &id, "processing_failed").await;

    env.mcu.failures_clear();
    publish(&mut alice, &a, "video").await;
    env.mcu
        .fail("subscribe", "client_not_found", "no such publisher");
    let id = bob
        .message_session(
            &a.sessionid,
            json!({"type": "requestoffer", "roomType": "video"}),
        )
        .await;
    refused(&mut bob, &id, "client_not_found").await;

    // Without a subscription, the subscriber's messages find no MCU client.
    for data in [
        candidate(&a.sessionid, "video", CANDIDATE),
        json!({"type": "answer", "roomType": "video", "payload": {"type": "answer", "sdp": CLIENT_SDP_AV}}),
        json!({"type": "selectStream", "roomType": "video", "payload": {"substream": 1}}),
    ] {
        let id = bob.message_session(&a.sessionid, data).await;
        refused(&mut bob, &id, "client_not_found").await;
    }
    let _ = b;
}

#[tokio::test]
async fn own_candidates_go_to_the_publisher_and_end_of_candidates_is_ignored() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let id = alice
        .message_session(&a.sessionid, candidate(&a.sessionid, "video", CANDIDATE))
        .await;
    refused(&mut alice, &id, "client_not_found").await;
    publish(&mut alice, &a, "video").await;
    alice
        .message_session(&a.sessionid, candidate(&a.sessionid, "video", CANDIDATE))
        .await;
    alice
        .message_session(&a.sessionid, candidate(&a.sessionid, "video", ""))
        .await;
    alice
        .message_session(
            &a.sessionid,
            json!({"type": "endOfCandidates", "roomType": "video"}),
        )
        .await;
    let cands: Vec<String> = {
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        loop {
            let v: Vec<String> = env
                .mcu
                .of_kind("candidate")
                .into_iter()
                .filter_map(|c| match c {
                    McuCommand::Candidate {
                        session,
                        publisher,
                        candidate,
                        ..
                    } if session == publisher => Some(candidate.candidate),
                    _ => None,
                })
                .collect();
            if v.len() >= 2 || tokio::time::Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(cands, vec![CANDIDATE.to_string(), String::new()]);
    assert!(
        messages_within(&mut alice, Duration::from_millis(300))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn media_server_events_reach_the_clients() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let (mut bob, b) = env.in_room("bob").await;
    env.incall(&[("alice", 3), ("bob", 3)]).await;
    publish(&mut alice, &a, "video").await;
    bob.message_session(
        &a.sessionid,
        json!({"type": "requestoffer", "roomType": "video"}),
    )
    .await;
    next_message(&mut bob).await;

    let cand = IceCandidate {
        candidate: CANDIDATE.into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    };
    env.events
        .send(McuEvent::Candidate {
            session: a.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: "1700000000".into(),
            candidate: cand.clone(),
        })
        .expect("send");
    assert_eq!(
        next_message(&mut alice).await,
        json!({"type": "message", "message": {"sender": {"type": "session", "sessionid": a.sessionid},
            "data": {"to": a.sessionid, "from": a.sessionid, "type": "candidate", "roomType": "video", "sid": "1700000000",
                "payload": {"candidate": {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}}}}})
    );
    env.events
        .send(McuEvent::Candidate {
            session: b.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: "sub-1".into(),
            candidate: cand,
        })
        .expect("send");
    assert_eq!(
        next_message(&mut bob).await,
        json!({"type": "message", "message": {"sender": {"type": "session", "sessionid": a.sessionid},
            "data": {"to": b.sessionid, "from": a.sessionid, "type": "candidate", "roomType": "video", "sid": "sub-1",
                "payload": {"candidate": {"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}}}}})
    );
    env.events
        .send(McuEvent::Offer {
            subscriber: b.sessionid.clone(),
            publisher: a.sessionid.clone(),
            stream: StreamType::Video,
            sid: "sub-2".into(),
            sdp: OFFER_SDP.into(),
        })
        .expect("send");
    assert_eq!(
        next_message(&mut bob).await,
        json!({"type": "message", "message": {"sender": {"type": "session", "sessionid": a.sessionid},
            "data": {"to": b.sessionid, "from": a.sessionid, "type": "offer", "roomType": "video", "sid": "sub-2",
                "payload": {"type": "offer", "sdp": OFFER_SDP}}}})
    );
    // A closed publisher is forgotten, with its subscriptions.
    env.events
        .send(McuEvent::PublisherClosed {
            session: a.sessionid.clone(),
            stream: StreamType::Video,
        })
        .expect("send");
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    while env
        .signaling
        .hub
        .media
        .as_ref()
        .expect("media")
        .stats()
        .publishers
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publisher not forgotten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = bob
        .message_session(&a.sessionid, candidate(&a.sessionid, "video", CANDIDATE))
        .await;
    refused(&mut bob, &id, "client_not_found").await;
}

#[tokio::test]
async fn unshare_screen_closes_the_screen_publisher_after_a_delay() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    publish(&mut alice, &a, "screen").await;
    alice
        .message_session(
            &a.sessionid,
            json!({"type": "unshareScreen", "roomType": "screen"}),
        )
        .await;
    let c = env
        .mcu
        .wait_command("unpublish", |c| kind(c) == "unpublish")
        .await;
    assert_eq!(
        c,
        McuCommand::Unpublish {
            session: a.sessionid.clone(),
            stream: StreamType::Screen
        }
    );
    assert!(
        messages_within(&mut alice, Duration::from_millis(200))
            .await
            .is_empty(),
        "not echoed"
    );
}

#[tokio::test]
async fn leaving_the_call_the_room_or_the_session_closes_its_media() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    let closes = |env: &Env| {
        env.mcu
            .of_kind("close_session")
            .into_iter()
            .filter(
                |c| matches!(c, McuCommand::CloseSession { session } if *session == a.sessionid),
            )
            .count()
    };
    let wait_closes = async |env: &Env, n: usize| {
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        while closes(env) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no CloseSession #{n}: {:?}",
                env.mcu.commands()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Leaving the call.
    env.incall(&[("alice", 3)]).await;
    publish(&mut alice, &a, "video").await;
    env.incall(&[("alice", 0)]).await;
    wait_closes(&env, 1).await;
    // Backend "all" leaves the call too.
    env.incall(&[("alice", 7)]).await;
    publish(&mut alice, &a, "video").await;
    let (status, _, text) = env
        .nc
        .post_room(
            &env.http(),
            "room1",
            json!({"type": "incall", "incall": {"incall": 0, "all": true}}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    wait_closes(&env, 2).await;
    // Leaving the room.
    publish(&mut alice, &a, "video").await;
    alice.leave().await;
    wait_closes(&env, 3).await;
    // Closing the session.
    publish(&mut alice, &a, "video").await;
    alice.bye().await;
    wait_closes(&env, 4).await;
    assert_eq!(closes(&env), 4, "{:?}", env.mcu.commands());
}

#[tokio::test]
async fn withdrawn_permissions_unpublish_the_forbidden_streams() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    publish(&mut alice, &a, "video").await;
    publish(&mut alice, &a, "screen").await;
    env.permissions("alice", &["publish-audio", "publish-video"])
        .await;
    let c = env
        .mcu
        .wait_command("unpublish screen", |c| kind(c) == "unpublish")
        .await;
    assert_eq!(
        c,
        McuCommand::Unpublish {
            session: a.sessionid.clone(),
            stream: StreamType::Screen
        }
    );
    env.permissions("alice", &["publish-audio"]).await;
    env.mcu
        .wait_command("unpublish video", |c| {
            matches!(
                c,
                McuCommand::Unpublish {
                    stream: StreamType::Video,
                    ..
                }
            )
        })
        .await;
    assert_eq!(env.mcu.of_kind("unpublish").len(), 2);
}

#[tokio::test]
async fn stats_and_serverinfo_describe_the_sfu() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    publish(&mut alice, &a, "video").await;
    let stats: Value = reqwest::get(format!("{}/api/v1/stats", env.http()))
        .await
        .expect("GET stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["mcu"]["connected"], true, "{stats}");
    assert_eq!(stats["mcu"]["publishers"], 1, "{stats}");
    let info: Value = reqwest::get(format!("{}/api/v1/serverinfo", env.http()))
        .await
        .expect("GET serverinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(info["sfu"]["mode"], "builtin", "{info}");
    assert_eq!(info["sfu"]["connected"], true, "{info}");

    let plain = Env::start_with(false, |_| {}).await;
    let stats: Value = reqwest::get(format!("{}/api/v1/stats", plain.http()))
        .await
        .expect("GET stats")
        .json()
        .await
        .expect("json");
    assert!(stats.get("mcu").is_none(), "{stats}");
}

#[tokio::test]
async fn a_media_server_that_does_not_answer_is_a_processing_failure() {
    let env = Env::start_with(true, |cfg| cfg.mcu_timeout = Duration::from_millis(300)).await;
    let (mut alice, a) = env.in_room("alice").await;
    env.mcu.hang("publish");
    let id = alice
        .message_session(
            &a.sessionid,
            offer(&a.sessionid, "video", "1", CLIENT_SDP_AV),
        )
        .await;
    let f = refused(&mut alice, &id, "processing_failed").await;
    assert!(
        f["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[mcu] timeout"),
        "{f}"
    );
}

#[tokio::test]
async fn internal_clients_may_always_request_offers() {
    let env = Env::start().await;
    let (mut alice, a) = env.in_room("alice").await;
    publish(&mut alice, &a, "video").await;
    let mut internal = TestClient::connect(env.addr).await;
    let i = internal
        .hello_internal(&env.nc.backend_url(), "internal-secret")
        .await;
    internal
        .message_session(
            &a.sessionid,
            json!({"type": "requestoffer", "roomType": "video"}),
        )
        .await;
    let f = next_message(&mut internal).await;
    assert_eq!(f["message"]["data"]["type"], "offer", "{f}");
    assert_eq!(f["message"]["data"]["to"], i.sessionid.as_str(), "{f}");
}
