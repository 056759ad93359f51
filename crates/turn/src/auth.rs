//! Authentication the way Talk and coturn's `use-auth-secret` expect (TURN REST API):
//! username `<expiry>[:<user>]`, password `base64(HMAC-SHA1(secret, username))`, long-term
//! key `MD5(username:realm:password)`; several secrets at once for rotation. Nonces are
//! stateless (an HMAC over the client address and the issue time), so unauthenticated
//! requests cost no memory.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// Why a request's credentials were refused (metrics label and log reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No MESSAGE-INTEGRITY: the normal first step, answered with a challenge.
    Missing,
    /// USERNAME, REALM or NONCE missing next to MESSAGE-INTEGRITY.
    Incomplete,
    /// The username is not `<unix expiry>[:<user>]`.
    BadUsername,
    /// The username's expiry time has passed.
    Expired,
    /// The nonce is not one of ours or belongs to another client address.
    BadNonce,
    /// Our nonce, but older than the nonce lifetime: 438 with a fresh one.
    StaleNonce,
    /// REALM differs from ours.
    WrongRealm,
    /// MESSAGE-INTEGRITY did not verify with any configured secret.
    WrongPassword,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Incomplete => "incomplete",
            AuthFailure::BadUsername => "bad_username",
            AuthFailure::Expired => "expired",
            AuthFailure::BadNonce => "bad_nonce",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::WrongPassword => "wrong_password",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            AuthFailure::Missing => "no credentials yet (challenge)",
            AuthFailure::Incomplete => "MESSAGE-INTEGRITY without USERNAME, REALM and NONCE",
            AuthFailure::BadUsername => {
                "username is not <unix expiry>[:<user>] as the TURN REST API (use-auth-secret) makes it"
            }
            AuthFailure::Expired => "the username's expiry time has passed: fetch new credentials",
            AuthFailure::BadNonce => {
                "the nonce was not issued to this client address: retry with the new one"
            }
            AuthFailure::StaleNonce => "the nonce expired: retry with the new one",
            AuthFailure::WrongRealm => "REALM differs from [turn] realm",
            AuthFailure::WrongPassword => {
                "MESSAGE-INTEGRITY does not verify with any [turn] secret: the secret in Talk's TURN settings differs"
            }
        }
    }
}

/// The user part of a REST username (`1700000000:alice` → `alice`; no user part → "").
pub fn user_part(username: &str) -> &str {
    username.split_once(':').map(|(_, u)| u).unwrap_or("")
}

/// Checks the expiry of a REST username; `now` in Unix seconds.
pub fn check_username(username: &str, now: u64) -> Result<(), AuthFailure> {
    let ts = username.split_once(':').map(|(t, _)| t).unwrap_or(username);
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthFailure::BadUsername);
    }
    let expiry: u64 = ts.parse().map_err(|_| AuthFailure::BadUsername)?;
    if expiry < now {
        return Err(AuthFailure::Expired);
    }
    Ok(())
}

/// The TURN REST password for `username` under `secret`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The long-term credential key MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Issues and checks stateless nonces.
pub struct Nonces {
    key: [u8; 32],
    lifetime: Duration,
}

impl Nonces {
    pub fn new(lifetime: Duration) -> Nonces {
        Nonces {
            key: rand::random(),
            lifetime,
        }
    }

    fn tag(&self, issued: u64, client: SocketAddr) -> [u8; 8] {
        let mut mac =
            <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&issued.to_be_bytes());
        // The IP only: an RFC 6062 client reuses its nonce on new data connections.
        mac.update(client.ip().to_string().as_bytes());
        let full = mac.finalize().into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&full[..8]);
        t
    }

    /// A nonce for `client` issued at `now` (Unix seconds): 32 hex characters.
    pub fn issue(&self, client: SocketAddr, now: u64) -> String {
        let mut s = String::with_capacity(32);
        for b in now.to_be_bytes().iter().chain(self.tag(now, client).iter()) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Checks a nonce presented by `client`.
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now: u64) -> Result<(), AuthFailure> {
        if nonce.len() != 32 {
            return Err(AuthFailure::BadNonce);
        }
        let mut raw = [0u8; 16];
        for (i, chunk) in nonce.chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| AuthFailure::BadNonce)?;
            raw[i] = u8::from_str_radix(s, 16).map_err(|_| AuthFailure::BadNonce)?;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(ts);
        let want = self.tag(issued, client);
        // Constant time: fold the differences.
        let diff = want
            .iter()
            .zip(&raw[8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(AuthFailure::BadNonce);
        }
        if now > issued + self.lifetime.as_secs() || issued > now + 60 {
            return Err(AuthFailure::StaleNonce);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_usernames() {
        assert_eq!(check_username("2000000000:alice", 1_900_000_000), Ok(()));
        assert_eq!(check_username("2000000000", 1_900_000_000), Ok(()));
        assert_eq!(
            check_username("1000:alice", 1_900_000_000),
            Err(AuthFailure::Expired)
        );
        assert_eq!(check_username("alice", 1), Err(AuthFailure::BadUsername));
        assert_eq!(check_username(":x", 1), Err(AuthFailure::BadUsername));
        assert_eq!(
            check_username("99999999999999999999999:x", 1),
            Err(AuthFailure::BadUsername)
        );
        assert_eq!(user_part("1:alice"), "alice");
        assert_eq!(user_part("1"), "");
    }

    /// The same computation Talk's PHP does: base64_encode(hash_hmac('sha1', $user, $secret, true)).
    #[test]
    fn rest_password_matches_talk() {
        assert_eq!(
            rest_password(b"secret", "1700000000:user"),
            "I/MZeIG6MwzOV8Uubr9liB2556o="
        );
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_expire() {
        let n = Nonces::new(Duration::from_secs(600));
        let a: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.2:5000".parse().expect("addr");
        let nonce = n.issue(a, 1000);
        assert_eq!(n.check(nonce.as_bytes(), a, 1100), Ok(()));
        assert_eq!(
            n.check(nonce.as_bytes(), b, 1100),
            Err(AuthFailure::BadNonce)
        );
        assert_eq!(
            n.check(nonce.as_bytes(), a, 1700),
            Err(AuthFailure::StaleNonce)
        );
        assert_eq!(n.check(b"zz", a, 1000), Err(AuthFailure::BadNonce));
        assert_eq!(n.check(&[b'g'; 32], a, 1000), Err(AuthFailure::BadNonce));
    }
}
