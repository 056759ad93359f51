//! Runs coturn's own TURN client tools (`turnutils_uclient`, `turnutils_peer`, from Debian's
//! `coturn`, installed by `cargo xtask deps`) and reads their results.

use std::process::Stdio;
use std::time::Duration;

/// What a `turnutils_uclient` run printed and how it ended.
#[derive(Debug, Clone)]
pub struct UclientRun {
    pub code: Option<i32>,
    /// stdout and stderr.
    pub out: String,
}

impl UclientRun {
    /// (sent, received, lost) messages from the summary lines; `u64::MAX` when missing.
    pub fn totals(&self) -> (u64, u64, u64) {
        let num_after = |key: &str| -> u64 {
            self.out
                .lines()
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

    /// Panics unless the run exited 0 and delivered `want` messages without loss.
    pub fn assert_all_delivered(&self, want: u64) {
        assert_eq!(
            self.code,
            Some(0),
            "turnutils_uclient failed:\n{}",
            self.out
        );
        assert_eq!(
            self.totals(),
            (want, want, 0),
            "turnutils_uclient:\n{}",
            self.out
        );
    }
}

fn require(tool: &str) {
    let path = format!("/usr/bin/{tool}");
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path} is missing: run `cargo xtask deps` (Debian package coturn)"
    );
}

/// Runs `turnutils_uclient ARGS` (at most two minutes).
pub async fn uclient(args: &[&str]) -> UclientRun {
    require("turnutils_uclient");
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
    UclientRun {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A running `turnutils_peer` (UDP echo) on 127.0.0.1, killed on drop.
pub struct EchoPeer {
    pub port: u16,
    _child: tokio::process::Child,
}

impl EchoPeer {
    pub async fn start() -> EchoPeer {
        require("turnutils_peer");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = tokio::process::Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnutils_peer starts");
        // It binds at once; give the process a moment to get there.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        for _ in 0..50 {
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(probe);
        EchoPeer {
            port,
            _child: child,
        }
    }
}
