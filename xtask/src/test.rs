//! `cargo xtask test`: install the missing test tools, build the `hpb` binary the end-to-end
//! tests spawn, and run every test in the workspace with nextest's `ci` profile.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::{deps, junit, proc, workspace};

pub struct Options {
    /// Skip `deps`.
    pub quick: bool,
    /// Passed on to `cargo nextest run`.
    pub nextest_args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    if !opts.quick {
        proc::step("deps", || deps::install(deps::Options { fuzz: false }))?;
    }
    let hpb_bin = proc::step("build hpb", build_hpb)?;
    let report_dir = workspace::target_dir()?.join("nextest").join("ci");
    let summary_file = report_dir.join(FAILURES_FILE);
    let _ = std::fs::remove_file(&summary_file);
    let result = proc::step("nextest", || {
        let mut cmd = workspace::cargo();
        cmd.args(["nextest", "run", "--workspace", "--profile", "ci"])
            .args(&opts.nextest_args)
            // The end-to-end tests in tests/ spawn this binary.
            .env("HPB_BIN", &hpb_bin);
        proc::run(&mut cmd)
    });
    if result.is_err() {
        write_failures(&report_dir.join("junit.xml"), &summary_file);
    }
    result
}

/// The summary of failed tests `cargo xtask test` leaves in `target/nextest/ci/` when
/// tests fail (`.ci/run` prints it last).
pub const FAILURES_FILE: &str = "failures.txt";

/// Writes the failed tests of the JUnit report to `summary_file` and prints them.
fn write_failures(junit: &Path, summary_file: &Path) {
    let Ok(xml) = std::fs::read_to_string(junit) else {
        eprintln!("no test report at {} to summarize", junit.display());
        return;
    };
    let failures = junit::failures(&xml);
    if failures.is_empty() {
        return;
    }
    let summary = junit::summary(&failures);
    println!("{summary}");
    if let Err(e) = std::fs::write(summary_file, &summary) {
        eprintln!("writing {}: {e}", summary_file.display());
    }
}

/// Builds the debug `hpb` binary and returns its path.
fn build_hpb() -> Result<PathBuf> {
    proc::run(workspace::cargo().args(["build", "-p", "hpb"]))?;
    let bin = workspace::target_dir()?.join("debug").join("hpb");
    if !bin.is_file() {
        bail!(
            "`cargo build -p hpb` succeeded but {} does not exist",
            bin.display()
        );
    }
    Ok(bin)
}
