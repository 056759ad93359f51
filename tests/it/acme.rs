//! End-to-end: ACME on the public port against Debian's pebble (a local CA) and
//! pebble-challtestsrv (its DNS, answering 127.0.0.1 for every name), all on 127.0.0.1. hpb
//! gets a certificate for hpb.test through tls-alpn-01 on its own port, serves WSS with it,
//! keeps account and certificate in its cache, renews before expiry (pebble issues
//! short-lived certificates here), and on restart deploys the cached certificate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hpb_test_support::free_port;
use hpb_test_support::{FakeNextcloud, Hpb, free_config};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const DOMAIN: &str = "hpb.test";
const DEPLOYED: &str = "acme: certificate for hpb.test deployed";
/// Seconds pebble's certificates are valid: renewal comes after two thirds of it.
const VALIDITY: u64 = 24;

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("hpb-acme-{}", hpb_test_support::random_string(10)));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn binary(name: &str) -> &'static str {
    let path = match name {
        "pebble" => "/usr/bin/pebble",
        _ => "/usr/bin/pebble-challtestsrv",
    };
    assert!(
        Path::new(path).is_file(),
        "{path} is missing: run `cargo xtask deps` (Debian packages pebble, pebble-challtestsrv)"
    );
    path
}

/// pebble and its DNS server, killed on drop.
struct Pebble {
    _ca: Child,
    _dns: Child,
    /// The ACME directory URL.
    directory: String,
    /// The CA of pebble's own listener certificate (for `[https] acme_ca`).
    listener_ca: PathBuf,
    /// pebble's issuing root, which clients of hpb trust.
    root_pem: String,
}

/// A CA and a leaf for 127.0.0.1 signed by it: pebble's listener certificate (webpki refuses
/// a self-signed CA certificate used as a server certificate).
fn listener_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hpb test listener CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let paths = (
        dir.join("listener-ca.pem"),
        dir.join("listener-cert.pem"),
        dir.join("listener-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write CA");
    std::fs::write(&paths.1, leaf.pem()).expect("write cert");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write key");
    paths
}

fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA PEM"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn start_pebble(dir: &Path, tls_port: u16) -> Pebble {
    let (listener_ca, cert, key) = listener_certs(dir);
    let dns = free_port();
    let dns_mgmt = free_port();
    let acme = free_port();
    let mgmt = free_port();
    let http = free_port();
    let dns_proc = Command::new(binary("challtestsrv"))
        .args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_mgmt}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pebble-challtestsrv");
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": cert,
        "privateKey": key,
        "httpPort": http,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": VALIDITY,
    }});
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).expect("write pebble.json");
    let ca_proc = Command::new(binary("pebble"))
        .arg("-config")
        .arg(&config_path)
        .arg("-strict")
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns}"))
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pebble");

    let ca_pem = std::fs::read(&listener_ca).expect("read CA");
    let client = https_client(&ca_pem);
    let directory = format!("https://127.0.0.1:{acme}/dir");
    let mut root_pem = None;
    for _ in 0..100 {
        let dir_ok = client
            .get(&directory)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if dir_ok
            && let Ok(r) = client
                .get(format!("https://127.0.0.1:{mgmt}/roots/0"))
                .send()
                .await
            && r.status().is_success()
            && let Ok(text) = r.text().await
        {
            root_pem = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root_pem = root_pem.expect("pebble answers its directory and /roots/0 within 10 s");
    Pebble {
        _ca: ca_proc,
        _dns: dns_proc,
        directory,
        listener_ca,
        root_pem,
    }
}

fn acme_config(nc: &FakeNextcloud, port: u16, pebble: &Pebble, cache: &Path) -> String {
    free_config(
        nc,
        &format!(
            "[https]\nlisten = \"127.0.0.1:{port}\"\nacme_domains = [\"{DOMAIN}\"]\n\
             acme_email = \"admin@hpb.test\"\nacme_directory = \"{}\"\nacme_ca = \"{}\"\n\
             acme_cache = \"{}\"\n",
            pebble.directory,
            pebble.listener_ca.display(),
            cache.display()
        ),
    )
}

fn client_config(root_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(c.expect("root PEM"))
            .expect("trust pebble's root");
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The certificate hpb serves for hpb.test, verified against pebble's root.
async fn served_cert(port: u16, root_pem: &str) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(client_config(root_pem));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the ACME certificate, verified against pebble's root");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

/// WSS to wss://hpb.test:PORT/spreed (TCP to 127.0.0.1) and a hello.
async fn wss_hello(port: u16, root_pem: &str, nc: &FakeNextcloud) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        format!("wss://{DOMAIN}:{port}/spreed"),
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(client_config(
            root_pem,
        ))),
    )
    .await
    .expect("WSS connects with the ACME certificate");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let h = json!({"id": "1", "type": "hello", "hello": {"version": "1.0",
        "auth": {"url": nc.backend_url(), "params": {"userid": "alice", "ticket": nc.ticket("alice")}}}});
    ws.send(Message::Text(h.to_string().into()))
        .await
        .expect("send");
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "hello", "{reply}");
}

