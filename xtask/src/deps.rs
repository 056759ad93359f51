//! The external tools the tests and benchmarks use, in one table (`TOOLS`), and installing
//! the missing ones idempotently from Debian, PyPI, crates.io or npm. A test that needs a new
//! tool adds a row here.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::proc;

/// Where a tool comes from, and so how it is checked and installed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A Debian package; `provides` are commands it puts on PATH.
    Apt,
    /// A PyPI package for `python3`; `provides` are the modules to import.
    Pip,
    /// A crates.io binary installed with `cargo install --locked`; `provides` are commands.
    Cargo,
    /// An npm package installed with the machine's npm into [`NPM_PREFIX`] (git-ignored),
    /// where the scripts beside it `require` it; `provides` are the package names.
    Npm,
}

/// Where npm packages go, relative to the repository root: `<NPM_PREFIX>/node_modules/…`.
const NPM_PREFIX: &str = "tests/media/chromium";

/// The version range installed for npm package `name` (the table names packages bare).
fn npm_spec(name: &str) -> String {
    match name {
        // The Playwright API the browser test's driver uses; it drives Debian's chromium
        // by `executablePath` and never downloads a browser of its own.
        "playwright-core" => "playwright-core@1".to_owned(),
        other => other.to_owned(),
    }
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Apt => "debian",
            Source::Pip => "pypi",
            Source::Cargo => "crates.io",
            Source::Npm => "npm",
        }
    }
}

/// When a tool is needed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    /// Only with `deps --fuzz`.
    Fuzz,
}

struct Tool {
    package: &'static str,
    source: Source,
    /// Commands (Apt, Cargo), Python modules (Pip) or npm packages (Npm) that must exist
    /// once it is installed.
    provides: &'static [&'static str],
    when: When,
    /// Who uses it.
    why: &'static str,
}

const fn tool(
    package: &'static str,
    source: Source,
    provides: &'static [&'static str],
    when: When,
    why: &'static str,
) -> Tool {
    Tool {
        package,
        source,
        provides,
        when,
        why,
    }
}

use Source::{Apt, Cargo, Npm, Pip};
use When::{Always, Fuzz};

/// Every external tool, in one place.
#[rustfmt::skip]
const TOOLS: &[Tool] = &[
    tool("coturn", Apt, &["turnserver", "turnutils_uclient", "turnutils_peer"], Always,
         "TURN client/peer for e2e tests; the reference TURN server for benchmarks"),
    tool("nats-server", Apt, &["nats-server"], Always, "clustering tests over NATS"),
    tool("pebble", Apt, &["pebble", "pebble-challtestsrv"], Always, "ACME tests (a local CA)"),
    tool("nextcloud-spreed-signaling", Apt, &["nextcloud-spreed-signaling-server"], Always,
         "the upstream signaling server for benchmarks and compatibility tests"),
    tool("janus", Apt, &["janus"], Always, "the upstream SFU for benchmarks"),
    tool("iproute2", Apt, &["ip"], Always, "network namespaces for multi-host tests"),
    tool("openssl", Apt, &["openssl"], Always, "test certificates"),
    tool("curl", Apt, &["curl"], Always, "HTTP probes in tests and benchmarks"),
    tool("util-linux", Apt, &["taskset"], Always,
         "pins the server and the load generator to separate cores in bench sfu"),
    tool("aiortc", Pip, &["aiortc"], Always, "WebRTC client in e2e tests"),
    tool("websockets", Pip, &["websockets"], Always, "signaling client in e2e tests"),
    tool("chromium", Apt, &["chromium"], Always,
         "headless browser of the WebRTC e2e test (tests/it/browser.rs)"),
    tool("nodejs", Apt, &["node", "npm"], Always, "runs the browser test's Playwright driver"),
    tool("playwright-core", Npm, &["playwright-core"], Always,
         "drives Debian's chromium in the browser e2e test (tests/media/chromium/driver.js)"),
    tool("cargo-nextest", Cargo, &["cargo-nextest"], Always, "the test runner"),
    tool("cargo-fuzz", Cargo, &["cargo-fuzz"], Fuzz, "cargo xtask fuzz"),
];

