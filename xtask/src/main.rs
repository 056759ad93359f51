//! `cargo xtask`: the project's chores (installing test tools, testing, fuzzing, benchmarks,
//! release builds and CI) as one small Rust program, so they run the same everywhere.

mod bench;
mod ci;
mod deps;
mod dist;
mod fuzz;
mod junit;
mod proc;
mod test;
mod workspace;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  deps [--fuzz]              install the external tools tests and benchmarks use (idempotent);
                             --fuzz also installs cargo-fuzz
  test [--quick] [-- ARGS]   deps, build hpb, run every test with nextest (profile ci);
                             --quick skips deps; ARGS go to `cargo nextest run`
  fuzz [--seconds N]         run each fuzz target in fuzz/ for N seconds (default 20)
  bench <name> [ARGS]        run one benchmark against hpb and the upstream stack
                             (release build); ARGS go to the benchmark, e.g.
                             `bench signaling --sizes 100,500 --messages 200 --rate 40`
  dist [--dynamic]           release build of hpb into target/dist/ with a .sha256, its
                             size and checksum printed; glibc linked statically
                             (+crt-static) unless --dynamic
  ci [--no-test]             deps, fmt, clippy, test, fuzz (--no-test: all but the tests,
                             which .ci/run runs with `cargo xtask test`)
  help                       this text";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = dispatch(&args) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        bail!("no command given");
    };
    match cmd.as_str() {
        "deps" => {
            let mut fuzz = false;
            for arg in rest {
                match arg.as_str() {
                    "--fuzz" => fuzz = true,
                    other => bail!("deps: unknown option `{other}`\n\n{USAGE}"),
                }
            }
            proc::step("deps", || deps::install(deps::Options { fuzz }))
        }
        "test" => {
            let (own, passthrough) = split_passthrough(rest);
            let mut quick = false;
            for arg in own {
                match arg.as_str() {
                    "--quick" => quick = true,
                    other => bail!(
                        "test: unknown option `{other}` (arguments for nextest go after `--`)\n\n{USAGE}"
                    ),
                }
            }
            test::run(test::Options {
                quick,
                nextest_args: passthrough.to_vec(),
            })
        }
        "fuzz" => {
            let mut seconds = fuzz::DEFAULT_SECONDS;
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--seconds" => {
                        let value = it.next().context("fuzz: --seconds needs a number")?;
                        seconds = parse_seconds(value)?;
                    }
                    other => match other.strip_prefix("--seconds=") {
                        Some(value) => seconds = parse_seconds(value)?,
                        None => bail!("fuzz: unknown option `{other}`\n\n{USAGE}"),
                    },
                }
            }
            fuzz::run(seconds)
        }
        "bench" => match rest {
            [name, args @ ..] => bench::run(name, args),
            [] => {
                bench::print_known();
                bail!("bench: name a benchmark: cargo xtask bench <name>")
            }
        },
        "dist" => dist::run(dist::parse_options(rest)?).map(drop),
        "ci" => match rest {
            [] => ci::run(true),
            [flag] if flag == "--no-test" => ci::run(false),
            _ => bail!("usage: cargo xtask ci [--no-test]"),
        },
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// Splits `args` at the first `--`: what comes before is ours, what comes after is passed on.
fn split_passthrough(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

fn parse_seconds(value: &str) -> Result<u64> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("fuzz: --seconds wants a whole number of seconds above 0, got `{value}`"),
    }
}
