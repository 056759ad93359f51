//! One client connection of the SFU (a publisher or a subscriber): its str0m `Rtc`, the
//! per-role forwarding state (a subscriber's outgoing streams are sent by the SFU itself,
//! see [`crate::egress`]), and panic-guarded calls into str0m that turn its output into
//! datagrams on the shared socket and [`Ev`]s for the worker.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpb_proto::mcu::StreamType;
use str0m::bwe::BweKind;
use str0m::change::SdpPendingOffer;
use str0m::channel::{ChannelData, ChannelId};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequest, MediaKind, Mid, Rid};
use str0m::net::Protocol;
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::rtp::{RawPacket, RtpPacket};
use str0m::{Event, Input, Output, Rtc};

use crate::bwe::{Estimate, LayerCap, LayerRates};
use crate::egress::Egress;
use crate::key_tap::KeySlot;
use crate::metrics::{Metrics, gauge};
use crate::net::Net;
use crate::recovery::NackTally;
use crate::srtp_tx::SrtpTx;

pub(crate) type PeerId = u64;

/// The transport, our address and the client's that a connection's media goes on.
pub(crate) type MediaPath = (Protocol, SocketAddr, SocketAddr);

/// What a peer's str0m instance reported that the worker acts on.
// Events live briefly in one reused Vec; boxing a packet would allocate per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ev {
    Connected,
    MediaAdded {
        mid: Mid,
        kind: MediaKind,
    },
    /// A publisher's RTP packet (str0m's RTP mode: decrypted, not depacketized).
    Rtp(RtpPacket),
    /// A subscriber's NACK for one of the streams the SFU sends it.
    Nack(Nack),
    KeyframeRequest(KeyframeRequest),
    ChannelOpen(ChannelId, String),
    ChannelData(ChannelData),
    /// Many NACKs in the last stats interval (Janus' `slowlink`).
    SlowLink {
        uplink: bool,
        nacks: u64,
    },
}

/// How many due timeouts one poll handles itself before leaving the rest to the timer.
const IMMEDIATE_TIMEOUTS: u32 = 4;

/// NACKs per stats interval (one second) from which a link counts as slow (what Janus
/// deployments commonly set as `slowlink_threshold`).
pub(crate) const SLOW_LINK_NACKS: u64 = 4;

/// At most one slow-link report per peer in this time.
const SLOW_LINK_EVERY: Duration = Duration::from_secs(5);

/// Why a peer must be closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerFailure {
    #[error("str0m panicked")]
    Panic,
    #[error("str0m error: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("the connection is closed")]
    NotAlive,
}

/// How long a simulcast layer may go without a frame and still count as being sent.
/// Chromium sends fewer legacy SIM layers than announced for small frames, and pauses
/// layers when its bandwidth estimate drops: viewers get the best layer actually sent.
pub(crate) const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// An incoming track of a publisher.
pub(crate) struct TrackIn {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Simulcast layers announced or seen so far, lowest first.
    pub rids: Vec<Rid>,
    /// When each simulcast layer last delivered a frame.
    pub layer_seen: Vec<(Rid, Instant)>,
    /// The last keyframe request per layer (`None`: the track without simulcast).
    pub last_keyframe_request: Vec<(Option<Rid>, Instant)>,
    /// The rate each layer arrives at.
    pub rates: LayerRates,
    /// Media arrives (Janus' `media` `receiving`), and when the last frame did.
    pub receiving: bool,
    pub last_frame: Option<Instant>,
    /// Audio: what of a silent stretch is forwarded (with `thin_silent_audio`).
    pub silence: crate::silence::SilenceThinner,
    /// The codec and clock rate of the last payload type seen (found in the publisher's
    /// negotiated parameters).
    pub codec: Option<(u8, Codec, u32)>,
}

impl TrackIn {
    pub fn new(mid: Mid, kind: MediaKind, mut rids: Vec<Rid>) -> TrackIn {
        rids.sort_by_key(|r| rid_rank(r));
        TrackIn {
            mid,
            kind,
            rids,
            layer_seen: Vec::new(),
            last_keyframe_request: Vec::new(),
            rates: LayerRates::default(),
            receiving: false,
            last_frame: None,
            silence: Default::default(),
            codec: None,
        }
    }

