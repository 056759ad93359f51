//! `cargo xtask fuzz`: build the cargo-fuzz targets in `fuzz/` and run each one for a bounded
//! time, failing if libFuzzer finds a crash.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{deps, proc, workspace};

pub const DEFAULT_SECONDS: u64 = 20;

fn fuzz_dir() -> PathBuf {
    workspace::root().join("fuzz")
}

/// Whether the repository has a cargo-fuzz project.
pub fn exists() -> bool {
    fuzz_dir().join("Cargo.toml").is_file()
}

/// `cargo fuzz …` from the repository root (cargo-fuzz finds `fuzz/` there).
fn cargo_fuzz() -> Command {
    let mut cmd = workspace::cargo();
    cmd.arg("fuzz");
    // cargo-fuzz builds with unstable rustc flags (-Zsanitizer=address and friends), which
    // only a nightly compiler accepts. The machine has one stable toolchain and can fetch no
    // other, so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them. Only for fuzzing.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd
}

pub fn run(seconds: u64) -> Result<()> {
    if !exists() {
        println!(
            "no fuzz targets ({} does not exist)",
            fuzz_dir().join("Cargo.toml").display()
        );
        return Ok(());
    }
    if !deps::present("cargo-fuzz") {
        proc::step("deps --fuzz", || {
            deps::install(deps::Options { fuzz: true })
        })?;
    }
    let listing = proc::output(cargo_fuzz().arg("list"))?;
    let targets: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if targets.is_empty() {
        println!("no fuzz targets");
        return Ok(());
    }
    println!("    fuzz targets: {}", targets.join(", "));
    proc::step("fuzz build", || proc::run(cargo_fuzz().arg("build")))?;
    let max_time = format!("-max_total_time={seconds}");
    for target in targets {
        proc::step(&format!("fuzz {target} ({seconds}s)"), || {
            proc::run(cargo_fuzz().args(["run", target, "--", &max_time]))
        })?;
    }
    Ok(())
}
