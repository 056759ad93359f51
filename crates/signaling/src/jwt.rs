//! Verification of hello v2 tokens (reference §1.4 item 2): JWTs signed by Nextcloud
//! with RS*, ES* or EdDSA keys published in Talk's capabilities, checked with one
//! minute of leeway, mapped to the upstream error codes with an explanation.

use base64::Engine as _;
use hpb_proto::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

const LEEWAY_SECS: u64 = 60;
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The claims of a valid token.
#[derive(Debug, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub userdata: Option<Box<RawValue>>,
}

/// A refused token: upstream code and explanation.
#[derive(Debug)]
pub struct TokenError {
    pub code: ErrorCode,
    pub message: String,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> TokenError {
    TokenError {
        code,
        message: message.into(),
    }
}

/// Turn the capability value into a PEM (Talk may publish Ed25519 keys as raw base64).
fn key_pem(key: &str) -> String {
    let k = key.trim();
    if k.starts_with("-----BEGIN") {
        return k.to_string();
    }
    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(k)
        && raw.len() == 32
    {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        return format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
    }
    k.to_string()
}

/// Verify `token` with Nextcloud's published key, at Unix time `now`.
pub fn verify(token: &str, published_key: &str, now: i64) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        fail(
            ErrorCode::InvalidToken,
            format!("the hello token is not a JWT: {e}"),
        )
    })?;
    let alg = header.alg;
    let pem = key_pem(published_key);
    let key = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        other => {
            return Err(fail(
                ErrorCode::InvalidToken,
                format!("the hello token uses algorithm {other:?}; only RS256/384/512, ES256/384 and EdDSA are accepted"),
            ));
        }
    }
    .map_err(|e| {
        fail(
            ErrorCode::InvalidToken,
            format!(
                "Nextcloud's hello-v2-token-key does not fit the token's algorithm {alg:?}: {e} (check Talk's signaling_token_alg and key settings)"
            ),
        )
    })?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_aud = false;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => fail(
            ErrorCode::TokenExpired,
            "the hello token has expired; fetch a new one from Nextcloud (and check that the clocks of Nextcloud and hpb agree)",
        ),
        ErrorKind::ImmatureSignature => fail(
            ErrorCode::TokenNotValidYet,
            "the hello token is not valid yet: Nextcloud's clock is ahead of hpb's by more than a minute",
        ),
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
            fail(ErrorCode::TokenExpired, "the hello token has no \"exp\" claim")
        }
        ErrorKind::InvalidSignature => fail(
            ErrorCode::InvalidToken,
            "the hello token's signature does not match the hello-v2-token-key Nextcloud publishes",
        ),
        other => fail(ErrorCode::InvalidToken, format!("the hello token is invalid: {other:?}")),
    })?;
    let claims = data.claims;
    let Some(iat) = claims.iat else {
        return Err(fail(
            ErrorCode::TokenNotValidYet,
            "the hello token has no \"iat\" claim",
        ));
    };
    if iat > now + LEEWAY_SECS as i64 {
        return Err(fail(
            ErrorCode::TokenNotValidYet,
            "the hello token was issued in the future: Nextcloud's clock is ahead of hpb's by more than a minute",
        ));
    }
    if claims.exp.is_some_and(|exp| exp < iat) {
        return Err(fail(
            ErrorCode::TokenExpired,
            "the hello token expires before it was issued",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_raw_ed25519_keys() {
        let raw = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let pem = key_pem(&raw);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(DecodingKey::from_ed_pem(pem.as_bytes()).is_ok());
    }

    #[test]
    fn garbage_is_invalid_token() {
        let e = verify("nope", "key", 0).expect_err("error");
        assert_eq!(e.code, ErrorCode::InvalidToken);
    }
}
