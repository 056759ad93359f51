//! Runs Debian's `nextcloud-spreed-signaling-server` (the reference the benchmarks compare
//! against) on loopback with its in-process NATS (`:loopback:`), a generated `server.conf`
//! and `allowall` towards the fake Nextcloud, and stops it when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where Debian installs it (package `nextcloud-spreed-signaling`).
pub const UPSTREAM_SIGNALING: &str = "/usr/bin/nextcloud-spreed-signaling-server";

pub struct UpstreamSignaling {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The upstream signaling server's `server.conf` for a benchmark: HTTP on `addr`, every
/// backend allowed with `secret`, the in-process NATS, and `mcu` as the `[mcu]` section's
/// body (`type =` for none).
pub fn signaling_conf(addr: SocketAddr, secret: &str, mcu: &str) -> String {
    format!(
        "[http]\nlisten = {addr}\n\n\
         [app]\ndebug = false\n\n\
         [sessions]\nhashkey = 0123456789abcdef0123456789abcdef\nblockkey = abcdefghijklmnop\n\n\
         [clients]\ninternalsecret = bench-internal\n\n\
         [backend]\nallowall = true\nsecret = {secret}\nallowhttp = true\ntimeout = 10\nconnectionsperhost = 32\n\n\
         [nats]\nurl = :loopback:\n\n\
         [mcu]\n{mcu}\n\n\
         [stats]\nallowed_ips = 127.0.0.1\n"
    )
}

impl UpstreamSignaling {
    /// Starts the server with `secret` as the common backend secret.
    pub fn start(secret: &str) -> Result<UpstreamSignaling> {
        if !std::path::Path::new(UPSTREAM_SIGNALING).is_file() {
            bail!("{UPSTREAM_SIGNALING} is missing: run `cargo xtask deps`");
        }
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir = std::env::temp_dir().join(format!("hpb-bench-upstream-{port}"));
        std::fs::create_dir_all(&dir)?;
        let conf = signaling_conf(addr, secret, "type =");
        let path = dir.join("server.conf");
        std::fs::write(&path, conf)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(UPSTREAM_SIGNALING)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {UPSTREAM_SIGNALING}"))?;
        let mut s = UpstreamSignaling { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = s.child.try_wait()? {
                bail!("upstream signaling exited with {status}:\n{}", s.log());
            }
            if Instant::now() > deadline {
                bail!("upstream signaling did not listen on {addr}:\n{}", s.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for UpstreamSignaling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
