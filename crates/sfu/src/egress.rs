//! The SFU's own sending of forwarded media to a subscriber, one [`Egress`] per outgoing
//! stream (m-line): the publisher's RTP packet gets the subscriber's SSRC, payload type,
//! header extensions, a continuous sequence number and timestamp across simulcast and
//! temporal switches (VP8 picture ids too), and is encrypted once, straight into the send
//! buffer. It keeps what a NACK needs for an RFC 4588 retransmission (a reference to the
//! publisher's payload, not a copy) and what a sender report says. str0m drives the rest of
//! the connection (ICE, DTLS, data channels, the subscriber's RTCP feedback); its own media
//! path would cost a frame copy, a packetization, a queue and a full timer tick per
//! subscriber and packet.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::{Extension, ExtensionMap};

use crate::descriptor::Vp8Ids;
pub use crate::numbering::SeqMap;
use crate::numbering::Vp8Map;
use crate::srtp_tx::{SRTP_MAX_OVERHEAD, SrtpTx};

/// Packets kept per video stream for retransmission (the age limit,
/// [`crate::recovery::RTX_HISTORY`], is the one that counts at normal rates).
const HISTORY_SLOTS: usize = 512;

/// A packet is not retransmitted twice within this time (a NACK repeated before the first
/// retransmission could have arrived).
const RESEND_GAP: Duration = Duration::from_millis(10);

/// Retransmissions may take this share of a stream's bytes (str0m's default), plus
/// [`RESEND_ALLOWANCE`] bytes a second so a low-rate stream can still repair a few.
const RESEND_RATIO: f64 = 0.15;
const RESEND_ALLOWANCE: u64 = 6_000;

/// Largest RTP header we write: 12 bytes, the extension header, and the extensions.
const MAX_HEADER: usize = 12 + 4 + 4 * 8;

/// Header extension ids the subscriber negotiated (one-byte form, RFC 8285).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub mid: Option<(u8, Vec<u8>)>,
    pub abs_send_time: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
}

/// A publisher payload type and what it is towards this subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtMap {
    pub from: u8,
    pub to: u8,
    /// The subscriber's RTX payload type for it (no retransmission without one).
    pub rtx: Option<u8>,
}

/// What a subscriber's answer settled for one outgoing stream: the payload types it took
/// (with their RTX payload types; the subscriber was offered the publisher's payload types,
/// so each maps to itself), the clock rate, and the header extensions to write.
pub(crate) fn negotiated(
    params: &[PayloadParams],
    remote_pts: &[Pt],
    extmap: &ExtensionMap,
    mid: Mid,
    kind: MediaKind,
) -> (Vec<PtMap>, u32, ExtIds) {
    let taken: Vec<&PayloadParams> = params
        .iter()
        .filter(|p| remote_pts.contains(&p.pt()))
        .collect();
    let pts = taken
        .iter()
        .map(|p| PtMap {
            from: *p.pt(),
            to: *p.pt(),
            rtx: p.resend().map(|r| *r),
        })
        .collect();
    let clock_rate = taken.first().map_or(
        if kind == MediaKind::Audio {
            48_000
        } else {
            90_000
        },
        |p| p.spec().clock_rate.get(),
    );
    // One-byte header extensions only (ids 1..=14, RFC 8285 §4.2).
    let id = |e: Extension| extmap.id_of(e).filter(|id| (1..=14).contains(id));
    let audio = kind == MediaKind::Audio;
    let ext = ExtIds {
        mid: id(Extension::RtpMid).map(|i| (i, mid.to_string().into_bytes())),
        abs_send_time: id(Extension::AbsoluteSendTime),
        audio_level: id(Extension::AudioLevel).filter(|_| audio),
        video_orientation: id(Extension::VideoOrientation).filter(|_| !audio),
    };
    (pts, clock_rate, ext)
}

/// A publisher packet to forward, as [`Egress::forward`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Its extended sequence number on its layer.
    pub seq: u64,
    /// The publisher's payload type.
    pub pt: u8,
    /// The timestamp to send (already on the viewer's timeline).
    pub ts: u32,
    pub meta: Meta,
    pub payload: &'a Arc<[u8]>,
    /// Its VP8 picture numbering, for continuing it across a switch.
    pub vp8: Option<&'a Vp8Ids>,
    /// When it arrived (sender reports extrapolate from it).
    pub arrival: Instant,
}

