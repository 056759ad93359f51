//! Bandwidth-driven layer choice: the bitrate each simulcast layer of a publisher track
//! arrives at, each subscriber's estimate of what its link takes (str0m's send-side TWCC
//! estimate, or the REMB the subscriber sends), and the rule that picks the best layer that
//! fits, so that a subscriber is never fed more than its link carries.

use std::time::{Duration, Instant};

use str0m::media::Rid;

/// The estimate str0m starts from before any TWCC feedback: high, so that a subscriber
/// whose client sends no feedback (no transport-cc) is not held to a guess. Real feedback
/// brings it down within a second when the link is smaller.
pub(crate) const INITIAL_ESTIMATE_BPS: u64 = 10_000_000;

/// Left of a subscriber's estimate for audio, RTCP and retransmissions.
const RESERVE_BPS: u64 = 64_000;

/// A layer above the one being forwarded is taken only with this much headroom (percent of
/// its rate), so the choice does not flap around an estimate close to a layer's rate.
const UP_HEADROOM_PERCENT: u64 = 125;

/// How long the bytes of a layer are summed before its rate is updated.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// The rate one simulcast layer arrives at.
#[derive(Debug, Clone)]
pub(crate) struct LayerRate {
    pub rid: Rid,
    started: Instant,
    bytes: u64,
    /// Bits per second over the last complete window (0 until one completed).
    pub bps: u64,
}

/// Rates of a track's layers (one entry per rid seen).
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerRates(Vec<LayerRate>);

impl LayerRates {
    /// A frame of `bytes` payload on layer `rid` arrived at `now`.
    pub fn add(&mut self, rid: Rid, bytes: usize, now: Instant) {
        let r = match self.0.iter().position(|r| r.rid == rid) {
            Some(i) => &mut self.0[i],
            None => {
                self.0.push(LayerRate {
                    rid,
                    started: now,
                    bytes: 0,
                    bps: 0,
                });
                let last = self.0.len() - 1;
                &mut self.0[last]
            }
        };
        r.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(r.started);
        if elapsed >= RATE_WINDOW {
            r.bps = r.bytes * 8 * 1000 / (elapsed.as_millis().max(1) as u64);
            r.bytes = 0;
            r.started = now;
        }
    }

    /// The layer's rate in bits/s; 0 when not known yet.
    pub fn bps(&self, rid: Rid) -> u64 {
        self.0.iter().find(|r| r.rid == rid).map_or(0, |r| r.bps)
    }

    /// The highest rate of any layer (what a viewer of the top layer needs).
    pub fn max_bps(&self) -> u64 {
        self.0.iter().map(|r| r.bps).max().unwrap_or(0)
    }
}

/// What a subscriber's link is estimated to carry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Estimate {
    /// str0m's TWCC estimate, once feedback moved it off the initial value.
    pub twcc: Option<u64>,
    /// The last REMB the subscriber sent.
    pub remb: Option<u64>,
}

impl Estimate {
    /// Record a TWCC estimate; the initial one (no feedback yet) is not a measurement.
    pub fn set_twcc(&mut self, bps: u64) {
        if self.twcc.is_some() || bps != INITIAL_ESTIMATE_BPS {
            self.twcc = Some(bps);
        }
    }

    /// The bitrate video may use: the smaller of the two estimates, less a reserve.
    pub fn video_budget(&self) -> Option<u64> {
        let b = match (self.twcc, self.remb) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(b.saturating_sub(RESERVE_BPS))
    }

    /// The estimate reported in metrics (the smaller one).
    pub fn bps(&self) -> u64 {
        match (self.twcc, self.remb) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        }
    }
}

/// Among `candidates` (layers the selection allows that are being sent, best first), the
/// best that fits `budget`, given that `current` is being forwarded (a layer above it needs
/// headroom); the lowest candidate when none fits. `None` when there are no candidates.
pub(crate) fn best_fitting(
    candidates: impl Iterator<Item = Rid> + Clone,
    rates: &LayerRates,
    budget: u64,
    current: Option<Rid>,
    rank: impl Fn(Rid) -> usize,
) -> Option<Rid> {
    let current_rank = current.map(&rank);
    let fits = |r: Rid| {
        let bps = rates.bps(r);
        // Not measured yet: no reason to refuse it.
        if bps == 0 {
            return true;
        }
        let need = match current_rank {
            Some(c) if rank(r) > c => bps * UP_HEADROOM_PERCENT / 100,
            _ => bps,
        };
        need <= budget
    };
    candidates
        .clone()
        .find(|r| fits(*r))
        .or_else(|| candidates.last())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(now: Instant, layers: &[(&str, u64)]) -> LayerRates {
        let mut r = LayerRates::default();
        for (rid, bps) in layers {
            // Two adds RATE_WINDOW apart: one window of bps.
            r.add((*rid).into(), 0, now);
            let bytes = (*bps / 8 / 2) as usize;
            r.add((*rid).into(), bytes, now + RATE_WINDOW);
        }
        r
    }

    fn rank(r: Rid) -> usize {
        ["l", "m", "h"]
            .iter()
            .position(|x| Rid::from(*x) == r)
            .unwrap_or(0)
    }

    #[test]
    fn the_best_layer_that_fits_with_headroom_to_go_up() {
        let now = Instant::now();
        let r = rates(now, &[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        assert_eq!(r.bps("m".into()), 500_000);
        assert_eq!(r.max_bps(), 1_500_000);
        let best_first: Vec<Rid> = vec!["h".into(), "m".into(), "l".into()];
        let pick = |budget, current: Option<&str>| {
            best_fitting(
                best_first.iter().copied(),
                &r,
                budget,
                current.map(Rid::from),
                rank,
            )
        };
        assert_eq!(pick(10_000_000, None), Some("h".into()));
        assert_eq!(pick(1_000_000, Some("h")), Some("m".into()));
        assert_eq!(
            pick(100_000, Some("m")),
            Some("l".into()),
            "the lowest when none fits"
        );
        // Going up from m to h needs 1.25 x 1.5 Mbit/s; staying on h needs 1.5.
        assert_eq!(pick(1_600_000, Some("m")), Some("m".into()));
        assert_eq!(pick(1_600_000, Some("h")), Some("h".into()));
        assert_eq!(pick(1_900_000, Some("m")), Some("h".into()));
        assert_eq!(best_fitting([].into_iter(), &r, 1, None, rank), None);
    }

    #[test]
    fn estimates_combine_and_the_initial_twcc_value_is_no_measurement() {
        let mut e = Estimate::default();
        assert_eq!(e.video_budget(), None);
        e.set_twcc(INITIAL_ESTIMATE_BPS);
        assert_eq!(e.video_budget(), None, "no feedback yet");
        e.set_twcc(2_000_000);
        assert_eq!(e.video_budget(), Some(2_000_000 - RESERVE_BPS));
        e.remb = Some(500_000);
        assert_eq!(e.video_budget(), Some(500_000 - RESERVE_BPS));
        assert_eq!(e.bps(), 500_000);
        // Once measured, even the initial value counts.
        e.set_twcc(INITIAL_ESTIMATE_BPS);
        assert_eq!(e.twcc, Some(INITIAL_ESTIMATE_BPS));
    }
}
