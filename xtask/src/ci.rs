//! `cargo xtask ci`: everything `.ci/run` checks: tools, formatting, clippy, every test, and a
//! short fuzz run. Each check runs even when an earlier one failed, so one CI run reports all
//! of them; it fails at the end naming those that failed.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{deps, fuzz, proc, test, workspace};

const FUZZ_SECONDS: u64 = 10;

/// `with_tests: false` leaves the tests out (`.ci/run` runs them as `cargo xtask test`).
pub fn run(with_tests: bool) -> Result<()> {
    let started = Instant::now();
    let mut failed: Vec<String> = Vec::new();
    let mut check = |name: &str, result: Result<()>| {
        if let Err(err) = result {
            eprintln!("error: {err:#}");
            failed.push(name.to_owned());
        }
    };

    check(
        "deps",
        proc::step("deps", || deps::install(deps::Options { fuzz: false })),
    );
    check("fmt", proc::step("fmt", fmt));
    check(
        "clippy",
        proc::step("clippy", || {
            proc::run(workspace::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }),
    );
    if with_tests {
        check(
            "test",
            proc::step("test", || {
                test::run(test::Options {
                    quick: true,
                    nextest_args: Vec::new(),
                })
            }),
        );
    }
    if fuzz::exists() {
        // Fuzzing needs cargo-fuzz from crates.io; if it cannot be installed, say so loudly
        // and skip fuzzing rather than fail the whole run on a tool install.
        match proc::step("deps --fuzz", || {
            deps::install(deps::Options { fuzz: true })
        }) {
            Ok(()) => check("fuzz", proc::step("fuzz", || fuzz::run(FUZZ_SECONDS))),
            Err(err) => {
                eprintln!("warning: skipping fuzzing, cargo-fuzz is not installable: {err:#}")
            }
        }
    } else {
        println!("==> fuzz: skipped, no fuzz/ directory");
    }

    let secs = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!("==> ci: ok ({secs:.1}s)");
        Ok(())
    } else {
        println!("==> ci: FAILED ({secs:.1}s): {}", failed.join(", "));
        bail!("ci failed: {}", failed.join(", "))
    }
}

fn fmt() -> Result<()> {
    proc::run(workspace::cargo().args(["fmt", "--all", "--", "--check"]))?;
    if fuzz::exists() {
        // fuzz/ is its own workspace, so `--all` above does not reach it.
        proc::run(workspace::cargo().args([
            "fmt",
            "--all",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--",
            "--check",
        ]))?;
    }
    Ok(())
}
