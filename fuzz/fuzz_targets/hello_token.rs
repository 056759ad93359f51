//! Fuzz hello v2 token verification: the token is client input, the key is what Nextcloud
//! publishes. Any token against any key must give claims that pass the checks, or a refusal
//! with a message, never a panic. Besides raw input as token and as key, tokens whose
//! header and claims come from the input are signed with a test key, so the fuzzer reaches
//! the claim checks behind the signature (iat, exp, nbf, sub, userdata).
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use hpb_signaling::jwt::verify;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// An Ed25519 key pair made for this target (it signs nothing else).
const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJrOhxrKUdCjNg9mnR69HQuft3BtxDxeqfkbw5J/Oq2k
-----END PRIVATE KEY-----
";
const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA3f7TaG8NxZezYg1+BIRVRamnAQbXAF266gY1Qflz67Q=
-----END PUBLIC KEY-----
";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn check(token: &str, key: &str, now: i64) {
    match verify(token, key, now) {
        Ok(claims) => {
            let iat = claims.iat.expect("accepted without iat");
            let exp = claims.exp.expect("accepted without exp");
            assert!(iat <= now + 60, "accepted a token issued in the future");
            assert!(
                exp >= iat,
                "accepted a token that expires before it was issued"
            );
        }
        Err(e) => assert!(!e.message.trim().is_empty(), "a refusal without a reason"),
    }
}

fn signed(claims: &Value) -> Option<String> {
    let key = EncodingKey::from_ed_pem(PRIVATE.as_bytes()).ok()?;
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = now();
    // The input as a token, and as the published key of a well-formed token.
    check(text, PUBLIC, now);
    if let Some(good) = signed(&json!({"sub": "alice", "iat": now, "exp": now + 60})) {
        check(&good, text, now);
    }
    // The input as the claims (JSON as given, else as a string claim), signed.
    let claims = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!({"sub": text}));
    if let Some(t) = signed(&claims) {
        check(&t, PUBLIC, now);
    }
    // Times around now from the first bytes, with the input as the user data.
    if let [a, b, c, d, rest @ ..] = data {
        let iat = now + i64::from(i16::from_le_bytes([*a, *b]));
        let exp = iat + i64::from(i16::from_le_bytes([*c, *d]));
        let userdata = String::from_utf8_lossy(rest);
        let claims = json!({"sub": "bob", "iat": iat, "exp": exp, "nbf": iat, "userdata": {"displayname": userdata}});
        if let Some(t) = signed(&claims) {
            check(&t, PUBLIC, now);
        }
    }
});
