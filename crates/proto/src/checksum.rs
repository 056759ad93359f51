//! The backend request checksum used in both directions between Nextcloud and the
//! signaling server: lowercase hex of HMAC-SHA256(secret, random ‖ body) (reference §2.1),
//! plus the internal-client token (hex HMAC-SHA256(secret, random)).

use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the random string.
pub const HEADER_RANDOM: &str = "Spreed-Signaling-Random";
/// Header carrying the checksum.
pub const HEADER_CHECKSUM: &str = "Spreed-Signaling-Checksum";
/// Header carrying the sending Nextcloud's base URL.
pub const HEADER_BACKEND: &str = "Spreed-Signaling-Backend";
/// Header listing the features on every reply Talk reads.
pub const HEADER_FEATURES: &str = "X-Spreed-Signaling-Features";

/// Minimum length of the random string Talk accepts.
pub const MIN_RANDOM_LEN: usize = 32;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    }
}

/// hex(HMAC-SHA256(secret, random ‖ body)).
pub fn calculate(secret: &[u8], random: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(random.as_bytes());
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Constant-time check of a received checksum.
pub fn verify(secret: &[u8], random: &str, body: &[u8], checksum: &str) -> bool {
    let Ok(expected) = hex::decode(checksum.trim()) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(random.as_bytes());
    m.update(body);
    m.verify_slice(&expected).is_ok()
}

/// The internal-client hello token: hex(HMAC-SHA256(secret, random)).
pub fn internal_token(secret: &[u8], random: &str) -> String {
    calculate(secret, random, b"")
}

/// A random string of `len` lowercase hex characters.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::rng().fill(&mut bytes[..]);
    let mut s = hex::encode(bytes);
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_example() {
        let body = br#"{"type":"auth","auth":{"version":"1.0","params":{"hello":"world"}}}"#;
        let random = "afb6b872ab03e3376b31bf0af601067222ff7990335ca02d327071b73c0119c6";
        let sum = calculate(b"MySecretValue", random, body);
        assert_eq!(
            sum,
            "3c4a69ff328299803ac2879614b707c807b4758cf19450755c60656cac46e3bc"
        );
        assert!(verify(b"MySecretValue", random, body, &sum));
        assert!(!verify(b"OtherSecret", random, body, &sum));
        assert!(!verify(b"MySecretValue", random, body, "zz"));
    }

    #[test]
    fn random_has_the_requested_length() {
        assert_eq!(random_hex(64).len(), 64);
        assert_eq!(random_hex(33).len(), 33);
    }
}