/// The header of one packet the SFU sends.
struct Head {
    pt: u8,
    /// Extended sequence number (the SRTP index).
    index: u64,
    ts: u32,
    ssrc: u32,
    meta: Meta,
    send_time: u32,
}

/// The payload of one packet the SFU sends: the publisher's, behind an RTX prefix, with
/// VP8 ids rewritten.
#[derive(Clone, Copy)]
struct Body<'a> {
    prefix: Option<[u8; 2]>,
    payload: &'a [u8],
    vp8: Option<&'a (Vp8Ids, u16, u8)>,
}

/// What of the forwarded packet goes into the header besides the numbering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    pub marker: bool,
    /// (voice activity, level in -dBov 0..=127)
    pub audio_level: Option<(bool, u8)>,
    pub video_orientation: Option<u8>,
}

/// One packet as sent, for a retransmission.
#[derive(Debug, Clone)]
struct Sent {
    out: u64,
    at: Instant,
    payload: Arc<[u8]>,
    ts: u32,
    pt: u8,
    meta: Meta,
    vp8: Option<(Vp8Ids, u16, u8)>,
    resent: Option<Instant>,
}

/// Bytes sent and resent in the current and the last second.
#[derive(Debug, Clone, Copy, Default)]
struct ResendBudget {
    window: Option<Instant>,
    sent: u64,
    sent_before: u64,
    resent: u64,
}

impl ResendBudget {
    fn roll(&mut self, now: Instant) {
        match self.window {
            Some(w) if now.saturating_duration_since(w) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.sent_before = self.sent;
                self.sent = 0;
                self.resent = 0;
            }
        }
    }

    fn allows(&mut self, bytes: usize, now: Instant) -> bool {
        self.roll(now);
        let base = self.sent.max(self.sent_before) as f64;
        let ok =
            (self.resent + bytes as u64) as f64 <= base * RESEND_RATIO + RESEND_ALLOWANCE as f64;
        if ok {
            self.resent += bytes as u64;
        }
        ok
    }
}

/// The sending state of one outgoing stream.
#[derive(Debug)]
pub struct Egress {
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pts: Vec<PtMap>,
    ext: ExtIds,
    pub seq: SeqMap,
    rtx_next: u64,
    vp8: Vp8Map,
    /// Retransmission history (video with RTX only).
    history: Vec<Option<Sent>>,
    history_age: Duration,
    budget: ResendBudget,
    /// For sender reports: packets and payload bytes sent, the clock rate, and the last
    /// timestamp sent with the arrival time of its packet.
    packets: u32,
    octets: u32,
    clock_rate: u32,
    last: Option<(u32, Instant)>,
}

/// Where the worker's clock meets the wall clock (abs-send-time and NTP times).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix: Duration,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    fn unix(&self, at: Instant) -> Duration {
        self.unix + at.saturating_duration_since(self.instant)
    }

    /// abs-send-time: seconds in 6.18 fixed point, modulo 64 s.
    fn abs_send_time(&self, at: Instant) -> u32 {
        let d = self.unix(at);
        let secs = (d.as_secs() & 0x3f) as u32;
        let frac = ((u64::from(d.subsec_nanos()) << 18) / 1_000_000_000) as u32;
        (secs << 18 | frac) & 0x00ff_ffff
    }

    /// NTP time (RFC 5905): seconds since 1900 and the fraction, 32 bits each.
    fn ntp(&self, at: Instant) -> (u32, u32) {
        let d = self.unix(at);
        let secs = (d.as_secs() + 2_208_988_800) as u32;
        let frac = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        (secs, frac)
    }
}

/// A random starting sequence number (RFC 3550 §5.1), below 2^15 so the first ROC is 0
/// with room to spare.
fn first_seq() -> u16 {
    rand::random::<u16>() & 0x7fff
}

impl Egress {
    pub fn new(
        ssrc: u32,
        rtx_ssrc: Option<u32>,
        pts: Vec<PtMap>,
        ext: ExtIds,
        clock_rate: u32,
        video: bool,
        history_age: Duration,
    ) -> Egress {
        let keeps = video && rtx_ssrc.is_some() && pts.iter().any(|p| p.rtx.is_some());
        Egress {
            ssrc,
            rtx_ssrc,
            pts,
            ext,
            seq: SeqMap::new(first_seq()),
            rtx_next: u64::from(first_seq()),
            vp8: Vp8Map::default(),
            history: if keeps {
                vec![None; HISTORY_SLOTS]
            } else {
                Vec::new()
            },
            history_age,
            budget: ResendBudget::default(),
            packets: 0,
            octets: 0,
            clock_rate,
            last: None,
        }
    }