    /// The codec and clock rate of payload type `pt`, from `params` (remembered).
    pub fn codec_of(&mut self, pt: u8, params: &[PayloadParams]) -> Option<(Codec, u32)> {
        if let Some((p, c, r)) = self.codec
            && p == pt
        {
            return Some((c, r));
        }
        let spec = params.iter().find(|p| *p.pt() == pt)?.spec();
        let found = (spec.codec, spec.clock_rate.get());
        self.codec = Some((pt, found.0, found.1));
        Some(found)
    }

    /// A frame of layer `rid` arrived at `now`.
    pub fn saw_layer(&mut self, rid: Rid, now: Instant) {
        if !self.rids.contains(&rid) {
            self.rids.push(rid);
            self.rids.sort_by_key(|r| rid_rank(r));
        }
        match self.layer_seen.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, t)) => *t = now,
            None => self.layer_seen.push((rid, now)),
        }
    }

    /// Whether layer `rid` delivered a frame within [`LAYER_IDLE`] before `now`.
    pub fn layer_active(&self, rid: Rid, now: Instant) -> bool {
        self.layer_seen
            .iter()
            .any(|(r, t)| *r == rid && now.saturating_duration_since(*t) < LAYER_IDLE)
    }

    /// The layer a viewer wanting `substream` gets now (see `pick_rid`).
    pub fn choose_layer(&self, substream: Option<u8>, now: Instant) -> Option<Rid> {
        crate::worker::pick_rid(&self.rids, substream, |r| self.layer_active(r, now))
    }

    /// Like [`TrackIn::choose_layer`], for a viewer with estimate `est` that gets layer
    /// `current` now: at most the layer its [`LayerCap`] allows (see `bwe`).
    pub fn choose_layer_within(
        &self,
        substream: Option<u8>,
        now: Instant,
        est: &Estimate,
        cap: &mut LayerCap,
        current: Option<Rid>,
    ) -> Option<Rid> {
        let wanted = self.choose_layer(substream, now)?;
        let top = self.rids.iter().position(|r| *r == wanted)?;
        let index = |r: Rid| self.rids.iter().position(|x| *x == r);
        let rid = |i: usize| self.rids.get(i).copied();
        let picked = cap.target(
            now,
            est,
            |i| rid(i).map_or(0, |r| self.rates.bps(r)),
            top,
            |i| rid(i).is_some_and(|r| self.layer_active(r, now)),
            current.and_then(index),
        );
        picked.and_then(rid).or(Some(wanted))
    }

    /// Whether a keyframe may be asked for on layer `rid` now (at most once per
    /// `interval` per layer); if so, the request is noted.
    pub fn keyframe_request_due(
        &mut self,
        rid: Option<Rid>,
        now: Instant,
        interval: Duration,
    ) -> bool {
        match self
            .last_keyframe_request
            .iter_mut()
            .find(|(r, _)| *r == rid)
        {
            Some((_, t)) if now.saturating_duration_since(*t) < interval => false,
            Some((_, t)) => {
                *t = now;
                true
            }
            None => {
                self.last_keyframe_request.push((rid, now));
                true
            }
        }
    }
}

pub(crate) struct PublisherState {
    pub tracks: Vec<TrackIn>,
    pub subscribers: Vec<PeerId>,
    /// Negotiated codecs of the publisher, used to make subscriber offers that match.
    pub params: Vec<PayloadParams>,
    pub up_announced: bool,
    /// The incoming SSRCs seen, with their track and simulcast layer.
    pub ssrcs: Vec<(u32, Mid, Option<Rid>)>,
}

