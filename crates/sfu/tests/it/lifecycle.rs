//! Closing, waiting, refusals and garbage: the Janus semantics the signaling side relies on.

use std::time::Duration;

use hpb_sfu::{IceCandidate, McuCommand, McuEvent, McuReply, StreamType};

use crate::client::{self, ClientEvent};
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_closes_publisher_and_subscribers() {
    let (sfu, mut events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    bob.wait_for("bob connected", WAIT, |e| {
        matches!(e, ClientEvent::Connected)
    })
    .await;
    let r = sfu
        .request(McuCommand::Unpublish {
            session: "alice".into(),
            stream: StreamType::Video,
        })
        .await;
    assert_eq!(r, McuReply::Done);
    event(
        &mut events,
        "PublisherClosed",
        |e| matches!(e, McuEvent::PublisherClosed { session, .. } if session == "alice"),
    )
    .await;
    event(&mut events, "SubscriberClosed", |e| {
        matches!(e, McuEvent::SubscriberClosed { subscriber, publisher, .. }
            if subscriber == "bob" && publisher == "alice")
    })
    .await;
    // The SFU ends bob's connection itself (DTLS close_notify), it does not just go quiet.
    bob.wait_for("the SFU closing bob's connection", WAIT, |e| {
        matches!(e, ClientEvent::Closed)
    })
    .await;
    let m = sfu.metrics();
    assert!(m.contains("hpb_sfu_publishers 0\n"), "{m}");
    assert!(m.contains("hpb_sfu_subscribers 0\n"), "{m}");
    // The subscription is gone for commands too.
    let r = sfu
        .request(McuCommand::Candidate {
            session: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            sid: String::new(),
            candidate: IceCandidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
        })
        .await;
    assert!(
        matches!(r, McuReply::Error(ref e) if e.code == "client_not_found"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_closes_its_subscriptions() {
    let (sfu, mut events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let (_bob, _) = subscribe(&sfu, "bob", "alice").await;
    let r = sfu
        .request(McuCommand::CloseSession {
            session: "bob".into(),
        })
        .await;
    assert_eq!(r, McuReply::Done);
    event(
        &mut events,
        "SubscriberClosed",
        |e| matches!(e, McuEvent::SubscriberClosed { subscriber, .. } if subscriber == "bob"),
    )
    .await;
    let m = sfu.metrics();
    assert!(m.contains("hpb_sfu_publishers 1\n"), "{m}");
    assert!(m.contains("hpb_sfu_subscribers 0\n"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_publishers_session_ends_subscriber_and_publisher_connections() {
    let (sfu, mut events) = start().await;
    let mut publisher = publish(&sfu, "alice").await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut bob).await;
    let r = sfu
        .request(McuCommand::CloseSession {
            session: "alice".into(),
        })
        .await;
    assert_eq!(r, McuReply::Done);
    event(
        &mut events,
        "SubscriberClosed",
        |e| matches!(e, McuEvent::SubscriberClosed { subscriber, .. } if subscriber == "bob"),
    )
    .await;
    bob.wait_for("the SFU closing bob's connection", WAIT, |e| {
        matches!(e, ClientEvent::Closed)
    })
    .await;
    publisher
        .wait_for("the SFU closing alice's connection", WAIT, |e| {
            matches!(e, ClientEvent::Closed)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_nobody_is_client_not_found_after_the_wait() {
    let (sfu, _events) = start_with(Duration::from_millis(300)).await;
    let r = sfu.request(subscribe_cmd("bob", "nobody", "")).await;
    let McuReply::Error(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, "client_not_found");
    assert!(e.message.contains("nobody"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sdp_is_invalid_sdp() {
    let (sfu, _events) = start().await;
    for sdp in ["", "garbage", "v=0\r\nm=audio nonsense\r\n"] {
        let r = sfu.request(publish_cmd("alice", sdp)).await;
        let McuReply::Error(e) = r else {
            panic!("{r:?}")
        };
        assert_eq!(e.code, "invalid_sdp");
        assert!(e.message.contains("SDP"), "{}", e.message);
    }
    let _publisher = publish(&sfu, "alice").await;
    let r = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let McuReply::Offer { sid, .. } = r else {
        panic!("{r:?}")
    };
    let r = sfu
        .request(McuCommand::SubscriberAnswer {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            sid,
            sdp: "not an answer".into(),
        })
        .await;
    let McuReply::Error(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, "invalid_sdp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_udp_is_ignored() {
    let (sfu, _events) = start().await;
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stunlike = {
        // A STUN binding request header with a USERNAME for a ufrag nobody has.
        let mut m = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[1; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
        m.extend_from_slice(b"nope:xy\0");
        m
    };
    for p in [
        vec![],
        vec![0u8; 1],
        vec![0x80; 200],
        vec![0x16; 60],
        stunlike,
    ] {
        junk.send_to(&p, sfu.local_addr()).await.expect("send junk");
    }
    // Still serving: a publisher connects and media flows.
    let mut publisher = publish(&sfu, "alice").await;
    publisher
        .wait_for("publisher connected", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut bob).await;
    let m = sfu.metrics();
    let ignored: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("hpb_sfu_udp_ignored_packets_total "))
        .and_then(|v| v.parse().ok())
        .expect("ignored counter");
    assert!(ignored >= 4, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_accepted_or_ignored() {
    let (sfu, _events) = start().await;
    let (_pending, offer) = client::publisher_offer(true, false, false).await;
    let r = sfu
        .request(McuCommand::Publish {
            session: "alice".into(),
            stream: StreamType::Screen,
            sid: "5".into(),
            sdp: offer,
            max_bitrate: 0,
        })
        .await;
    assert!(matches!(r, McuReply::Answer { .. }), "{r:?}");
    for c in [
        "",
        "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
        "a=candidate:2 1 udp 2130706431 127.0.0.1 40001 typ host",
        "candidate:3 1 udp 2130706431 abcd.local 40002 typ host",
    ] {
        let r = sfu
            .request(McuCommand::Candidate {
                session: "alice".into(),
                publisher: "alice".into(),
                stream: StreamType::Screen,
                sid: "5".into(),
                candidate: IceCandidate {
                    candidate: c.into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                },
            })
            .await;
        assert_eq!(r, McuReply::Done, "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_publisher_is_closed_after_the_ice_timeout() {
    init_log();
    let (sfu, mut events) = hpb_sfu::Sfu::start(hpb_sfu::SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ice_timeout: Duration::from_secs(1),
        ..hpb_sfu::SfuConfig::default()
    })
    .await
    .expect("start");
    let mut publisher = publish(&sfu, "alice").await;
    publisher
        .wait_for("connected", WAIT, |e| matches!(e, ClientEvent::Connected))
        .await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut bob).await;
    drop(publisher); // stops sending anything, like a closed laptop lid
    event(
        &mut events,
        "PublisherClosed",
        |e| matches!(e, McuEvent::PublisherClosed { session, .. } if session == "alice"),
    )
    .await;
    // Its subscriber's connection is ended by the SFU, not left to time out on the client.
    bob.wait_for("the SFU closing bob's connection", WAIT, |e| {
        matches!(e, ClientEvent::Closed)
    })
    .await;
    assert!(sfu.metrics().contains("hpb_sfu_publishers 0\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ip_is_announced_in_sdp_and_trickle() {
    init_log();
    let (sfu, mut events) = hpb_sfu::Sfu::start(hpb_sfu::SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        external_ip: Some("192.0.2.7".parse().expect("ip")),
        ..hpb_sfu::SfuConfig::default()
    })
    .await
    .expect("start");
    let (_pending, offer) = client::publisher_offer(true, true, true).await;
    let sdp = publish_answer(&sfu, "alice", offer).await;
    let port = sfu.local_addr().port();
    assert!(sdp.contains(&format!("192.0.2.7 {port} typ host")), "{sdp}");
    let e = event(&mut events, "publisher candidate", |e| {
        matches!(e, McuEvent::Candidate { session, publisher, .. } if session == "alice" && publisher == "alice")
    })
    .await;
    let McuEvent::Candidate { candidate, sid, .. } = e else {
        unreachable!()
    };
    assert_eq!(sid, "1");
    assert!(candidate.candidate.contains("192.0.2.7"), "{candidate:?}");
    assert!(candidate.sdp_mid.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_sfu_stops_the_worker_and_frees_the_port() {
    let (sfu, mut events) = start().await;
    let addr = sfu.local_addr();
    let _publisher = publish(&sfu, "alice").await;
    drop(sfu);
    // The worker ends (its event sender goes) and the socket is closed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::timeout_at(deadline, events.recv())
        .await
        .expect("the event stream ends after drop")
        .is_some()
    {}
    std::net::UdpSocket::bind(addr).expect("the port is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_unusable_ice_or_dtls_attributes_are_refused_by_name() {
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let r = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let McuReply::Offer { sdp, sid } = r else {
        panic!("{r:?}")
    };
    let (mut bob, answer) = client::subscriber_from_offer_lossy(&sdp, 0).await;
    let answer_cmd = |sdp: String| McuCommand::SubscriberAnswer {
        subscriber: "bob".into(),
        publisher: "alice".into(),
        stream: StreamType::Video,
        sid: sid.clone(),
        sdp,
    };
    let without = |prefix: &str| -> String {
        answer
            .split_inclusive('\n')
            .filter(|l| !l.starts_with(prefix))
            .collect()
    };
    let replace_value = |prefix: &str, value: &str| -> String {
        answer
            .split_inclusive('\n')
            .map(|l| {
                if l.starts_with(prefix) {
                    format!("{prefix}{value}\r\n")
                } else {
                    l.to_owned()
                }
            })
            .collect()
    };
    for (sdp, attr) in [
        (without("a=ice-ufrag:"), "a=ice-ufrag"),
        (without("a=ice-pwd:"), "a=ice-pwd"),
        (without("a=fingerprint:"), "a=fingerprint"),
        (replace_value("a=ice-ufrag:", "no"), "a=ice-ufrag"),
        (replace_value("a=ice-pwd:", "not a password"), "a=ice-pwd"),
        (
            replace_value("a=fingerprint:", "sha-256 zz:top"),
            "a=fingerprint",
        ),
        (
            replace_value("a=fingerprint:", "sha-256 01:02"),
            "a=fingerprint",
        ),
    ] {
        let r = sfu.request(answer_cmd(sdp)).await;
        let McuReply::Error(e) = r else {
            panic!("{attr}: accepted: {r:?}")
        };
        assert_eq!(e.code, "invalid_sdp", "{attr}: {e:?}");
        assert!(e.message.contains(attr), "{attr}: {}", e.message);
    }
    // The refusals left the subscription as it was: the real answer still works.
    assert_eq!(
        sfu.request(answer_cmd(answer.clone())).await,
        McuReply::Done
    );
    expect_media(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_offers_with_unusable_ice_or_dtls_attributes_are_refused_by_name() {
    let (sfu, _events) = start().await;
    let (_pending, offer) = client::publisher_offer(true, true, false).await;
    let no_pwd: String = offer
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=ice-pwd:"))
        .collect();
    let r = sfu.request(publish_cmd("alice", no_pwd)).await;
    let McuReply::Error(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.code, "invalid_sdp");
    assert!(e.message.contains("a=ice-pwd"), "{}", e.message);
    assert!(sfu.metrics().contains("hpb_sfu_publishers 0\n"));
}

/// Janus' `media` events: a publisher's audio and video are reported as arriving once they
/// do, and as stopped a second after they stop (here: the client vanishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_receiving_is_reported_on_and_off() {
    use hpb_proto::mcu::MediaKind;
    use hpb_sfu::McuEvent;
    let (sfu, mut events) = start().await;
    let publisher = publish(&sfu, "alice").await;
    for kind in [MediaKind::Audio, MediaKind::Video] {
        event(&mut events, "media receiving", |e| {
            matches!(e, McuEvent::MediaReceiving { session, kind: k, receiving: true, .. }
                if session == "alice" && *k == kind)
        })
        .await;
    }
    drop(publisher);
    for kind in [MediaKind::Audio, MediaKind::Video] {
        event(&mut events, "media stopped", |e| {
            matches!(e, McuEvent::MediaReceiving { session, kind: k, receiving: false, .. }
                if session == "alice" && *k == kind)
        })
        .await;
    }
}
