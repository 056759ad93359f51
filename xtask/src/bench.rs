//! `cargo xtask bench <name> [ARGS]`: the registry of benchmarks. Each runs the same work
//! against our binary and the upstream program it replaces (nextcloud-spreed-signaling, janus,
//! coturn, from Debian) in one run and prints ratios. The load generators live in the
//! `hpb-bench` crate (`bench/`); this builds it and hpb in release mode, installs the upstream
//! programs through `deps`, and runs the named benchmark. To add one, add a subcommand to
//! `hpb-bench` and a row to `BENCHES`; tools it needs go in the table in `deps`.

use anyhow::{Result, bail};

use crate::{deps, proc, workspace};

struct Bench {
    name: &'static str,
    about: &'static str,
}

/// Every benchmark.
const BENCHES: &[Bench] = &[
    Bench {
        name: "signaling",
        about: "N = 100/500/1000 sessions in one room: join time, fan-out latency, CPU per message, RSS vs nextcloud-spreed-signaling",
    },
    Bench {
        name: "turn",
        about: "turnutils_uclient flood (UDP and TCP, 10 allocations, 1000-byte messages): msg/s, loss, CPU per 100k packets, RSS vs coturn",
    },
    Bench {
        name: "sfu",
        about: "str0m publishers/subscribers (Opus + VP8 RTP) in Talk rooms through the signaling: forwarded packets per SFU CPU second, latency, loss, RSS vs janus behind nextcloud-spreed-signaling",
    },
];

pub fn run(name: &str, args: &[String]) -> Result<()> {
    if !BENCHES.iter().any(|b| b.name == name) {
        print_known();
        bail!("unknown benchmark `{name}`; known: {}", known());
    }
    proc::step("deps", || deps::install(deps::Options { fuzz: false }))?;
    proc::step("build (release)", || {
        proc::run(workspace::cargo().args(["build", "--release", "-p", "hpb", "-p", "hpb-bench"]))
    })?;
    let release = workspace::target_dir()?.join("release");
    proc::step(&format!("bench {name}"), || {
        proc::run(
            std::process::Command::new(release.join("hpb-bench"))
                .arg(name)
                .args(args)
                .env("HPB_BIN", release.join("hpb")),
        )
    })
}

fn known() -> String {
    BENCHES
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print_known() {
    println!("benchmarks:");
    for b in BENCHES {
        println!("  {:<12} {}", b.name, b.about);
    }
}
