//! A str0m WebRTC client for the tests: a full-ICE peer on its own 127.0.0.1 socket, run by
//! a task, that publishes synthetic Opus/VP8 frames and data channel messages or records what
//! it receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What a client saw.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Connected,
    Media {
        kind: MediaKind,
        data: Vec<u8>,
        /// The frame's RTP timestamp as the SFU sent it, and when it arrived here.
        rtp_time: u32,
        at: Instant,
    },
    ChannelOpen(String),
    ChannelData(Vec<u8>),
    /// A REMB the SFU sent to this publisher, bits/s.
    Remb(u64),
    /// The SFU asked this publisher for a keyframe.
    KeyframeRequest,
    /// The SFU ended the connection: DTLS close_notify arrived (str0m `Event::Closed`).
    Closed,
    Disconnected,
    /// The header of an RTP packet that arrived (and decrypted), with when it arrived.
    Rtp {
        kind: MediaKind,
        ssrc: u32,
        seq: u16,
        pt: u8,
        ts: u32,
        at: Instant,
    },
    /// An RTCP sender report that arrived.
    SenderReport {
        ssrc: u32,
        /// Its NTP time as an `Instant` of this process (by the wall clock when it arrived).
        ntp: Instant,
        rtp_time: u32,
        packets: u32,
        octets: u32,
    },
}

pub struct Client {
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// Events received but not yet consumed by a wait.
    history: Vec<ClientEvent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    keyframe: mpsc::UnboundedSender<()>,
    remb: mpsc::UnboundedSender<u64>,
    late_loss: mpsc::UnboundedSender<Duration>,
    /// RTP datagrams from the SFU this client threw away on purpose (simulated loss).
    dropped: Arc<AtomicU64>,
    layers: SentLayers,
    audio_level: SentAudioLevel,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Client {
    /// Make this (subscriber) client send a PLI on its video tracks.
    pub fn request_keyframe(&self) {
        let _ = self.keyframe.send(());
    }

    /// Make this (subscriber) client report a receive estimate of `bps` with REMB on its
    /// video tracks, like a browser whose link got smaller.
    pub fn send_remb(&self, bps: u64) {
        let _ = self.remb.send(bps);
    }

    /// Make this (simulcast publisher) client send only these layers from now on.
    pub fn send_layers(&self, layers: &'static [&'static str]) {
        if let Ok(mut l) = self.layers.lock() {
            *l = layers;
        }
    }

    /// Make this (publisher) client mark its audio frames with this audio level from now on
    /// (`Some(-127)`: digital silence, as a muted microphone sends; `None`: no level).
    pub fn send_audio_level(&self, level: Option<i8>) {
        self.audio_level
            .store(level.map_or(NO_LEVEL, i32::from), Ordering::Relaxed);
    }

    /// Make this (subscriber) client lose the next video RTP datagram and notice it `after`
    /// it arrived: the video datagrams of the next `after` are held back, then taken in
    /// except the first, so the client's NACK for it comes that late (`after` zero: NACKed
    /// at once). str0m NACKs only within the last 100 packets: keep `after` under 2 s.
    pub fn lose_video_noticed_after(&self, after: Duration) {
        let _ = self.late_loss.send(after);
    }

    /// Every event that arrives within `d` (and those received before, not consumed yet).
    pub async fn collect_for(&mut self, d: Duration) -> Vec<ClientEvent> {
        let mut got = std::mem::take(&mut self.history);
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            got.push(e);
        }
        got
    }

    /// How many RTP datagrams the simulated loss dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forget events received so far that no wait consumed.
    pub fn clear_history(&mut self) {
        self.history.clear();
        while self.events.try_recv().is_ok() {}
    }

    /// Wait (bounded) until an event matches.
    pub async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&ClientEvent) -> bool,
    ) -> ClientEvent {
        if let Some(i) = self.history.iter().position(&mut pred) {
            return self.history.remove(i);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(e)) => self.history.push(e),
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

fn crypto() -> Arc<str0m::config::CryptoProvider> {
    Arc::new(str0m::crypto::from_feature_flags())
}

async fn bind() -> (UdpSocket, SocketAddr) {
    bind_on("127.0.0.1:0").await
}

async fn bind_on(at: &str) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind(at).await.expect("bind client socket");
    let addr = socket.local_addr().expect("client addr");
    (socket, addr)
}

