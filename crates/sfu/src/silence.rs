//! Thinning of silent audio, an option Janus does not have (`SfuConfig::thin_silent_audio`,
//! `[sfu] thin_silent_audio`). Audio is most of what a large Talk call forwards, because
//! every participant's audio goes to everyone, and a muted microphone still sends 50 Opus
//! packets a second. Those packets carry the audio level of digital silence (-127 dBov in
//! the RFC 6464 header extension). With the option, such a packet is forwarded once per
//! [`KEEP_EVERY`], the rate Opus DTX sends silence at. Speech always passes, and so does
//! the first silent packet after it. Subscribers get their own sequence numbers from str0m,
//! so they see no gap, only the timestamp step that DTX makes too.
//!
//! The other lever is at the source (`SfuConfig::opus_dtx`, `[sfu] opus_dtx`): the answer
//! to a publisher says `usedtx=1` for Opus (RFC 7587 §6.1: the receiver prefers DTX), and
//! browsers then send silence as Opus DTX does, one packet per 400 ms, so that neither the
//! publisher's uplink nor the SFU carries the rest. Janus has this as its `opus_dtx` room
//! option.

use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};

/// The audio level of digital silence (RFC 6464 level 127, in str0m's negative dBov).
pub(crate) const SILENCE_DBOV: i8 = -127;

/// One silent packet per this much time goes through (Opus DTX: one per 400 ms).
pub(crate) const KEEP_EVERY: Duration = Duration::from_millis(400);

/// The thinning state of one publisher audio track.
#[derive(Debug, Default)]
pub(crate) struct SilenceThinner {
    /// When the last silent packet was forwarded, since the last packet with sound.
    last_kept: Option<Instant>,
}

impl SilenceThinner {
    /// Whether a packet with audio level `level` (`None`: the publisher sends no level)
    /// that arrived at `at` goes to the subscribers.
    pub fn forward(&mut self, level: Option<i8>, at: Instant) -> bool {
        if level != Some(SILENCE_DBOV) {
            self.last_kept = None;
            return true;
        }
        match self.last_kept {
            Some(kept) if at.saturating_duration_since(kept) < KEEP_EVERY => false,
            _ => {
                self.last_kept = Some(at);
                true
            }
        }
    }
}

/// `params` with Opus asking for DTX (`usedtx=1` in the SDP made from them); the rest as
/// it was.
pub(crate) fn with_opus_dtx(params: &[PayloadParams]) -> Vec<PayloadParams> {
    params
        .iter()
        .map(|p| {
            let mut spec = p.spec();
            if spec.codec != Codec::Opus {
                return *p;
            }
            spec.format.use_dtx = Some(true);
            let mut q = PayloadParams::new(p.pt(), p.resend(), spec);
            q.set_fb_transport_cc(p.fb_transport_cc());
            q.set_fb_nack(p.fb_nack());
            q.set_fb_pli(p.fb_pli());
            q.set_fb_fir(p.fb_fir());
            q.set_fb_remb(p.fb_remb());
            q
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::CodecConfig;

    #[test]
    fn opus_dtx_changes_only_opus_and_keeps_its_feedback() {
        let before = CodecConfig::new_with_defaults().params().to_vec();
        let after = with_opus_dtx(&before);
        assert_eq!(before.len(), after.len());
        let mut opus = 0;
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((b.pt(), b.resend()), (a.pt(), a.resend()));
            assert_eq!(
                (
                    b.fb_transport_cc(),
                    b.fb_nack(),
                    b.fb_pli(),
                    b.fb_fir(),
                    b.fb_remb()
                ),
                (
                    a.fb_transport_cc(),
                    a.fb_nack(),
                    a.fb_pli(),
                    a.fb_fir(),
                    a.fb_remb()
                )
            );
            if b.spec().codec == Codec::Opus {
                opus += 1;
                assert_eq!(a.spec().format.use_dtx, Some(true));
                let mut without = a.spec();
                without.format.use_dtx = b.spec().format.use_dtx;
                assert_eq!(without, b.spec(), "nothing else of Opus changes");
            } else {
                assert_eq!(a.spec(), b.spec());
            }
        }
        assert_eq!(opus, 1);
    }

    /// Which of `n` packets 20 ms apart with `level` pass, starting at `t0 + from`.
    fn passed(
        t: &mut SilenceThinner,
        t0: Instant,
        from: u64,
        n: u64,
        level: Option<i8>,
    ) -> Vec<u64> {
        (from..from + n)
            .filter(|i| t.forward(level, t0 + Duration::from_millis(20 * i)))
            .collect()
    }

    #[test]
    fn silence_passes_once_per_400_ms_and_sound_always() {
        let t0 = Instant::now();
        let mut t = SilenceThinner::default();
        // Two seconds of silence: the first packet, then one every 400 ms.
        assert_eq!(
            passed(&mut t, t0, 0, 100, Some(-127)),
            vec![0, 20, 40, 60, 80]
        );
        // Speech (any other level), and packets without a level, all pass.
        assert_eq!(passed(&mut t, t0, 100, 5, Some(-40)).len(), 5);
        assert_eq!(passed(&mut t, t0, 105, 5, None).len(), 5);
        assert_eq!(passed(&mut t, t0, 110, 3, Some(-126)).len(), 3);
        // Silence after sound: its first packet passes at once.
        assert_eq!(passed(&mut t, t0, 113, 25, Some(-127)), vec![113, 133]);
    }

    #[test]
    fn an_arrival_time_going_back_does_not_open_the_gate() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut t = SilenceThinner::default();
        assert!(t.forward(Some(SILENCE_DBOV), t0));
        assert!(!t.forward(Some(SILENCE_DBOV), t0 - Duration::from_millis(500)));
        assert!(!t.forward(Some(SILENCE_DBOV), t0 + Duration::from_millis(399)));
        assert!(t.forward(Some(SILENCE_DBOV), t0 + KEEP_EVERY));
    }
}
