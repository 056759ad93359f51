//! `sfu`: rooms of str0m publishers and subscribers doing Talk's MCU flow through the real
//! signaling, against hpb's built-in SFU and against Janus behind nextcloud-spreed-signaling
//! in the same run; reports forwarded packets per SFU CPU second, one-way latency through the
//! SFU, loss and peak RSS, with ratios and the goal check.
//!
//! Each room has `publishers` sessions publishing Opus (20 ms, 100 bytes) + VP8 (`fps`,
//! `video_kbps`, a 5× keyframe every 2 s and on PLI/FIR) and `subscribers` sessions each
//! subscribed to every publisher of the room. The measured window starts once every
//! subscription has delivered media and lasts `seconds`; CPU is utime+stime of the server
//! processes over exactly that window, "forwarded" the RTP packets the subscribers received
//! in it, loss the frames/packets published in it that never arrived complete. A short
//! second window with video at a third of the frame rate follows; the two CPU/packet-rate
//! points give the SFU's marginal CPU per forwarded packet and its CPU not proportional to
//! packets (per-peer timers, RTCP, estimators), which explain the headline figure.
//!
//! Upstream quirks worked around (printed with the results): Debian's 0.4.1 cannot publish
//! `roomType` `video` at all (see [`servers::UpstreamSystem`]), so its publishers use `screen`;
//! libnice gathers no loopback candidates, so the clients of the Janus run bind to the host's
//! primary address (still loopback-routed).
//!
//! Environment: `HPB_BENCH_SFU_ONLY=hpb|upstream` runs one side; `HPB_BENCH_PERF=DIR` records
//! `perf record` of the SFU process over the window (`HPB_BENCH_PERF_CALLGRAPH=dwarf` for
//! callers); `HPB_BENCH_DEBUG=1` prints the signaling frames; `HPB_BENCH_KEEP=1` keeps Janus's and upstream's config and logs in /tmp.

mod media;
mod payload;
mod results;
mod servers;
mod talk;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hpb_test_support::{FakeNextcloud, Room};
use tokio::sync::watch;

use crate::pinning;
use crate::procstat::{cpu_time, peak_rss};
use media::{PubStats, Shape, SubStats};
use results::{Measured, print_results};
use servers::{HpbSystem, System, UpstreamSystem};
use talk::{PublisherTask, Session, SubscriberTask};

pub struct Options {
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub seconds: u64,
    pub fps: u32,
    pub video_kbps: u32,
    /// Rounds (hpb then upstream each); the table shows each side's median round.
    pub repeat: usize,
    /// Publishers per room whose microphone is muted; with any, hpb runs with
    /// `[sfu] thin_silent_audio` (Janus has no such option and forwards it all).
    pub muted: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rooms: 3,
            publishers: 2,
            subscribers: 5,
            seconds: 20,
            fps: 30,
            video_kbps: 1500,
            // Single rounds vary by up to a third on a shared VM, and one round in several
            // lands far from the rest: the table shows the median of five.
            repeat: 5,
            muted: 0,
        }
    }
}

/// The low-rate phase after the window: video frame period × this, for this long.
const LOW_RATE_SLOWDOWN: u32 = 3;
const LOW_RATE_WINDOW: Duration = Duration::from_secs(6);

/// Publishing permissions every participant gets (0.4.1 wants `publish-media`).
const PERMISSIONS: &[&str] = &[
    "publish-media",
    "publish-audio",
    "publish-video",
    "publish-screen",
];

struct Publication {
    stats: Arc<PubStats>,
    task: PublisherTask,
    muted: bool,
}

struct Subscription {
    publisher: usize,
    stats: Arc<SubStats>,
    task: SubscriberTask,
}

fn note(msg: &str) {
    eprintln!("  {msg}");
}

async fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn room_name(r: usize) -> String {
    format!("bench-sfu-{r}")
}

