//! End-to-end: hpb's one public TLS port. HTTPS and WSS signaling, TURN over TLS and TURN over
//! TCP all on the same port at the same time; garbage and silent connections closed without
//! harm to the others; a new certificate taken on SIGHUP without dropping a session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hpb_test_support::turnutils::uclient;
use hpb_test_support::{FakeNextcloud, Hpb, SIGHUP, free_config};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

struct Cert {
    pem: String,
    der: Vec<u8>,
}

fn write_cert(dir: &Path) -> Cert {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).expect("write key");
    Cert {
        pem: c.cert.pem(),
        der: c.cert.der().to_vec(),
    }
}

fn client_config(cert: &Cert) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .expect("trust the test certificate");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The `listening: https://ADDR` line.
fn https_addr(hpb: &Hpb) -> std::net::SocketAddr {
    hpb.stdout()
        .lines()
        .find_map(|l| l.strip_prefix("listening: https://"))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no https listener:\n{}", hpb.logs()))
}

async fn start(dir: &Path, nc: &FakeNextcloud) -> Hpb {
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    Hpb::start(&free_config(
        nc,
        &format!(
            "[https]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{cert}\"\nkey = \"{key}\"\n\n\
             [turn]\nsecret = \"tls-turn-secret\"\nlisten = [\"127.0.0.1:0\"]\nallow_loopback_peers = true\n"
        ),
    ))
    .await
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn wss(addr: std::net::SocketAddr, cert: &Cert) -> Wss {
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{}/spreed", addr.port()),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(client_config(cert))),
    )
    .await
    .expect("WSS connects with the served certificate");
    ws
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

async fn hello(ws: &mut Wss, nc: &FakeNextcloud, user: &str) -> Value {
    let welcome = next_json(ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let h = json!({"id": "1", "type": "hello", "hello": {"version": "1.0",
        "auth": {"url": nc.backend_url(), "params": {"userid": user, "ticket": nc.ticket(user)}}}});
    ws.send(Message::Text(h.to_string().into()))
        .await
        .expect("send");
    next_json(ws).await
}

/// The certificate the server presents to a new TLS connection.
async fn served_cert(addr: std::net::SocketAddr, trust: &Cert) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(client_config(trust));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_wss_and_turn_share_one_port() {
    let dir = tempdir();
    let cert = write_cert(&dir);
    let nc = FakeNextcloud::start().await;
    let hpb = start(&dir, &nc).await;
    let addr = https_addr(&hpb);

    // A silent connection and a garbage one are open the whole time.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut garbage = tokio::net::TcpStream::connect(addr).await.expect("connect");
    garbage
        .write_all(b"\xff\xfe\xfdnot a protocol")
        .await
        .expect("write");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf))
        .await
        .expect("garbage is closed at once")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server closes a connection speaking no known protocol"
    );

    // HTTPS.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).expect("pem"))
        .resolve("localhost", addr)
        .build()
        .expect("client");
    let r = http
        .get(format!("https://localhost:{}/api/v1/welcome", addr.port()))
        .send()
        .await
        .expect("HTTPS welcome");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-spreed-signaling-features"));

    // WSS signaling, TURN over TLS and TURN over TCP at the same time.
    let mut ws = wss(addr, &cert).await;
    let port = addr.port().to_string();
    let tls_args = [
        "-S",
        "-t",
        "-W",
        "tls-turn-secret",
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
        "127.0.0.1",
    ];
    let tls_run = uclient(&tls_args);
    let tcp_args = [
        "-t",
        "-W",
        "tls-turn-secret",
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
        "127.0.0.1",
    ];
    let tcp_run = uclient(&tcp_args);
    let (reply, tls_run, tcp_run) = tokio::join!(hello(&mut ws, &nc, "alice"), tls_run, tcp_run);
    assert_eq!(reply["type"], "hello", "{reply}");
    tls_run.assert_all_delivered(200);
    tcp_run.assert_all_delivered(200);

    // Plain HTTP on the TLS port is told what to do.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /api/v1/welcome HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_string(&mut text)).await;
    assert!(text.contains("use https://"), "{text}");

    // First bytes that arrive in pieces (a STUN Binding request: 3 bytes, a pause, the
    // rest) are still told apart once complete: TURN over TCP answers it.
    let mut split = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend_from_slice(&[7u8; 12]);
    split.write_all(&binding[..3]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    split.write_all(&binding[3..]).await.expect("write");
    let mut answer = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), split.read_exact(&mut answer))
        .await
        .expect("an answer to the split Binding request")
        .expect("read");
    assert_eq!(&answer[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&answer[8..20], &binding[8..20], "for our transaction");

    // The connection that never said anything (slow-loris) is closed by the server.
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut one))
        .await
        .expect("a silent connection is closed within the first-bytes timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_new_certificate_is_served_after_sighup_without_dropping_sessions() {
    let dir = tempdir();
    let old = write_cert(&dir);
    let nc = FakeNextcloud::start().await;
    let hpb = start(&dir, &nc).await;
    let addr = https_addr(&hpb);
    let mut ws = wss(addr, &old).await;
    let reply = hello(&mut ws, &nc, "alice").await;
    assert_eq!(reply["type"], "hello", "{reply}");

    let new = write_cert(&dir);
    hpb.signal(SIGHUP);
    assert!(
        hpb.wait_for_log("TLS certificate reloaded", Duration::from_secs(10))
            .await,
        "{}",
        hpb.logs()
    );
    assert_eq!(
        served_cert(addr, &new).await,
        new.der,
        "new handshakes get the new certificate"
    );

    // The session from before the reload still works.
    ws.send(Message::Text(
        json!({"id": "2", "type": "room", "room": {"roomid": ""}})
            .to_string()
            .into(),
    ))
    .await
    .expect("the old connection is still open");
    ws.send(Message::Text(
        json!({"id": "3", "type": "bye", "bye": {}})
            .to_string()
            .into(),
    ))
    .await
    .expect("send bye");
    let bye = next_json(&mut ws).await;
    assert_eq!(bye["type"], "bye", "{bye}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hpb-tls-{}", hpb_test_support::random_string(10)));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
