//! Test doubles and helpers for hpb's end-to-end tests: a fake Nextcloud Talk
//! ([`FakeNextcloud`]), a WebSocket signaling client ([`TestClient`]), a launcher for
//! the real hpb binary ([`Hpb`]) and coturn's TURN client tools ([`turnutils`]).
//!
//! Nothing here uses hpb's own crates: the checksums, tickets and tokens are computed
//! independently, the way Nextcloud Talk and its clients compute them, so the tests catch
//! a mistake that hpb and its tests would otherwise share.
//!
//! ```no_run
//! use hpb_test_support::{FakeNextcloud, Hpb, TestClient, free_config};
//!
//! # async fn demo() {
//! let nc = FakeNextcloud::start().await;
//! nc.add_public_room("room1");
//! let hpb = Hpb::start(&free_config(&nc, "")).await;
//! let mut alice = TestClient::connect(hpb.addr()).await;
//! let hello = alice.hello_v1(&nc.backend_url(), "alice", "alice-ticket").await;
//! alice.join("room1", "alice-room-session").await;
//! # let _ = hello;
//! # }
//! ```

pub mod barrier;
pub mod fake_nextcloud;
pub mod hpb_process;
pub mod turnutils;
pub mod ws_client;

pub use fake_nextcloud::{
    BACKEND_PATH_V3, CAPABILITIES_PATH, FakeConfig, FakeNextcloud, ForcedError, HeaderMap, RawOpts,
    RawReply, Recorded, Room, TokenAlg, TokenOpts, User, default_permissions,
    ed25519_raw_public_key_base64,
};
pub use hpb_process::{
    Hpb, INTERNAL_SECRET, RunOutput, SIGHUP, SIGINT, SIGKILL, SIGTERM, START_TIMEOUT,
    backend_section, free_config, free_config_multi, hpb_binary, merge_toml,
};
pub use ws_client::{
    CloseInfo, ConnectRefused, DEFAULT_TIMEOUT, HelloInfo, TestClient, error_code, ws_url,
};

use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::Sha256;

/// A port free on 127.0.0.1 for both UDP and TCP (TURN listens on both with one number).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().expect("bound address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Lowercase hex of HMAC-SHA256(key, message): the checksum of the backend API and the
/// token of an internal client's hello.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Spreed-Signaling-Checksum` of a backend request: lowercase hex of
/// HMAC-SHA256(key = secret, message = random ‖ body).
pub fn backend_checksum(secret: &str, random: &str, body: &[u8]) -> String {
    let mut message = Vec::with_capacity(random.len() + body.len());
    message.extend_from_slice(random.as_bytes());
    message.extend_from_slice(body);
    hmac_sha256_hex(secret.as_bytes(), &message)
}

/// A random alphanumeric string of `len` characters.
pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Installs rustls' ring crypto provider once (reqwest is built without one); harmless
/// when a provider is already installed.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_reference_example() {
        let body = br#"{"type":"auth","auth":{"version":"1.0","params":{"hello":"world"}}}"#;
        let random = "afb6b872ab03e3376b31bf0af601067222ff7990335ca02d327071b73c0119c6";
        assert_eq!(
            backend_checksum("MySecretValue", random, body),
            "3c4a69ff328299803ac2879614b707c807b4758cf19450755c60656cac46e3bc"
        );
    }

    #[test]
    fn random_strings_have_the_requested_length() {
        let a = random_string(64);
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_string(64));
    }
}
