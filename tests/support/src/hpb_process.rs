//! Launches the real hpb binary for end-to-end tests: writes its configuration into a
//! temporary directory, waits for the `ready:` line (printed after every `listening:`,
//! `turn:` and `sfu:` line, when every listener is up), collects stdout and
//! stderr (printed when the test fails), and kills the process when dropped.
//!
//! The binary is `$HPB_BIN` if set, else `<dir of the test executable>/../hpb` (tests run
//! from `target/<profile>/deps/`). Build it first with `cargo build -p hpb`, or run
//! everything with `cargo xtask test`.

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::FakeNextcloud;
use crate::random_string;

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// The `[clients] internalsecret` of [`free_config`].
pub const INTERNAL_SECRET: &str = "internal-secret";

/// How long [`Hpb::start`] waits for the `ready:` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variables of the parent that would change hpb's configuration; they are
/// not passed on (tests pass what they need explicitly).
const AIO_VARS: &[&str] = &[
    "NC_DOMAIN",
    "SIGNALING_SECRET",
    "INTERNAL_SECRET",
    "TURN_SECRET",
    "SKIP_CERT_VERIFY",
    "TALK_MAX_STREAM_BITRATE",
    "TALK_MAX_SCREEN_BITRATE",
    "AIO_LOG_LEVEL",
    "TALK_PORT",
    "TALK_HOST",
    "TURN_DOMAIN",
    // A test runner under systemd must not have every hpb it starts report READY=1.
    "NOTIFY_SOCKET",
];

/// The path of the hpb binary (see the module documentation); panics if it is missing.
pub fn hpb_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HPB_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "HPB_BIN={} does not exist", bin.display());
        return bin;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .expect("test executable has a parent directory");
    let name = format!("hpb{}", std::env::consts::EXE_SUFFIX);
    for candidate in [dir.join("..").join(&name), dir.join(&name)] {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the hpb binary was not found next to {} (looked for ../{name}); build it with `cargo build -p hpb`, \
         run the tests with `cargo xtask test`, or set HPB_BIN",
        exe.display()
    );
}

/// A temporary directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("hpb-test-{}", random_string(12)));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Output {
    /// stdout and stderr interleaved by line.
    all: String,
    stdout: String,
    addr: Option<SocketAddr>,
    /// The `ready:` line was printed.
    ready: bool,
}

/// The address of a line `… listening: http://127.0.0.1:PORT …`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening: http://")? + "listening: http://".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The start of the line hpb prints when every listener is up.
const READY_LINE: &str = "ready:";

fn spawn_reader(stream: impl Read + Send + 'static, out: Arc<Mutex<Output>>, is_stdout: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let mut o = out.lock();
            o.all.push_str(&line);
            if !line.ends_with('\n') {
                o.all.push('\n');
            }
            if is_stdout {
                o.stdout.push_str(&line);
                if o.addr.is_none() {
                    o.addr = parse_listening(&line);
                }
                o.ready |= line.starts_with(READY_LINE);
            }
        }
    });
}