fn new_rtc(addr: SocketAddr) -> Rtc {
    new_rtc_with(addr, true)
}

/// Where an ICE-TCP client says it is: active candidates carry the discard port (RFC 6544).
pub const TCP_ACTIVE: &str = "127.0.0.1:9";

/// A client whose only candidate is an active ICE-TCP one, like a browser behind a
/// firewall that lets only TCP out.
fn tcp_only_rtc() -> Rtc {
    let mut rtc = Rtc::builder()
        .set_crypto_provider(crypto())
        .build(Instant::now());
    let c = Candidate::builder()
        .tcp()
        .host(TCP_ACTIVE.parse().expect("addr"))
        .tcptype(str0m::net::TcpType::Active)
        .build()
        .expect("tcp candidate");
    rtc.add_local_candidate(c);
    rtc
}

/// `rid_ext: false` = no rtp-stream-id header extension, like a Chromium SIM publisher.
fn new_rtc_with(addr: SocketAddr, rid_ext: bool) -> Rtc {
    use str0m::rtp::Extension;
    // Raw packets: the RTP headers and RTCP reports the SFU sends, for the tests to read.
    let mut cfg = Rtc::builder()
        .set_crypto_provider(crypto())
        .enable_raw_packets(true);
    if !rid_ext {
        cfg = cfg
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(3, Extension::TransportSequenceNumber)
            .set_extension(4, Extension::RtpMid);
    }
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    rtc
}

/// A publisher whose offer is out, waiting for the SFU's answer.
pub struct PendingPublisher {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    audio: Option<Mid>,
    video: Option<Mid>,
    simulcast: bool,
    legacy_sim: bool,
    /// The simulcast layers announced, lowest first, and those actually sent.
    layers: &'static [&'static str],
    sent_layers: &'static [&'static str],
    tcp: bool,
    codec: &'static str,
}

/// A video-only publisher whose offer has only `codec` ("vp9", "h264" or "av1") and that
/// sends its frames in that codec's framing.
pub async fn publisher_offer_codec(codec: &'static str) -> (PendingPublisher, String) {
    let (socket, addr) = bind().await;
    let cfg = Rtc::builder()
        .set_crypto_provider(crypto())
        .clear_codecs()
        .enable_opus(true, false);
    let cfg = match codec {
        "vp9" => cfg.enable_vp9(true),
        "h264" => cfg.enable_h264(true),
        _ => cfg.enable_av1(true),
    };
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let (mut p, offer) = publisher_from(rtc, socket, addr, false, true, false, false, &[], false);
    p.codec = codec;
    (p, offer)
}

/// A test frame in a codec's framing: H.264 as one Annex B IDR NAL unit, AV1 as one frame
/// OBU with its size; VP8 and VP9 as they are.
fn in_codec(codec: &str, frame: Vec<u8>) -> Vec<u8> {
    match codec {
        "h264" => {
            let mut f = vec![0, 0, 0, 1, 0x65];
            f.extend_from_slice(&frame);
            f
        }
        "av1" => {
            // OBU_FRAME (type 6) with obu_has_size_field, then the LEB128 size.
            let mut f = vec![(6 << 3) | 0x02];
            let mut n = frame.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    f.push(b);
                    break;
                }
                f.push(b | 0x80);
            }
            f.extend_from_slice(&frame);
            f
        }
        _ => frame,
    }
}

/// An audio+video publisher that can reach the SFU only over ICE-TCP.
pub async fn publisher_offer_tcp() -> (PendingPublisher, String) {
    let (socket, _) = bind().await;
    let rtc = tcp_only_rtc();
    publisher_from(
        rtc,
        socket,
        TCP_ACTIVE.parse().expect("addr"),
        true,
        true,
        false,
        false,
        &[],
        true,
    )
}

pub async fn publisher_offer(
    audio: bool,
    video: bool,
    channel: bool,
) -> (PendingPublisher, String) {
    publisher_offer_with(audio, video, channel, false).await
}

/// With `simulcast`, video goes out as two rid layers, `l` and `h`.
pub async fn publisher_offer_with(
    audio: bool,
    video: bool,
    channel: bool,
    simulcast: bool,
) -> (PendingPublisher, String) {
    publisher_offer_inner(audio, video, channel, simulcast, true, &["l", "h"]).await
}

