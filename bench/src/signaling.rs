//! `signaling`: N sessions in one room, against hpb and against Debian's
//! nextcloud-spreed-signaling, each started fresh for every N with a fake Nextcloud.
//!
//! Measured per server and N: the wall time to connect + hello + join all sessions, the
//! fan-out latency of room messages (one sender, paced, every other session receives),
//! server CPU per delivered message, loss, and the server's peak RSS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hpb_test_support::{FakeNextcloud, Hpb, TestClient, random_string};
use serde_json::json;
use tokio::task::JoinSet;

use crate::procstat::{cpu_time, peak_rss};
use crate::report::{Row, percentile, print_table};
use crate::upstream::UpstreamSignaling;

pub struct Options {
    pub sizes: Vec<usize>,
    /// Room messages the sender sends per run.
    pub messages: usize,
    /// Messages per second the sender sends.
    pub rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sizes: vec![100, 500, 1000],
            messages: 200,
            rate: 40,
        }
    }
}

/// What one run measured.
struct Measured {
    join_wall: Duration,
    join_cpu: Duration,
    delivered: usize,
    expected: usize,
    latencies: Vec<Duration>,
    fanout_cpu: Duration,
    peak_rss: u64,
}

const ROOM: &str = "bench-room";
const PARALLEL_JOINS: usize = 25;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn connect_all(addr: String, nc: &FakeNextcloud, n: usize) -> Result<Vec<TestClient>> {
    let mut clients = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(PARALLEL_JOINS) {
        let mut set = JoinSet::new();
        for i in chunk * PARALLEL_JOINS..((chunk + 1) * PARALLEL_JOINS).min(n) {
            let addr = addr.clone();
            let backend = nc.backend_url();
            let ticket = nc.guest_ticket();
            set.spawn(async move {
                let mut c = TestClient::connect(addr).await;
                c.request_timeout = Duration::from_secs(60);
                c.hello_v1(&backend, None, &ticket).await;
                c.join(ROOM, format!("bench-session-{i}").as_str()).await;
                c
            });
        }
        for c in set.join_all().await {
            clients.push(c);
        }
    }
    Ok(clients)
}

/// Reads until every join event has arrived: nothing for `quiet`.
async fn settle(clients: Vec<TestClient>) -> Vec<TestClient> {
    let mut set = JoinSet::new();
    for mut c in clients {
        set.spawn(async move {
            c.drain(Duration::from_millis(500)).await;
            c
        });
    }
    set.join_all().await
}

/// How long the receivers get to start before the first measured message.
const RECEIVERS_START: Duration = Duration::from_millis(500);

async fn receive(mut c: TestClient, expected: usize, deadline: Instant) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = c.recv(left).await else {
            break;
        };
        if frame["type"] == "message" && frame["message"]["data"]["type"] == "bench" {
            let sent = frame["message"]["data"]["t"].as_u64().unwrap_or(0);
            latencies.push(Duration::from_micros(now_micros().saturating_sub(sent)));
        }
    }
    latencies
}

async fn run_one(
    addr: String,
    pid: u32,
    nc: &FakeNextcloud,
    n: usize,
    o: &Options,
) -> Result<Measured> {
    let cpu0 = cpu_time(pid)?;
    let started = Instant::now();
    let clients = connect_all(addr, nc, n).await?;
    let join_wall = started.elapsed();
    let mut clients = settle(clients).await;
    let cpu1 = cpu_time(pid)?;

    let mut sender = clients.remove(0);
    let expected_each = o.messages;
    let send_time = Duration::from_secs_f64(o.messages as f64 / f64::from(o.rate));
    let deadline = Instant::now() + send_time + Duration::from_secs(30);
    let mut receivers = JoinSet::new();
    for c in clients {
        receivers.spawn(receive(c, expected_each, deadline));
    }
    // Let every receiver task run once and wait on its socket before the first message:
    // otherwise the first messages' latency is the generator starting hundreds of tasks
    // (it was 46 ms for hpb's and 19 ms for upstream's second message at 500 sessions,
    // and alone set hpb's p99), not the server's fan-out.
    tokio::time::sleep(RECEIVERS_START).await;
    let cpu2 = cpu_time(pid)?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(o.rate)));
    for seq in 0..o.messages {
        tick.tick().await;
        sender
            .message_room(json!({"type": "bench", "seq": seq, "t": now_micros()}))
            .await;
    }
    let mut latencies = Vec::new();
    for l in receivers.join_all().await {
        latencies.extend(l);
    }
    let cpu3 = cpu_time(pid)?;
    latencies.sort();
    Ok(Measured {
        join_wall,
        join_cpu: cpu1.saturating_sub(cpu0),
        delivered: latencies.len(),
        expected: expected_each * (n - 1),
        latencies,
        fanout_cpu: cpu3.saturating_sub(cpu2),
        peak_rss: peak_rss(pid)?,
    })
}

