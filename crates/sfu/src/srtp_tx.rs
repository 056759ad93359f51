//! SRTP and SRTCP protection of what the SFU itself sends to a subscriber (RFC 3711, RFC
//! 7714): the session keys derived from a connection's DTLS-SRTP keying material, and
//! encryption straight into the caller's send buffer, so a forwarded packet is copied once
//! (by the cipher) and never allocated. str0m keeps its own context for what it sends on
//! the same connection (DTLS-level traffic aside, only an RTCP BYE on close); the two never
//! share an IV: str0m sends no RTP on our SSRCs, and our SRTCP index starts at
//! [`SRTCP_INDEX_START`], far above any index str0m reaches.

use str0m::config::CryptoProvider;
use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, Sha1HmacProvider, SrtpProvider,
};

/// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// Our first SRTCP index (RFC 3711 §3.4): str0m's context on the same connection counts
/// from 0 and sends at most a BYE, so the two never use one IV.
pub(crate) const SRTCP_INDEX_START: u32 = 1 << 30;

/// Room a caller leaves after a packet for the cipher: the longest tag (16), and the block
/// of slack some AES-CTR backends write past the data (15).
pub(crate) const SRTP_MAX_OVERHEAD: usize = 16 + 15;

/// The DTLS-SRTP keying material of one connection and the side we are on.
#[derive(Debug, Clone)]
pub struct Keys {
    pub profile: SrtpProfile,
    pub material: Vec<u8>,
    /// We are the DTLS client (our write keys are the client's).
    pub active: bool,
}

/// Why keys cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP profile {0} is not supported")]
    Profile(String),
    #[error("keying material of {got} bytes, the profile needs {want}")]
    Material { got: usize, want: usize },
    #[error("the send buffer is too small")]
    Buffer,
    #[error("the cipher failed")]
    Cipher,
}

/// An AES-GCM cipher (RFC 7714) of either key size.
enum Gcm {
    Aes128(Box<dyn AeadAes128GcmCipher>),
    Aes256(Box<dyn AeadAes256GcmCipher>),
}

impl Gcm {
    /// Encrypt `input` into `output` (`input.len()` + the 16-byte tag).
    fn seal(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), SrtpError> {
        let output = output
            .get_mut(..input.len() + 16)
            .ok_or(SrtpError::Buffer)?;
        match self {
            Gcm::Aes128(c) => c.encrypt(iv, aad, input, output),
            Gcm::Aes256(c) => c.encrypt(iv, aad, input, output),
        }
        .map_err(|_| SrtpError::Cipher)
    }
}

/// One direction's cipher and what it needs besides the key.
enum Cipher {
    Gcm {
        salt: [u8; 12],
        enc: Gcm,
    },
    CmSha1 {
        salt: [u8; 14],
        auth: [u8; 20],
        enc: Box<dyn Aes128CmSha1_80Cipher>,
        hmac: &'static dyn Sha1HmacProvider,
    },
}

impl Cipher {
    fn tag_len(&self) -> usize {
        match self {
            Cipher::Gcm { .. } => 16,
            Cipher::CmSha1 { .. } => Aes128CmSha1_80::HMAC_TAG_LEN,
        }
    }
}

/// The sending half of one connection's SRTP.
pub struct SrtpTx {
    rtp: Cipher,
    rtcp: Cipher,
    srtcp_index: u32,
}

impl std::fmt::Debug for SrtpTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpTx")
            .field("tag_len", &self.rtp.tag_len())
            .field("srtcp_index", &self.srtcp_index)
            .finish()
    }
}

/// A master key and salt (RFC 3711 §4.3), `M` and `S` bytes long.
struct Master<const M: usize, const S: usize> {
    key: [u8; M],
    salt: [u8; S],
}

impl<const M: usize, const S: usize> Master<M, S> {
    /// Our write key out of the material, laid out as [client key, server key, client salt,
    /// server salt] (RFC 5764 §4.2).
    fn ours(keys: &Keys) -> Result<Self, SrtpError> {
        let m = &keys.material;
        if m.len() != 2 * (M + S) {
            return Err(SrtpError::Material {
                got: m.len(),
                want: 2 * (M + S),
            });
        }
        let (k, s) = if keys.active {
            (0, 2 * M)
        } else {
            (M, 2 * M + S)
        };
        let mut key = [0; M];
        let mut salt = [0; S];
        key.copy_from_slice(&m[k..k + M]);
        salt.copy_from_slice(&m[s..s + S]);
        Ok(Master { key, salt })
    }

