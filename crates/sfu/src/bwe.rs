//! Bandwidth-driven layer choice: the bitrate each simulcast layer of a publisher track
//! arrives at, each subscriber's estimate of what its link takes (the REMB its client
//! sends: subscribers are offered REMB feedback, not transport-cc), and the rule that moves a
//! viewer down when its estimate falls below what it is fed and probes back up later, so
//! that a subscriber is never fed more than its link carries for long.
//!
//! A receiver's estimate only grows with what it receives (Chromium's REMB is at most 1.5×
//! the received rate plus 10 kbit/s), so a viewer moved down would stay down: [`LayerCap`]
//! tries the next layer up after a wait, and goes back (waiting twice as long next time)
//! when the estimate falls during the try, the receiver's sign of congestion. An estimate
//! still below the new layer's rate is no failure: it cannot be higher until the layer
//! flows, and it then climbs.

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::media::Rid;

/// Left of a subscriber's estimate for audio, RTCP and retransmissions.
const RESERVE_BPS: u64 = 64_000;

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
}

/// The codecs offered to a subscriber: the publisher's, with REMB feedback and without
/// transport-cc, so the client estimates its downlink and reports it.
pub(crate) fn with_remb(params: Vec<PayloadParams>) -> Vec<PayloadParams> {
    params
        .into_iter()
        .map(|mut p| {
            if p.spec().codec.is_video() {
                p.set_fb_remb(true);
                p.set_fb_transport_cc(false);
            }
            p
        })
        .collect()
}

/// What a subscriber's link is estimated to carry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Estimate {
    /// The last REMB the subscriber sent.
    pub remb: Option<u64>,
    /// The last REMB was clearly lower than the one before (congestion, not ramp-up).
    pub falling: bool,
}

impl Estimate {
    /// A REMB arrived.
    pub fn remb(&mut self, bps: u64) {
        self.falling = self.remb.is_some_and(|prev| bps < prev - prev / 20);
        self.remb = Some(bps);
    }

    /// The bitrate video may use: the estimate less a reserve.
    pub fn video_budget(&self) -> Option<u64> {
        Some(self.remb?.saturating_sub(RESERVE_BPS))
    }

    /// The estimate reported in metrics (0: none yet).
    pub fn bps(&self) -> u64 {
        self.remb.unwrap_or(0)
    }
}

/// The first wait before a viewer moved down tries the next layer up.
const PROBE_FIRST: Duration = Duration::from_secs(3);
/// The longest wait between two tries.
const PROBE_MAX: Duration = Duration::from_secs(60);
/// A try that the estimate carried this long succeeded.
const PROBE_JUDGE: Duration = Duration::from_secs(5);

/// The highest layer a viewer's estimate lets it have now, per subscriber track.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerCap {
    /// Index (into the track's layers, lowest first) of the best allowed; `None`: no limit.
    cap: Option<usize>,
    since: Option<Instant>,
    probe_wait: Duration,
    /// When the cap was last raised (a try up in progress until judged).
    raised_at: Option<Instant>,
}

impl Default for LayerCap {
    fn default() -> Self {
        LayerCap {
            cap: None,
            since: None,
            probe_wait: PROBE_FIRST,
            raised_at: None,
        }
    }
}

impl LayerCap {
    /// The layer (index, lowest first) a viewer gets among `0..=top` (`top`: the one its
    /// selection wants), where `is_sent` tells which are being sent and `current` is the
    /// one it gets now. Moves the cap down when the estimate falls below the current
    /// layer's rate (during a try up: the try failed), and up after the wait.
    #[allow(clippy::too_many_arguments)]
    pub fn target(
        &mut self,
        now: Instant,
        est: &Estimate,
        rate: impl Fn(usize) -> u64,
        top: usize,
        is_sent: impl Fn(usize) -> bool,
        current: Option<usize>,
    ) -> Option<usize> {
        if let Some(t) = self.raised_at
            && now.saturating_duration_since(t) >= PROBE_JUDGE
        {
            self.raised_at = None;
            self.probe_wait = PROBE_FIRST;
        }
        let budget = est.video_budget();
        if let (Some(b), Some(c)) = (budget, current) {
            let trying = self.raised_at.is_some();
            if est.falling && rate(c) > b {
                let below = (0..c).rev().filter(|i| is_sent(*i));
                let down = below.clone().find(|i| rate(*i) <= b).or(below.last());
                if let Some(d) = down {
                    if trying {
                        self.probe_wait = (self.probe_wait * 2).min(PROBE_MAX);
                    }
                    self.cap = Some(d);
                    self.since = Some(now);
                    self.raised_at = None;
                }
            }
        }
        if let (Some(k), Some(since)) = (self.cap, self.since)
            && now.saturating_duration_since(since) >= self.probe_wait
            && !est.falling
        {
            let up = (k + 1..=top).find(|i| is_sent(*i));
            self.cap = up.filter(|u| *u < top);
            self.since = Some(now);
            self.raised_at = Some(now);
        }
        let limit = self.cap.unwrap_or(top).min(top);
        (0..=limit).rev().find(|i| is_sent(*i))
    }
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

