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
