//! The str0m peers of the SFU load generator, one tokio task each on its own 127.0.0.1 UDP
//! socket, in RTP mode (no frame assembly, no packetizer): publishers send the synthetic
//! VP8/Opus RTP of [`super::payload`], subscribers count what arrives and record each frame's
//! and audio packet's one-way latency.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::payload::{self, Vp8};

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub fps: u32,
    pub video_kbps: u32,
    /// A keyframe (five times a delta frame) this often, and on every PLI/FIR.
    pub keyframe_every: Duration,
    /// The microphone is muted: Opus at the audio level of digital silence (-127 dBov), as
    /// a browser sends with its audio track disabled; otherwise speech (-30 dBov).
    pub muted: bool,
}

impl Shape {
    fn delta_bytes(&self) -> usize {
        // A keyframe every `keyframe_every` costs 4 extra delta frames.
        let frames_per_gop = (self.keyframe_every.as_secs_f64() * f64::from(self.fps)).max(1.0);
        let per_second = f64::from(self.video_kbps) * 1000.0 / 8.0;
        let per_frame = per_second / f64::from(self.fps.max(1));
        (per_frame * frames_per_gop / (frames_per_gop + 4.0)) as usize
    }
}

fn config() -> RtcConfig {
    Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

async fn bind(ip: IpAddr) -> Result<(UdpSocket, SocketAddr, Rtc)> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .context("binding a client UDP socket")?;
    let addr = socket.local_addr()?;
    let mut rtc = config().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").context("host candidate")?);
    Ok((socket, addr, rtc))
}

/// A str0m connection with its socket, not yet running.
pub struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    /// Payload types of the audio m-line (everything else is video).
    audio_pts: Vec<Pt>,
}

/// A publisher whose offer is out.
pub struct PendingPublisher {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    pending: SdpPendingOffer,
    audio: Mid,
    video: Mid,
}

/// A publisher offering one Opus and one VP8 track, send-only.
pub async fn publisher_offer(ip: IpAddr) -> Result<(PendingPublisher, String)> {
    let (socket, addr, mut rtc) = bind(ip).await?;
    let mut change = rtc.sdp_api();
    let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().context("no offer")?;
    Ok((
        PendingPublisher {
            rtc,
            socket,
            addr,
            pending,
            audio,
            video,
        },
        offer.to_sdp_string(),
    ))
}

impl PendingPublisher {
    pub fn accept_answer(mut self, sdp: &str) -> Result<(Peer, Mid, Mid)> {
        let answer = SdpAnswer::from_sdp_string(sdp).context("the server's answer")?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, answer)
            .context("accepting the answer")?;
        Ok((
            Peer {
                rtc: self.rtc,
                socket: self.socket,
                addr: self.addr,
                audio_pts: Vec::new(),
            },
            self.audio,
            self.video,
        ))
    }
}

/// A subscriber answering the server's offer; returns the peer and the answer SDP.
pub async fn subscriber_from_offer(ip: IpAddr, sdp: &str) -> Result<(Peer, String)> {
    let (socket, addr, mut rtc) = bind(ip).await?;
    let offer = SdpOffer::from_sdp_string(sdp).context("the server's offer")?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .context("accepting the offer")?;
    let audio_pts = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .flat_map(|l| l.split(' ').skip(2))
        .filter_map(|pt| pt.trim().parse::<u8>().ok())
        .map(Pt::from)
        .collect();
    Ok((
        Peer {
            rtc,
            socket,
            addr,
            audio_pts,
        },
        answer.to_sdp_string(),
    ))
}

/// Parses a trickled candidate (`candidate:…`, with or without the prefix).
pub fn parse_candidate(s: &str) -> Option<Candidate> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = s.strip_prefix("a=").unwrap_or(s);
    let full = if s.starts_with("candidate:") {
        s.to_string()
    } else {
        format!("candidate:{s}")
    };
    Candidate::from_sdp_string(&full).ok()
}

/// Live counters of a publisher.
#[derive(Default)]
pub struct PubStats {
    pub connected: AtomicBool,
    /// The number of the next video frame / audio packet.
    pub next_frame: AtomicU32,
    pub next_audio: AtomicU32,
    pub keyframe_requests: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Video frame period multiplier (0 or 1 = `fps`); the low-rate phase raises it.
    pub slowdown: AtomicU32,
}