/// A video publisher announcing rid simulcast layers `layers` (lowest first) that sends
/// only `sent` of them (as Chromium when it pauses its top layer).
pub async fn publisher_offer_rid_layers(
    layers: &'static [&'static str],
    sent: &'static [&'static str],
) -> (PendingPublisher, String) {
    let (mut p, offer) = publisher_offer_inner(false, true, false, true, true, layers).await;
    p.sent_layers = sent;
    (p, offer)
}

async fn publisher_offer_inner(
    audio: bool,
    video: bool,
    channel: bool,
    simulcast: bool,
    rid_ext: bool,
    rids: &'static [&'static str],
) -> (PendingPublisher, String) {
    let (socket, addr) = bind().await;
    let rtc = new_rtc_with(addr, rid_ext);
    publisher_from(
        rtc, socket, addr, audio, video, channel, simulcast, rids, false,
    )
}

#[allow(clippy::too_many_arguments)]
fn publisher_from(
    mut rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    audio: bool,
    video: bool,
    channel: bool,
    simulcast: bool,
    rids: &'static [&'static str],
    tcp: bool,
) -> (PendingPublisher, String) {
    let mut change = rtc.sdp_api();
    let layers = simulcast.then(|| {
        let mut s = str0m::media::Simulcast::new();
        for rid in rids {
            s.add_send_layer(str0m::media::SimulcastLayer::new(rid));
        }
        s
    });
    let a =
        audio.then(|| change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let v =
        video.then(|| change.add_media(MediaKind::Video, Direction::SendOnly, None, None, layers));
    if channel {
        change.add_channel("status".to_owned());
    }
    let (offer, pending) = change.apply().expect("an offer");
    (
        PendingPublisher {
            rtc,
            socket,
            addr,
            pending: Some(pending),
            audio: a,
            video: v,
            simulcast,
            legacy_sim: false,
            layers: rids,
            sent_layers: rids,
            tcp,
            codec: "",
        },
        offer.to_sdp_string(),
    )
}

/// SSRCs of the legacy-simulcast publisher's layers, lowest first.
pub const SIM_SSRCS: [u32; 3] = [1111, 2222, 3333];

/// A video publisher that announces its two layers the way Talk munges SDP on Chromium:
/// `a=ssrc-group:SIM low high`, no rids in the SDP.
pub async fn publisher_offer_legacy_sim() -> (PendingPublisher, String) {
    publisher_offer_legacy_sim_layers(&["l", "h"], &["l", "h"]).await
}

/// Like [`publisher_offer_legacy_sim`] with `layers` announced (the SFU names them `l`,
/// `h` or `l`, `m`, `h`) and only `sent` of them sent, as Chromium does at 640x360: three
/// SSRCs in the group, nothing on the third.
pub async fn publisher_offer_legacy_sim_layers(
    layers: &'static [&'static str],
    sent: &'static [&'static str],
) -> (PendingPublisher, String) {
    let (mut p, offer) = publisher_offer_inner(false, true, false, false, false, &[]).await;
    p.simulcast = true;
    p.legacy_sim = true;
    p.layers = layers;
    p.sent_layers = sent;
    let ssrcs = &SIM_SSRCS[..layers.len().min(SIM_SSRCS.len())];
    let group: Vec<String> = ssrcs.iter().map(u32::to_string).collect();
    let mut out = String::new();
    for l in offer.split_inclusive('\n') {
        out.push_str(l);
        if l.starts_with("a=mid:") {
            out.push_str(&format!("a=ssrc-group:SIM {}\r\n", group.join(" ")));
            for ssrc in ssrcs {
                out.push_str(&format!("a=ssrc:{ssrc} cname:sim\r\n"));
            }
        }
    }
    (p, out)
}

