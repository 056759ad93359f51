//! Media and data channel forwarding from one publisher to subscribers.

use hpb_sfu::{McuCommand, McuEvent, McuReply, StreamType};

use crate::client::ClientEvent;
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscribers_get_audio_video_and_data_channel() {
    let (sfu, mut events) = start().await;
    let mut publisher = publish(&sfu, "alice").await;
    publisher
        .wait_for("publisher connected", WAIT, |e| {
            matches!(e, ClientEvent::Connected)
        })
        .await;
    event(&mut events, "PublisherUp", |e| {
        matches!(e, McuEvent::PublisherUp { session, stream: StreamType::Video } if session == "alice")
    })
    .await;

    let (mut bob, bob_sid) = subscribe(&sfu, "bob", "alice").await;
    let (mut carol, carol_sid) = subscribe(&sfu, "carol", "alice").await;
    assert_ne!(bob_sid, carol_sid);
    // The server candidate is also trickled, tagged with the subscription's sid.
    let cand = event(
        &mut events,
        "bob's candidate",
        |e| matches!(e, McuEvent::Candidate { session, .. } if session == "bob"),
    )
    .await;
    let McuEvent::Candidate {
        sid,
        candidate,
        publisher: p,
        ..
    } = cand
    else {
        unreachable!()
    };
    assert_eq!(sid, bob_sid);
    assert_eq!(p, "alice");
    assert!(
        candidate.candidate.starts_with("candidate:"),
        "{candidate:?}"
    );
    assert!(
        candidate
            .candidate
            .contains(&sfu.local_addr().port().to_string())
    );

    for sub in [&mut bob, &mut carol] {
        expect_media(sub).await;
        sub.wait_for(
            "JanusDataChannel",
            WAIT,
            |e| matches!(e, ClientEvent::ChannelOpen(l) if l == "JanusDataChannel"),
        )
        .await;
        let e = sub
            .wait_for("a relayed data channel message", WAIT, |e| {
                matches!(e, ClientEvent::ChannelData(_))
            })
            .await;
        let ClientEvent::ChannelData(d) = e else {
            unreachable!()
        };
        assert!(d.starts_with(b"{\"type\":\"status\""), "{d:?}");
    }

    let m = sfu.metrics();
    assert!(m.contains("hpb_sfu_publishers 1\n"), "{m}");
    assert!(m.contains("hpb_sfu_subscribers 2\n"), "{m}");
    drop(publisher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_before_publish_waits_then_works() {
    let (sfu, _events) = start_with(std::time::Duration::from_secs(10)).await;
    let sfu = std::sync::Arc::new(sfu);
    let waiting = {
        let sfu = sfu.clone();
        tokio::spawn(async move { sfu.request(subscribe_cmd("bob", "alice", "")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "subscribe waits for the publisher");
    let _publisher = publish(&sfu, "alice").await;
    let reply = waiting.await.expect("subscribe task");
    let (mut bob, _) = answer_offer(&sfu, "bob", "alice", reply).await;
    expect_media(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_sid_renegotiates_and_new_sid_replaces() {
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let (mut bob, sid) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut bob).await;

    // Same sid: an offer on the existing connection, same sid.
    let r = sfu.request(subscribe_cmd("bob", "alice", &sid)).await;
    let McuReply::Offer { sid: again, sdp } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(again, &sid);
    assert!(sdp.contains("m=video"));
    let r = sfu
        .request(McuCommand::SubscriberAnswer {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            sid: sid.clone(),
            sdp: sdp.clone().replace("a=setup:actpass", "a=setup:active"),
        })
        .await;
    assert!(
        !matches!(r, McuReply::Error(ref e) if e.code == "client_not_found"),
        "{r:?}"
    );

    // Empty sid: a fresh subscription with a new sid, which works too.
    let (mut bob2, sid2) = subscribe(&sfu, "bob", "alice").await;
    assert_ne!(sid, sid2);
    expect_media(&mut bob2).await;
    let m = sfu.metrics();
    assert!(m.contains("hpb_sfu_subscribers 1\n"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_forwards_the_high_layer_and_select_stream_switches() {
    let (pending, offer) = client::publisher_offer_with(false, true, false, true).await;
    assert!(offer.contains("a=simulcast"), "{offer}");
    simulcast_case(pending, offer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sim_simulcast_is_forwarded_per_layer() {
    let (pending, offer) = client::publisher_offer_legacy_sim().await;
    assert!(offer.contains("a=ssrc-group:SIM"), "{offer}");
    assert!(!offer.contains("a=rid:"), "{offer}");
    simulcast_case(pending, offer).await;
}

async fn simulcast_case(pending: client::PendingPublisher, offer: String) {
    let (sfu, _events) = start().await;
    let _publisher = publish_offer(&sfu, pending, offer).await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    let is_layer = |e: &ClientEvent, l: &[u8]| matches!(e, ClientEvent::Media { data, .. } if data.windows(l.len()).any(|w| w == l));
    bob.wait_for("high layer", WAIT, |e| is_layer(e, b"VIDEO-h"))
        .await;
    // Before the publisher's first high-layer frame the low layer may have been forwarded.
    bob.clear_history();
    // Only the high layer: after it started, no low-layer frame shows up among the next ones.
    for _ in 0..10 {
        let e = bob
            .wait_for("more video", WAIT, |e| {
                matches!(e, ClientEvent::Media { .. })
            })
            .await;
        assert!(!is_layer(&e, b"VIDEO-l"), "low layer forwarded as well");
    }
    let r = sfu
        .request(McuCommand::SelectStream {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            selection: hpb_sfu::Selection {
                substream: Some(0),
                ..Default::default()
            },
        })
        .await;
    assert_eq!(r, McuReply::Done);
    bob.wait_for("low layer after selectStream", WAIT, |e| {
        is_layer(e, b"VIDEO-l")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_gets_remb_with_its_bitrate_cap() {
    let (sfu, _events) = start().await;
    let mut publisher = publish(&sfu, "alice").await;
    let e = publisher
        .wait_for("a REMB", WAIT, |e| matches!(e, ClientEvent::Remb(_)))
        .await;
    let ClientEvent::Remb(bps) = e else {
        unreachable!()
    };
    // REMB's mantissa/exponent encoding rounds; the cap is 1 Mbit/s.
    assert!((900_000..=1_100_000).contains(&bps), "{bps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_renegotiation_updates_subscribers() {
    let (sfu, mut events) = start().await;
    let publish_cmd = |sdp: String| McuCommand::Publish {
        session: "alice".into(),
        stream: StreamType::Video,
        sid: "42".into(),
        sdp,
        max_bitrate: 0,
    };
    let (mut pending, offer) = client::publisher_offer(true, false, false).await;
    let McuReply::Answer { sdp: answer } = sfu.request(publish_cmd(offer)).await else {
        panic!("first publish failed")
    };
    let r = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let McuReply::Offer { sdp: first, .. } = &r else {
        panic!("{r:?}")
    };
    assert!(
        first.contains("m=audio") && !first.contains("m=video"),
        "{first}"
    );
    let (_bob, sid) = answer_offer(&sfu, "bob", "alice", r).await;

    // Same sid: the publisher adds video on its existing connection.
    let offer2 = pending.reoffer_with_video(&answer);
    let McuReply::Answer { sdp: answer2 } = sfu.request(publish_cmd(offer2)).await else {
        panic!("renegotiation failed")
    };
    assert!(answer2.contains("m=video"), "{answer2}");
    let e = event(
        &mut events,
        "update-sdp offer for bob",
        |e| matches!(e, McuEvent::Offer { subscriber, .. } if subscriber == "bob"),
    )
    .await;
    let McuEvent::Offer { sdp, sid: sid2, .. } = e else {
        unreachable!()
    };
    assert_eq!(sid2, sid);
    assert!(sdp.contains("m=audio") && sdp.contains("m=video"), "{sdp}");
    assert!(sfu.metrics().contains("hpb_sfu_publishers 1\n"));

    // The renegotiated publisher sends both to a new subscriber.
    let _publisher = pending.accept_answer(&answer2);
    let (mut carol, _) = subscribe(&sfu, "carol", "alice").await;
    expect_media(&mut carol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_can_turn_off_video() {
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut bob).await;
    let r = sfu
        .request(McuCommand::SelectStream {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            selection: hpb_sfu::Selection {
                video: Some(false),
                ..Default::default()
            },
        })
        .await;
    assert_eq!(r, McuReply::Done);
    // Frames already in flight may still arrive; after a while only audio does.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    bob.clear_history();
    for _ in 0..20 {
        let e = bob
            .wait_for("audio", WAIT, |e| matches!(e, ClientEvent::Media { .. }))
            .await;
        assert!(
            matches!(
                e,
                ClientEvent::Media {
                    kind: str0m::media::MediaKind::Audio,
                    ..
                }
            ),
            "video still forwarded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_publisher_rate_limited() {
    let (sfu, _events) = start().await;
    let mut publisher = publish(&sfu, "alice").await;
    publisher
        .wait_for("connected", WAIT, |e| matches!(e, ClientEvent::Connected))
        .await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    // A new viewer makes the SFU ask for a keyframe.
    publisher
        .wait_for("PLI for the new viewer", WAIT, |e| {
            matches!(e, ClientEvent::KeyframeRequest)
        })
        .await;
    expect_media(&mut bob).await;
    // A viewer's own PLI is forwarded (after the rate limit window).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    publisher.clear_history();
    bob.request_keyframe();
    publisher
        .wait_for("forwarded PLI", WAIT, |e| {
            matches!(e, ClientEvent::KeyframeRequest)
        })
        .await;
    let m = sfu.metrics();
    let n: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("hpb_sfu_keyframe_requests_total "))
        .and_then(|v| v.parse().ok())
        .expect("counter");
    assert!(n >= 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_subscribers_all_receive() {
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let mut subs = Vec::new();
    for i in 0..5 {
        subs.push(subscribe(&sfu, &format!("sub{i}"), "alice").await.0);
    }
    for s in &mut subs {
        expect_media(s).await;
    }
}

async fn select_substream(sfu: &hpb_sfu::Sfu, substream: u8) {
    let r = sfu
        .request(McuCommand::SelectStream {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            stream: StreamType::Video,
            selection: hpb_sfu::Selection {
                substream: Some(substream),
                ..Default::default()
            },
        })
        .await;
    assert_eq!(r, McuReply::Done);
}

/// A received video frame: which layer (the letter after `VIDEO-`), its RTP timestamp and
/// arrival.
async fn next_video(c: &mut client::Client) -> (u8, u32, std::time::Instant) {
    let e = c
        .wait_for("a video frame", WAIT, |e| {
            matches!(
                e,
                ClientEvent::Media {
                    kind: str0m::media::MediaKind::Video,
                    ..
                }
            )
        })
        .await;
    let ClientEvent::Media {
        data, rtp_time, at, ..
    } = e
    else {
        unreachable!()
    };
    let layer = data
        .windows(7)
        .find_map(|w| w.strip_prefix(b"VIDEO-").and_then(|l| l.first().copied()))
        .unwrap_or(b'?');
    (layer, rtp_time, at)
}

/// Reads frames until one of `layer` arrives (bounded) and checks that the RTP timestamp
/// moved from the last frame of the other layer (`last`: its timestamp and arrival, kept
/// up to date) to it about as much as the wall clock did.
async fn expect_continuous_switch_to(
    c: &mut client::Client,
    layer: u8,
    last: &mut (u32, std::time::Instant),
) {
    for _ in 0..500 {
        let (l, ts, at) = next_video(c).await;
        let (ts0, at0) = std::mem::replace(last, (ts, at));
        if l != layer {
            continue;
        }
        let d_rtp = i64::from(ts.wrapping_sub(ts0) as i32);
        let d_wall = i64::try_from(at.saturating_duration_since(at0).as_micros() * 90 / 1000)
            .unwrap_or(i64::MAX);
        assert!(
            d_rtp > 0 && (d_rtp - d_wall).abs() < 90_000,
            "switching to layer {}: RTP moved {d_rtp} ticks in {d_wall} ticks of wall clock",
            layer as char
        );
        return;
    }
    panic!("no frame of layer {} after 500 frames", layer as char);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layer_switches_keep_the_rtp_timeline() {
    let (sfu, _events) = start().await;
    // The publisher's layers start about 10^9 ticks apart, like Chromium's.
    let (pending, offer) =
        client::publisher_offer_rid_layers(&["l", "m", "h"], &["l", "m", "h"]).await;
    let _publisher = publish_offer(&sfu, pending, offer).await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    // Lower layers may come first, until the publisher's first high-layer frame.
    let mut last = None;
    for _ in 0..500 {
        let (l, ts, at) = next_video(&mut bob).await;
        if l == b'h' {
            last = Some((ts, at));
            break;
        }
    }
    let mut last = last.expect("the high layer is forwarded by default");
    for (substream, layer) in [(0, b'l'), (1, b'm'), (2, b'h'), (0, b'l')] {
        select_substream(&sfu, substream).await;
        expect_continuous_switch_to(&mut bob, layer, &mut last).await;
    }
}

/// Wait (bounded) for `n` video frames in a row of `layer`, skipping what came before.
async fn expect_layer(c: &mut client::Client, layer: u8, what: &str) {
    let mut run = 0;
    for _ in 0..500 {
        let (l, _, _) = next_video(c).await;
        run = if l == layer { run + 1 } else { 0 };
        if run == 10 {
            return;
        }
    }
    panic!("{what}: no run of layer {} frames", layer as char);
}

async fn best_sent_layer_case(pending: client::PendingPublisher, offer: String) {
    let (sfu, _events) = start().await;
    let _publisher = publish_offer(&sfu, pending, offer).await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_layer(&mut bob, b'm', "by default the best layer sent").await;
    // The silent top layer asked for: the nearest lower one that is sent.
    select_substream(&sfu, 2).await;
    expect_layer(&mut bob, b'm', "substream 2, not sent").await;
    select_substream(&sfu, 0).await;
    expect_layer(&mut bob, b'l', "substream 0").await;
    select_substream(&sfu, 1).await;
    expect_layer(&mut bob, b'm', "substream 1").await;
}

/// Chromium at 640x360: three SSRCs in the SIM group, nothing sent on the third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sim_with_a_silent_announced_layer_forwards_the_best_one_sent() {
    let (pending, offer) =
        client::publisher_offer_legacy_sim_layers(&["l", "m", "h"], &["l", "m"]).await;
    assert!(offer.contains("a=ssrc-group:SIM 1111 2222 3333"), "{offer}");
    best_sent_layer_case(pending, offer).await;
}

/// Chromium pausing its top rid layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rid_simulcast_with_a_paused_top_layer_forwards_the_best_one_sent() {
    let (pending, offer) = client::publisher_offer_rid_layers(&["l", "m", "h"], &["l", "m"]).await;
    best_sent_layer_case(pending, offer).await;
}

/// The forwarded layer goes silent: the viewer moves down to the best layer still sent,
/// on one RTP timeline, and back up once the better layer returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_layer_is_left_and_taken_again_when_it_returns() {
    let (sfu, _events) = start().await;
    let (pending, offer) =
        client::publisher_offer_rid_layers(&["l", "m", "h"], &["l", "m", "h"]).await;
    let publisher = publish_offer(&sfu, pending, offer).await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_layer(&mut bob, b'h', "by default the high layer").await;
    let (_, ts, at) = next_video(&mut bob).await;
    let mut last = (ts, at);
    publisher.send_layers(&["l", "m"]);
    expect_continuous_switch_to(&mut bob, b'm', &mut last).await;
    publisher.send_layers(&["l", "m", "h"]);
    expect_continuous_switch_to(&mut bob, b'h', &mut last).await;
}

/// Alice publishes three rid layers (l 120, m 240, h 360 kbit/s, all sent) and bob watches;
/// returns once bob gets the high layer, as a viewer does by default.
async fn viewer_of_three_layers() -> (
    hpb_sfu::Sfu,
    tokio::sync::mpsc::UnboundedReceiver<McuEvent>,
    client::Client,
    client::Client,
) {
    let (sfu, events) = start().await;
    let (pending, offer) =
        client::publisher_offer_rid_layers(&["l", "m", "h"], &["l", "m", "h"]).await;
    let publisher = publish_offer(&sfu, pending, offer).await;
    let (mut bob, _) = subscribe(&sfu, "bob", "alice").await;
    expect_layer(&mut bob, b'h', "by default the high layer").await;
    (sfu, events, publisher, bob)
}

/// A viewer is not fed more than its link takes: when its receive estimate (the REMB it
/// sends) falls below the layer it gets, it moves to the best layer that fits (250 kbit/s:
/// only the 120 kbit/s one); later the SFU tries the next layer up, one at a time (first
/// the 240 kbit/s one), and is back on top once the estimate is large. The switches are
/// counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_follow_the_subscribers_bandwidth_estimate() {
    let (sfu, _events, _publisher, mut bob) = viewer_of_three_layers().await;
    bob.send_remb(10_000_000);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    bob.send_remb(250_000);
    expect_layer(&mut bob, b'l', "an estimate falling to 250 kbit/s").await;
    bob.send_remb(400_000);
    expect_layer(&mut bob, b'm', "an estimate of 400 kbit/s").await;
    bob.send_remb(10_000_000);
    expect_layer(&mut bob, b'h', "a large estimate").await;
    assert!(
        metric(&sfu, "hpb_sfu_layer_switches_total") >= 3,
        "{}",
        sfu.metrics()
    );
    assert!(metric(&sfu, "hpb_sfu_video_frames_forwarded_total") > 0);
    assert!(metric(&sfu, "hpb_sfu_subscriber_estimated_bitrate_bps_sum") > 0);
    // An explicit selection still caps it: substream 0 with a large estimate.
    select_substream(&sfu, 0).await;
    expect_layer(&mut bob, b'l', "substream 0").await;
}

/// A viewer moved down tries the next layer up after a wait, and keeps it while its
/// estimate does not fall, even below the new layer's rate: a receiver's estimate trails
/// what it receives (Chromium's REMB is at most 1.5× the received rate + 10 kbit/s), so a
/// try judged by "estimate ≥ rate" would never hold. A fall during the try moves it back.
/// Layers here: l 120, m 240, h 360 kbit/s; 64 kbit/s of an estimate is kept for audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_up_holds_while_the_estimate_trails_the_new_layer() {
    let (_sfu, _events, _publisher, mut bob) = viewer_of_three_layers().await;
    bob.send_remb(1_000_000);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Congestion: down to what 190k carries (l), as Chromium reports on the low layer.
    bob.send_remb(190_000);
    expect_layer(&mut bob, b'l', "an estimate falling to 190 kbit/s").await;
    // A steady, slightly rising estimate that does not carry m (budget 131k < 240k): after
    // the wait the viewer tries m and stays on it.
    bob.send_remb(195_000);
    expect_layer(&mut bob, b'm', "the try up from l").await;
    bob.send_remb(200_000);
    expect_layer(
        &mut bob,
        b'm',
        "the try holds while the estimate does not fall",
    )
    .await;
    // The estimate falls during the try: back down.
    bob.send_remb(150_000);
    expect_layer(&mut bob, b'l', "a fall during the try").await;
}

/// Whatever video codec the publisher's offer carries is what its subscribers are offered
/// and get: VP9, H.264 and AV1 here (VP8 in the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_video_codec_is_forwarded_as_the_publisher_offers_it() {
    let (sfu, _events) = start().await;
    for (i, codec) in ["vp9", "h264", "av1"].into_iter().enumerate() {
        let (pending, offer) = client::publisher_offer_codec(codec).await;
        let name = match codec {
            "vp9" => "VP9/90000",
            "h264" => "H264/90000",
            _ => "AV1/90000",
        };
        assert!(offer.contains(name), "{offer}");
        let publisher = format!("pub-{codec}");
        let reply = sfu
            .request(McuCommand::Publish {
                session: publisher.clone(),
                stream: StreamType::Video,
                sid: i.to_string(),
                sdp: offer,
                max_bitrate: 0,
            })
            .await;
        let McuReply::Answer { sdp } = reply else {
            panic!("{codec}: {reply:?}")
        };
        let _p = pending.accept_answer(&sdp);
        let sub = format!("sub-{codec}");
        let reply = sfu.request(subscribe_cmd(&sub, &publisher, "")).await;
        let McuReply::Offer { sdp: sub_offer, .. } = &reply else {
            panic!("{codec}: {reply:?}")
        };
        let video: Vec<&str> = sub_offer
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter(|l| !l.contains("rtx/") && !l.contains("opus"))
            .collect();
        assert!(
            !video.is_empty() && video.iter().all(|l| l.contains(name)),
            "{codec}: the subscriber is offered only {name}: {video:?}"
        );
        assert!(
            sub_offer.contains("goog-remb") && !sub_offer.contains("transport-cc"),
            "subscribers report their estimate with REMB: {sub_offer}"
        );
        let (mut c, _) = answer_offer(&sfu, &sub, &publisher, reply).await;
        let e = c
            .wait_for(codec, WAIT, |e| {
                matches!(e, ClientEvent::Media { kind: str0m::media::MediaKind::Video, data, .. }
                    if data.windows(6).any(|w| w == b"VIDEO-"))
            })
            .await;
        let ClientEvent::Media { data, .. } = e else {
            unreachable!()
        };
        assert!(
            data.len() >= 1800,
            "{codec}: the whole frame ({} bytes)",
            data.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_get_sender_reports_that_match_the_media_timestamps() {
    // The SFU sends the media itself, so it sends the sender reports a receiver maps RTP
    // time to wall-clock time with (lip sync between audio and video): each names a stream
    // the viewer gets, counts what was sent, and its RTP time is the stream's timestamp at
    // the report's NTP time.
    use str0m::media::MediaKind;
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let (mut viewer, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut viewer).await;
    viewer.clear_history();
    let events = viewer.collect_for(Duration::from_millis(2500)).await;
    for (kind, clock_hz) in [(MediaKind::Audio, 48_000i64), (MediaKind::Video, 90_000)] {
        let packets: Vec<(u32, u32, Instant)> = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Rtp {
                    kind: k,
                    ssrc,
                    ts,
                    at,
                    ..
                } if *k == kind => Some((*ssrc, *ts, *at)),
                _ => None,
            })
            .collect();
        let ssrc = packets.first().map(|p| p.0).expect("media arrives");
        let reports: Vec<(Instant, u32, u32, u32)> = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::SenderReport {
                    ssrc: s,
                    ntp,
                    rtp_time,
                    packets,
                    octets,
                } if *s == ssrc => Some((*ntp, *rtp_time, *packets, *octets)),
                _ => None,
            })
            .collect();
        assert!(
            reports.len() >= 2,
            "{kind:?}: a report a second, got {}",
            reports.len()
        );
        for (ntp, rtp_time, sent, octets) in reports {
            assert!(
                sent > 0 && octets > sent,
                "{kind:?}: it counts what was sent"
            );
            // The packet that arrived nearest to the report's time, moved to that time.
            let (_, ts, at) = packets
                .iter()
                .filter(|p| p.0 == ssrc)
                .min_by_key(|p| p.2.max(ntp) - p.2.min(ntp))
                .expect("packets");
            let offset_us = if *at >= ntp {
                -((*at - ntp).as_micros() as i64)
            } else {
                (ntp - *at).as_micros() as i64
            };
            let expected = i64::from(*ts) + offset_us * clock_hz / 1_000_000;
            let error = (i64::from(rtp_time) - expected).rem_euclid(1 << 32);
            let error = error.min((1 << 32) - error);
            assert!(
                error <= clock_hz / 20,
                "{kind:?}: the report's RTP time is off by {error} ticks (more than 50 ms)"
            );
        }
    }
}
