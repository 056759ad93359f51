//! coturn's `turnutils_uclient` against hpb's TURN server: the client Talk admins already
//! trust to check a TURN server.

use hpb_test_support::turnutils::{EchoPeer, uclient};

use crate::support::{SECRET, loopback_config, start, udp_addr, wait_metric};

/// 4 clients, 200 messages each, client to client over UDP; both legs counted.
async fn udp_client_to_client(short_circuit: bool) {
    let mut cfg = loopback_config();
    cfg.relay_short_circuit = short_circuit;
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
    r.assert_all_delivered(800);
    for direction in ["to_peer", "to_client"] {
        let name = format!("hpb_turn_relayed_packets_total{{direction=\"{direction}\"}}");
        // Counters are added after each batch is sent: wait for the last one.
        assert_eq!(wait_metric(&s, &name, |v| v >= 800).await, 800, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_client_to_client_relays_every_message() {
    udp_client_to_client(true).await;
}

/// The same without the in-process short cut: through both relay sockets and the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_client_to_client_through_the_relay_sockets() {
    udp_client_to_client(false).await;
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
    r.assert_all_delivered(800);
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
    r.assert_all_delivered(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_allocations_through_an_echo_peer() {
    let s = start(loopback_config()).await;
    let peer = EchoPeer::start().await;
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
        &peer.port.to_string(),
        "-p",
        &port,
        "127.0.0.1",
    ])
    .await;
    drop(peer);
    r.assert_all_delivered(1000);
    let to_peer = "hpb_turn_relayed_packets_total{direction=\"to_peer\"}";
    // Counters are published shortly after the packets leave.
    assert_eq!(wait_metric(&s, to_peer, |v| v >= 1000).await, 1000);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6062_tcp_relaying_client_to_client() {
    let mut cfg = loopback_config();
    cfg.tcp_relay = true;
    let s = start(cfg).await;
    let port = s.tcp[0].port().to_string();
    let r = uclient(&[
        "-T",
        "-W",
        SECRET,
        "-u",
        "bench",
        "-m",
        "4",
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
    r.assert_all_delivered(400);
}

#[tokio::test]
async fn rfc6062_is_refused_unless_enabled() {
    let s = start(loopback_config()).await;
    let port = s.tcp[0].port().to_string();
    let r = uclient(&[
        "-T",
        "-W",
        SECRET,
        "-u",
        "bench",
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
}