    /// The session key of `label`, AES-CM as the PRF (RFC 3711 §4.3.3).
    fn derive<const N: usize>(&self, crypto: &dyn SrtpProvider, label: u8) -> [u8; N] {
        let mut out = [0u8; N];
        let mut input = [0u8; 16];
        input[..S].copy_from_slice(&self.salt);
        input[7] ^= label;
        let mut block = [0u8; 32];
        for (round, chunk) in out.chunks_mut(16).enumerate() {
            input[14..].copy_from_slice(&(round as u16).to_be_bytes());
            if M == 32 {
                crypto.srtp_aes_256_ecb_round(&self.key, &input, &mut block);
            } else {
                crypto.srtp_aes_128_ecb_round(&self.key, &input, &mut block);
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        out
    }
}

impl<const M: usize> Master<M, 12> {
    /// The RTP and RTCP ciphers of an AES-GCM profile (12-byte salts, RFC 7714), each with
    /// its session key (made a cipher by `cipher`, which picks the key size) and salt.
    fn gcm(&self, crypto: &dyn SrtpProvider, cipher: impl Fn([u8; M]) -> Gcm) -> (Cipher, Cipher) {
        let pair = |key, salt| Cipher::Gcm {
            salt: self.derive(crypto, salt),
            enc: cipher(self.derive(crypto, key)),
        };
        (
            pair(LABEL_RTP_KEY, LABEL_RTP_SALT),
            pair(LABEL_RTCP_KEY, LABEL_RTCP_SALT),
        )
    }
}

impl SrtpTx {
    pub fn new(crypto: &CryptoProvider, keys: &Keys) -> Result<SrtpTx, SrtpError> {
        let p = crypto.srtp_provider;
        let (rtp, rtcp) = match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => Master::<16, 12>::ours(keys)?.gcm(p, |k| {
                Gcm::Aes128(p.aead_aes_128_gcm().create_cipher(k, true))
            }),
            SrtpProfile::AEAD_AES_256_GCM => Master::<32, 12>::ours(keys)?.gcm(p, |k| {
                Gcm::Aes256(p.aead_aes_256_gcm().create_cipher(k, true))
            }),
            SrtpProfile::AES128_CM_SHA1_80 => {
                let m = Master::<16, 14>::ours(keys)?;
                let cm = |k, a, s| Cipher::CmSha1 {
                    salt: m.derive(p, s),
                    auth: m.derive(p, a),
                    enc: p.aes_128_cm_sha1_80().create_cipher(m.derive(p, k), true),
                    hmac: crypto.sha1_hmac_provider,
                };
                (
                    cm(LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT),
                    cm(LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT),
                )
            }
            other => return Err(SrtpError::Profile(other.to_string())),
        };
        Ok(SrtpTx {
            rtp,
            rtcp,
            srtcp_index: SRTCP_INDEX_START,
        })
    }

    /// Protect one RTP packet: `out` already holds its cleartext header (`header_len` bytes,
    /// SSRC and sequence number in it) and gets `payload` encrypted after it, then the tag.
    /// `index` is the packet's extended sequence number (ROC << 16 | seq). Returns the
    /// length of the SRTP packet. `out` must have `SRTP_MAX_OVERHEAD` (31) bytes past the
    /// payload.
    pub fn protect_rtp(
        &mut self,
        out: &mut [u8],
        header_len: usize,
        payload: &[u8],
        index: u64,
    ) -> Result<usize, SrtpError> {
        let end = header_len + payload.len();
        if header_len < 12 || out.len() < end + SRTP_MAX_OVERHEAD {
            return Err(SrtpError::Buffer);
        }
        let ssrc = u32::from_be_bytes([out[8], out[9], out[10], out[11]]);
        let (header, body) = out.split_at_mut(header_len);
        match &mut self.rtp {
            Cipher::Gcm { salt, enc } => {
                // The IV (RFC 7714 §8.1) is the same for both key sizes.
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, (index >> 16) as u32, index as u16);
                enc.seal(&iv, header, payload, body)?;
                Ok(end + 16)
            }
            Cipher::CmSha1 {
                salt,
                auth,
                enc,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                enc.encrypt(&iv, payload, &mut body[..payload.len() + 15])
                    .map_err(|_| SrtpError::Cipher)?;
                let sha1 = |k: &[u8], d: &[&[u8]]| hmac.sha1_hmac(k, d);
                Aes128CmSha1_80::rtp_hmac(sha1, auth, out, index, end);
                Ok(end + Aes128CmSha1_80::HMAC_TAG_LEN)
            }
        }
    }