fn command(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Command {
    let mut cmd = Command::new(hpb_binary());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("HPB_") || AIO_VARS.contains(&key.as_ref()) {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("NO_COLOR", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// What [`Hpb::run`] observed of a process that is expected to exit.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Exit code (`None` if killed by a signal or still running at the timeout).
    pub code: Option<i32>,
    pub success: bool,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A running hpb process (see the module documentation).
pub struct Hpb {
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    addr: SocketAddr,
    output: Arc<Mutex<Output>>,
    config_path: Option<PathBuf>,
    dir: TempDir,
}

impl std::fmt::Debug for Hpb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hpb")
            .field("addr", &self.addr)
            .field("dir", &self.dir.0)
            .finish()
    }
}

impl Hpb {
    /// Writes `toml` to `<tempdir>/hpb.toml` and runs `hpb --config <file>`; panics with
    /// the output if it is not ready within 20 s.
    pub async fn start(toml: &str) -> Hpb {
        Self::start_toml_env(toml, &[]).await
    }

    /// Like [`Self::start`] with extra environment variables.
    pub async fn start_toml_env(toml: &str, env: &[(&str, &str)]) -> Hpb {
        Self::try_start_toml_env(toml, env)
            .await
            .unwrap_or_else(|logs| panic!("hpb did not start:\n{logs}"))
    }

    /// Like [`Self::start_toml_env`], returning the output if hpb exits or does not listen.
    pub async fn try_start_toml_env(toml: &str, env: &[(&str, &str)]) -> Result<Hpb, String> {
        let dir = TempDir::new();
        let path = dir.0.join("hpb.toml");
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let path_str = path.to_string_lossy().into_owned();
        Self::launch(dir, &["--config", &path_str], env, Some(path)).await
    }

    /// Runs `hpb --config <path>` (e.g. an upstream `server.conf`) with extra environment.
    pub async fn start_with_file(path: impl AsRef<Path>, env: &[(&str, &str)]) -> Hpb {
        let path = std::path::absolute(path.as_ref()).expect("absolute config path");
        let path_str = path.to_string_lossy().into_owned();
        Self::launch(TempDir::new(), &["--config", &path_str], env, Some(path))
            .await
            .unwrap_or_else(|logs| panic!("hpb did not start:\n{logs}"))
    }

    /// Runs hpb with any arguments (working directory: a fresh temp dir, see [`Self::dir`]).
    pub async fn start_args(args: &[&str], env: &[(&str, &str)]) -> Hpb {
        Self::try_start_args(args, env)
            .await
            .unwrap_or_else(|logs| panic!("hpb did not start:\n{logs}"))
    }

    /// Like [`Self::start_args`], returning the output if hpb exits or does not listen.
    pub async fn try_start_args(args: &[&str], env: &[(&str, &str)]) -> Result<Hpb, String> {
        Self::launch(TempDir::new(), args, env, None).await
    }

    /// Runs hpb to completion (e.g. `--version`, a broken config) and returns its output;
    /// kills it after `timeout`.
    pub async fn run(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> RunOutput {
        let dir = TempDir::new();
        let mut cmd = tokio::process::Command::from(command(args, env, &dir.0));
        cmd.kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", hpb_binary().display()));
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => RunOutput {
                code: out.status.code(),
                success: out.status.success(),
                timed_out: false,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Ok(Err(e)) => panic!("waiting for hpb: {e}"),
            Err(_) => RunOutput {
                code: None,
                success: false,
                timed_out: true,
                stdout: String::new(),
                stderr: String::new(),
            },
        }
    }

    async fn launch(
        dir: TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        config_path: Option<PathBuf>,
    ) -> Result<Hpb, String> {
        let mut child = command(args, env, &dir.0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", hpb_binary().display()));
        let output = Arc::new(Mutex::new(Output::default()));
        if let Some(stdout) = child.stdout.take() {
            spawn_reader(stdout, output.clone(), true);
        }
        if let Some(stderr) = child.stderr.take() {
            spawn_reader(stderr, output.clone(), false);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let (addr, ready) = {
                let o = output.lock();
                (o.addr, o.ready)
            };
            if let (Some(addr), true) = (addr, ready) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader threads a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let logs = output.lock().all.clone();
                return Err(format!(
                    "hpb {args:?} exited with {status} before listening; output:\n{logs}"
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let logs = output.lock().all.clone();
                return Err(format!(
                    "hpb {args:?} printed no `listening: http://…` and `ready:` lines within {START_TIMEOUT:?}; output:\n{logs}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Hpb {
            child: Mutex::new(child),
            exit: Mutex::new(None),
            addr,
            output,
            config_path,
            dir,
        })
    }

    /// The address hpb listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/spreed`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/spreed", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().id()
    }

    /// The temporary working directory of the process (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The configuration file passed with `--config`, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Everything hpb wrote so far, stdout and stderr interleaved by line.
    pub fn logs(&self) -> String {
        self.output.lock().all.clone()
    }

    /// Only stdout.
    pub fn stdout(&self) -> String {
        self.output.lock().stdout.clone()
    }

    /// Waits until the output contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output.lock().all.contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal (e.g. [`SIGTERM`], [`SIGHUP`]) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap_or_else(|e| panic!("running kill -{signal} {pid}: {e}"));
        assert!(
            status.success(),
            "kill -{signal} {pid} failed (process already gone?)"
        );
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&self) {
        let mut child = self.child.lock();
        let _ = child.kill();
        if let Ok(status) = child.wait() {
            *self.exit.lock() = Some(status);
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        if let Some(status) = *self.exit.lock() {
            return Some(status);
        }
        let status = self.child.lock().try_wait().ok().flatten();
        if status.is_some() {
            *self.exit.lock() = status;
        }
        status
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Hpb {
    fn drop(&mut self) {
        if self.try_exit_status().is_none() {
            self.kill();
        }
        if std::thread::panicking() || std::env::var_os("HPB_TEST_SHOW_LOGS").is_some() {
            // Let the reader threads catch up with the last lines.
            std::thread::sleep(Duration::from_millis(50));
            eprintln!(
                "----- hpb output ({}) -----\n{}----- end of hpb output -----",
                self.addr,
                self.logs()
            );
        }
    }
}

// ----- configuration helpers -----

/// A `[backends.<id>]` section for `fake` (its base URL and secret).
pub fn backend_section(id: &str, fake: &FakeNextcloud) -> String {
    let mut table = toml::Table::new();
    let mut backend = toml::Table::new();
    backend.insert(
        "urls".into(),
        toml::Value::Array(vec![toml::Value::String(fake.base_url())]),
    );
    backend.insert("secret".into(), toml::Value::String(fake.secret()));
    let mut backends = toml::Table::new();
    backends.insert(id.into(), toml::Value::Table(backend));
    table.insert("backends".into(), toml::Value::Table(backends));
    toml::to_string(&table).expect("serialize a backend section")
}

/// A configuration for one fake Nextcloud as backend `nc1`: listen on 127.0.0.1:0, a
/// random hashkey, `[clients] internalsecret = "internal-secret"`, stats allowed from
/// localhost. `extra` (TOML) is merged over it: its values win, tables are merged.
pub fn free_config(fake: &FakeNextcloud, extra: &str) -> String {
    free_config_multi(&[("nc1", fake)], extra)
}

/// Like [`free_config`] with several backends (`(id, fake)`).
pub fn free_config_multi(backends: &[(&str, &FakeNextcloud)], extra: &str) -> String {
    let mut base = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [sessions]\nhashkey = \"{}\"\n\n\
         [clients]\ninternalsecret = \"{INTERNAL_SECRET}\"\n\n\
         [stats]\nallowed_ips = [\"127.0.0.1\", \"::1\"]\n\n",
        random_string(32),
    );
    for (id, fake) in backends {
        base.push_str(&backend_section(id, fake));
        base.push('\n');
    }
    merge_toml(&base, extra)
}

/// Merges TOML `overlay` over `base` (tables merged recursively, other values replaced).
pub fn merge_toml(base: &str, overlay: &str) -> String {
    let mut base: toml::Table = base
        .parse()
        .unwrap_or_else(|e| panic!("base TOML does not parse: {e}\n{base}"));
    let overlay: toml::Table = overlay
        .parse()
        .unwrap_or_else(|e| panic!("extra TOML does not parse: {e}\n{overlay}"));
    merge_tables(&mut base, overlay);
    toml::to_string(&base).expect("serialize the merged TOML")
}

fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        assert_eq!(
            parse_listening("listening: http://127.0.0.1:8080"),
            "127.0.0.1:8080".parse().ok()
        );
        assert_eq!(
            parse_listening("x listening: http://127.0.0.1:81/ more"),
            "127.0.0.1:81".parse().ok()
        );
        assert_eq!(
            parse_listening("listening: http://[::1]:9\n"),
            "[::1]:9".parse().ok()
        );
        assert_eq!(parse_listening("listening: https://127.0.0.1:443"), None);
        assert_eq!(parse_listening("starting"), None);
    }

    #[test]
    fn merge_overrides_and_extends() {
        let merged = merge_toml(
            "[http]\nlisten = \"127.0.0.1:0\"\n[backend]\ntimeout = 10\n",
            "[http]\nallowed_origins = [\"https://a\"]\n[backend]\ntimeout = 2\n[limits]\nhello_timeout_ms = 500\n",
        );
        let t: toml::Table = merged.parse().expect("merged TOML parses");
        assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(t["http"]["allowed_origins"][0].as_str(), Some("https://a"));
        assert_eq!(t["backend"]["timeout"].as_integer(), Some(2));
        assert_eq!(t["limits"]["hello_timeout_ms"].as_integer(), Some(500));
    }

    #[tokio::test]
    async fn free_config_names_the_fakes() {
        let nc1 = FakeNextcloud::start().await;
        let nc2 = FakeNextcloud::start().await;
        let cfg = free_config_multi(
            &[("nc1", &nc1), ("nc2", &nc2)],
            "[limits]\nhello_timeout_ms = 2000\n",
        );
        let t: toml::Table = cfg.parse().expect("config parses");
        assert_eq!(
            t["backends"]["nc1"]["urls"][0].as_str(),
            Some(nc1.base_url().as_str())
        );
        assert_eq!(
            t["backends"]["nc2"]["secret"].as_str(),
            Some(nc2.secret().as_str())
        );
        assert_eq!(
            t["clients"]["internalsecret"].as_str(),
            Some(INTERNAL_SECRET)
        );
        assert_eq!(t["http"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(t["sessions"]["hashkey"].as_str().map(str::len), Some(32));
        assert_eq!(t["limits"]["hello_timeout_ms"].as_integer(), Some(2000));
    }
}
