//! `turn`: the same `turnutils_uclient` flood (client to client through two allocations,
//! 10 allocations, 1000-byte messages, UDP and TCP) against hpb's built-in TURN server and
//! Debian's coturn (`turnserver`), each started fresh on loopback.
//!
//! Reported per server and transport: delivered messages per second, loss (and how many
//! datagrams the kernel dropped on full receive buffers meanwhile), server CPU seconds per
//! 100k forwarded packets (each message crosses the server twice; the whole process's user
//! and system time over the flood only, after its start-up has settled), peak RSS.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hpb_test_support::turnutils::uclient;
use hpb_test_support::{Hpb, random_string};

use crate::procstat::{cpu_time, peak_rss};
use crate::report::{Row, print_table};

pub struct Options {
    pub clients: usize,
    pub messages: usize,
    pub length: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 10,
            messages: 20_000,
            length: 1000,
        }
    }
}

const SECRET: &str = "bench-turn-secret";
const REALM: &str = "bench.hpb";
const COTURN: &str = "/usr/bin/turnserver";

struct Measured {
    rate: f64,
    /// Datagrams the kernel dropped on full UDP receive buffers during the flood (any socket:
    /// the server's or the clients').
    rcvbuf_drops: u64,
    sent: u64,
    received: u64,
    cpu_per_100k: f64,
    peak_rss: u64,
}

fn free_port() -> Result<u16> {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_coturn(port: u16) -> Result<Coturn> {
    if !std::path::Path::new(COTURN).is_file() {
        bail!("{COTURN} is missing: run `cargo xtask deps` (Debian package coturn)");
    }
    let child = Command::new(COTURN)
        .args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--min-port=49152",
            "--max-port=65535",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            &format!("--realm={REALM}"),
            "--allow-loopback-peers",
            "--no-cli",
            "--fingerprint",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--simple-log",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting coturn")?;
    let c = Coturn(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("coturn did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(c)
}

async fn flood(pid: u32, port: u16, tcp: bool, o: &Options) -> Result<Measured> {
    let (m, n, l) = (
        o.clients.to_string(),
        o.messages.to_string(),
        o.length.to_string(),
    );
    let port_s = port.to_string();
    let mut args = vec![
        "-W", SECRET, "-u", "bench", "-y", "-c", "-m", &m, "-n", &n, "-l", &l, "-z", "0", "-p",
        &port_s,
    ];
    if tcp {
        args.insert(0, "-t");
    }
    args.push("127.0.0.1");
    settle(pid).await?;
    let drops0 = udp_rcvbuf_errors()?;
    let cpu0 = cpu_time(pid)?;
    let started = Instant::now();
    let run = uclient(&args).await;
    let wall = started.elapsed();
    let cpu = cpu_time(pid)?.saturating_sub(cpu0);
    let rcvbuf_drops = udp_rcvbuf_errors()?.saturating_sub(drops0);
    let (sent, received, _) = run.totals();
    if sent == u64::MAX || received == u64::MAX {
        bail!("turnutils_uclient printed no totals:\n{}", run.out);
    }
    let forwarded = (received * 2).max(1) as f64;
    Ok(Measured {
        rate: received as f64 / wall.as_secs_f64(),
        rcvbuf_drops,
        sent,
        received,
        cpu_per_100k: cpu.as_secs_f64() * 100_000.0 / forwarded,
        peak_rss: peak_rss(pid)?,
    })
}

/// Waits until the server's CPU time stops growing (start-up done), so the flood's
/// measurement holds only the flood: at most 5 s.
async fn settle(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = cpu_time(pid)?;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cpu_time(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(())
}

/// The kernel's count of UDP datagrams dropped on a full receive buffer (`/proc/net/snmp`
/// and `/proc/net/snmp6`, `RcvbufErrors`).
fn udp_rcvbuf_errors() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let v4 = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .context("no Udp RcvbufErrors in /proc/net/snmp")?;
    let v6 = std::fs::read_to_string("/proc/net/snmp6")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(char::is_whitespace)?;
                (k == "Udp6RcvbufErrors").then(|| v.trim().parse::<u64>().ok())?
            })
        })
        .unwrap_or(0);
    Ok(v4 + v6)
}

fn hpb_config(port: u16) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [sessions]\nhashkey = \"{}\"\n\n\
         [backend]\nallowall = true\nsecret = \"unused\"\n\n\
         [turn]\nsecret = \"{SECRET}\"\nrealm = \"{REALM}\"\nlisten = [\"127.0.0.1:{port}\"]\nallow_loopback_peers = true\n\n\
         [log]\nlevel = \"warn\"\n",
        random_string(32)
    )
}

pub async fn run(o: Options) -> Result<()> {
    println!(
        "turn: turnutils_uclient -y -c -m {} -n {} -l {} -z 0 (flood, client to client), UDP and TCP",
        o.clients, o.messages, o.length
    );
    println!("upstream: {COTURN} (Debian coturn) on 127.0.0.1 with --use-auth-secret");
    for tcp in [false, true] {
        let label = if tcp { "TCP" } else { "UDP" };
        let port = free_port()?;
        let hpb = Hpb::start(&hpb_config(port)).await;
        let ours = flood(hpb.pid(), port, tcp, &o).await.context("hpb flood")?;
        drop(hpb);
        let port = free_port()?;
        let coturn = start_coturn(port)?;
        let theirs = flood(coturn.0.id(), port, tcp, &o)
            .await
            .context("coturn flood")?;
        drop(coturn);
        let loss = |m: &Measured| {
            if m.sent == 0 {
                0.0
            } else {
                100.0 * (m.sent.saturating_sub(m.received)) as f64 / m.sent as f64
            }
        };
        let rows = [
            Row::new(
                "delivered messages per second",
                ours.rate,
                theirs.rate,
                "msg/s",
            ),
            Row::new("loss", loss(&ours), loss(&theirs), "%"),
            Row::new(
                "kernel UDP receive-buffer drops",
                ours.rcvbuf_drops as f64,
                theirs.rcvbuf_drops as f64,
                "pkts",
            ),
            Row::new(
                "server CPU per 100k forwarded packets",
                ours.cpu_per_100k,
                theirs.cpu_per_100k,
                "s",
            ),
            Row::new(
                "forwarded packets per CPU second",
                100_000.0 / ours.cpu_per_100k.max(1e-9),
                100_000.0 / theirs.cpu_per_100k.max(1e-9),
                "pkt/s",
            ),
            Row::new(
                "peak RSS",
                ours.peak_rss as f64 / 1048576.0,
                theirs.peak_rss as f64 / 1048576.0,
                "MiB",
            ),
        ];
        print_table(&format!("{label} flood"), &rows);
    }
    println!("\ngoal: at least 2x coturn's forwarded packets per CPU second, zero loss");
    Ok(())
}
