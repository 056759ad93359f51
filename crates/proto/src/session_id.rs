//! The session-id codec of upstream (`session/sessionid_codec.go`, reference §6 item 6):
//! a protobuf `SessionIdData{uint64 sid=1; int64 created=2; string backend_id=3}`,
//! optionally AES-CTR encrypted with the block key (random IV prefixed), followed by the
//! first 10 bytes of HMAC-SHA256(hashkey, name ‖ "|" ‖ body), base64url without padding.
//! The public id reverses the bytes before encoding, so public ids sort randomly (clients
//! compare them to pick the P2P offerer).

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;

const MAC_LEN: usize = 10;
const IV_LEN: usize = 16;
const NAME_PRIVATE: &str = "private-session";
const NAME_PUBLIC: &str = "public-session";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a session id carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdData {
    pub sid: u64,
    /// Creation time, Unix microseconds.
    pub created: i64,
    pub backend_id: String,
}

/// Why an id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionIdError {
    #[error("session id is not base64url")]
    NotBase64,
    #[error("session id is too short")]
    TooShort,
    #[error(
        "session id signature does not match (forged, or signed with another [sessions] hashkey)"
    )]
    BadMac,
    #[error("session id payload is malformed: {0}")]
    Malformed(&'static str),
}

/// Why the codec could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecKeyError {
    #[error("[sessions] hashkey is empty; set it to a random string of 32 or 64 bytes")]
    EmptyHashKey,
    #[error("[sessions] blockkey must be 16, 24 or 32 bytes long, it has {0}")]
    BadBlockKey(usize),
}

enum Cipher {
    None,
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

/// Encodes and decodes session ids with the configured keys.
pub struct SessionIdCodec {
    hash_key: Vec<u8>,
    cipher: Cipher,
}

impl SessionIdCodec {
    pub fn new(hash_key: &[u8], block_key: &[u8]) -> Result<Self, CodecKeyError> {
        if hash_key.is_empty() {
            return Err(CodecKeyError::EmptyHashKey);
        }
        let cipher = match block_key.len() {
            0 => Cipher::None,
            16 => Cipher::Aes128(copy_key(block_key)),
            24 => Cipher::Aes192(copy_key(block_key)),
            32 => Cipher::Aes256(copy_key(block_key)),
            n => return Err(CodecKeyError::BadBlockKey(n)),
        };
        Ok(Self {
            hash_key: hash_key.to_vec(),
            cipher,
        })
    }

    pub fn encode_private(&self, data: &SessionIdData) -> String {
        let raw = self.seal(NAME_PRIVATE, data);
        B64.encode(raw)
    }

    pub fn encode_public(&self, data: &SessionIdData) -> String {
        let mut raw = self.seal(NAME_PUBLIC, data);
        raw.reverse();
        B64.encode(raw)
    }

    pub fn decode_private(&self, id: &str) -> Result<SessionIdData, SessionIdError> {
        let raw = B64.decode(id).map_err(|_| SessionIdError::NotBase64)?;
        self.open(NAME_PRIVATE, raw)
    }

    pub fn decode_public(&self, id: &str) -> Result<SessionIdData, SessionIdError> {
        let mut raw = B64.decode(id).map_err(|_| SessionIdError::NotBase64)?;
        raw.reverse();
        self.open(NAME_PUBLIC, raw)
    }

    fn mac(&self, name: &str, body: &[u8]) -> [u8; MAC_LEN] {
        let mut m = match Hmac::<Sha256>::new_from_slice(&self.hash_key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any size"),
        };
        m.update(name.as_bytes());
        m.update(b"|");
        m.update(body);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    fn seal(&self, name: &str, data: &SessionIdData) -> Vec<u8> {
        let plain = encode_proto(data);
        let mut body = match &self.cipher {
            Cipher::None => plain,
            _ => {
                let mut iv = [0u8; IV_LEN];
                rand::rng().fill(&mut iv);
                let mut out = Vec::with_capacity(IV_LEN + plain.len());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&plain);
                self.apply_ctr(&iv, &mut out[IV_LEN..]);
                out
            }
        };
        let mac = self.mac(name, &body);
        body.extend_from_slice(&mac);
        body
    }