pub struct Options {
    /// Also install the tools only fuzzing needs.
    pub fuzz: bool,
}

/// A failure to install, naming the packages it concerns.
struct Problem {
    packages: Vec<&'static str>,
    message: String,
}

/// Installs whatever in `TOOLS` is missing and reports what was installed and what was there.
/// Fails naming every package that could not be installed, after installing all the others.
pub fn install(opts: Options) -> Result<()> {
    let wanted: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| t.when == Always || (opts.fuzz && t.when == Fuzz))
        .collect();
    let mut installed: Vec<&str> = Vec::new();
    let mut already: Vec<&str> = Vec::new();
    let mut problems: Vec<Problem> = Vec::new();

    for source in [Apt, Pip, Cargo, Npm] {
        let (present, missing): (Vec<&Tool>, Vec<&Tool>) = wanted
            .iter()
            .copied()
            .filter(|t| t.source == source)
            .partition(|t| is_present(t));
        already.extend(present.iter().map(|t| t.package));
        if missing.is_empty() {
            continue;
        }
        for t in &missing {
            println!("    missing: {} ({}): {}", t.package, source.label(), t.why);
        }
        let failed = match source {
            Apt => install_apt(&missing),
            Pip => install_pip(&missing),
            Cargo => install_cargo(&missing),
            Npm => install_npm(&missing),
        };
        for t in missing {
            if is_present(t) {
                installed.push(t.package);
            } else if !failed.iter().any(|p| p.packages.contains(&t.package)) {
                let absent: Vec<&str> = t
                    .provides
                    .iter()
                    .copied()
                    .filter(|p| !provided(source, p))
                    .collect();
                let message = if absent.is_empty() {
                    format!(
                        "{} was installed but dpkg does not list it as installed",
                        t.package
                    )
                } else {
                    let kind = match source {
                        Pip => "importable",
                        Npm => "in node_modules",
                        Apt | Cargo => "on PATH",
                    };
                    format!(
                        "{} ({}) was installed but {} still not {kind}",
                        t.package,
                        source.label(),
                        absent.join(", ")
                    )
                };
                problems.push(Problem {
                    packages: vec![t.package],
                    message,
                });
            }
        }
        problems.extend(failed);
    }

    println!("    already present: {}", list(&already));
    println!("    installed now:   {}", list(&installed));
    if !problems.is_empty() {
        let names: Vec<&str> = problems
            .iter()
            .flat_map(|p| p.packages.iter().copied())
            .collect();
        for p in &problems {
            eprintln!("    error: {}", p.message);
        }
        bail!("could not install: {}", names.join(", "));
    }
    Ok(())
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

fn is_present(t: &Tool) -> bool {
    if t.source == Apt && !dpkg_installed(t.package) {
        return false;
    }
    t.provides.iter().all(|p| provided(t.source, p))
}

fn provided(source: Source, what: &str) -> bool {
    match source {
        Apt | Cargo => proc::which(what).is_some(),
        Pip => proc::succeeds(Command::new("python3").args(["-c", &format!("import {what}")])),
        Npm => crate::workspace::root()
            .join(NPM_PREFIX)
            .join("node_modules")
            .join(what)
            .join("package.json")
            .is_file(),
    }
}

fn dpkg_installed(package: &str) -> bool {
    proc::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.trim() == "install ok installed")
}

/// `apt-get`, through sudo when we are not root.
fn apt(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new(program);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["DEBIAN_FRONTEND=noninteractive", program]);
        cmd
    }
}