/// A send-only track of a subscriber fed by publisher track `source`.
pub(crate) struct TrackOut {
    pub mid: Mid,
    pub source: Mid,
    /// The simulcast layer forwarded now (`None`: none yet, or no simulcast).
    pub layer: Option<Rid>,
    /// The incoming SSRC forwarded now: a new one (a layer switch, a restarted publisher
    /// stream) continues the outgoing numbering.
    pub ssrc_in: Option<u32>,
    /// One continuous outgoing RTP timeline across layer switches.
    pub timeline: Timeline,
    /// The highest temporal layer forwarded now ([`crate::temporal::ALL`]: all).
    pub temporal: u8,
    /// What the viewer's estimate allows on this track.
    pub cap: LayerCap,
    /// No keyframe was forwarded on this track yet: one is asked for (again, within the
    /// rate limit) until it comes, so a new viewer does not wait for the next periodic one.
    pub needs_keyframe: bool,
    /// Whether the frame being received on each layer goes to this viewer: decided at the
    /// first packet of a frame (layer, timestamp), followed by the rest of its packets.
    pub frames: Vec<(Option<Rid>, u32, bool)>,
    /// The SFU's sending state, once the viewer answered (its SSRCs and payload types).
    pub egress: Option<Egress>,
}

impl TrackOut {
    pub fn new(mid: Mid, source: Mid) -> TrackOut {
        TrackOut {
            mid,
            source,
            layer: None,
            ssrc_in: None,
            timeline: Timeline::default(),
            temporal: crate::temporal::ALL,
            needs_keyframe: true,
            cap: LayerCap::default(),
            frames: Vec::new(),
            egress: None,
        }
    }

    /// The decision made for the frame of `rid` with timestamp `ts`, if it was made.
    pub fn decided(&self, rid: Option<Rid>, ts: u32) -> Option<bool> {
        self.frames
            .iter()
            .find(|(r, t, _)| *r == rid && *t == ts)
            .map(|(_, _, d)| *d)
    }

    /// Remember the decision for the frame of `rid` with timestamp `ts`.
    pub fn decide(&mut self, rid: Option<Rid>, ts: u32, forward: bool) {
        match self.frames.iter_mut().find(|(r, _, _)| *r == rid) {
            Some(f) => *f = (rid, ts, forward),
            None => self.frames.push((rid, ts, forward)),
        }
    }
}

/// The RTP timestamps a subscriber track sends. Each simulcast layer has its own timeline
/// (Chromium starts each at a random timestamp); forwarded as is, a layer switch would make
/// the viewer's timeline jump by up to 2^31 ticks, and Chromium then may hold the new
/// layer's frames for seconds. On a switch the new layer is mapped onto the old timeline.
/// (Sequence numbers and VP8 picture ids continue too, see [`crate::numbering`].)
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timeline {
    /// Added (mod 2^32) to the timestamps of the layer being forwarded.
    offset: u32,
    /// The last timestamp sent, and when its frame arrived.
    last: Option<(u32, Instant)>,
}

impl Timeline {
    /// The outgoing timestamp for a frame of the current layer with timestamp `ts` that
    /// arrived at `arrival`.
    pub fn map(&mut self, ts: u32, arrival: Instant) -> u32 {
        let out = ts.wrapping_add(self.offset);
        self.last = Some((out, arrival));
        out
    }

    /// A new layer starts with the frame `ts` that arrived at `arrival`: it continues the
    /// timeline after the last frame sent, by the time between their arrivals (at least one
    /// tick, so two frames never share a timestamp) in the `clock_hz` RTP clock.
    pub fn switch(&mut self, ts: u32, arrival: Instant, clock_hz: u32) {
        let Some((last, at)) = self.last else {
            return;
        };
        let elapsed = arrival.saturating_duration_since(at);
        let ticks = elapsed.as_micros() * u128::from(clock_hz) / 1_000_000;
        // Bounded to half the timestamp space so the step is always forward.
        let ticks = u32::try_from(ticks.clamp(1, u128::from(u32::MAX / 2))).unwrap_or(1);
        self.offset = last.wrapping_add(ticks).wrapping_sub(ts);
    }
}

pub(crate) struct SubscriberState {
    pub publisher: PeerId,
    pub tracks: Vec<TrackOut>,
    pub channel: Option<ChannelId>,
    pub channel_open: bool,
    pub pending: Option<SdpPendingOffer>,
    pub last_offer: String,
}

pub(crate) enum Role {
    Publisher(PublisherState),
    Subscriber(SubscriberState),
}