fn hpb_config(secret: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [sessions]\nhashkey = \"{}\"\n\n\
         [backend]\nallowall = true\nallowhttp = true\nsecret = \"{secret}\"\n\n\
         [log]\nlevel = \"warn\"\n",
        random_string(32)
    )
}

pub async fn run(o: Options) -> Result<()> {
    println!(
        "signaling: one room, guests with hello v1, {} room messages at {}/s from one sender",
        o.messages, o.rate
    );
    println!(
        "upstream: {} (Debian), NATS :loopback:; both servers with allowall towards one fake Nextcloud",
        crate::upstream::UPSTREAM_SIGNALING
    );
    for &n in &o.sizes {
        let nc = FakeNextcloud::start().await;
        nc.add_public_room(ROOM);

        let hpb = Hpb::start(&hpb_config(&nc.secret())).await;
        let ours = run_one(hpb.addr().to_string(), hpb.pid(), &nc, n, &o)
            .await
            .context("hpb run")?;
        drop(hpb);

        let upstream = UpstreamSignaling::start(&nc.secret())?;
        let theirs = run_one(upstream.addr().to_string(), upstream.pid(), &nc, n, &o)
            .await
            .with_context(|| format!("upstream run; its log:\n{}", upstream.log()))?;
        drop(upstream);

        print_rows(n, &ours, &theirs);
    }
    println!("\ngoal: CPU per delivered message and peak RSS at most 0.5 of upstream, zero loss");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_rows(n: usize, a: &Measured, b: &Measured) {
    let per_msg_us = |m: &Measured| {
        if m.delivered == 0 {
            0.0
        } else {
            m.fanout_cpu.as_secs_f64() * 1e6 / m.delivered as f64
        }
    };
    let lost = |m: &Measured| (m.expected - m.delivered.min(m.expected)) as f64;
    let rows = [
        Row::new(
            "connect+hello+join, all sessions",
            ms(a.join_wall),
            ms(b.join_wall),
            "ms",
        ),
        Row::new(
            "server CPU for the joins",
            ms(a.join_cpu),
            ms(b.join_cpu),
            "ms",
        ),
        Row::new(
            "fan-out latency p50",
            ms(percentile(&a.latencies, 50.0)),
            ms(percentile(&b.latencies, 50.0)),
            "ms",
        ),
        Row::new(
            "fan-out latency p99",
            ms(percentile(&a.latencies, 99.0)),
            ms(percentile(&b.latencies, 99.0)),
            "ms",
        ),
        Row::new(
            "server CPU per delivered message",
            per_msg_us(a),
            per_msg_us(b),
            "µs",
        ),
        Row::new(
            "delivered messages",
            a.delivered as f64,
            b.delivered as f64,
            "count",
        ),
        Row::new("lost messages", lost(a), lost(b), "count"),
        Row::new(
            "peak RSS",
            a.peak_rss as f64 / 1048576.0,
            b.peak_rss as f64 / 1048576.0,
            "MiB",
        ),
    ];
    print_table(&format!("N = {n} sessions"), &rows);
}
