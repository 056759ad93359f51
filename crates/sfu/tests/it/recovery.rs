//! Loss on the subscriber link: the subscriber NACKs what it misses, the SFU answers from its
//! egress buffer with RTX retransmissions, and frames keep arriving whole.

use std::collections::BTreeSet;

use hpb_sfu::{McuReply, Sfu};

use crate::client::{self, ClientEvent};
use crate::*;

/// The frame counter the test publisher writes after `VIDEO-` (see `client::video_frame`).
fn frame_number(data: &[u8]) -> Option<u64> {
    let at = data.windows(6).position(|w| w == b"VIDEO-")? + 6;
    let rest = data.get(at..)?;
    let end = rest.iter().position(|b| *b == b'-')?;
    std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()
}

async fn video_frame(c: &mut client::Client) -> Vec<u8> {
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
    let ClientEvent::Media { data, .. } = e else {
        unreachable!()
    };
    data
}

/// The offer without any RTX: no rtx payload types, no FID groups and no RTX SSRCs.
fn without_rtx(sdp: &str) -> String {
    let rtx_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.contains(" rtx/"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let rtx_ssrcs: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=ssrc-group:FID "))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    let mut out = String::new();
    for l in sdp.split_inclusive('\n') {
        let t = l.trim_end();
        let about_pt = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|p| {
            t.strip_prefix(p)
                .and_then(|r| r.split(' ').next())
                .is_some_and(|pt| rtx_pts.contains(&pt))
        });
        let about_ssrc = t.starts_with("a=ssrc-group:FID ")
            || t.strip_prefix("a=ssrc:")
                .and_then(|r| r.split(' ').next())
                .is_some_and(|s| rtx_ssrcs.contains(&s));
        if about_pt || about_ssrc {
            continue;
        }
        if t.starts_with("m=") {
            let kept: Vec<&str> = t.split(' ').filter(|x| !rtx_pts.contains(x)).collect();
            out.push_str(&kept.join(" "));
            out.push_str("\r\n");
        } else {
            out.push_str(l);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_nacked_and_retransmitted() {
    let (sfu, mut events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    loss_is_recovered(&sfu, &mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_rtx_even_when_the_publisher_has_none() {
    let (sfu, mut events) = start().await;
    let (pending, offer) = client::publisher_offer(true, true, false).await;
    let offer = without_rtx(&offer);
    assert!(!offer.contains("rtx/"), "{offer}");
    let sdp = publish_answer(&sfu, "alice", offer).await;
    assert!(
        !sdp.contains("rtx/"),
        "the publisher link has no RTX: {sdp}"
    );
    let _publisher = pending.accept_answer(&sdp);
    loss_is_recovered(&sfu, &mut events).await;
}

/// bob subscribes to alice over a lossy link and still gets (nearly) every frame; the SFU
/// reports bob's downlink as slow (Janus' `slowlink`).
async fn loss_is_recovered(
    sfu: &Sfu,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<hpb_sfu::McuEvent>,
) {
    let reply = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let McuReply::Offer { sdp, .. } = &reply else {
        panic!("{reply:?}")
    };
    // RTX is offered to the subscriber: an rtx payload type and an FID group per video track.
    assert!(sdp.contains(" rtx/90000"), "{sdp}");
    assert!(sdp.contains("a=ssrc-group:FID "), "{sdp}");
    // Every 10th video RTP datagram (media or retransmission) from the SFU is lost.
    let (mut bob, _) = answer_offer_lossy(sfu, "bob", "alice", reply, 10).await;

    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let f = video_frame(&mut bob).await;
        assert_eq!(f.len(), 1800, "frames arrive whole");
        seen.extend(frame_number(&f));
    }
    assert!(bob.dropped() > 0, "the simulated loss dropped nothing");
    let nacks = metric_above_zero(sfu, "hpb_sfu_nacks_received_total").await;
    let rtx = metric_above_zero(sfu, "hpb_sfu_retransmitted_packets_total").await;
    // Frames keep flowing after the retransmissions, still whole.
    for _ in 0..20 {
        let f = video_frame(&mut bob).await;
        assert_eq!(f.len(), 1800, "frames arrive whole");
        seen.extend(frame_number(&f));
    }
    // Without RTX, ~10 % of the packets and so ~19 % of the two-packet frames would be
    // missing; with it, only a frame whose retransmission was lost as well can be.
    let (first, last) = (
        *seen.first().expect("frames"),
        *seen.last().expect("frames"),
    );
    let expected = (last - first) / 2 + 1; // the publisher numbers its video frames 2, 4, …
    assert!(
        seen.len() as u64 * 100 >= expected * 90,
        "only {} of {expected} frames arrived (dropped {}, NACKs {nacks}, RTX {rtx})",
        seen.len(),
        bob.dropped()
    );
    event(events, "bob's slow link", |e| {
        matches!(e, hpb_sfu::McuEvent::SlowLink { session, publisher, uplink: false, nacks, .. }
            if session == "bob" && publisher == "alice" && *nacks >= 4)
    })
    .await;
    assert!(metric(sfu, "hpb_sfu_slow_links_total") > 0);
}

/// The SFU keeps 1 s of retransmission history per stream (`RTX_HISTORY`): a NACK that
/// comes at once is answered with a retransmission, one that comes 1.6 s after its packet
/// is not (str0m's own 3 s would still answer it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_older_than_the_history_gets_no_retransmission() {
    let (sfu, _events) = start().await;
    let _publisher = publish(&sfu, "alice").await;
    let reply = sfu.request(subscribe_cmd("bob", "alice", "")).await;
    let (mut bob, _) = answer_offer(&sfu, "bob", "alice", reply).await;
    video_frame(&mut bob).await;

    bob.lose_video_noticed_after(Duration::ZERO);
    let rtx = metric_above_zero(&sfu, "hpb_sfu_retransmitted_packets_total").await;
    let nacks = metric_above_zero(&sfu, "hpb_sfu_nacks_received_total").await;

    bob.lose_video_noticed_after(Duration::from_millis(1600));
    // The NACK count comes from str0m's stats, which follow the NACK's handling: once it
    // has grown, a retransmission for that NACK would have been sent and counted.
    metric_above(&sfu, "hpb_sfu_nacks_received_total", nacks).await;
    assert_eq!(bob.dropped(), 2);
    assert_eq!(
        metric(&sfu, "hpb_sfu_retransmitted_packets_total"),
        rtx,
        "a packet 1.6 s old was retransmitted: {}",
        sfu.metrics()
    );
}