    #[test]
    fn down_when_the_estimate_falls_and_up_again_by_trying() {
        let t0 = Instant::now();
        let r = rates(t0, &[("l", 150_000), ("m", 500_000), ("h", 1_500_000)]);
        assert_eq!(r.bps("m".into()), 500_000);
        let rate = |i: usize| r.bps(["l", "m", "h"][i].into());
        let all = |_: usize| true;
        let mut cap = LayerCap::default();
        let mut est = Estimate::default();
        // No estimate, or a rising one (a receiver ramping up): the selected layer.
        assert_eq!(cap.target(t0, &est, rate, 2, all, Some(2)), Some(2));
        est.remb(300_000);
        est.remb(900_000);
        assert_eq!(cap.target(t0, &est, rate, 2, all, Some(2)), Some(2));
        // It falls below the top layer's rate: the best layer that fits.
        est.remb(700_000);
        assert!(est.falling);
        assert_eq!(cap.target(t0, &est, rate, 2, all, Some(2)), Some(1));
        // Not before the wait, then one layer up.
        est.remb(800_000);
        let t1 = t0 + PROBE_FIRST / 2;
        assert_eq!(cap.target(t1, &est, rate, 2, all, Some(1)), Some(1));
        let t2 = t0 + PROBE_FIRST;
        assert_eq!(cap.target(t2, &est, rate, 2, all, Some(1)), Some(2));
        // An estimate below the new layer's rate is no failure while it does not fall (a
        // receiver's estimate trails what it receives: Chromium's REMB is at most 1.5× it).
        assert_eq!(cap.target(t2, &est, rate, 2, all, Some(2)), Some(2));
        est.remb(820_000);
        assert_eq!(cap.target(t2, &est, rate, 2, all, Some(2)), Some(2));
        // It falls during the try: down, and a longer wait.
        est.remb(600_000);
        assert_eq!(cap.target(t2, &est, rate, 2, all, Some(2)), Some(1));
        assert_eq!(cap.probe_wait, PROBE_FIRST * 2);
        est.remb(800_000);
        let t3 = t2 + PROBE_FIRST;
        assert_eq!(cap.target(t3, &est, rate, 2, all, Some(1)), Some(1));
        // A large estimate: the next try holds and the wait is reset once judged.
        est.remb(10_000_000);
        let t4 = t2 + PROBE_FIRST * 2;
        assert_eq!(cap.target(t4, &est, rate, 2, all, Some(1)), Some(2));
        let t5 = t4 + PROBE_JUDGE;
        assert_eq!(cap.target(t5, &est, rate, 2, all, Some(2)), Some(2));
        assert_eq!(cap.probe_wait, PROBE_FIRST);
        // The selection still caps: top = 0.
        assert_eq!(cap.target(t5, &est, rate, 0, all, Some(2)), Some(0));
        // Layers not sent are skipped.
        let no_mid = |i: usize| i != 1;
        est.remb(5_000_000);
        est.remb(400_000);
        assert_eq!(cap.target(t5, &est, rate, 2, no_mid, Some(2)), Some(0));
    }

    #[test]
    fn the_budget_is_the_remb_less_a_reserve() {
        let mut e = Estimate::default();
        assert_eq!(e.video_budget(), None);
        assert_eq!(e.bps(), 0);
        e.remb(500_000);
        assert!(!e.falling, "the first is no fall");
        assert_eq!(e.video_budget(), Some(500_000 - RESERVE_BPS));
        assert_eq!(e.bps(), 500_000);
        e.remb(490_000);
        assert!(!e.falling, "2 % is noise");
        e.remb(10_000);
        assert!(e.falling);
        assert_eq!(e.video_budget(), Some(0));
    }
}
