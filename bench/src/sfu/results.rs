//! What one SFU benchmark run measured, and the table with ratios and goal checks it prints.

use std::time::Duration;

use crate::report::{Row, percentile, print_table};

/// Goals of issue #4.
const GOAL_PER_CPU_SECOND: f64 = 100_000.0;
const GOAL_RATIO: f64 = 3.0;

/// What one run measured.
#[derive(Default)]
pub struct Measured {
    pub setup: Duration,
    pub window: Duration,
    pub forwarded: u64,
    pub media_cpu: Duration,
    pub signaling_cpu: Option<Duration>,
    pub generator_cpu: Duration,
    pub media_rss: u64,
    pub signaling_rss: Option<u64>,
    pub video_latency: Vec<Duration>,
    pub audio_latency: Vec<Duration>,
    pub video_expected: u64,
    pub video_received: u64,
    pub audio_expected: u64,
    pub audio_received: u64,
    /// Audio of muted publishers (`--muted`): packets sent, and those that arrived.
    pub muted_audio_sent: u64,
    pub muted_audio_received: u64,
    pub seq_gaps: u64,
    pub keyframe_requests: u64,
    pub subscriptions: usize,
    /// The low-rate phase: its length, SFU CPU and forwarded packets.
    pub low_window: Duration,
    pub low_cpu: Duration,
    pub low_forwarded: u64,
}