pub(crate) struct Peer {
    pub id: PeerId,
    pub rtc: Rtc,
    pub ufrag: String,
    /// The signaling session this connection belongs to.
    pub session: String,
    /// The publishing session of the stream (== `session` for a publisher).
    pub publisher: String,
    pub stream: StreamType,
    pub sid: String,
    pub role: Role,
    pub next_timeout: Instant,
    pub last_rx: Instant,
    pub connected: bool,
    pub addrs: Vec<SocketAddr>,
    /// Publisher bitrate cap in bits/s sent as REMB (0 = none).
    pub max_bitrate: u64,
    pub next_remb: Instant,
    /// NACKs sent per incoming stream (publishers) so far.
    pub nacks_out: NackTally,
    /// NACKed packets from this subscriber in the current second, and when it began.
    pub nack_window: (Instant, u64),
    /// What this subscriber's link is estimated to take.
    pub estimate: Estimate,
    /// No slow-link report before this.
    pub next_slow_link: Instant,
    /// Where the connection's SRTP keys arrive (the SFU sends a subscriber's media itself).
    pub keys: Arc<KeySlot>,
    /// The SFU's SRTP sending context, made from `keys` once they came.
    pub srtp: Option<SrtpTx>,
    /// The path media goes on: that of the client's last non-STUN datagram or of str0m's
    /// last non-STUN transmit (both follow the nominated candidate pair).
    pub path: Option<MediaPath>,
    /// The next sender reports of a subscriber's streams.
    pub next_sr: Instant,
}

/// Whom a new connection serves: its signaling session, the session publishing the
/// stream (the same for a publisher), the stream and the connection's `sid`.
pub(crate) struct PeerNames {
    pub session: String,
    pub publisher: String,
    pub stream: StreamType,
    pub sid: String,
}

/// Run `f` on the peer's `Rtc`, turning a panic into [`PeerFailure::Panic`].
pub(crate) fn guarded<T>(rtc: &mut Rtc, f: impl FnOnce(&mut Rtc) -> T) -> Result<T, PeerFailure> {
    caught(|| f(rtc))
}

/// Run `f` (the SFU's own work for one peer), turning a panic into
/// [`PeerFailure::Panic`], so that it closes that peer only.
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, PeerFailure> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| PeerFailure::Panic)
}

impl Peer {
    /// A new connection (its id is given when the worker inserts it): not connected yet,
    /// nothing received, every timer due now.
    pub fn new(
        rtc: Rtc,
        ufrag: String,
        keys: Arc<KeySlot>,
        names: PeerNames,
        role: Role,
        max_bitrate: u64,
    ) -> Peer {
        let PeerNames {
            session,
            publisher,
            stream,
            sid,
        } = names;
        let now = Instant::now();
        Peer {
            id: 0,
            rtc,
            ufrag,
            session,
            publisher,
            stream,
            sid,
            role,
            next_timeout: now,
            last_rx: now,
            connected: false,
            addrs: Vec::new(),
            max_bitrate,
            next_remb: now,
            nacks_out: Default::default(),
            nack_window: (now, 0),
            estimate: Default::default(),
            next_slow_link: now,
            keys,
            srtp: None,
            path: None,
            next_sr: now,
        }
    }

    pub fn publisher_state(&mut self) -> Option<&mut PublisherState> {
        match &mut self.role {
            Role::Publisher(p) => Some(p),
            Role::Subscriber(_) => None,
        }
    }

    pub fn subscriber_state(&mut self) -> Option<&mut SubscriberState> {
        match &mut self.role {
            Role::Subscriber(s) => Some(s),
            Role::Publisher(_) => None,
        }
    }

    /// A slow-link report for `nacks` NACKs in the last interval, if that is many and none
    /// was made lately.
    fn slow_link(&mut self, nacks: u64, uplink: bool) -> Option<Ev> {
        let now = Instant::now();
        if nacks < SLOW_LINK_NACKS || now < self.next_slow_link {
            return None;
        }
        self.next_slow_link = now + SLOW_LINK_EVERY;
        Some(Ev::SlowLink { uplink, nacks })
    }