    /// Protect one compound RTCP packet (`plain`, at least its 8-byte header with the
    /// sender SSRC) into `out` (cleared first).
    pub fn protect_rtcp(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        if plain.len() < 8 {
            return Err(SrtpError::Buffer);
        }
        let index = self.srtcp_index;
        self.srtcp_index = (self.srtcp_index + 1) & 0x7fff_ffff;
        let e_and_index = (0x8000_0000 | index).to_be_bytes();
        let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let body = &plain[8..];
        let tag = self.rtcp.tag_len();
        out.clear();
        out.resize(plain.len() + 4 + tag + 15, 0);
        out[..8].copy_from_slice(&plain[..8]);
        match &mut self.rtcp {
            Cipher::Gcm { salt, enc } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&plain[..8]);
                aad[8..].copy_from_slice(&e_and_index);
                enc.seal(&iv, &aad, body, &mut out[8..])?;
                out[plain.len() + 16..plain.len() + 20].copy_from_slice(&e_and_index);
            }
            Cipher::CmSha1 {
                salt,
                auth,
                enc,
                hmac,
            } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, u64::from(index));
                enc.encrypt(&iv, body, &mut out[8..plain.len() + 15])
                    .map_err(|_| SrtpError::Cipher)?;
                out[plain.len()..plain.len() + 4].copy_from_slice(&e_and_index);
                let sha1 = |k: &[u8], d: &[&[u8]]| hmac.sha1_hmac(k, d);
                Aes128CmSha1_80::rtcp_hmac(sha1, auth, out, plain.len() + 4);
            }
        }
        out.truncate(plain.len() + 4 + tag);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> CryptoProvider {
        str0m::crypto::from_feature_flags()
    }

    /// RFC 3711 appendix B.3: the key derivation test vectors.
    #[test]
    fn key_derivation_matches_rfc_3711() {
        let m = Master::<16, 14> {
            key: [
                0xE1, 0xF9, 0x7A, 0x0D, 0x3E, 0x01, 0x8B, 0xE0, 0xD6, 0x4F, 0xA3, 0x2C, 0x06, 0xDE,
                0x41, 0x39,
            ],
            salt: [
                0x0E, 0xC6, 0x75, 0xAD, 0x49, 0x8A, 0xFE, 0xEB, 0xB6, 0x96, 0x0B, 0x3A, 0xAB, 0xE6,
            ],
        };
        let p = crypto().srtp_provider;
        let key: [u8; 16] = m.derive(p, LABEL_RTP_KEY);
        assert_eq!(
            key,
            [
                0xC6, 0x1E, 0x7A, 0x93, 0x74, 0x4F, 0x39, 0xEE, 0x10, 0x73, 0x4A, 0xFE, 0x3F, 0xF7,
                0xA0, 0x87
            ]
        );
        let auth: [u8; 20] = m.derive(p, LABEL_RTP_AUTH);
        assert_eq!(
            auth,
            [
                0xCE, 0xBE, 0x32, 0x1F, 0x6F, 0xF7, 0x71, 0x6B, 0x6F, 0xD4, 0xAB, 0x49, 0xAF, 0x25,
                0x6A, 0x15, 0x6D, 0x38, 0xBA, 0xA4
            ]
        );
        let salt: [u8; 14] = m.derive(p, LABEL_RTP_SALT);
        assert_eq!(
            salt,
            [
                0x30, 0xCB, 0xBC, 0x08, 0x86, 0x3D, 0x8C, 0x85, 0xD4, 0x9D, 0xB3, 0x4A, 0x9A, 0xE1
            ]
        );
    }

    /// RFC 7714 §16.1 session key and salt, as a sender with them for RTP and RTCP.
    fn rfc7714_sender() -> SrtpTx {
        let key = [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0e, 0x0f,
        ];
        let salt = [
            0x51, 0x75, 0x69, 0x64, 0x20, 0x70, 0x72, 0x6f, 0x20, 0x71, 0x75, 0x6f,
        ];
        let p = crypto().srtp_provider;
        let gcm = || Cipher::Gcm {
            salt,
            enc: Gcm::Aes128(p.aead_aes_128_gcm().create_cipher(key, true)),
        };
        SrtpTx {
            rtp: gcm(),
            rtcp: gcm(),
            srtcp_index: 0x5d4,
        }
    }

    #[test]
    fn rtp_matches_rfc_7714() {
        let plain: &[u8] = &[
            0x80, 0x40, 0xf1, 0x7b, 0x80, 0x41, 0xf8, 0xd3, 0x55, 0x01, 0xa0, 0xb2, 0x47, 0x61,
            0x6c, 0x6c, 0x69, 0x61, 0x20, 0x65, 0x73, 0x74, 0x20, 0x6f, 0x6d, 0x6e, 0x69, 0x73,
            0x20, 0x64, 0x69, 0x76, 0x69, 0x73, 0x61, 0x20, 0x69, 0x6e, 0x20, 0x70, 0x61, 0x72,
            0x74, 0x65, 0x73, 0x20, 0x74, 0x72, 0x65, 0x73,
        ];
        let protected: &[u8] = &[
            0x80, 0x40, 0xf1, 0x7b, 0x80, 0x41, 0xf8, 0xd3, 0x55, 0x01, 0xa0, 0xb2, 0xf2, 0x4d,
            0xe3, 0xa3, 0xfb, 0x34, 0xde, 0x6c, 0xac, 0xba, 0x86, 0x1c, 0x9d, 0x7e, 0x4b, 0xca,
            0xbe, 0x63, 0x3b, 0xd5, 0x0d, 0x29, 0x4e, 0x6f, 0x42, 0xa5, 0xf4, 0x7a, 0x51, 0xc7,
            0xd1, 0x9b, 0x36, 0xde, 0x3a, 0xdf, 0x88, 0x33, 0x89, 0x9d, 0x7f, 0x27, 0xbe, 0xb1,
            0x6a, 0x91, 0x52, 0xcf, 0x76, 0x5e, 0xe4, 0x39, 0x0c, 0xce,
        ];
        let mut tx = rfc7714_sender();
        let mut out = vec![0u8; 200];
        out[..12].copy_from_slice(&plain[..12]);
        let seq = u64::from(u16::from_be_bytes([plain[2], plain[3]]));
        let n = tx
            .protect_rtp(&mut out, 12, &plain[12..], seq)
            .expect("protect");
        assert_eq!(&out[..n], protected);
        // Too small a buffer is refused, not a panic.
        let mut small = vec![0u8; 40];
        small[..12].copy_from_slice(&plain[..12]);
        assert_eq!(
            tx.protect_rtp(&mut small, 12, &plain[12..], seq),
            Err(SrtpError::Buffer)
        );
    }

    #[test]
    fn rtcp_matches_rfc_7714() {
        let plain: &[u8] = &[
            0x81, 0xc8, 0x00, 0x0d, 0x4d, 0x61, 0x72, 0x73, 0x4e, 0x54, 0x50, 0x31, 0x4e, 0x54,
            0x50, 0x32, 0x52, 0x54, 0x50, 0x20, 0x00, 0x00, 0x04, 0x2a, 0x00, 0x00, 0xe9, 0x30,
            0x4c, 0x75, 0x6e, 0x61, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad,
            0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef,
        ];
        let protected: &[u8] = &[
            0x81, 0xc8, 0x00, 0x0d, 0x4d, 0x61, 0x72, 0x73, 0x63, 0xe9, 0x48, 0x85, 0xdc, 0xda,
            0xb6, 0x7c, 0xa7, 0x27, 0xd7, 0x66, 0x2f, 0x6b, 0x7e, 0x99, 0x7f, 0xf5, 0xc0, 0xf7,
            0x6c, 0x06, 0xf3, 0x2d, 0xc6, 0x76, 0xa5, 0xf1, 0x73, 0x0d, 0x6f, 0xda, 0x4c, 0xe0,
            0x9b, 0x46, 0x86, 0x30, 0x3d, 0xed, 0x0b, 0xb9, 0x27, 0x5b, 0xc8, 0x4a, 0xa4, 0x58,
            0x96, 0xcf, 0x4d, 0x2f, 0xc5, 0xab, 0xf8, 0x72, 0x45, 0xd9, 0xea, 0xde, 0x80, 0x00,
            0x05, 0xd4,
        ];
        let mut tx = rfc7714_sender();
        let mut out = Vec::new();
        tx.protect_rtcp(plain, &mut out).expect("protect");
        assert_eq!(out, protected);
        assert_eq!(tx.srtcp_index, 0x5d5, "the index counts up");
    }

    /// str0m's AES-CM test vector (an SRTCP packet with index 1), protected with the
    /// material's client keys: our CM path produces the same bytes.
    #[test]
    fn rtcp_with_aes_cm_and_hmac() {
        const MAT: [u8; 60] = [
            0x2C, 0xB0, 0x23, 0x46, 0xB4, 0x22, 0x76, 0xA6, 0x72, 0xCF, 0xD1, 0x43, 0xAE, 0xC2,
            0xD5, 0xEE, 0xDD, 0xDE, 0x55, 0xF0, 0xAD, 0x7B, 0xCA, 0xC2, 0x26, 0x66, 0xF1, 0xC6,
            0x38, 0x61, 0x73, 0xED, 0x6E, 0xB2, 0x5C, 0xB7, 0xD2, 0x6A, 0x61, 0xA1, 0xEE, 0x2C,
            0x21, 0x0A, 0xDA, 0xE7, 0x60, 0xAA, 0xA2, 0xFD, 0x67, 0xB6, 0x72, 0xC4, 0x1A, 0xED,
            0x10, 0x5F, 0x9D, 0x36,
        ];
        let plain: &[u8] = &[
            0x80, 0xc8, 0x00, 0x06, 0x3c, 0xd7, 0xcc, 0x13, 0xe2, 0xee, 0x35, 0xc8, 0x60, 0x4e,
            0x61, 0x8c, 0x26, 0xf3, 0x27, 0x34, 0x00, 0x00, 0x00, 0x43, 0x00, 0x00, 0x14, 0x07,
            0x81, 0xca, 0x00, 0x06, 0x3c, 0xd7, 0xcc, 0x13, 0x01, 0x10, 0x38, 0x6e, 0x46, 0x75,
            0x32, 0x68, 0x57, 0x66, 0x72, 0x4d, 0x44, 0x72, 0x47, 0x66, 0x34, 0x6f, 0x00, 0x00,
        ];
        let protected: &[u8] = &[
            0x80, 0xC8, 0x00, 0x06, 0x3C, 0xD7, 0xCC, 0x13, 0xB7, 0xC8, 0x31, 0xDC, 0xB7, 0x76,
            0xCD, 0x8D, 0xC2, 0x6F, 0xDA, 0x1D, 0x9B, 0xFC, 0x8E, 0xE6, 0x58, 0x9A, 0x1A, 0x8A,
            0x49, 0x28, 0x9C, 0xAE, 0xB2, 0x64, 0x20, 0x0C, 0x37, 0xD2, 0xD0, 0xA4, 0xAF, 0xAC,
            0x63, 0x85, 0xFF, 0xC6, 0x0D, 0xEC, 0x7D, 0x06, 0xD4, 0x87, 0x3D, 0xD3, 0xA8, 0xCC,
            0x80, 0x00, 0x00, 0x01, 0xB7, 0xBB, 0x52, 0x65, 0x21, 0xD1, 0xE7, 0x3C, 0x0F, 0xC0,
        ];
        let keys = Keys {
            profile: SrtpProfile::AES128_CM_SHA1_80,
            material: MAT.to_vec(),
            active: true,
        };
        let mut tx = SrtpTx::new(&crypto(), &keys).expect("keys");
        tx.srtcp_index = 1;
        let mut out = Vec::new();
        tx.protect_rtcp(plain, &mut out).expect("protect");
        assert_eq!(out, protected);
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        let keys = Keys {
            profile: SrtpProfile::AEAD_AES_128_GCM,
            material: vec![0; 10],
            active: false,
        };
        assert!(matches!(
            SrtpTx::new(&crypto(), &keys),
            Err(SrtpError::Material { got: 10, want: 56 })
        ));
        for (profile, len, tag) in [
            (SrtpProfile::AEAD_AES_128_GCM, 56, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 88, 16),
            (SrtpProfile::AES128_CM_SHA1_80, 60, 10),
        ] {
            let keys = Keys {
                profile,
                material: (0..len as u8).collect(),
                active: false,
            };
            let mut tx = SrtpTx::new(&crypto(), &keys).expect("keys");
            let mut out = vec![0u8; 100];
            out[0] = 0x80;
            let n = tx
                .protect_rtp(&mut out, 12, &[1, 2, 3], 7)
                .expect("protect");
            assert_eq!(n, 12 + 3 + tag);
        }
    }
}
