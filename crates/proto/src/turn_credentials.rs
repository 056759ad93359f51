//! TURN REST API credentials (draft-uberti-behave-turn-rest, coturn `use-auth-secret`):
//! username `<unix expiry>[:<user>]`, password base64(HMAC-SHA1(secret, username)).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The password for `username` under `secret`.
pub fn password(secret: &[u8], username: &str) -> String {
    let mut m = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    m.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// A username valid until `expiry` (Unix seconds) for `user`.
pub fn username(expiry: u64, user: &str) -> String {
    if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    }
}

/// The expiry encoded in a username, if it has one.
pub fn expiry_of(username: &str) -> Option<u64> {
    username.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_scheme() {
        // echo -n "1700000000:alice" | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
        assert_eq!(expiry_of("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(username(5, ""), "5");
    }
}
