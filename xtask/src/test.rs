//! `cargo xtask test`: install the missing test tools, build the `hpb` binary the end-to-end
//! tests spawn, and run every test in the workspace with nextest's `ci` profile.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{deps, proc, workspace};

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
    proc::step("nextest", || {
        let mut cmd = workspace::cargo();
        cmd.args(["nextest", "run", "--workspace", "--profile", "ci"])
            .args(&opts.nextest_args)
            // The end-to-end tests in tests/ spawn this binary.
            .env("HPB_BIN", &hpb_bin);
        proc::run(&mut cmd)
    })
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