async fn wait_count(hpb: &Hpb, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if hpb.logs().matches(needle).count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn cache_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_pebble_serves_wss_renews_and_is_cached() {
    let dir = tempdir();
    let port = free_port();
    let pebble = start_pebble(&dir, port).await;
    let nc = FakeNextcloud::start().await;
    let cache = dir.join("acme-cache");
    let config = acme_config(&nc, port, &pebble, &cache);
    let hpb = Hpb::start(&config).await;

    // The first certificate: ordered, validated over tls-alpn-01 on hpb's port, deployed.
    assert!(
        hpb.wait_for_log(DEPLOYED, Duration::from_secs(60)).await,
        "no certificate deployed:\n{}",
        hpb.logs()
    );
    let logs = hpb.logs();
    assert!(
        logs.contains("acme: answered a tls-alpn-01 validation"),
        "pebble validated on the public port:\n{logs}"
    );
    wss_hello(port, &pebble.root_pem, &nc).await;
    let first = served_cert(port, &pebble.root_pem).await;

    // Account and certificate are in the cache.
    assert!(
        hpb.wait_for_log(
            "acme: certificate for hpb.test stored in",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        hpb.logs()
    );
    let files = cache_files(&cache);
    assert!(
        files.iter().any(|f| f.starts_with("cached_account_"))
            && files.iter().any(|f| f.starts_with("cached_cert_")),
        "cache holds account and certificate: {files:?}"
    );

    // Renewal: pebble's certificates live VALIDITY seconds, so a second one follows.
    assert!(
        wait_count(&hpb, DEPLOYED, 2, Duration::from_secs(90)).await,
        "no renewed certificate:\n{}",
        hpb.logs()
    );
    let renewed = served_cert(port, &pebble.root_pem).await;
    assert_ne!(first, renewed, "new handshakes get the renewed certificate");
    wss_hello(port, &pebble.root_pem, &nc).await;

    // A restart deploys the cached certificate.
    hpb.kill();
    drop(hpb);
    let hpb = Hpb::start(&config).await;
    assert!(
        hpb.wait_for_log(
            "acme: certificate for hpb.test deployed from the cache",
            Duration::from_secs(20)
        )
        .await,
        "{}",
        hpb.logs()
    );
    // Its renewal (due within VALIDITY seconds) uses the cached account.
    assert!(
        hpb.wait_for_log("acme: using the cached account", Duration::from_secs(60))
            .await,
        "{}",
        hpb.logs()
    );
    drop(hpb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_directory_is_explained() {
    let dir = tempdir();
    let port = free_port();
    let pebble = start_pebble(&dir, port).await;
    let nc = FakeNextcloud::start().await;
    let cache = dir.join("acme-cache");
    // Without acme_ca hpb does not trust pebble's listener certificate.
    let config = acme_config(&nc, port, &pebble, &cache).replace(
        &format!("acme_ca = \"{}\"\n", pebble.listener_ca.display()),
        "",
    );
    let hpb = Hpb::start(&config).await;
    assert!(
        hpb.wait_for_log("[https] acme_ca", Duration::from_secs(20))
            .await,
        "the log says to set acme_ca:\n{}",
        hpb.logs()
    );
    assert!(hpb.logs().contains("is not trusted"), "{}", hpb.logs());
    drop(hpb);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_that_does_not_reach_hpb_is_explained() {
    let dir = tempdir();
    let port = free_port();
    // pebble validates on a port where nothing listens: like port 443 not reaching hpb.
    let pebble = start_pebble(&dir, free_port()).await;
    let nc = FakeNextcloud::start().await;
    let cache = dir.join("acme-cache");
    let hpb = Hpb::start(&acme_config(&nc, port, &pebble, &cache)).await;
    assert!(
        hpb.wait_for_log("must be reachable", Duration::from_secs(60))
            .await,
        "the log explains that the CA could not connect:\n{}",
        hpb.logs()
    );
    let logs = hpb.logs();
    assert!(
        logs.contains("could not connect to port 443 of hpb.test"),
        "{logs}"
    );
    drop(hpb);
    let _ = std::fs::remove_dir_all(&dir);
}
