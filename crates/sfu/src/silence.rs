//! Thinning of silent audio, an option Janus does not have (`SfuConfig::thin_silent_audio`,
//! `[sfu] thin_silent_audio`). Audio is most of what a large Talk call forwards, because
//! every participant's audio goes to everyone, and a muted microphone still sends 50 Opus
//! packets a second. Those packets carry the audio level of digital silence (-127 dBov in
//! the RFC 6464 header extension). With the option, such a packet is forwarded once per
//! [`KEEP_EVERY`], the rate Opus DTX sends silence at. Speech always passes, and so does
//! the first silent packet after it. Subscribers get their own sequence numbers from str0m,
//! so they see no gap, only the timestamp step that DTX makes too.

use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