fn is_root() -> bool {
    proc::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn install_apt(missing: &[&Tool]) -> Vec<Problem> {
    let everything = || missing.iter().map(|t| t.package).collect::<Vec<_>>();
    if let Err(e) = proc::run(apt("apt-get").args(["update", "-qq"])) {
        return vec![Problem {
            packages: everything(),
            message: format!("{e:#}"),
        }];
    }

    let mut problems = Vec::new();
    let mut available = Vec::new();
    for t in missing {
        match apt_candidate(t.package) {
            Ok(Some(version)) => {
                println!("    {} {version} is available from Debian", t.package);
                available.push(t.package);
            }
            Ok(None) => problems.push(Problem {
                packages: vec![t.package],
                message: format!(
                    "Debian package `{}` is not available from the configured apt sources \
                     (`apt-cache policy {}` shows no candidate); needed for: {}",
                    t.package, t.package, t.why
                ),
            }),
            Err(e) => problems.push(Problem {
                packages: vec![t.package],
                message: format!("{e:#}"),
            }),
        }
    }
    if !available.is_empty() {
        let _guard = NoDaemons::install();
        let mut cmd = apt("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&available);
        if let Err(e) = proc::run(&mut cmd) {
            problems.push(Problem {
                message: format!("installing Debian packages {}: {e:#}", available.join(", ")),
                packages: available,
            });
        }
    }
    problems
}

/// The candidate version `apt-cache policy` offers for `package`, if any.
fn apt_candidate(package: &str) -> Result<Option<String>> {
    let out = proc::output(Command::new("apt-cache").args(["policy", package]))?;
    let candidate = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "(none)");
    Ok(candidate)
}

/// Keeps Debian's maintainer scripts from starting the daemons they install (coturn,
/// nats-server, janus …): a running system copy would hold the ports the tests use. Debian's
/// `invoke-rc.d` asks `/usr/sbin/policy-rc.d`, and exit code 101 means "don't start". Only
/// created (and removed again) when the machine has none of its own.
struct NoDaemons {
    created: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoDaemons {
    fn install() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(POLICY_RC_D);
        if path.exists() || !is_root() {
            return NoDaemons { created: false };
        }
        let script = "#!/bin/sh\n# Written by cargo xtask deps for the duration of apt-get install.\nexit 101\n";
        let created = std::fs::write(path, script).is_ok()
            && std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).is_ok();
        NoDaemons { created }
    }
}

impl Drop for NoDaemons {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn install_pip(missing: &[&Tool]) -> Vec<Problem> {
    let packages: Vec<&'static str> = missing.iter().map(|t| t.package).collect();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(&packages)
    // Debian's own python3 refuses `pip install` outside a venv (PEP 668); these are
    // test tools on a throwaway machine, so allow it. Other pythons ignore the variable.
    .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
    .env("PIP_ROOT_USER_ACTION", "ignore");
    match proc::run(&mut cmd) {
        Ok(()) => Vec::new(),
        Err(e) => vec![Problem {
            message: format!("installing PyPI packages {}: {e:#}", packages.join(", ")),
            packages,
        }],
    }
}

fn install_cargo(missing: &[&Tool]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for t in missing {
        let mut cmd = crate::workspace::cargo();
        cmd.args(["install", "--locked", t.package]);
        if let Err(e) = proc::run(&mut cmd) {
            problems.push(Problem {
                packages: vec![t.package],
                message: format!("installing {} from crates.io: {e:#}", t.package),
            });
        }
    }
    problems
}

fn install_npm(missing: &[&Tool]) -> Vec<Problem> {
    let packages: Vec<&'static str> = missing.iter().map(|t| t.package).collect();
    let prefix = crate::workspace::root().join(NPM_PREFIX);
    let mut cmd = Command::new("npm");
    cmd.arg("install")
        .arg("--prefix")
        .arg(&prefix)
        // No package.json / lock file in the repository: `npm_spec` sets the versions.
        .args(["--no-save", "--no-package-lock", "--no-audit", "--no-fund"])
        .args(packages.iter().map(|p| npm_spec(p)))
        // playwright-core never fetches browsers, but make sure nothing in the tree does.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    match proc::run(&mut cmd) {
        Ok(()) => Vec::new(),
        Err(e) => vec![Problem {
            message: format!("installing npm packages {}: {e:#}", packages.join(", ")),
            packages,
        }],
    }
}

/// Whether `package` is one of the tools in the table and present now.
pub fn present(package: &str) -> bool {
    TOOLS
        .iter()
        .find(|t| t.package == package)
        .is_some_and(is_present)
}
