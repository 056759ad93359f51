//! `cargo xtask bench <name>`: the registry of benchmarks. Each runs the same work against our
//! binary and the upstream stack (nextcloud-spreed-signaling, janus, coturn) in one run and
//! prints ratios. To add one, write `fn run_x() -> Result<()>` in a module of its own and add
//! a row to `BENCHES`; tools it needs go in the table in `deps`.

use anyhow::{Result, bail};

use crate::proc;

struct Bench {
    name: &'static str,
    about: &'static str,
    run: fn() -> Result<()>,
}

/// Every benchmark. Planned: `signaling`, `turn`, `sfu`.
const BENCHES: &[Bench] = &[];

pub fn run(name: &str) -> Result<()> {
    match BENCHES.iter().find(|b| b.name == name) {
        Some(bench) => proc::step(&format!("bench {name}"), bench.run),
        None => {
            print_known();
            bail!("unknown benchmark `{name}`; known: {}", known())
        }
    }
}

fn known() -> String {
    if BENCHES.is_empty() {
        "(none yet)".to_owned()
    } else {
        BENCHES
            .iter()
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn print_known() {
    println!("benchmarks:");
    if BENCHES.is_empty() {
        println!("  (none yet)");
    }
    for b in BENCHES {
        println!("  {:<12} {}", b.name, b.about);
    }
}