async fn run_one(sys: &dyn System, nc: &FakeNextcloud, o: &Options) -> Result<Measured> {
    let shape = Shape {
        fps: o.fps,
        video_kbps: o.video_kbps,
        keyframe_every: Duration::from_secs(2),
        muted: false,
    };
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    if let Some((server, rest)) = pinning::cores() {
        pinning::pin(sys.media_pid(), server)?;
        pinning::pin(std::process::id(), rest)?;
        if let Some(sig) = sys.signaling_pid() {
            pinning::pin(sig, rest)?;
        }
    }
    let addr = sys.addr();
    let mut publications: Vec<Publication> = Vec::new();
    let mut subscriptions: Vec<Subscription> = Vec::new();
    let mut pumps = Vec::new();
    for r in 0..o.rooms {
        let room = room_name(r);
        let mut pubs = Vec::new();
        for i in 0..o.publishers {
            pubs.push(
                Session::join(&addr, sys.client_ip(), nc, &room, &format!("r{r}p{i}")).await?,
            );
        }
        let mut subs = Vec::new();
        for i in 0..o.subscribers {
            subs.push(
                Session::join(&addr, sys.client_ip(), nc, &room, &format!("r{r}s{i}")).await?,
            );
        }
        let all: Vec<&Session> = pubs.iter().chain(subs.iter()).collect();
        talk::everyone_in_call(nc, &sys.http(), &room, &all).await?;
        let first = publications.len();
        let mut ids = Vec::new();
        for (i, p) in pubs.iter_mut().enumerate() {
            let muted = i < o.muted;
            let shape = Shape { muted, ..shape };
            let (stats, task) = p
                .publish(shape, sys.room_type(), stop.clone())
                .await
                .with_context(|| format!("publishing in {room}"))?;
            ids.push(p.id.clone());
            publications.push(Publication { stats, task, muted });
        }
        let room_pubs = &publications[first..];
        if !wait_until(Duration::from_secs(15), || {
            room_pubs
                .iter()
                .all(|p| p.stats.connected.load(Ordering::Relaxed))
        })
        .await
        {
            bail!("publishers in {room} did not connect (ICE/DTLS) within 15 s");
        }
        for s in &mut subs {
            for (i, id) in ids.iter().enumerate() {
                let (stats, task) = s
                    .subscribe(id, sys.room_type(), stop.clone())
                    .await
                    .with_context(|| format!("subscribing in {room}"))?;
                subscriptions.push(Subscription {
                    publisher: first + i,
                    stats,
                    task,
                });
            }
        }
        for s in pubs.into_iter().chain(subs) {
            pumps.push(s.pump(stop.clone()));
        }
    }
    let flowing = |s: &Subscription| {
        s.stats.video_frames.load(Ordering::Relaxed) > 0
            && s.stats.audio_packets.load(Ordering::Relaxed) > 0
    };
    if !wait_until(Duration::from_secs(20), || {
        subscriptions.iter().all(flowing)
    })
    .await
    {
        let stuck = subscriptions.iter().filter(|s| !flowing(s)).count();
        let unconnected = subscriptions
            .iter()
            .filter(|s| !s.stats.connected.load(Ordering::Relaxed))
            .count();
        bail!(
            "{stuck} of {} subscriptions got no audio+video within 20 s ({unconnected} not connected)",
            subscriptions.len()
        );
    }
    let setup = started.elapsed();
    // Let the start-up keyframe bursts pass.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let media_pid = sys.media_pid();
    let sig_pid = sys.signaling_pid();
    let me = std::process::id();
    let received = |subs: &[Subscription]| -> u64 {
        subs.iter()
            .map(|s| s.stats.packets.load(Ordering::Relaxed))
            .sum()
    };
    let marks = |pubs: &[Publication]| -> Vec<(u32, u32)> {
        pubs.iter()
            .map(|p| {
                (
                    p.stats.next_frame.load(Ordering::Relaxed),
                    p.stats.next_audio.load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    let perf = start_perf(media_pid);
    let t0 = Instant::now();
    let cpu0 = cpu_time(media_pid)?;
    let sig0 = sig_pid.map(cpu_time).transpose()?;
    let gen0 = cpu_time(me)?;
    let packets0 = received(&subscriptions);
    let marks0 = marks(&publications);
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    let marks1 = marks(&publications);
    let packets1 = received(&subscriptions);
    let cpu1 = cpu_time(media_pid)?;
    let sig1 = sig_pid.map(cpu_time).transpose()?;
    let gen1 = cpu_time(me)?;
    let window = t0.elapsed();
    stop_perf(perf);

    // The low-rate phase: video at a third of the frame rate, to split the SFU's CPU into a
    // part per forwarded packet and a part that is not (timers, RTCP, estimators).
    for p in &publications {
        p.stats.slowdown.store(LOW_RATE_SLOWDOWN, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let low0 = (
        Instant::now(),
        cpu_time(media_pid)?,
        received(&subscriptions),
    );
    tokio::time::sleep(LOW_RATE_WINDOW).await;
    let low1 = (
        Instant::now(),
        cpu_time(media_pid)?,
        received(&subscriptions),
    );

    let keyframe_requests = publications
        .iter()
        .map(|p| p.stats.keyframe_requests.load(Ordering::Relaxed))
        .sum();
    let _ = stop_tx.send(true);
    let mut m = Measured {
        setup,
        window,
        forwarded: packets1 - packets0,
        media_cpu: cpu1.saturating_sub(cpu0),
        signaling_cpu: sig0.zip(sig1).map(|(a, b)| b.saturating_sub(a)),
        generator_cpu: gen1.saturating_sub(gen0),
        media_rss: peak_rss(media_pid)?,
        signaling_rss: sig_pid.map(peak_rss).transpose()?,
        keyframe_requests,
        subscriptions: subscriptions.len(),
        low_window: low1.0 - low0.0,
        low_cpu: low1.1.saturating_sub(low0.1),
        low_forwarded: low1.2 - low0.2,
        ..Measured::default()
    };
    for s in subscriptions {
        let report = s.task.await.context("subscriber task")??;
        let (f0, a0) = marks0[s.publisher];
        let (f1, a1) = marks1[s.publisher];
        m.video_expected += u64::from(f1 - f0);
        let muted = publications[s.publisher].muted;
        m.seq_gaps += report.seq_gaps;
        let mut seen = std::collections::HashSet::new();
        for (n, lat) in report.video {
            if (f0..f1).contains(&n) && seen.insert(n) {
                m.video_received += 1;
                m.video_latency.push(Duration::from_micros(lat.into()));
            }
        }
        seen.clear();
        // A muted microphone's audio is not expected in full (hpb thins it): counted apart.
        if muted {
            m.muted_audio_sent += u64::from(a1 - a0);
        } else {
            m.audio_expected += u64::from(a1 - a0);
        }
        for (n, lat) in report.audio {
            if (a0..a1).contains(&n) && seen.insert(n) {
                if muted {
                    m.muted_audio_received += 1;
                } else {
                    m.audio_received += 1;
                    m.audio_latency.push(Duration::from_micros(lat.into()));
                }
            }
        }
    }
    for p in publications {
        p.task.await.context("publisher task")??;
    }
    for p in pumps {
        let _ = p.await;
    }
    m.video_latency.sort();
    m.audio_latency.sort();
    Ok(m)
}

pub async fn run(o: Options) -> Result<()> {
    let streams = o.rooms * o.publishers * o.subscribers;
    println!(
        "sfu: {} rooms x ({} publishers, {} subscribers) = {streams} subscriptions; \
         Opus 20 ms + VP8 {} fps {} kbit/s per publisher; {} s measured",
        o.rooms, o.publishers, o.subscribers, o.fps, o.video_kbps, o.seconds
    );
    println!(
        "upstream: {} behind {} (Debian), NATS :loopback:; clients are str0m in RTP mode on this host (127.0.0.1; for Janus its libnice host address) \
         doing Talk's offer/requestoffer flow through the signaling websocket",
        servers::JANUS,
        crate::upstream::UPSTREAM_SIGNALING
    );
    println!(
        "upstream publishes roomType \"screen\" (Debian's 0.4.1 refuses every \"video\" offer), hpb \"video\"; \
         load average at start: {}",
        loadavg()
    );
    println!("{}", pinning::describe());
    if o.muted > 0 {
        println!(
            "{} of {} publishers per room are muted (Opus at -127 dBov); hpb runs with [sfu] \
             thin_silent_audio, Janus forwards all of it",
            o.muted, o.publishers
        );
    }
    let nc = FakeNextcloud::start().await;
    for r in 0..o.rooms {
        nc.add_room(Room::public(&room_name(r)).with_permissions(PERMISSIONS));
    }

    let only = std::env::var("HPB_BENCH_SFU_ONLY").unwrap_or_default();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..o.repeat {
        if o.repeat > 1 {
            eprintln!("round {} of {}", round + 1, o.repeat);
        }
        if only != "upstream" {
            eprintln!("hpb …");
            let hpb = HpbSystem::start(&nc, o.muted > 0).await?;
            ours.push(run_one(&hpb, &nc, &o).await.context("hpb run")?);
        }
        if only != "hpb" {
            eprintln!("janus + nextcloud-spreed-signaling …");
            if let Some(m) = run_upstream(&nc, &o).await {
                theirs.push(m);
            }
        }
    }
    // hpb and Janus run in turn, round by round: a round's ratio compares two runs minutes
    // apart, while the medians of the two sides may come from different minutes of a
    // shared host whose speed drifts (by a third within a run here).
    let paired = paired_ratio(&ours, &theirs);
    if o.repeat > 1 {
        for (name, runs) in [("hpb", &ours), ("janus", &theirs)] {
            let figures: Vec<String> = runs
                .iter()
                .map(|m| format!("{:.0}", m.per_cpu_second()))
                .collect();
            println!(
                "{name}: forwarded packets per SFU CPU second per round: {}; the table shows the median round",
                figures.join(", ")
            );
        }
    }
    if let Some((ratios, _)) = &paired
        && ratios.len() > 1
    {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "hpb/janus forwarded packets per SFU CPU second, round by round: {}",
            shown.join(", ")
        );
    }
    let ours = median(ours).unwrap_or_default();
    let theirs = median(theirs);
    print_results(&ours, theirs.as_ref(), paired.map(|(_, m)| m));
    println!("load average at the end: {}", loadavg());
    Ok(())
}

/// Janus + upstream signaling, started fresh; `None` (with the logs printed) if it failed.
async fn run_upstream(nc: &FakeNextcloud, o: &Options) -> Option<Measured> {
    let up = match UpstreamSystem::start(&nc.secret()) {
        Ok(up) => up,
        Err(e) => {
            note(&format!("upstream did not start: {e:#}"));
            return None;
        }
    };
    match run_one(&up, nc, o).await {
        Ok(m) => Some(m),
        Err(e) => {
            note(&format!(
                "upstream run failed: {e:#}\n--- signaling log (tail) ---\n{}\n--- janus log (tail) ---\n{}",
                tail(&up.log(), 30),
                tail(&up.janus_log(), 30)
            ));
            None
        }
    }
}

/// The run with the median forwarded packets per SFU CPU second; of an even number, the
/// lower of the two middle runs (the table shows one run that happened, never the better
/// half of a tie).
fn median(runs: Vec<Measured>) -> Option<Measured> {
    lower_middle(runs, Measured::per_cpu_second)
}

/// The middle element of `v` ordered by `key`; of an even number, the lower middle one.
fn lower_middle<T>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = v.len().checked_sub(1)? / 2;
    v.into_iter().nth(mid)
}

/// The ratio of forwarded packets per SFU CPU second of each round in which both sides ran
/// (hpb's run, then Janus's), and their median (of an even number, the lower middle one).
fn paired_ratio(ours: &[Measured], theirs: &[Measured]) -> Option<(Vec<f64>, f64)> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(_, b)| b.per_cpu_second() > 0.0)
        .map(|(a, b)| a.per_cpu_second() / b.per_cpu_second())
        .collect();
    let median = lower_middle(ratios.clone(), |r| *r)?;
    Some((ratios, median))
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews latency (not CPU).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// With `HPB_BENCH_PERF=DIR`, `perf record` of the SFU process over the window into
/// `DIR/perf-<pid>.data` (for finding hot spots; not part of the figures).
/// `HPB_BENCH_PERF_CALLGRAPH=dwarf` unwinds with DWARF (the release build keeps no frame
/// pointers, so `-g` alone shows no callers of memcpy or malloc); `HPB_BENCH_PERF_FREQ`
/// samples more often than 499 Hz.
fn start_perf(pid: u32) -> Option<std::process::Child> {
    let dir = std::env::var_os("HPB_BENCH_PERF")?;
    let out = std::path::Path::new(&dir).join(format!("perf-{pid}.data"));
    let graph = std::env::var("HPB_BENCH_PERF_CALLGRAPH").unwrap_or_else(|_| "fp".into());
    let freq = std::env::var("HPB_BENCH_PERF_FREQ").unwrap_or_else(|_| "499".into());
    std::process::Command::new("perf")
        .args(["record", "-F", &freq, "--call-graph", &graph, "-q", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| note(&format!("perf: {e}")))
        .ok()
}

fn stop_perf(perf: Option<std::process::Child>) {
    if let Some(mut p) = perf {
        // perf writes its file on SIGINT.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(forwarded: u64) -> Measured {
        Measured {
            forwarded,
            media_cpu: Duration::from_secs(1),
            ..Measured::default()
        }
    }

    #[test]
    fn rounds_are_compared_pairwise() {
        let ours = [run(300), run(100), run(200)];
        let theirs = [run(100), run(50), run(40)];
        let (ratios, median) = paired_ratio(&ours, &theirs).expect("ratios");
        assert_eq!(ratios, vec![3.0, 2.0, 5.0]);
        assert_eq!(median, 3.0);
        // A round where Janus failed counts for nothing; none at all, no ratio.
        assert_eq!(
            paired_ratio(&ours[..2], &[run(100), run(0)]).map(|p| p.1),
            Some(3.0)
        );
        assert_eq!(paired_ratio(&ours, &[]), None);
    }

    #[test]
    fn median_is_the_middle_run_and_the_lower_middle_of_an_even_count() {
        let pick = |v: &[u64]| median(v.iter().map(|f| run(*f)).collect()).map(|m| m.forwarded);
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[7]), Some(7));
        assert_eq!(pick(&[9, 3, 5]), Some(5));
        assert_eq!(pick(&[9, 3, 5, 1]), Some(3));
    }
}
