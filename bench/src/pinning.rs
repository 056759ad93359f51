//! CPU pinning of a benchmark's processes, as the SFU benchmark design asks (reference
//! `sfu.md` §3.3): the server under test on one core, the load generator (and a helper
//! server that is not measured) on the other, so that every packet a server sends to a
//! client on loopback does not preempt the server on its own core and the server's CPU
//! seconds are its own work. Uses `taskset` (util-linux) with `-a`: every thread of the
//! process now, and the threads it starts later inherit the mask.

use anyhow::{Context, Result, bail};

/// The core of the server under test and the core of everything else, or `None` when the
/// machine has fewer than two cores or `HPB_BENCH_NO_PIN` is set (then nothing is pinned).
pub fn cores() -> Option<(usize, usize)> {
    if std::env::var_os("HPB_BENCH_NO_PIN").is_some() {
        return None;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then_some((0, 1))
}

/// Pin every thread of `pid` to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux) to pin a benchmark process")?;
    if !out.status.success() {
        bail!(
            "taskset could not pin pid {pid} to cpu {cpu}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// How the run was placed, for the report header.
pub fn describe() -> String {
    match cores() {
        Some((server, rest)) => format!(
            "the SFU process is pinned to cpu {server}, the load generator and upstream's \
             signaling server to cpu {rest} (taskset; HPB_BENCH_NO_PIN=1 turns it off)"
        ),
        None => "processes are not pinned (fewer than 2 cores or HPB_BENCH_NO_PIN)".into(),
    }
}