impl PendingPublisher {
    /// Apply the answer, then offer again with a video track added (renegotiation).
    pub fn reoffer_with_video(&mut self, sdp: &str) -> String {
        let answer = SdpAnswer::from_sdp_string(sdp).expect("the SFU's answer parses");
        let pending = self.pending.take().expect("an outstanding offer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let mut change = self.rtc.sdp_api();
        self.video =
            Some(change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let (offer, pending) = change.apply().expect("a new offer");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    pub fn accept_answer(mut self, sdp: &str) -> Client {
        let answer = SdpAnswer::from_sdp_string(sdp).expect("the SFU's answer parses");
        let pending = self.pending.take().expect("an outstanding offer");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        if self.legacy_sim
            && let Some(mid) = self.video
        {
            let mut api = self.rtc.direct_api();
            for (ssrc, rid) in SIM_SSRCS.iter().zip(self.layers) {
                api.declare_stream_tx((*ssrc).into(), None, mid, Some((*rid).into()));
            }
        }
        spawn(
            self.rtc,
            self.socket,
            self.addr,
            Sending {
                audio: self.audio,
                video: self.video,
                simulcast: self.simulcast,
                layers: Arc::new(std::sync::Mutex::new(self.sent_layers)),
                audio_level: no_level(),
                drop_rtp_every: 0,
                video_pts: Vec::new(),
                tcp: self.tcp,
                codec: self.codec,
            },
        )
    }
}

/// A subscriber: take the SFU's offer, return the client and its answer. It drops every
/// `drop_rtp_every`th video RTP datagram (media or retransmission) the SFU sends it once
/// connected (0 = none); audio, STUN, DTLS and RTCP always get through.
pub async fn subscriber_from_offer_lossy(sdp: &str, drop_rtp_every: u64) -> (Client, String) {
    subscriber_inner(sdp, drop_rtp_every, false).await
}

/// A subscriber that can reach the SFU only over ICE-TCP.
pub async fn subscriber_from_offer_tcp(sdp: &str) -> (Client, String) {
    subscriber_inner(sdp, 0, true).await
}

/// A subscriber on ::1 (IPv6 media).
pub async fn subscriber_from_offer_v6(sdp: &str) -> (Client, String) {
    subscriber_on(sdp, 0, false, "[::1]:0").await
}

async fn subscriber_inner(sdp: &str, drop_rtp_every: u64, tcp: bool) -> (Client, String) {
    subscriber_on(sdp, drop_rtp_every, tcp, "127.0.0.1:0").await
}

async fn subscriber_on(sdp: &str, drop_rtp_every: u64, tcp: bool, at: &str) -> (Client, String) {
    let (socket, mut addr) = bind_on(at).await;
    let mut rtc = new_rtc(addr);
    if tcp {
        rtc = tcp_only_rtc();
        addr = TCP_ACTIVE.parse().expect("addr");
    }
    let offer = SdpOffer::from_sdp_string(sdp).expect("the SFU's offer parses");
    let answer = rtc.sdp_api().accept_offer(offer).expect("offer accepted");
    let client = spawn(
        rtc,
        socket,
        addr,
        Sending {
            audio: None,
            video: None,
            simulcast: false,
            layers: Default::default(),
            audio_level: no_level(),
            drop_rtp_every,
            video_pts: video_pts(sdp),
            tcp,
            codec: "",
        },
    );
    (client, answer.to_sdp_string())
}

type SentLayers = Arc<std::sync::Mutex<&'static [&'static str]>>;

/// The audio level (RFC 6464, negative dBov) put on audio frames sent; [`NO_LEVEL`]: none.
type SentAudioLevel = Arc<std::sync::atomic::AtomicI32>;
const NO_LEVEL: i32 = i32::MIN;

fn no_level() -> SentAudioLevel {
    Arc::new(std::sync::atomic::AtomicI32::new(NO_LEVEL))
}

struct Sending {
    audio: Option<Mid>,
    video: Option<Mid>,
    simulcast: bool,
    /// The simulcast layers sent (changed by [`Client::send_layers`]).
    layers: SentLayers,
    /// Changed by [`Client::send_audio_level`].
    audio_level: SentAudioLevel,
    drop_rtp_every: u64,
    /// Payload types of the video m-lines (codecs and their RTX).
    video_pts: Vec<u8>,
    /// ICE-TCP: `addr` is the active candidate; the connection opens on the first transmit.
    tcp: bool,
    /// The video codec's framing for the frames sent ("" = VP8-shaped as they are).
    codec: &'static str,
}

/// The client's ICE-TCP connection (RFC 4571 frames), opened towards the SFU's passive
/// candidate when str0m first sends there; frames read arrive on `rx`.
struct TcpLink {
    write: Option<tokio::net::tcp::OwnedWriteHalf>,
    tx: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    rx: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
}

impl TcpLink {
    fn new() -> TcpLink {
        let (tx, rx) = mpsc::unbounded_channel();
        TcpLink {
            write: None,
            tx,
            rx,
        }
    }

    async fn send(&mut self, to: SocketAddr, data: &[u8]) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        if self.write.is_none() {
            let Ok(stream) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let (mut read, write) = stream.into_split();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(len) = read.read_u16().await else {
                        return;
                    };
                    let mut buf = vec![0u8; usize::from(len)];
                    if read.read_exact(&mut buf).await.is_err() || tx.send((to, buf)).is_err() {
                        return;
                    }
                }
            });
            self.write = Some(write);
        }
        if let Some(w) = &mut self.write {
            let mut frame = (data.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(data);
            let _ = w.write_all(&frame).await;
        }
    }
}

