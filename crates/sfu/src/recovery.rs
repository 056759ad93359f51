//! Loss recovery towards subscribers: their video codecs always get RTX and NACK (the SFU
//! answers their NACKs itself, see [`crate::egress`]), and it is made observable (NACKs sent
//! to publishers from str0m's periodic stats events).

use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt, Rid};

/// How long each packet sent to a subscriber is kept for retransmission: a NACK for it can
/// be answered until then. libwebrtc's sender keeps max(1 s, 3 RTTs); Janus keeps
/// `min_nack_queue` (200 ms) or more with the RTT. What is kept is a reference to the
/// publisher's payload, shared by all its subscribers, not a copy per subscriber.
pub(crate) const RTX_HISTORY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often str0m reports a publisher's per-stream stats (the counters of NACKs sent come
/// from there), and the window subscribers' NACKs are counted in for slow-link reports.
pub(crate) const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// str0m's NACK counters are cumulative per (mid, rid); this remembers the last value seen
/// so the metrics get only what is new.
#[derive(Debug, Default)]
pub(crate) struct NackTally {
    seen: Vec<(Mid, Option<Rid>, u64)>,
}

impl NackTally {
    /// Record the stream's cumulative count and return the increase since the last call.
    pub fn delta(&mut self, mid: Mid, rid: Option<Rid>, total: u64) -> u64 {
        match self
            .seen
            .iter_mut()
            .find(|(m, r, _)| *m == mid && *r == rid)
        {
            Some((_, _, last)) => {
                // A stream that was reset starts again from 0: count it afresh.
                let d = if total >= *last { total - *last } else { total };
                *last = total;
                d
            }
            None => {
                self.seen.push((mid, rid, total));
                total
            }
        }
    }
}

/// The publisher's codecs as offered to its subscribers: each video codec without an RTX
/// payload type gets one (a free dynamic PT) and NACK feedback, so the SFU answers the
/// subscribers' NACKs from its history whatever the publisher negotiated.
pub(crate) fn with_rtx(params: Vec<PayloadParams>) -> Vec<PayloadParams> {
    let mut used: Vec<u8> = params
        .iter()
        .flat_map(|p| [Some(p.pt()), p.resend(), p.red()])
        .flatten()
        .map(|pt| *pt)
        .collect();
    params
        .into_iter()
        .map(|p| {
            if !p.spec().codec.is_video() || p.resend().is_some() || p.red().is_some() {
                return p;
            }
            let Some(free) = (96..=127u8).find(|pt| !used.contains(pt)) else {
                return p;
            };
            used.push(free);
            let mut q = PayloadParams::new(p.pt(), Some(Pt::new_with_value(free)), p.spec());
            q.set_fb_transport_cc(p.fb_transport_cc());
            q.set_fb_pli(p.fb_pli());
            q.set_fb_fir(p.fb_fir());
            q.set_fb_remb(p.fb_remb());
            q.set_fb_nack(true);
            q
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_deltas() {
        let mut t = NackTally::default();
        let mid = Mid::from("1");
        assert_eq!(t.delta(mid, None, 3), 3);
        assert_eq!(t.delta(mid, None, 3), 0);
        assert_eq!(t.delta(mid, None, 7), 4);
        assert_eq!(t.delta(mid, Some("h".into()), 2), 2);
        assert_eq!(t.delta(mid, None, 1), 1, "a reset stream counts from 0");
    }

    #[test]
    fn video_codecs_get_rtx_and_nack() {
        use str0m::format::{Codec, CodecSpec, FormatParams};
        use str0m::media::Frequency;
        let spec = |codec, clock_rate| CodecSpec {
            codec,
            clock_rate,
            channels: None,
            format: FormatParams::default(),
        };
        let mut vp8 = PayloadParams::new(96.into(), None, spec(Codec::Vp8, Frequency::NINETY_KHZ));
        vp8.set_fb_nack(false);
        let h264 = PayloadParams::new(
            98.into(),
            Some(99.into()),
            spec(Codec::H264, Frequency::NINETY_KHZ),
        );
        let opus = PayloadParams::new(
            97.into(),
            None,
            spec(Codec::Opus, Frequency::FORTY_EIGHT_KHZ),
        );
        let out = with_rtx(vec![vp8, h264, opus]);
        assert_eq!(out[0].pt(), 96.into());
        assert_eq!(
            out[0].resend(),
            Some(100.into()),
            "the first free dynamic PT"
        );
        assert!(out[0].fb_nack());
        assert_eq!(out[1].resend(), Some(99.into()), "an RTX PT is kept");
        assert_eq!(out[2].resend(), None, "no RTX for audio");
    }
}
