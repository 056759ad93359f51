//! coturn's `turnutils_uclient` against hpb's TURN server: the client Talk admins already
//! trust to check a TURN server.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{SECRET, loopback_config, require_turnutils, start, udp_addr};

struct Run {
    code: Option<i32>,
    out: String,
}

async fn uclient(args: &[&str]) -> Run {
    require_turnutils();
    let child = tokio::process::Command::new("turnutils_uclient")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_uclient starts");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("turnutils_uclient finishes within 2 minutes")
        .expect("turnutils_uclient output");
    Run {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// (sent, received, lost packets) from uclient's summary lines.
fn totals(out: &str) -> (u64, u64, u64) {
    let num_after = |key: &str| -> u64 {
        out.lines()
            .rev()
            .find_map(|l| {
                let i = l.find(key)?;
                l[i + key.len()..]
                    .trim_start_matches([':', ' ', '='])
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(u64::MAX)
    };
    (
        num_after("tot_send_msgs"),
        num_after("tot_recv_msgs"),
        num_after("Total lost packets"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_client_to_client_relays_every_message() {
    let s = start(loopback_config()).await;
    let port = udp_addr(&s).port().to_string();
    let r = uclient(&[
        "-W",
        SECRET,
        "-u",
        "bench",
        "-y",
        "-c",
        "-m",
        "4",
        "-n",
        "200",
        "-l",
        "500",
        "-z",
        "5",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    let (sent, recv, lost) = totals(&r.out);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert_eq!(sent, 800, "{}", r.out);
    assert_eq!(recv, 800, "{}", r.out);
    assert_eq!(lost, 0, "{}", r.out);
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn assert_all_delivered(r: &Run, want: u64) {
    let (sent, recv, lost) = totals(&r.out);
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert_eq!((sent, recv, lost), (want, want, 0), "{}", r.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_client_to_client_relays_every_message() {
    let s = start(loopback_config()).await;
    let port = s.tcp[0].port().to_string();
    let r = uclient(&[
        "-t",
        "-W",
        SECRET,
        "-u",
        "bench",
        "-y",
        "-c",
        "-m",
        "4",
        "-n",
        "200",
        "-l",
        "500",
        "-z",
        "5",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_all_delivered(&r, 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_to_client_relays_every_message() {
    let mut cfg = loopback_config();
    cfg.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    cfg.tls = Some(crate::support::self_signed_tls());
    let s = start(cfg).await;
    let port = s.tls.expect("TLS listener").port().to_string();
    let r = uclient(&[
        "-S",
        "-t",
        "-W",
        SECRET,
        "-u",
        "bench",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "100",
        "-l",
        "500",
        "-z",
        "10",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_all_delivered(&r, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_allocations_through_an_echo_peer() {
    let s = start(loopback_config()).await;
    let peer_port = free_udp_port();
    let mut peer = tokio::process::Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_peer starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = udp_addr(&s).port().to_string();
    let r = uclient(&[
        "-W",
        SECRET,
        "-u",
        "bench",
        "-c",
        "-m",
        "10",
        "-n",
        "100",
        "-l",
        "200",
        "-z",
        "5",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    let _ = peer.kill().await;
    assert_all_delivered(&r, 1000);
    let m = s.metrics();
    assert!(
        m.contains("hpb_turn_relayed_packets_total{direction=\"to_peer\"} 1000"),
        "{m}"
    );
}

#[tokio::test]
async fn a_wrong_secret_gets_401() {
    let s = start(loopback_config()).await;
    let port = udp_addr(&s).port().to_string();
    let r = uclient(&[
        "-W",
        "not-the-secret",
        "-u",
        "bench",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "10",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_ne!(r.code, Some(0), "{}", r.out);
    // uclient only says it could not allocate; the server counted why (401 wrong password).
    assert!(r.out.contains("Cannot complete Allocation"), "{}", r.out);
    assert!(
        s.metrics()
            .contains("hpb_turn_auth_failures_total{reason=\"wrong_password\"} "),
        "{}",
        s.metrics()
    );
    assert!(
        !s.metrics()
            .contains("hpb_turn_auth_failures_total{reason=\"wrong_password\"} 0"),
        "{}",
        s.metrics()
    );
}

#[tokio::test]
async fn an_expired_username_gets_401() {
    let s = start(loopback_config()).await;
    let port = udp_addr(&s).port().to_string();
    let username = "1000000000:bench";
    let password = hpb_turn::auth::rest_password(SECRET.as_bytes(), username);
    let r = uclient(&[
        "-u",
        username,
        "-w",
        &password,
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "10",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_ne!(r.code, Some(0), "{}", r.out);
    // uclient only says it could not allocate; the server counted why (401 wrong password).
    assert!(r.out.contains("Cannot complete Allocation"), "{}", r.out);
    assert!(
        !s.metrics()
            .contains("hpb_turn_auth_failures_total{reason=\"expired\"} 0"),
        "{}",
        s.metrics()
    );
}

#[tokio::test]
async fn a_denied_peer_gets_403() {
    let mut cfg = loopback_config();
    cfg.allow_loopback_peers = false;
    let s = start(cfg).await;
    let port = udp_addr(&s).port().to_string();
    // This machine's own address outside the relay ports: what an attacker would aim at.
    let r = uclient(&[
        "-W",
        SECRET,
        "-u",
        "bench",
        "-c",
        "-m",
        "1",
        "-n",
        "10",
        "-e",
        "127.0.0.1",
        "-r",
        "3480",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_ne!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("403"), "{}", r.out);
    assert!(
        !s.metrics().contains("hpb_turn_refused_peers_total 0"),
        "{}",
        s.metrics()
    );
}

#[tokio::test]
async fn an_exceeded_quota_gets_486() {
    let mut cfg = loopback_config();
    cfg.user_quota = 1;
    let s = start(cfg).await;
    let port = udp_addr(&s).port().to_string();
    let r = uclient(&[
        "-W",
        SECRET,
        "-u",
        "bench",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "10",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_ne!(r.code, Some(0), "{}", r.out);
    assert!(r.out.contains("486"), "{}", r.out);
    assert!(
        s.metrics().contains("hpb_turn_quota_refusals_total 1"),
        "{}",
        s.metrics()
    );
}