/// Live counters of a subscriber.
#[derive(Default)]
pub struct SubStats {
    pub connected: AtomicBool,
    /// RTP packets (media, any kind) received so far.
    pub packets: AtomicU64,
    pub video_frames: AtomicU64,
    pub audio_packets: AtomicU64,
}

/// What a subscriber received, returned when it stops.
#[derive(Default, Debug)]
pub struct SubReport {
    /// `(frame number, one-way latency µs)` of every complete video frame.
    pub video: Vec<(u32, u32)>,
    /// `(packet number, one-way latency µs)` of every audio packet.
    pub audio: Vec<(u32, u32)>,
    /// Video packets whose RTP sequence number skipped (a gap before them).
    pub seq_gaps: u64,
}

pub type Candidates = mpsc::UnboundedReceiver<Candidate>;

/// Runs a publisher until `stop`.
pub fn spawn_publisher(
    peer: Peer,
    mids: (Mid, Mid),
    shape: Shape,
    candidates: Candidates,
    stop: watch::Receiver<bool>,
) -> (Arc<PubStats>, tokio::task::JoinHandle<Result<()>>) {
    let stats = Arc::new(PubStats::default());
    let role = Role::Publisher(Box::new(Sender::new(mids, shape, stats.clone())));
    let task = tokio::spawn(async move {
        run(peer, role, candidates, stop).await?;
        Ok(())
    });
    (stats, task)
}

/// Runs a subscriber until `stop`, then returns what it received.
pub fn spawn_subscriber(
    peer: Peer,
    candidates: Candidates,
    stop: watch::Receiver<bool>,
) -> (Arc<SubStats>, tokio::task::JoinHandle<Result<SubReport>>) {
    let stats = Arc::new(SubStats::default());
    let role = Role::Subscriber(Box::new(Receiver {
        stats: stats.clone(),
        report: SubReport::default(),
        video: Vec::new(),
    }));
    let task = tokio::spawn(async move {
        match run(peer, role, candidates, stop).await? {
            Role::Subscriber(r) => Ok(r.report),
            Role::Publisher(_) => Ok(SubReport::default()),
        }
    });
    (stats, task)
}

enum Role {
    Publisher(Box<Sender>),
    Subscriber(Box<Receiver>),
}

impl Role {
    /// Handles one str0m event; true once connected.
    fn event(&mut self, e: Event, audio_pts: &[Pt]) -> bool {
        match (e, self) {
            (Event::Connected, Role::Publisher(s)) => {
                s.stats.connected.store(true, Ordering::Relaxed);
                true
            }
            (Event::Connected, Role::Subscriber(r)) => {
                r.stats.connected.store(true, Ordering::Relaxed);
                true
            }
            (Event::RtpPacket(p), Role::Subscriber(r)) => {
                r.packet(&p, audio_pts);
                false
            }
            (Event::KeyframeRequest(_), Role::Publisher(s)) => {
                s.keyframe_wanted = true;
                s.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => false,
        }
    }
}

struct Sender {
    audio: Mid,
    video: Mid,
    shape: Shape,
    stats: Arc<PubStats>,
    audio_pt: Option<Pt>,
    video_pt: Option<Pt>,
    audio_seq: u64,
    video_seq: u64,
    frame: u32,
    audio_n: u32,
    next_audio: Instant,
    next_video: Instant,
    last_keyframe: Option<Instant>,
    keyframe_wanted: bool,
    started: Instant,
}

impl Sender {
    fn new(mids: (Mid, Mid), shape: Shape, stats: Arc<PubStats>) -> Sender {
        let now = Instant::now();
        Sender {
            audio: mids.0,
            video: mids.1,
            shape,
            stats,
            audio_pt: None,
            video_pt: None,
            audio_seq: 1,
            video_seq: 1,
            frame: 0,
            audio_n: 0,
            next_audio: now,
            next_video: now,
            last_keyframe: None,
            keyframe_wanted: true,
            started: now,
        }
    }

    fn next_due(&self) -> Instant {
        self.next_audio.min(self.next_video)
    }

