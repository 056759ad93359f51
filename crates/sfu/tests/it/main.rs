//! Integration tests of hpb-sfu through its public API, with str0m clients on 127.0.0.1.

mod audio;
mod client;
mod lifecycle;
mod media;
mod recovery;
mod transports;

use std::time::{Duration, Instant};

use hpb_sfu::{McuCommand, McuEvent, McuReply, Selection, Sfu, SfuConfig, StreamType};
use tokio::sync::mpsc::UnboundedReceiver;

use client::{Client, ClientEvent};

/// Bounded waits only: generous so a loaded 2-core box does not flake.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub async fn start() -> (Sfu, UnboundedReceiver<McuEvent>) {
    start_with(Duration::from_millis(500)).await
}

pub async fn start_with(publisher_wait: Duration) -> (Sfu, UnboundedReceiver<McuEvent>) {
    init_log();
    Sfu::start(SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        external_ip: None,
        publisher_wait,
        ..SfuConfig::default()
    })
    .await
    .expect("the SFU starts")
}

/// Wait (bounded) for an SFU event matching `pred`, skipping others.
pub async fn event(
    rx: &mut UnboundedReceiver<McuEvent>,
    what: &str,
    mut pred: impl FnMut(&McuEvent) -> bool,
) -> McuEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("SFU event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for SFU event {what}"),
        }
    }
}

/// Publish audio + video + a data channel for `session` and return the running client.
pub async fn publish(sfu: &Sfu, session: &str) -> Client {
    publish_with_sdp(sfu, session).await.0
}

/// [`publish`], also returning the client's offer and the SFU's answer.
pub async fn publish_with_sdp(sfu: &Sfu, session: &str) -> (Client, String, String) {
    let (pending, offer) = client::publisher_offer(true, true, true).await;
    let reply = sfu
        .request(McuCommand::Publish {
            session: session.into(),
            stream: StreamType::Video,
            sid: "1700000000".into(),
            sdp: offer.clone(),
            max_bitrate: 1_000_000,
        })
        .await;
    let McuReply::Answer { sdp } = reply else {
        panic!("publish failed: {reply:?}");
    };
    assert!(sdp.contains("a=ice-lite"), "the SFU is ICE-lite: {sdp}");
    assert!(
        sdp.contains("a=setup:passive"),
        "the SFU is the DTLS server: {sdp}"
    );
    (pending.accept_answer(&sdp), offer, sdp)
}

/// Send the subscriber's answer to an offer from Subscribe.
pub async fn answer_offer(
    sfu: &Sfu,
    subscriber: &str,
    publisher: &str,
    reply: McuReply,
) -> (Client, String) {
    answer_offer_lossy(sfu, subscriber, publisher, reply, 0).await
}

/// Like [`answer_offer`], with a subscriber that drops every `drop_rtp_every`th RTP datagram.
pub async fn answer_offer_lossy(
    sfu: &Sfu,
    subscriber: &str,
    publisher: &str,
    reply: McuReply,
    drop_rtp_every: u64,
) -> (Client, String) {
    let McuReply::Offer { sdp, sid } = reply else {
        panic!("subscribe failed: {reply:?}");
    };
    assert!(!sid.is_empty());
    let (client, answer) = client::subscriber_from_offer_lossy(&sdp, drop_rtp_every).await;
    let r = sfu
        .request(McuCommand::SubscriberAnswer {
            subscriber: subscriber.into(),
            publisher: publisher.into(),
            stream: StreamType::Video,
            sid: sid.clone(),
            sdp: answer,
        })
        .await;
    assert_eq!(r, McuReply::Done);
    (client, sid)
}

/// A Publish of `sdp` as `session`'s video stream (sid "1", no bitrate cap).
pub fn publish_cmd(session: &str, sdp: impl Into<String>) -> McuCommand {
    McuCommand::Publish {
        session: session.into(),
        stream: StreamType::Video,
        sid: "1".into(),
        sdp: sdp.into(),
        max_bitrate: 0,
    }
}

/// Publish `offer` as `session`'s video (no bitrate cap); returns the SFU's answer.
pub async fn publish_answer(sfu: &Sfu, session: &str, offer: String) -> String {
    let reply = sfu.request(publish_cmd(session, offer)).await;
    let McuReply::Answer { sdp } = reply else {
        panic!("publish failed: {reply:?}")
    };
    sdp
}

/// Publish `offer` as alice (video only, no bitrate cap) and return the running publisher.
pub async fn publish_offer(sfu: &Sfu, pending: client::PendingPublisher, offer: String) -> Client {
    let sdp = publish_answer(sfu, "alice", offer).await;
    pending.accept_answer(&sdp)
}

pub fn subscribe_cmd(subscriber: &str, publisher: &str, sid: &str) -> McuCommand {
    McuCommand::Subscribe {
        subscriber: subscriber.into(),
        publisher: publisher.into(),
        stream: StreamType::Video,
        sid: sid.into(),
        selection: Selection::default(),
    }
}

pub async fn subscribe(sfu: &Sfu, subscriber: &str, publisher: &str) -> (Client, String) {
    let reply = sfu.request(subscribe_cmd(subscriber, publisher, "")).await;
    answer_offer(sfu, subscriber, publisher, reply).await
}

/// The value of one `hpb_sfu_*` counter or gauge in the SFU's metrics text.
pub fn metric(sfu: &Sfu, name: &str) -> u64 {
    let text = sfu.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Wait (bounded) until the metric `name` is above zero; returns its value.
pub async fn metric_above_zero(sfu: &Sfu, name: &str) -> u64 {
    metric_above(sfu, name, 0).await
}

/// Wait (bounded) until the metric `name` is above `floor`; returns its value.
pub async fn metric_above(sfu: &Sfu, name: &str, floor: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = metric(sfu, name);
        if v > floor {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name} > {floor}: {}",
            sfu.metrics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until this subscriber got audio and video frames carrying the publisher's payload.
pub async fn expect_media(c: &mut Client) {
    let e = c
        .wait_for("audio", WAIT, |e| {
            matches!(
                e,
                ClientEvent::Media {
                    kind: str0m::media::MediaKind::Audio,
                    ..
                }
            )
        })
        .await;
    let ClientEvent::Media { data, .. } = e else {
        unreachable!()
    };
    assert!(data.starts_with(b"AUDIO-"), "audio payload {data:?}");
    let e = c
        .wait_for("video", WAIT, |e| {
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
    assert!(
        data.windows(6).any(|w| w == b"VIDEO-"),
        "video payload is the publisher's frame"
    );
    assert_eq!(data.len(), 1800, "the whole frame arrives");
}