    fn open(&self, name: &str, mut raw: Vec<u8>) -> Result<SessionIdData, SessionIdError> {
        if raw.len() < MAC_LEN + 1 {
            return Err(SessionIdError::TooShort);
        }
        let split = raw.len() - MAC_LEN;
        let expected = self.mac(name, &raw[..split]);
        // Constant-time comparison.
        let diff = expected
            .iter()
            .zip(&raw[split..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(SessionIdError::BadMac);
        }
        raw.truncate(split);
        let plain = match &self.cipher {
            Cipher::None => raw,
            _ => {
                if raw.len() < IV_LEN {
                    return Err(SessionIdError::TooShort);
                }
                let mut iv = [0u8; IV_LEN];
                iv.copy_from_slice(&raw[..IV_LEN]);
                let mut rest = raw.split_off(IV_LEN);
                self.apply_ctr(&iv, &mut rest);
                rest
            }
        };
        decode_proto(&plain)
    }

    fn apply_ctr(&self, iv: &[u8; IV_LEN], buf: &mut [u8]) {
        match &self.cipher {
            Cipher::None => {}
            Cipher::Aes128(k) => {
                ctr::Ctr128BE::<aes::Aes128>::new(k.into(), iv.into()).apply_keystream(buf)
            }
            Cipher::Aes192(k) => {
                ctr::Ctr128BE::<aes::Aes192>::new(k.into(), iv.into()).apply_keystream(buf)
            }
            Cipher::Aes256(k) => {
                ctr::Ctr128BE::<aes::Aes256>::new(k.into(), iv.into()).apply_keystream(buf)
            }
        }
    }
}

fn copy_key<const N: usize>(k: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&k[..N]);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn encode_proto(d: &SessionIdData) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + d.backend_id.len());
    if d.sid != 0 {
        out.push(0x08);
        put_varint(&mut out, d.sid);
    }
    if d.created != 0 {
        out.push(0x10);
        put_varint(&mut out, d.created as u64);
    }
    if !d.backend_id.is_empty() {
        out.push(0x1a);
        put_varint(&mut out, d.backend_id.len() as u64);
        out.extend_from_slice(d.backend_id.as_bytes());
    }
    out
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, SessionIdError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or(SessionIdError::Malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(SessionIdError::Malformed("varint too long"))
}

fn decode_proto(buf: &[u8]) -> Result<SessionIdData, SessionIdError> {
    let mut d = SessionIdData {
        sid: 0,
        created: 0,
        backend_id: String::new(),
    };
    let mut pos = 0;
    while pos < buf.len() {
        let tag = get_varint(buf, &mut pos)?;
        match tag {
            0x08 => d.sid = get_varint(buf, &mut pos)?,
            0x10 => d.created = get_varint(buf, &mut pos)? as i64,
            0x1a => {
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(SessionIdError::Malformed("string runs past the end"))?;
                d.backend_id = String::from_utf8(buf[pos..end].to_vec())
                    .map_err(|_| SessionIdError::Malformed("backend id is not UTF-8"))?;
                pos = end;
            }
            _ => return Err(SessionIdError::Malformed("unknown field")),
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> SessionIdData {
        SessionIdData {
            sid: 42,
            created: 1_700_000_000_123_456,
            backend_id: "backend-1".into(),
        }
    }

    #[test]
    fn round_trips_with_and_without_encryption() {
        for block in [&b""[..], &[7u8; 16][..], &[9u8; 32][..]] {
            let c = SessionIdCodec::new(b"0123456789abcdef0123456789abcdef", block).expect("keys");
            let private = c.encode_private(&data());
            let public = c.encode_public(&data());
            assert_ne!(private, public);
            assert_eq!(c.decode_private(&private), Ok(data()));
            assert_eq!(c.decode_public(&public), Ok(data()));
            // A private id is not a valid public id and vice versa.
            assert!(c.decode_public(&private).is_err());
            assert!(c.decode_private(&public).is_err());
            assert!(!public.contains(['+', '/', '=']));
        }
    }

    #[test]
    fn refuses_tampering_and_garbage() {
        let c = SessionIdCodec::new(b"key", b"").expect("keys");
        let other = SessionIdCodec::new(b"other", b"").expect("keys");
        let id = c.encode_private(&data());
        assert_eq!(other.decode_private(&id), Err(SessionIdError::BadMac));
        assert_eq!(c.decode_private("!!"), Err(SessionIdError::NotBase64));
        assert_eq!(c.decode_private("AAAA"), Err(SessionIdError::TooShort));
        assert!(SessionIdCodec::new(b"", b"").is_err());
        assert_eq!(
            SessionIdCodec::new(b"k", b"short").err(),
            Some(CodecKeyError::BadBlockKey(5))
        );
    }
}
