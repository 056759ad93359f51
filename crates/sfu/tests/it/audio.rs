//! Silent audio: thinning (`SfuConfig::thin_silent_audio`), what of a muted publisher's
//! audio reaches a subscriber with the option and without it; and Opus DTX asked of
//! publishers (`SfuConfig::opus_dtx`).

use hpb_sfu::{Sfu, SfuConfig};
use str0m::media::MediaKind;

use crate::client::ClientEvent;
use crate::*;

/// The numbers of the publisher's audio frames (`AUDIO-<n>-`) among `events`.
fn audio_numbers(events: &[ClientEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media {
                kind: MediaKind::Audio,
                data,
                ..
            } => std::str::from_utf8(data.strip_prefix(b"AUDIO-")?)
                .ok()?
                .split('-')
                .next()?
                .parse()
                .ok(),
            _ => None,
        })
        .collect()
}

/// A muted publisher (every audio frame at -127 dBov) and one subscriber getting its media.
async fn muted_publisher_and_viewer(thin: bool) -> (Sfu, Client, Client) {
    init_log();
    let (sfu, _events) = Sfu::start(SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        thin_silent_audio: thin,
        ..SfuConfig::default()
    })
    .await
    .expect("the SFU starts");
    let publisher = publish(&sfu, "alice").await;
    publisher.send_audio_level(Some(-127));
    let (mut viewer, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut viewer).await;
    (sfu, publisher, viewer)
}

/// Differences between neighbours.
fn steps(n: &[u64]) -> Vec<u64> {
    n.windows(2).map(|w| w[1].saturating_sub(w[0])).collect()
}

/// The audio frames that reach `viewer` within `d`: at least ten, none left out.
async fn expect_every_frame(viewer: &mut Client, d: Duration, what: &str) {
    viewer.clear_history();
    let got = audio_numbers(&viewer.collect_for(d).await);
    assert!(got.len() >= 10, "{what} arrives: {got:?}");
    assert!(
        steps(&got).iter().all(|&s| s == 1),
        "no {what} frame is left out: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_thinning_silence_arrives_sparsely_and_speech_in_full() {
    let (sfu, publisher, mut viewer) = muted_publisher_and_viewer(true).await;
    viewer.clear_history();
    let silent = audio_numbers(&viewer.collect_for(Duration::from_secs(2)).await);
    // Sent every 20 ms, forwarded once per 400 ms: about one in twenty, never neighbours.
    assert!(silent.len() >= 2, "some silence still arrives: {silent:?}");
    let span = silent.last().unwrap_or(&0) - silent.first().unwrap_or(&0);
    assert!(
        steps(&silent).iter().all(|&s| s >= 5) && (silent.len() as u64) <= span / 5 + 1,
        "silent frames are thinned: {silent:?}"
    );
    assert!(metric(&sfu, "hpb_sfu_silent_audio_thinned_total") > 0);

    // The microphone is unmuted: every frame from then on arrives.
    publisher.send_audio_level(Some(-30));
    viewer
        .wait_for("speech", WAIT, |e| {
            !audio_numbers(std::slice::from_ref(e)).is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    expect_every_frame(&mut viewer, Duration::from_secs(1), "speech").await;
}

/// The sequence numbers of the audio RTP packets among `events`.
fn audio_seqs(events: &[ClientEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Rtp {
                kind: MediaKind::Audio,
                seq,
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinned_silence_leaves_no_gap_in_the_viewers_sequence_numbers() {
    // The viewer's jitter buffer would take each packet left out for a lost one (and
    // conceal it, and count it as loss): the numbering closes up behind what is thinned.
    let (_sfu, _publisher, mut viewer) = muted_publisher_and_viewer(true).await;
    viewer.clear_history();
    let seqs = audio_seqs(&viewer.collect_for(Duration::from_secs(2)).await);
    assert!(
        (2..=10).contains(&seqs.len()),
        "a few silent packets in 2 s: {seqs:?}"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "consecutive sequence numbers: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_silence_is_forwarded_in_full_as_janus_does() {
    let (sfu, _publisher, mut viewer) = muted_publisher_and_viewer(false).await;
    expect_every_frame(&mut viewer, Duration::from_secs(1), "silence").await;
    assert_eq!(metric(&sfu, "hpb_sfu_silent_audio_thinned_total"), 0);
}

/// The `a=fmtp` parameters of Opus in `sdp`.
fn opus_fmtp(sdp: &str) -> String {
    let pt = sdp
        .lines()
        .find_map(|l| {
            let (pt, codec) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            codec
                .to_ascii_lowercase()
                .starts_with("opus/")
                .then(|| pt.to_owned())
        })
        .unwrap_or_else(|| panic!("no Opus in {sdp}"));
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")))
        .unwrap_or_else(|| panic!("no fmtp for Opus ({pt}) in {sdp}"))
        .to_owned()
}

/// The SFU's answer to a publisher's offer, with `opus_dtx` or without, and the publisher
/// with that answer applied.
async fn publish_with_dtx(opus_dtx: bool) -> (Sfu, Client, String) {
    init_log();
    let (sfu, _events) = Sfu::start(SfuConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        opus_dtx,
        ..SfuConfig::default()
    })
    .await
    .expect("the SFU starts");
    let (publisher, offer, answer) = publish_with_sdp(&sfu, "alice").await;
    assert!(
        !opus_fmtp(&offer).contains("usedtx"),
        "the client does not ask: {offer}"
    );
    (sfu, publisher, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_opus_dtx_the_answer_asks_the_publisher_for_dtx_and_the_call_works() {
    let (sfu, _publisher, answer) = publish_with_dtx(true).await;
    let fmtp = opus_fmtp(&answer);
    assert!(fmtp.contains("usedtx=1"), "DTX asked for: {fmtp}");
    assert!(
        fmtp.contains("useinbandfec=1") && fmtp.contains("minptime=10"),
        "the rest of Opus' parameters stay: {fmtp}"
    );
    let (mut viewer, _) = subscribe(&sfu, "bob", "alice").await;
    expect_media(&mut viewer).await;
    expect_every_frame(&mut viewer, Duration::from_secs(1), "audio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_answer_does_not_ask_for_dtx() {
    let (_sfu, _publisher, answer) = publish_with_dtx(false).await;
    let fmtp = opus_fmtp(&answer);
    assert!(!fmtp.contains("usedtx"), "no DTX asked for: {fmtp}");
}