/// The payload types listed on the `m=video` lines of an SDP.
fn video_pts(sdp: &str) -> Vec<u8> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m=video "))
        .flat_map(|l| l.split(' ').skip(2))
        .filter_map(|pt| pt.trim().parse().ok())
        .collect()
}

/// The payload type of an RTP packet: not RTCP (RFC 5761 §4: packet types 192..=223), nor
/// STUN or DTLS (RFC 7983: first byte 128..=191 is RTP/RTCP).
fn rtp_pt(data: &[u8]) -> Option<u8> {
    match data {
        [b0, b1, ..] if (128..=191).contains(b0) && !(192..=223).contains(b1) => Some(b1 & 0x7f),
        _ => None,
    }
}

/// Where a simulcast layer's RTP timestamps start: far apart per layer, like Chromium's
/// random starts.
fn layer_ts_base(layer: &str) -> u64 {
    match layer {
        "l" => 3_000_000_000,
        "m" => 1_000_000_000,
        _ => 2_000_000_000,
    }
}

/// A VP8 keyframe header followed by a marker and enough bytes for two RTP packets.
pub fn video_frame(n: u64, layer: &str) -> Vec<u8> {
    let mut f = vec![0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    f.extend_from_slice(format!("VIDEO-{layer}{n}-").as_bytes());
    // Simulcast layers at different rates (25 fps: l 120, m 240, h or none 360 kbit/s).
    let size = match layer {
        "l" => 600,
        "m" => 1200,
        _ => 1800,
    };
    f.resize(size, 0xab);
    f
}

pub fn audio_frame(n: u64) -> Vec<u8> {
    let mut f = format!("AUDIO-{n}-").into_bytes();
    f.resize(120, 0x11);
    f
}

fn first_pt(rtc: &mut Rtc, mid: Mid) -> Option<str0m::media::Pt> {
    let w = rtc.writer(mid)?;
    w.payload_params().next().map(|p| p.pt())
}

fn spawn(rtc: Rtc, socket: UdpSocket, addr: SocketAddr, sending: Sending) -> Client {
    let (tx, events) = mpsc::unbounded_channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let (keyframe, keyframe_rx) = mpsc::unbounded_channel();
    let (remb, remb_rx) = mpsc::unbounded_channel();
    let (late_loss, late_loss_rx) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let layers = sending.layers.clone();
    let audio_level = sending.audio_level.clone();
    tokio::spawn(run(
        rtc,
        socket,
        addr,
        sending,
        tx,
        stop_rx,
        keyframe_rx,
        remb_rx,
        late_loss_rx,
        dropped.clone(),
    ));
    Client {
        events,
        history: Vec::new(),
        stop: Some(stop),
        keyframe,
        remb,
        late_loss,
        dropped,
        layers,
        audio_level,
    }
}

/// Feeds one received datagram to str0m (one it cannot parse is skipped); false when
/// str0m failed.
fn take_in(
    rtc: &mut Rtc,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    data: &[u8],
) -> bool {
    let Ok(contents) = data.try_into() else {
        return true;
    };
    let input = Input::Receive(
        Instant::now(),
        Receive {
            proto,
            source,
            destination,
            contents,
        },
    );
    rtc.handle_input(input).is_ok()
}

/// What a test reads of a raw packet str0m reports: RTP headers and sender reports that
/// arrived.
fn raw_event(rtc: &mut Rtc, raw: str0m::rtp::RawPacket) -> Option<ClientEvent> {
    use str0m::rtp::RawPacket;
    use str0m::rtp::rtcp::Rtcp;
    match raw {
        RawPacket::RtpRx(h, _) => Some(ClientEvent::Rtp {
            kind: {
                let mid = rtc.direct_api().stream_rx(&h.ssrc).map(|s| s.mid());
                mid.and_then(|m| rtc.media(m))
                    .map_or(MediaKind::Audio, |m| m.kind())
            },
            ssrc: *h.ssrc,
            seq: h.sequence_number,
            pt: *h.payload_type,
            ts: h.timestamp,
            at: Instant::now(),
        }),
        RawPacket::RtcpRx(Rtcp::SenderReport(sr)) => {
            let i = sr.sender_info;
            let age = std::time::SystemTime::now()
                .duration_since(i.ntp_time)
                .unwrap_or_default();
            Some(ClientEvent::SenderReport {
                ssrc: *i.ssrc,
                ntp: Instant::now() - age,
                rtp_time: i.rtp_time.numer() as u32,
                packets: i.sender_packet_count,
                octets: i.sender_octet_count,
            })
        }
        _ => None,
    }
}

/// [`Client::lose_video_noticed_after`]: until when video datagrams are held back, and
/// those held.
struct Hold {
    until: Instant,
    held: Vec<(SocketAddr, Vec<u8>)>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    sending: Sending,
    tx: mpsc::UnboundedSender<ClientEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    mut keyframe: mpsc::UnboundedReceiver<()>,
    mut remb: mpsc::UnboundedReceiver<u64>,
    mut late_loss: mpsc::UnboundedReceiver<Duration>,
    dropped: Arc<AtomicU64>,
) {
    let mut holding: Option<Hold> = None;
    let mut rtp_seen: u64 = 0;
    let mut tcp = TcpLink::new();
    let mut video_in: Vec<Mid> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut connected = false;
    let mut channel = None;
    let mut next_media = Instant::now();
    let mut n: u64 = 0;
    loop {
        // Drain output.
        let timeout = loop {
            if !rtc.is_alive() {
                let _ = tx.send(ClientEvent::Disconnected);
                return;
            }
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) if t.proto == Protocol::Tcp => {
                    tcp.send(t.destination, &t.contents).await;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => {
                    let ev = match e {
                        Event::Connected => {
                            connected = true;
                            Some(ClientEvent::Connected)
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            let _ = tx.send(ClientEvent::Disconnected);
                            return;
                        }
                        Event::MediaData(d) => {
                            let kind = rtc
                                .media(d.mid)
                                .map(|m| m.kind())
                                .unwrap_or(MediaKind::Audio);
                            Some(ClientEvent::Media {
                                kind,
                                data: d.data.to_vec(),
                                rtp_time: d.time.numer() as u32,
                                at: d.network_time,
                            })
                        }
                        Event::ChannelOpen(id, label) => {
                            channel = Some(id);
                            Some(ClientEvent::ChannelOpen(label))
                        }
                        Event::ChannelData(d) => Some(ClientEvent::ChannelData(d.data.to_vec())),
                        Event::MediaAdded(m) => {
                            if m.kind == MediaKind::Video && m.direction.is_receiving() {
                                video_in.push(m.mid);
                            }
                            None
                        }
                        Event::KeyframeRequest(_) => Some(ClientEvent::KeyframeRequest),
                        Event::Closed => Some(ClientEvent::Closed),
                        Event::RawPacket(raw) => raw_event(&mut rtc, *raw),
                        Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb {
                            estimate,
                            ..
                        }) => Some(ClientEvent::Remb(estimate.as_u64())),
                        _ => None,
                    };
                    if let Some(ev) = ev {
                        let _ = tx.send(ev);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "client failed");
                    let _ = tx.send(ClientEvent::Disconnected);
                    return;
                }
            }
        };

        // The end of a hold: the first datagram held is lost, the others are taken in.
        if let Some(Hold { until, held }) = &mut holding
            && Instant::now() >= *until
            && !held.is_empty()
        {
            dropped.fetch_add(1, Ordering::Relaxed);
            for (source, data) in std::mem::take(held).into_iter().skip(1) {
                if !take_in(&mut rtc, Protocol::Udp, source, addr, &data) {
                    let _ = tx.send(ClientEvent::Disconnected);
                    return;
                }
            }
            holding = None;
            continue;
        }

        // Publish synthetic media every 20 ms once connected.
        let now = Instant::now();
        if connected && now >= next_media {
            next_media = now + Duration::from_millis(20);
            n += 1;
            let elapsed = now - start;
            if let Some(mid) = sending.audio
                && let Some(pt) = first_pt(&mut rtc, mid)
                && let Some(w) = rtc.writer(mid)
            {
                let t = MediaTime::new(
                    elapsed.as_micros() as u64 * 48 / 1000,
                    Frequency::FORTY_EIGHT_KHZ,
                );
                let level = sending.audio_level.load(Ordering::Relaxed);
                let w = match i8::try_from(level) {
                    Ok(l) => w.audio_level(l, l > -127),
                    Err(_) => w,
                };
                let _ = w.write(pt, now, t, audio_frame(n));
            }
            if n.is_multiple_of(2)
                && let Some(mid) = sending.video
                && let Some(pt) = first_pt(&mut rtc, mid)
            {
                let t = MediaTime::new(
                    elapsed.as_micros() as u64 * 90 / 1000,
                    Frequency::NINETY_KHZ,
                );
                if sending.simulcast {
                    let layers = sending.layers.lock().map(|l| *l).unwrap_or_default();
                    for layer in layers {
                        // Each layer on its own RTP timeline, as Chromium sends them.
                        let t =
                            MediaTime::new(t.numer() + layer_ts_base(layer), Frequency::NINETY_KHZ);
                        if let Some(w) = rtc.writer(mid) {
                            let _ = w
                                .rid((*layer).into())
                                .write(pt, now, t, video_frame(n, layer));
                        }
                    }
                } else if let Some(w) = rtc.writer(mid) {
                    let _ = w.write(pt, now, t, in_codec(sending.codec, video_frame(n, "")));
                }
            }
            if n.is_multiple_of(5)
                && let Some(id) = channel
                && let Some(mut c) = rtc.channel(id)
            {
                let _ = c.write(
                    false,
                    format!("{{\"type\":\"status\",\"n\":{n}}}").as_bytes(),
                );
            }
            continue;
        }

        let wake = if connected {
            timeout.min(next_media)
        } else {
            timeout
        };
        let wake = holding.as_ref().map_or(wake, |h| wake.min(h.until));
        let wake = wake.max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            _ = &mut stop => return,
            Some(bps) = remb.recv() => {
                let mut api = rtc.direct_api();
                for mid in &video_in {
                    if let Some(rx) = api.stream_rx_by_mid(*mid, None) {
                        rx.request_remb(str0m::bwe::Bitrate::bps(bps));
                    }
                }
            }
            Some(after) = late_loss.recv() => {
                holding = Some(Hold { until: Instant::now() + after, held: Vec::new() });
            }
            Some(()) = keyframe.recv() => {
                for mid in &video_in {
                    if let Some(mut w) = rtc.writer(*mid) {
                        let _ = w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli);
                    }
                }
            }
            Some((source, data)) = tcp.rx.recv(), if sending.tcp => {
                if !take_in(&mut rtc, Protocol::Tcp, source, addr, &data) {
                    let _ = tx.send(ClientEvent::Disconnected);
                    return;
                }
            }
            r = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = r else { continue };
                let Some(data) = buf.get(..len) else { continue };
                let video_rtp = rtp_pt(data).is_some_and(|pt| sending.video_pts.contains(&pt));
                if let Some(h) = &mut holding
                    && video_rtp
                {
                    h.held.push((source, data.to_vec()));
                    continue;
                }
                if sending.drop_rtp_every > 0
                    && connected
                    && video_rtp
                {
                    rtp_seen += 1;
                    if rtp_seen.is_multiple_of(sending.drop_rtp_every) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                if !take_in(&mut rtc, Protocol::Udp, source, addr, data) {
                    let _ = tx.send(ClientEvent::Disconnected);
                    return;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                    let _ = tx.send(ClientEvent::Disconnected);
                    return;
                }
            }
        }
    }
}