    /// Writes whatever is due at `now`.
    fn send_due(&mut self, rtc: &mut Rtc, now: Instant) {
        if self.audio_pt.is_none() {
            let pt = |c: Codec| {
                rtc.codec_config()
                    .find(|p| p.spec().codec == c)
                    .map(|p| p.pt())
            };
            self.audio_pt = pt(Codec::Opus);
            self.video_pt = pt(Codec::Vp8);
            self.started = now;
            self.next_audio = now;
            self.next_video = now;
        }
        let elapsed = now - self.started;
        if now >= self.next_audio
            && let Some(pt) = self.audio_pt
        {
            self.next_audio += Duration::from_millis(20);
            let n = self.audio_n;
            self.audio_n += 1;
            let ts = (u64::from(n) * 960) as u32;
            let data = payload::audio_packet(n, payload::now_us());
            let level = ExtensionValues {
                audio_level: Some(if self.shape.muted { -127 } else { -30 }),
                voice_activity: Some(!self.shape.muted),
                ..Default::default()
            };
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(self.audio, None) {
                tx.write_rtp(
                    RtpWrite::new(pt, self.audio_seq.into(), ts, now, data).ext_vals(level),
                );
                self.audio_seq += 1;
                self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.next_audio.store(self.audio_n, Ordering::Relaxed);
        }
        if now >= self.next_video
            && let Some(pt) = self.video_pt
        {
            let slowdown = self.stats.slowdown.load(Ordering::Relaxed).max(1);
            self.next_video +=
                Duration::from_secs_f64(f64::from(slowdown) / f64::from(self.shape.fps.max(1)));
            let periodic = self
                .last_keyframe
                .is_none_or(|t| now - t >= self.shape.keyframe_every);
            // Answer keyframe requests at most every 300 ms, as browsers do.
            let requested = self.keyframe_wanted
                && self
                    .last_keyframe
                    .is_none_or(|t| now - t >= Duration::from_millis(300));
            let keyframe = periodic || requested;
            if keyframe {
                self.last_keyframe = Some(now);
                self.keyframe_wanted = false;
            }
            let size = self.shape.delta_bytes() * if keyframe { 5 } else { 1 };
            let n = self.frame;
            self.frame += 1;
            let ts = (elapsed.as_micros() as u64 * 9 / 100) as u32;
            let packets = payload::video_frame(n, keyframe, size, payload::now_us(), n as u16);
            let last = packets.len().saturating_sub(1);
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(self.video, None) {
                for (i, p) in packets.into_iter().enumerate() {
                    tx.write_rtp(
                        RtpWrite::new(pt, self.video_seq.into(), ts, now, p)
                            .marker(i == last)
                            .nackable(true),
                    );
                    self.video_seq += 1;
                    self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.stats.next_frame.store(self.frame, Ordering::Relaxed);
        }
        // Never fall behind by more than one period (a stalled task does not burst).
        if self.next_audio + Duration::from_millis(100) < now {
            self.next_audio = now;
        }
        if self.next_video + Duration::from_millis(100) < now {
            self.next_video = now;
        }
    }
}

struct VideoRx {
    ssrc: Ssrc,
    frame: Option<(u32, u64)>,
    last_seq: u64,
    contiguous: bool,
}

struct Receiver {
    stats: Arc<SubStats>,
    report: SubReport,
    video: Vec<VideoRx>,
}

impl Receiver {
    fn packet(&mut self, p: &str0m::rtp::RtpPacket, audio_pts: &[Pt]) {
        if p.payload.is_empty() {
            return; // padding / probes
        }
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        let arrived = payload::at_us(p.timestamp);
        let latency = |sent: u64| arrived.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
        if audio_pts.contains(&p.header.payload_type) {
            if let Some((n, sent)) = payload::parse_audio(&p.payload) {
                self.report.audio.push((n, latency(sent)));
                self.stats.audio_packets.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let ssrc = p.header.ssrc;
        let seq = *p.seq_no;
        let i = match self.video.iter().position(|v| v.ssrc == ssrc) {
            Some(i) => i,
            None => {
                self.video.push(VideoRx {
                    ssrc,
                    frame: None,
                    last_seq: seq.wrapping_sub(1),
                    contiguous: false,
                });
                self.video.len() - 1
            }
        };
        let Some(v) = self.video.get_mut(i) else {
            return;
        };
        let in_order = seq == v.last_seq.wrapping_add(1);
        if !in_order && seq > v.last_seq {
            self.report.seq_gaps += 1;
        }
        v.last_seq = v.last_seq.max(seq);
        match payload::parse_vp8(&p.payload) {
            Vp8::Start { n, sent_us } => {
                v.frame = Some((n, sent_us));
                v.contiguous = true;
            }
            Vp8::Continuation => v.contiguous &= in_order,
            Vp8::Foreign => v.frame = None,
        }
        if p.header.marker
            && let Some((n, sent)) = v.frame.take()
            && v.contiguous
        {
            self.report.video.push((n, latency(sent)));
            self.stats.video_frames.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Drains str0m's output: sends datagrams, handles events; returns the next timeout.
fn drain(
    rtc: &mut Rtc,
    socket: &UdpSocket,
    role: &mut Role,
    audio_pts: &[Pt],
    connected: &mut bool,
) -> Result<Option<Instant>> {
    loop {
        if !rtc.is_alive() {
            return Ok(None);
        }
        match rtc.poll_output().context("str0m")? {
            Output::Timeout(t) => return Ok(Some(t)),
            Output::Transmit(t) => {
                // Loopback UDP does not block; a full buffer is loss the report shows.
                let _ = socket.try_send_to(&t.contents, t.destination);
            }
            Output::Event(e) => *connected |= role.event(e, audio_pts),
        }
    }
}

async fn run(
    peer: Peer,
    mut role: Role,
    mut candidates: Candidates,
    mut stop: watch::Receiver<bool>,
) -> Result<Role> {
    let Peer {
        mut rtc,
        socket,
        addr,
        audio_pts,
    } = peer;
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    // str0m's clock is where the last input left it (the offer was made before the answer
    // came): without a fresh timeout the ICE agent's first check waits for the old timer.
    rtc.handle_input(Input::Timeout(Instant::now()))
        .context("str0m timeout")?;
    loop {
        let Some(timeout) = drain(&mut rtc, &socket, &mut role, &audio_pts, &mut connected)? else {
            return Ok(role);
        };
        let now = Instant::now();
        let mut wake = timeout;
        if connected && let Role::Publisher(s) = &mut role {
            if now >= s.next_due() {
                s.send_due(&mut rtc, now);
                continue;
            }
            wake = wake.min(s.next_due());
        }
        let wake = wake.max(now + Duration::from_micros(200));
        tokio::select! {
            _ = stop.changed() => return Ok(role),
            Some(c) = candidates.recv() => rtc.add_remote_candidate(c),
            r = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = r else { continue };
                input(&mut rtc, &buf[..len], source, addr)?;
                // Take whatever else is queued before waiting again.
                for _ in 0..64 {
                    if drain(&mut rtc, &socket, &mut role, &audio_pts, &mut connected)?.is_none() {
                        return Ok(role);
                    }
                    let Ok((len, source)) = socket.try_recv_from(&mut buf) else { break };
                    input(&mut rtc, &buf[..len], source, addr)?;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                rtc.handle_input(Input::Timeout(Instant::now())).context("str0m timeout")?;
            }
        }
    }
}

fn input(rtc: &mut Rtc, data: &[u8], source: SocketAddr, addr: SocketAddr) -> Result<()> {
    let Ok(contents) = data.try_into() else {
        return Ok(());
    };
    rtc.handle_input(Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source,
            destination: addr,
            contents,
        },
    ))
    .context("str0m input")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickled_candidates_parse_with_or_without_prefix() {
        let line = "candidate:1 1 udp 2015363327 192.0.2.2 56475 typ host";
        let a = parse_candidate(line).expect("with prefix");
        let b = parse_candidate(&line["candidate:".len()..]).expect("without prefix");
        assert_eq!(a.addr(), b.addr());
        assert!(parse_candidate("a=candidate:1 1 udp 1 127.0.0.1 9 typ host").is_some());
        assert!(parse_candidate("").is_none());
    }

    #[test]
    fn frame_sizes_average_to_the_bitrate() {
        let s = Shape {
            fps: 30,
            video_kbps: 1500,
            keyframe_every: Duration::from_secs(2),
            muted: false,
        };
        // 60 frames per 2 s, one of them 5x: 64 delta frames' worth of bytes.
        let bytes = s.delta_bytes() * 64;
        let target = 1_500_000 / 8 * 2;
        assert!(bytes.abs_diff(target) < 64, "{bytes} vs {target}");
    }
}