    /// What sending media to this subscriber takes: its SRTP context (made once the DTLS
    /// handshake gave the keys), its streams, and the path media goes on; `None` until all
    /// three are there.
    pub fn media_out(
        &mut self,
        crypto: &str0m::config::CryptoProvider,
    ) -> Option<(&mut SrtpTx, &mut SubscriberState, MediaPath)> {
        let Role::Subscriber(s) = &mut self.role else {
            return None;
        };
        let path = self.path?;
        if self.srtp.is_none() {
            let keys = self.keys.get()?;
            match SrtpTx::new(crypto, keys) {
                Ok(tx) => self.srtp = Some(tx),
                Err(e) => {
                    tracing::warn!(peer = self.id, error = %e, "cannot send SRTP");
                    return None;
                }
            }
        }
        Some((self.srtp.as_mut()?, s, path))
    }

    /// NACKed packets counted for the slow-link report: one when a second has many.
    pub fn count_nacks(&mut self, n: u64, now: Instant) -> Option<Ev> {
        if now.saturating_duration_since(self.nack_window.0) >= crate::recovery::STATS_INTERVAL {
            self.nack_window = (now, 0);
        }
        self.nack_window.1 += n;
        self.slow_link(self.nack_window.1, false)
    }

    pub fn handle_input(&mut self, input: Input) -> Result<(), PeerFailure> {
        if let Input::Receive(t, _) = &input {
            self.last_rx = *t;
        }
        guarded(&mut self.rtc, |rtc| rtc.handle_input(input))??;
        Ok(())
    }

    /// Drain str0m's output: send datagrams, collect events, remember the next timeout.
    pub fn poll(
        &mut self,
        net: &Net,
        metrics: &Metrics,
        events: &mut Vec<(PeerId, Ev)>,
    ) -> Result<(), PeerFailure> {
        // str0m asks for a timeout "now" when it has more to do at once: handled here, a
        // few times, instead of a trip through the worker's timer (which sleeps at least a
        // millisecond and costs a wake-up).
        let mut immediate = 0;
        loop {
            if !self.rtc.is_alive() {
                return Err(PeerFailure::NotAlive);
            }
            let out = guarded(&mut self.rtc, |rtc| rtc.poll_output())??;
            match out {
                Output::Timeout(t) => {
                    let now = Instant::now();
                    if t <= now && immediate < IMMEDIATE_TIMEOUTS {
                        immediate += 1;
                        guarded(&mut self.rtc, |rtc| rtc.handle_input(Input::Timeout(now)))??;
                        continue;
                    }
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if !crate::stun::is_stun(&t.contents) {
                        self.path = Some((t.proto, t.source, t.destination));
                    }
                    match net.send(&t) {
                        Ok(n) => metrics.sent(t.proto, n),
                        // A full socket buffer or TCP queue drops the packet, as the network would.
                        Err(e) => tracing::debug!(peer = self.id, error = %e, "send failed"),
                    }
                }
                Output::Event(e) => {
                    let ev = match e {
                        Event::Connected => {
                            self.connected = true;
                            Ev::Connected
                        }
                        Event::IceConnectionStateChange(state) => {
                            // Disconnected can recover (consent checks resume); a peer that
                            // stays silent is closed by the worker's ICE timeout instead.
                            tracing::debug!(peer = self.id, ?state, "ICE state");
                            continue;
                        }
                        Event::MediaAdded(m) => Ev::MediaAdded {
                            mid: m.mid,
                            kind: m.kind,
                        },
                        Event::RtpPacket(p) => Ev::Rtp(p),
                        Event::RawPacket(raw) => match *raw {
                            RawPacket::RtcpRx(Rtcp::Nack(n)) => Ev::Nack(n),
                            _ => continue,
                        },
                        Event::KeyframeRequest(r) => Ev::KeyframeRequest(r),
                        Event::ChannelOpen(id, label) => Ev::ChannelOpen(id, label),
                        Event::ChannelData(d) => Ev::ChannelData(d),
                        Event::EgressBitrateEstimate(kind) => {
                            let before = self.estimate.bps();
                            if let BweKind::Remb { estimate, .. } = kind {
                                self.estimate.remb(estimate.as_u64());
                            }
                            let d = self.estimate.bps() as i64 - before as i64;
                            gauge(&metrics.estimated_bitrate_sum, d);
                            continue;
                        }
                        Event::MediaIngressStats(st) => {
                            let d = self.nacks_out.delta(st.mid, st.rid, st.nacks);
                            crate::metrics::inc(&metrics.nacks_sent, d);
                            match self.slow_link(d, true) {
                                Some(ev) => ev,
                                None => continue,
                            }
                        }
                        _ => continue,
                    };
                    events.push((self.id, ev));
                }
            }
        }
    }
}