impl Measured {
    /// The SFU's CPU over the window, in % of a core.
    pub fn core_percent(&self) -> f64 {
        self.media_cpu.as_secs_f64() * 100.0 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn per_cpu_second(&self) -> f64 {
        let cpu = self.media_cpu.as_secs_f64();
        if cpu > 0.0 {
            self.forwarded as f64 / cpu
        } else {
            0.0
        }
    }

    /// `(marginal CPU µs per forwarded packet, CPU not proportional to packets in % of a
    /// core)` from the two phases; `None` if the rates did not differ.
    pub fn split(&self) -> Option<(f64, f64)> {
        let rate = |n: u64, w: Duration| n as f64 / w.as_secs_f64().max(1e-9);
        let load = |c: Duration, w: Duration| c.as_secs_f64() / w.as_secs_f64().max(1e-9);
        let (p_hi, p_lo) = (
            rate(self.forwarded, self.window),
            rate(self.low_forwarded, self.low_window),
        );
        let (c_hi, c_lo) = (
            load(self.media_cpu, self.window),
            load(self.low_cpu, self.low_window),
        );
        if p_hi - p_lo < 1.0 {
            return None;
        }
        let per_packet = ((c_hi - c_lo) / (p_hi - p_lo)).max(0.0);
        Some((per_packet * 1e6, (c_hi - per_packet * p_hi) * 100.0))
    }

    pub fn lost(&self) -> u64 {
        self.video_expected.saturating_sub(self.video_received)
            + self.audio_expected.saturating_sub(self.audio_received)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// The table for `a` (hpb) against `b` (Janus), and the goals; `paired` is the median of
/// the round-by-round ratios, which the ratio goal is checked on when there is one.
pub fn print_results(a: &Measured, b: Option<&Measured>, paired: Option<f64>) {
    let zero = Measured::default();
    let b_or = b.unwrap_or(&zero);
    let row = |name: &str, f: &dyn Fn(&Measured) -> f64, unit: &'static str| {
        Row::new(name, f(a), f(b_or), unit)
    };
    let rows = [
        row(
            "forwarded packets per SFU CPU second",
            &|m| m.per_cpu_second(),
            "pkt/CPU-s",
        ),
        row(
            "forwarded packets per second",
            &|m| m.forwarded as f64 / m.window.as_secs_f64().max(1e-9),
            "pkt/s",
        ),
        row(
            "SFU CPU (hpb: whole process)",
            &Measured::core_percent,
            "% core",
        ),
        row(
            "signaling server CPU (upstream only)",
            &|m| {
                m.signaling_cpu.map_or(0.0, |c| {
                    c.as_secs_f64() * 100.0 / m.window.as_secs_f64().max(1e-9)
                })
            },
            "% core",
        ),
        row(
            "video frame latency p50",
            &|m| ms(percentile(&m.video_latency, 50.0)),
            "ms",
        ),
        row(
            "video frame latency p99",
            &|m| ms(percentile(&m.video_latency, 99.0)),
            "ms",
        ),
        row(
            "audio packet latency p50",
            &|m| ms(percentile(&m.audio_latency, 50.0)),
            "ms",
        ),
        row(
            "audio packet latency p99",
            &|m| ms(percentile(&m.audio_latency, 99.0)),
            "ms",
        ),
        row(
            "lost video frames",
            &|m| m.video_expected.saturating_sub(m.video_received) as f64,
            "count",
        ),
        row(
            "lost audio packets",
            &|m| m.audio_expected.saturating_sub(m.audio_received) as f64,
            "count",
        ),
        row(
            "video frames + audio packets expected",
            &|m| (m.video_expected + m.audio_expected) as f64,
            "count",
        ),
        row(
            "marginal SFU CPU per forwarded packet",
            &|m| m.split().map_or(0.0, |s| s.0),
            "µs",
        ),
        row(
            "SFU CPU not proportional to packets",
            &|m| m.split().map_or(0.0, |s| s.1),
            "% core",
        ),
        row("RTP sequence gaps seen", &|m| m.seq_gaps as f64, "count"),
        row(
            "keyframe requests to publishers",
            &|m| m.keyframe_requests as f64,
            "count",
        ),
        row("peak RSS, SFU process", &|m| mib(m.media_rss), "MiB"),
        row(
            "peak RSS, SFU + signaling",
            &|m| mib(m.media_rss + m.signaling_rss.unwrap_or(0)),
            "MiB",
        ),
        row("setup until media flows", &|m| ms(m.setup), "ms"),
        row(
            "load generator CPU (same machine)",
            &|m| m.generator_cpu.as_secs_f64() * 100.0 / m.window.as_secs_f64().max(1e-9),
            "% core",
        ),
    ];
    let title = format!(
        "{} subscriptions, {:.1} s window (upstream = janus{})",
        a.subscriptions,
        a.window.as_secs_f64(),
        if b.is_some() { "" } else { ": FAILED, zeros" }
    );
    print_table(&title, &rows);
    println!(
        "\nnote: the load generator runs on this machine too (placement: see the header); its CPU is in the table."
    );

    for (name, m) in [("hpb", Some(a)), ("janus", b)] {
        if let Some((us, fixed)) = m.and_then(Measured::split) {
            println!(
                "split ({name}): {:.0} packets per marginal CPU second ({us:.1} µs each) + {fixed:.1} % of a core \
                 not proportional to packets (second window: video at 1/3 frame rate)",
                1e6 / us.max(1e-9)
            );
        }
    }
    if a.muted_audio_sent > 0 {
        print_muted(a, b);
    }
    let ours = a.per_cpu_second();
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goal: >= {GOAL_PER_CPU_SECOND:.0} forwarded packets per SFU CPU second: hpb {ours:.0} -> {}",
        check(ours >= GOAL_PER_CPU_SECOND)
    );
    match (b, paired) {
        (_, Some(ratio)) => println!(
            "goal: >= {GOAL_RATIO:.0}x Janus's figure: {ratio:.2}x (median of the rounds' ratios) -> {}",
            check(ratio >= GOAL_RATIO)
        ),
        (Some(b), None) if b.per_cpu_second() > 0.0 => {
            let ratio = ours / b.per_cpu_second();
            println!(
                "goal: >= {GOAL_RATIO:.0}x Janus's figure: {ratio:.2}x -> {}",
                check(ratio >= GOAL_RATIO)
            );
        }
        _ => println!("goal: >= {GOAL_RATIO:.0}x Janus's figure: no Janus figure this run"),
    }
    println!(
        "goal: zero loss on loopback: hpb lost {} of {} -> {}",
        a.lost(),
        a.video_expected + a.audio_expected,
        check(a.lost() == 0)
    );
}

/// `--muted`: what share of the muted microphones' audio each SFU forwarded, and what the
/// same call cost each.
fn print_muted(a: &Measured, b: Option<&Measured>) {
    let share =
        |m: &Measured| 100.0 * m.muted_audio_received as f64 / m.muted_audio_sent.max(1) as f64;
    match b {
        Some(b) => println!(
            "muted microphones: hpb forwarded {:.1} % of their audio packets, Janus {:.1} %; \
             the same call cost hpb {:.2} % of a core and Janus {:.2} % ({:.2}x). The SFUs \
             forward different amounts here, so packets per CPU second do not compare: the \
             goals are for runs without --muted.",
            share(a),
            share(b),
            a.core_percent(),
            b.core_percent(),
            a.core_percent() / b.core_percent().max(1e-9)
        ),
        None => println!(
            "muted microphones: hpb forwarded {:.1} % of their audio packets, at {:.2} % of a core",
            share(a),
            a.core_percent()
        ),
    }
}
