//! End-to-end: the built-in TURN server of the hpb binary, configured as an admin would, used
//! by coturn's own client; credentials from `/turn/credentials` and from the AIO variables.

use hpb_test_support::free_port;
use hpb_test_support::turnutils::uclient;
use hpb_test_support::{FakeNextcloud, Hpb, free_config};
use serde_json::Value;

/// The `turn: udp+tcp ADDR` line hpb prints at start.
fn turn_port(hpb: &Hpb) -> u16 {
    hpb.stdout()
        .lines()
        .find_map(|l| l.strip_prefix("turn: udp+tcp "))
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("hpb printed no TURN address:\n{}", hpb.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_relays_udp_and_tcp_for_turnutils() {
    let nc = FakeNextcloud::start().await;
    let hpb = Hpb::start(&free_config(
        &nc,
        "[turn]\nsecret = \"turn-secret\"\nlisten = [\"127.0.0.1:0\"]\nallow_loopback_peers = true\n",
    ))
    .await;
    let port = turn_port(&hpb).to_string();
    let base = [
        "-W",
        "turn-secret",
        "-u",
        "talk",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "100",
        "-l",
        "300",
        "-z",
        "10",
        "-p",
        &port,
    ];
    uclient(&[&base[..], &["127.0.0.1"]].concat())
        .await
        .assert_all_delivered(200);
    uclient(&[&["-t"][..], &base[..], &["127.0.0.1"]].concat())
        .await
        .assert_all_delivered(200);
    // The refusal of a wrong secret is logged with its reason and the client address.
    let bad = uclient(&[
        "-W",
        "wrong",
        "-u",
        "talk",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "5",
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    assert_ne!(bad.code, Some(0), "{}", bad.out);
    assert!(
        hpb.wait_for_log("wrong_password", std::time::Duration::from_secs(5))
            .await,
        "{}",
        hpb.logs()
    );
    assert!(hpb.logs().contains("client=127.0.0.1:"), "{}", hpb.logs());

    // /metrics (for [stats] allowed_ips) shows the relayed traffic and the failure reason.
    let metrics = reqwest::get(format!("{}/metrics", hpb.http_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"))
    };
    assert!(value("hpb_turn_relayed_packets_total{direction=\"to_peer\"}") >= 400);
    assert!(value("hpb_turn_relayed_packets_total{direction=\"to_client\"}") >= 400);
    assert!(value("hpb_turn_auth_failures_total{reason=\"wrong_password\"}") >= 1);
    assert_eq!(value("signaling_hub_sessions"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_from_the_rest_endpoint_work_on_the_builtin_server() {
    let nc = FakeNextcloud::start().await;
    let port = free_port();
    let hpb = Hpb::start(&free_config(
        &nc,
        &format!(
            "[turn]\nsecret = \"turn-secret\"\napikey = \"the-api-key\"\ndomain = \"127.0.0.1\"\nlisten = [\"127.0.0.1:{port}\"]\nallow_loopback_peers = true\n"
        ),
    ))
    .await;
    let url = format!(
        "{}/turn/credentials?service=turn&key=the-api-key&username=alice",
        hpb.http_url()
    );
    let body: Value = reqwest::get(&url)
        .await
        .expect("GET /turn/credentials")
        .json()
        .await
        .expect("JSON");
    let uris: Vec<&str> = body["uris"]
        .as_array()
        .expect("uris")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        uris,
        [
            format!("turn:127.0.0.1:{port}?transport=udp"),
            format!("turn:127.0.0.1:{port}?transport=tcp")
        ]
    );
    let username = body["username"].as_str().expect("username");
    assert!(username.ends_with(":alice"), "{body}");
    let password = body["password"].as_str().expect("password");
    uclient(&[
        "-u",
        username,
        "-w",
        password,
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "50",
        "-l",
        "200",
        "-z",
        "10",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ])
    .await
    .assert_all_delivered(100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aio_variables_turn_on_turn_on_talk_port() {
    let nc = FakeNextcloud::start().await;
    let port = free_port();
    let hpb = Hpb::start_toml_env(
        &free_config(&nc, "[turn]\nallow_loopback_peers = true\n"),
        &[
            ("TURN_SECRET", "aio-turn-secret"),
            ("TALK_PORT", &port.to_string()),
        ],
    )
    .await;
    assert_eq!(turn_port(&hpb), port, "TURN listens on TALK_PORT");
    assert!(
        hpb.stdout()
            .contains(&format!("turn: udp+tcp 0.0.0.0:{port}")),
        "on every interface like the AIO container: {}",
        hpb.stdout()
    );
    uclient(&[
        "-W",
        "aio-turn-secret",
        "-u",
        "talk",
        "-y",
        "-c",
        "-m",
        "2",
        "-n",
        "50",
        "-z",
        "10",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ])
    .await
    .assert_all_delivered(100);
}