    /// Update what the subscriber negotiated (a renegotiation may change it).
    pub fn renegotiated(&mut self, pts: Vec<PtMap>, ext: ExtIds) {
        self.pts = pts;
        self.ext = ext;
    }

    /// The outgoing payload type for publisher payload type `pt`, if the subscriber took it.
    pub fn maps(&self, pt: u8) -> Option<&PtMap> {
        self.pts.iter().find(|p| p.from == pt)
    }

    /// A simulcast switch: VP8 ids continue from the last ones sent.
    pub fn switched_layer(&mut self) {
        self.vp8.switched();
    }

    /// Write the RTP header of one packet into `buf`; returns its length.
    fn header(&self, buf: &mut [u8], h: &Head) -> usize {
        buf[0] = 0x80;
        buf[1] = (u8::from(h.meta.marker) << 7) | (h.pt & 0x7f);
        buf[2..4].copy_from_slice(&(h.index as u16).to_be_bytes());
        buf[4..8].copy_from_slice(&h.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
        let mut at = 16;
        if let Some((id, mid)) = &self.ext.mid
            && !mid.is_empty()
            && mid.len() <= 16
        {
            buf[at] = (id << 4) | (mid.len() as u8 - 1);
            buf[at + 1..at + 1 + mid.len()].copy_from_slice(mid);
            at += 1 + mid.len();
        }
        if let Some(id) = self.ext.abs_send_time {
            buf[at] = (id << 4) | 2;
            buf[at + 1..at + 4].copy_from_slice(&h.send_time.to_be_bytes()[1..]);
            at += 4;
        }
        if let (Some(id), Some((voice, level))) = (self.ext.audio_level, h.meta.audio_level) {
            buf[at] = id << 4;
            buf[at + 1] = (u8::from(voice) << 7) | (level & 0x7f);
            at += 2;
        }
        if let (Some(id), Some(o)) = (self.ext.video_orientation, h.meta.video_orientation) {
            buf[at] = id << 4;
            buf[at + 1] = o;
            at += 2;
        }
        if at == 16 {
            return 12;
        }
        while at % 4 != 0 {
            buf[at] = 0;
            at += 1;
        }
        buf[0] |= 0x10;
        buf[12..14].copy_from_slice(&[0xbe, 0xde]);
        buf[14..16].copy_from_slice(&(((at - 16) / 4) as u16).to_be_bytes());
        at
    }

    /// The longest SRTP packet a payload of `len` bytes makes (header, RTX prefix, room
    /// for the cipher).
    pub fn max_len(len: usize) -> usize {
        MAX_HEADER + 2 + len + SRTP_MAX_OVERHEAD
    }

    /// Encrypt one packet into `out` (at least [`Egress::max_len`] long); `plain` holds a
    /// plaintext that differs from the publisher's payload (an RTX prefix, VP8 ids).
    fn seal(
        &self,
        srtp: &mut SrtpTx,
        out: &mut [u8],
        plain: &mut Vec<u8>,
        h: &Head,
        body: Body<'_>,
    ) -> Option<usize> {
        if out.len() < Self::max_len(body.payload.len()) {
            return None;
        }
        let hlen = self.header(out, h);
        if body.prefix.is_none() && body.vp8.is_none() {
            return srtp.protect_rtp(out, hlen, body.payload, h.index).ok();
        }
        plain.clear();
        if let Some(p) = body.prefix {
            plain.extend_from_slice(&p);
        }
        let at = plain.len();
        plain.extend_from_slice(body.payload);
        if let Some((ids, pid, tl0)) = body.vp8 {
            ids.rewrite(&mut plain[at..], *pid, *tl0);
        }
        srtp.protect_rtp(out, hlen, plain, h.index).ok()
    }

    /// Write the SRTP packet for forwarded publisher packet `pkt` into `out` (at least
    /// [`Egress::max_len`] long) and return its length. `None` when it is not sent (a
    /// payload type the subscriber did not take, a late packet whose place is not known, a
    /// cipher failure).
    pub fn forward(
        &mut self,
        srtp: &mut SrtpTx,
        clock: &Clock,
        out: &mut [u8],
        plain: &mut Vec<u8>,
        pkt: &Incoming<'_>,
        now: Instant,
    ) -> Option<usize> {
        let pt = self.maps(pkt.pt)?.to;
        let index = self.seq.map(pkt.seq)?;
        let vp8 = pkt
            .vp8
            .and_then(|ids| self.vp8.map(ids).map(|(p, t)| (*ids, p, t)));
        let head = Head {
            pt,
            index,
            ts: pkt.ts,
            ssrc: self.ssrc,
            meta: pkt.meta,
            send_time: clock.abs_send_time(now),
        };
        let body = Body {
            prefix: None,
            payload: pkt.payload,
            vp8: vp8.as_ref(),
        };
        let n = self.seal(srtp, out, plain, &head, body)?;
        let len = pkt.payload.len();
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(len as u32);
        self.budget.roll(now);
        self.budget.sent += len as u64;
        if self.last.is_none_or(|(_, at)| pkt.arrival >= at) {
            self.last = Some((pkt.ts, pkt.arrival));
        }
        if !self.history.is_empty() {
            let slot = (index as usize) % HISTORY_SLOTS;
            self.history[slot] = Some(Sent {
                out: index,
                at: now,
                payload: pkt.payload.clone(),
                ts: pkt.ts,
                pt,
                meta: pkt.meta,
                vp8,
                resent: None,
            });
        }
        Some(n)
    }

    /// The payload length of the packet sent as `seq`, if a retransmission of it may go
    /// now: it is still kept, was not just resent, and the stream's retransmission budget
    /// allows it.
    pub fn resendable(&mut self, seq: u16, now: Instant) -> Option<usize> {
        self.rtx_ssrc?;
        let slot = usize::from(seq) % HISTORY_SLOTS;
        let sent = self.history.get(slot)?.as_ref()?;
        if sent.out as u16 != seq || now.saturating_duration_since(sent.at) > self.history_age {
            return None;
        }
        if sent
            .resent
            .is_some_and(|t| now.saturating_duration_since(t) < RESEND_GAP)
        {
            return None;
        }
        self.pts.iter().find(|p| p.to == sent.pt)?.rtx?;
        let len = sent.payload.len();
        self.budget.allows(len + 2, now).then_some(len)
    }

    /// Write an RFC 4588 retransmission of the packet sent as `seq` into `out` (at least
    /// [`Egress::max_len`] of its payload long), after [`Egress::resendable`] said yes.
    pub fn resend(
        &mut self,
        srtp: &mut SrtpTx,
        clock: &Clock,
        out: &mut [u8],
        plain: &mut Vec<u8>,
        seq: u16,
        now: Instant,
    ) -> Option<usize> {
        let rtx_ssrc = self.rtx_ssrc?;
        let slot = usize::from(seq) % HISTORY_SLOTS;
        let sent = self.history.get(slot)?.as_ref()?;
        let head = Head {
            pt: self.pts.iter().find(|p| p.to == sent.pt)?.rtx?,
            index: self.rtx_next,
            ts: sent.ts,
            ssrc: rtx_ssrc,
            meta: sent.meta,
            send_time: clock.abs_send_time(now),
        };
        let body = Body {
            prefix: Some(seq.to_be_bytes()),
            payload: &sent.payload,
            vp8: sent.vp8.as_ref(),
        };
        let n = self.seal(srtp, out, plain, &head, body)?;
        self.rtx_next += 1;
        if let Some(Some(s)) = self.history.get_mut(slot) {
            s.resent = Some(now);
        }
        Some(n)
    }

    /// This stream's sender report (RFC 3550 §6.4.1) appended to `buf`, once it sent
    /// something: the RTP time now, extrapolated from the last packet's timestamp and
    /// arrival.
    pub fn sender_report(&self, clock: &Clock, now: Instant, buf: &mut Vec<u8>) {
        let Some((ts, at)) = self.last else {
            return;
        };
        let elapsed = now.saturating_duration_since(at);
        let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000) as u32;
        let (secs, frac) = clock.ntp(now);
        buf.extend_from_slice(&[0x80, 200, 0, 6]);
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        buf.extend_from_slice(&secs.to_be_bytes());
        buf.extend_from_slice(&frac.to_be_bytes());
        buf.extend_from_slice(&ts.wrapping_add(ticks).to_be_bytes());
        buf.extend_from_slice(&self.packets.to_be_bytes());
        buf.extend_from_slice(&self.octets.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_negotiated_extensions() {
        let e = Egress::new(
            0x0102_0304,
            None,
            vec![PtMap {
                from: 111,
                to: 109,
                rtx: None,
            }],
            ExtIds {
                mid: Some((4, b"1".to_vec())),
                abs_send_time: Some(2),
                audio_level: Some(1),
                video_orientation: None,
            },
            48_000,
            false,
            Duration::from_secs(1),
        );
        let mut buf = [0u8; MAX_HEADER];
        let meta = Meta {
            marker: true,
            audio_level: Some((true, 30)),
            video_orientation: Some(1),
        };
        let head = |pt, index, meta| Head {
            pt,
            index,
            ts: 960,
            ssrc: 0x0102_0304,
            meta,
            send_time: 0x123456,
        };
        let n = e.header(&mut buf, &head(109, 7, meta));
        assert_eq!(n, 12 + 4 + 8);
        assert_eq!(buf[..4], [0x90, 0x80 | 109, 0, 7]);
        assert_eq!(buf[8..12], [1, 2, 3, 4]);
        assert_eq!(buf[12..16], [0xbe, 0xde, 0, 2]);
        // mid "1", abs-send-time, audio level; the orientation was not negotiated.
        assert_eq!(
            buf[16..24],
            [0x40, b'1', 0x22, 0x12, 0x34, 0x56, 0x10, 0x80 | 30]
        );
        // Padded to a word: the audio level alone.
        let mut quiet = Egress::new(
            1,
            None,
            vec![],
            ExtIds::default(),
            48_000,
            false,
            Duration::ZERO,
        );
        quiet.ext.audio_level = Some(1);
        assert_eq!(quiet.header(&mut buf, &head(111, 1, meta)), 12 + 4 + 4);
        assert_eq!(buf[12..20], [0xbe, 0xde, 0, 1, 0x10, 0x80 | 30, 0, 0]);
        // Without extensions: a bare 12-byte header.
        let bare = Egress::new(
            1,
            None,
            vec![],
            ExtIds::default(),
            90_000,
            true,
            Duration::ZERO,
        );
        assert_eq!(bare.header(&mut buf, &head(96, 1, Meta::default())), 12);
        assert_eq!(buf[0], 0x80);
    }

    #[test]
    fn clock_conversions() {
        let c = Clock {
            instant: Instant::now(),
            unix: Duration::from_millis(64_500),
        };
        // 64.5 s: 0.5 s into the 64 s cycle, 2^17 in 6.18 fixed point.
        assert_eq!(c.abs_send_time(c.instant), 1 << 17);
        let (secs, frac) = c.ntp(c.instant + Duration::from_millis(500));
        assert_eq!(secs, 2_208_988_800 + 65);
        assert_eq!(frac, 0);
    }

    fn incoming(payload: &Arc<[u8]>, seq: u64, pt: u8, ts: u32, at: Instant) -> Incoming<'_> {
        Incoming {
            seq,
            pt,
            ts,
            meta: Meta::default(),
            payload,
            vp8: None,
            arrival: at,
        }
    }

    fn sender(rtx: bool) -> (Egress, SrtpTx) {
        let keys = crate::srtp_tx::Keys {
            profile: str0m::crypto::dtls::SrtpProfile::AEAD_AES_128_GCM,
            material: (0..56).collect(),
            active: false,
        };
        let tx = SrtpTx::new(&str0m::crypto::from_feature_flags(), &keys).expect("keys");
        let e = Egress::new(
            0xabc,
            rtx.then_some(0xdef),
            vec![PtMap {
                from: 100,
                to: 96,
                rtx: rtx.then_some(97),
            }],
            ExtIds::default(),
            90_000,
            true,
            Duration::from_secs(1),
        );
        (e, tx)
    }

    #[test]
    fn forwarded_packets_are_renumbered_and_counted_in_sender_reports() {
        let (mut e, mut tx) = sender(false);
        let clock = Clock::now();
        let t0 = clock.instant;
        let payload: Arc<[u8]> = Arc::from(&[1u8, 2, 3][..]);
        let mut out = vec![0u8; Egress::max_len(payload.len())];
        let mut plain = Vec::new();
        e.seq.switch(5000);
        let first = e.seq.next();
        let n = e
            .forward(
                &mut tx,
                &clock,
                &mut out,
                &mut plain,
                &incoming(&payload, 5000, 100, 1000, t0),
                t0,
            )
            .expect("sent");
        assert_eq!(n, 12 + 3 + 16);
        assert_eq!(out[1], 96, "the subscriber's payload type");
        assert_eq!(out[2..4], first.to_be_bytes());
        assert_eq!(out[4..8], 1000u32.to_be_bytes());
        assert_eq!(out[8..12], 0xabcu32.to_be_bytes());
        // A payload type the subscriber did not take is not sent.
        assert!(
            e.forward(
                &mut tx,
                &clock,
                &mut out,
                &mut plain,
                &incoming(&payload, 5001, 111, 1000, t0),
                t0
            )
            .is_none()
        );
        // The report 100 ms after the packet arrived: its RTP time moved on by 9000 ticks.
        let mut sr = Vec::new();
        e.sender_report(&clock, t0 + Duration::from_millis(100), &mut sr);
        assert_eq!(sr.len(), 28);
        assert_eq!(sr[..4], [0x80, 200, 0, 6]);
        assert_eq!(sr[4..8], 0xabcu32.to_be_bytes());
        let (secs, frac) = clock.ntp(t0 + Duration::from_millis(100));
        assert_eq!(sr[8..12], secs.to_be_bytes());
        assert_eq!(sr[12..16], frac.to_be_bytes());
        assert_eq!(sr[16..20], 10_000u32.to_be_bytes());
        assert_eq!(sr[20..24], 1u32.to_be_bytes(), "packets");
        assert_eq!(sr[24..28], 3u32.to_be_bytes(), "payload octets");
        // Nothing sent, no report.
        let (quiet, _) = sender(false);
        let mut none = Vec::new();
        quiet.sender_report(&clock, t0, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn nacked_packets_go_out_once_on_the_rtx_stream_while_kept() {
        let (mut e, mut tx) = sender(true);
        let clock = Clock::now();
        let t0 = clock.instant;
        let payload: Arc<[u8]> = Arc::from(&[7u8; 100][..]);
        let mut out = vec![0u8; Egress::max_len(payload.len())];
        let mut plain = Vec::new();
        e.seq.switch(1);
        let seq = e.seq.next();
        e.forward(
            &mut tx,
            &clock,
            &mut out,
            &mut plain,
            &incoming(&payload, 1, 100, 42, t0),
            t0,
        )
        .expect("sent");
        let rtx_first = e.rtx_next as u16;
        assert_eq!(e.resendable(seq, t0), Some(100));
        let n = e
            .resend(&mut tx, &clock, &mut out, &mut plain, seq, t0)
            .expect("resent");
        assert_eq!(
            n,
            12 + 2 + 100 + 16,
            "the original sequence number, then the payload"
        );
        assert_eq!(out[1], 97, "the RTX payload type");
        assert_eq!(
            out[2..4],
            rtx_first.to_be_bytes(),
            "the RTX stream's own numbering"
        );
        assert_eq!(out[4..8], 42u32.to_be_bytes(), "the original timestamp");
        assert_eq!(out[8..12], 0xdefu32.to_be_bytes(), "the RTX SSRC");
        // Asked again at once: not again; later, yes; past the history, no.
        assert_eq!(e.resendable(seq, t0 + Duration::from_millis(1)), None);
        assert_eq!(e.resendable(seq, t0 + Duration::from_millis(50)), Some(100));
        assert_eq!(e.resendable(seq, t0 + Duration::from_millis(1500)), None);
        // A sequence number never sent.
        assert_eq!(e.resendable(seq.wrapping_add(1), t0), None);
        // Without RTX negotiated there is nothing to resend with.
        let (mut plain_stream, mut tx2) = sender(false);
        plain_stream.seq.switch(1);
        let seq = plain_stream.seq.next();
        plain_stream
            .forward(
                &mut tx2,
                &clock,
                &mut out,
                &mut plain,
                &incoming(&payload, 1, 100, 42, t0),
                t0,
            )
            .expect("sent");
        assert_eq!(plain_stream.resendable(seq, t0), None);
    }

    #[test]
    fn the_resend_budget_follows_the_bytes_sent() {
        let t0 = Instant::now();
        let mut b = ResendBudget::default();
        b.roll(t0);
        b.sent = 100_000;
        assert!(b.allows(15_000 + RESEND_ALLOWANCE as usize, t0));
        assert!(!b.allows(100, t0), "the second's share is used up");
        // The next second starts afresh, measured against the last one.
        let t1 = t0 + Duration::from_secs(1);
        assert!(b.allows(1_000, t1));
    }
}
