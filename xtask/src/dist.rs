//! `cargo xtask dist`: a release build of `hpb`, copied to
//! `target/dist/hpb-<version>-<target triple>` with its SHA-256 in a `.sha256` file beside it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{proc, workspace};

pub fn run() -> Result<PathBuf> {
    proc::step("build release", || {
        proc::run(workspace::cargo().args(["build", "--release", "-p", "hpb"]))
    })?;
    proc::step("package", || {
        let target = workspace::target_dir()?;
        let name = format!(
            "hpb-{}-{}",
            workspace::package_version("hpb")?,
            workspace::host_triple()?
        );
        let dist = target.join("dist");
        std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;

        let built = target.join("release").join("hpb");
        let dest = dist.join(&name);
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;

        // Run in dist/ so the file names the binary without a path, as `sha256sum -c` wants.
        let sum = proc::output(Command::new("sha256sum").arg(&name).current_dir(&dist))?;
        let sum_file = dist.join(format!("{name}.sha256"));
        std::fs::write(&sum_file, &sum)
            .with_context(|| format!("writing {}", sum_file.display()))?;

        println!("    {}", dest.display());
        println!("    {}: {}", sum_file.display(), sum.trim_end());
        Ok(dest)
    })
}
