//! Starting a TURN server on loopback for one test, and TURN REST credentials.

use std::net::SocketAddr;

use std::sync::Arc;

use hpb_turn::{TurnConfig, TurnServer};

pub const SECRET: &str = "test-turn-secret";
pub const REALM: &str = "hpb.test";

/// A config on 127.0.0.1 with a free port, loopback peers allowed (tests only).
pub fn loopback_config() -> TurnConfig {
    let mut cfg = TurnConfig::new(vec![SECRET.as_bytes().to_vec()]);
    cfg.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.realm = REALM.into();
    cfg.allow_loopback_peers = true;
    cfg.workers = 2;
    cfg
}

pub async fn start(cfg: TurnConfig) -> TurnServer {
    TurnServer::start(cfg).await.expect("TURN server starts")
}

pub fn udp_addr(s: &TurnServer) -> SocketAddr {
    s.udp[0]
}

/// A rustls server config with a fresh self-signed certificate for localhost.
pub fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .expect("server config"),
    )
}

/// The value of one metric line of `render()` (`name` with its labels, e.g.
/// `hpb_turn_auth_failures_total{reason="wrong_password"}`).
pub fn metric(s: &TurnServer, name: &str) -> i64 {
    let text = s.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// Waits (at most 10 s) until `metric(name)` satisfies `ok`; returns the last value.
pub async fn wait_metric(s: &TurnServer, name: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = metric(s, name);
        if ok(v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