/// Rank of a simulcast rid: higher is a better layer. Talk/janus.js use `h`/`m`/`l`,
/// Firefox and others `f`/`h`/`q` or `2`/`1`/`0`.
/// Chromium pages name them freely, e.g. `low`/`medium`/`high`. `h` is below `f` (`f`/`h`/`q`:
/// full, half, quarter) and above `m`; unknown rids rank lowest.
pub(crate) fn rid_rank(rid: &str) -> u8 {
    match rid {
        "f" | "full" | "hi" | "high" | "2" => 3,
        "h" | "half" => 2,
        "m" | "mid" | "medium" | "1" => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_ranking_prefers_the_high_layer() {
        assert!(rid_rank("h") > rid_rank("m"));
        assert!(rid_rank("m") > rid_rank("l"));
        assert!(rid_rank("f") > rid_rank("h"));
        assert!(rid_rank("2") > rid_rank("1"));
        assert!(rid_rank("1") > rid_rank("0"));
        assert!(rid_rank("high") > rid_rank("medium"));
        assert!(rid_rank("medium") > rid_rank("low"));
        assert!(rid_rank("full") > rid_rank("half"));
        assert!(rid_rank("half") > rid_rank("q"));
        assert!(rid_rank("mid") > rid_rank("l"));
    }

    #[test]
    fn timeline_continues_across_a_switch() {
        let t0 = Instant::now();
        let mut tl = Timeline::default();
        // The first layer goes out as is.
        assert_eq!(tl.map(1000, t0), 1000);
        assert_eq!(tl.map(4000, t0 + Duration::from_millis(33)), 4000);
        // A layer far away on its own timeline, 100 ms later: continues 9000 ticks on.
        let at = t0 + Duration::from_millis(133);
        tl.switch(3_000_000_000, at, 90_000);
        assert_eq!(tl.map(3_000_000_000, at), 13_000);
        assert_eq!(
            tl.map(3_000_003_000, at + Duration::from_millis(33)),
            16_000
        );
        // Wrapping around 2^32, and a switch with no time in between still steps forward.
        let at2 = at + Duration::from_millis(33);
        tl.switch(u32::MAX, at2, 90_000);
        assert_eq!(tl.map(u32::MAX, at2), 16_001);
        assert_eq!(tl.map(2999, at2 + Duration::from_millis(33)), 19_001);
    }

    #[test]
    fn layer_activity_and_keyframe_limits() {
        let t0 = Instant::now();
        let mut t = TrackIn::new(
            Mid::from("1"),
            MediaKind::Video,
            vec!["h".into(), "l".into(), "m".into()],
        );
        assert_eq!(t.rids, vec![Rid::from("l"), "m".into(), "h".into()]);
        // Nothing sent yet: the announced layer wanted.
        assert_eq!(t.choose_layer(None, t0), Some("h".into()));
        t.saw_layer("l".into(), t0);
        t.saw_layer("m".into(), t0);
        assert_eq!(t.choose_layer(None, t0), Some("m".into()));
        assert_eq!(t.choose_layer(Some(2), t0), Some("m".into()));
        assert_eq!(t.choose_layer(Some(0), t0), Some("l".into()));
        let later = t0 + LAYER_IDLE + Duration::from_millis(1);
        t.saw_layer("l".into(), later);
        assert_eq!(t.choose_layer(None, later), Some("l".into()));
        assert!(t.keyframe_request_due(Some("l".into()), t0, Duration::from_millis(500)));
        assert!(!t.keyframe_request_due(Some("l".into()), t0, Duration::from_millis(500)));
        assert!(t.keyframe_request_due(Some("h".into()), t0, Duration::from_millis(500)));
        assert!(t.keyframe_request_due(Some("l".into()), later, Duration::from_millis(500)));
    }

    #[test]
    fn panics_are_caught() {
        let mut rtc = Rtc::builder()
            .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
            .build(Instant::now());
        let r: Result<(), _> = guarded(&mut rtc, |_| panic!("boom"));
        assert!(matches!(r, Err(PeerFailure::Panic)));
    }
}
