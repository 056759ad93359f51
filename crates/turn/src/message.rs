//! STUN messages (RFC 8489): validating parse without copying, attribute iteration, and a
//! builder for responses and indications with MESSAGE-INTEGRITY and FINGERPRINT.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::attr::{self, decode_xor_address, encode_xor_address};
use crate::error::ParseError;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Length of a MESSAGE-INTEGRITY attribute including its header.
const INTEGRITY_ATTR_LEN: usize = 24;

/// STUN methods used by TURN (RFC 8656, RFC 6062).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00a;
    pub const CONNECTION_BIND: u16 = 0x00b;
    pub const CONNECTION_ATTEMPT: u16 = 0x00c;

    pub fn name(m: u16) -> &'static str {
        match m {
            BINDING => "Binding",
            ALLOCATE => "Allocate",
            REFRESH => "Refresh",
            SEND => "Send",
            DATA => "Data",
            CREATE_PERMISSION => "CreatePermission",
            CHANNEL_BIND => "ChannelBind",
            CONNECT => "Connect",
            CONNECTION_BIND => "ConnectionBind",
            CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The 16-bit message type of `method` and `class` (method bits interleaved with C0/C1).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000f)
        | ((c & 0b01) << 4)
        | ((method & 0x0070) << 1)
        | ((c & 0b10) << 7)
        | ((method & 0x0f80) << 2)
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

/// Whether `buf` starts like a STUN message (first two bits zero and the magic cookie).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xc0 == 0 && buf[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// A parsed STUN message borrowing the packet.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    pub method: u16,
    pub class: Class,
    /// Offset of MESSAGE-INTEGRITY, if present.
    integrity_at: Option<usize>,
}

/// One attribute: its type and value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub typ: u16,
    pub value: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses and validates a whole STUN message: header, length, cookie, attribute bounds,
    /// that only FINGERPRINT follows MESSAGE-INTEGRITY, and the FINGERPRINT value.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort { len: buf.len() });
        }
        if buf[0] & 0xc0 != 0 {
            return Err(ParseError::NotStun);
        }
        let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(ParseError::BadCookie { cookie });
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len % 4 != 0 {
            return Err(ParseError::UnalignedLength { len });
        }
        if HEADER_LEN + len != buf.len() {
            return Err(ParseError::LengthMismatch {
                header: len,
                actual: buf.len() - HEADER_LEN,
            });
        }
        let (method, class) = split_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut integrity_at = None;
        let mut fingerprint_seen = false;
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            if fingerprint_seen {
                return Err(ParseError::AfterFingerprint);
            }
            if buf.len() - pos < 4 {
                return Err(ParseError::TruncatedAttribute { at: pos });
            }
            let typ = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
            let alen = usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]));
            let padded = alen.div_ceil(4) * 4;
            if pos + 4 + padded > buf.len() {
                return Err(ParseError::AttributeOverrun { typ, len: alen });
            }
            if integrity_at.is_some() && typ != attr::FINGERPRINT {
                return Err(ParseError::AfterIntegrity { typ });
            }
            match typ {
                attr::MESSAGE_INTEGRITY => {
                    if alen != 20 {
                        return Err(ParseError::BadAttribute {
                            typ,
                            why: "MESSAGE-INTEGRITY must be 20 bytes",
                        });
                    }
                    integrity_at = Some(pos);
                }
                attr::FINGERPRINT => {
                    if alen != 4 {
                        return Err(ParseError::BadAttribute {
                            typ,
                            why: "FINGERPRINT must be 4 bytes",
                        });
                    }
                    let want = u32::from_be_bytes([
                        buf[pos + 4],
                        buf[pos + 5],
                        buf[pos + 6],
                        buf[pos + 7],
                    ]);
                    if crc32fast::hash(&buf[..pos]) ^ FINGERPRINT_XOR != want {
                        return Err(ParseError::BadFingerprint);
                    }
                    fingerprint_seen = true;
                }
                _ => {}
            }
            pos += 4 + padded;
        }
        Ok(Message {
            buf,
            method,
            class,
            integrity_at,
        })
    }

    pub fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..20]);
        t
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Every attribute in order (those after MESSAGE-INTEGRITY except FINGERPRINT are
    /// rejected by [`Message::parse`]).
    pub fn attrs(&self) -> AttrIter<'a> {
        AttrIter {
            buf: self.buf,
            pos: HEADER_LEN,
        }
    }

    /// The first attribute of `typ` (RFC 8489: later duplicates are ignored).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs().find(|a| a.typ == typ).map(|a| a.value)
    }

    pub fn has(&self, typ: u16) -> bool {
        self.get(typ).is_some()
    }

    /// Comprehension-required attributes (type < 0x8000) this server does not know.
    pub fn unknown_required(&self) -> Vec<u16> {
        self.attrs()
            .map(|a| a.typ)
            .filter(|t| *t < 0x8000 && !attr::is_known(*t))
            .collect()
    }

    /// The first XOR-encoded address attribute of `typ`.
    pub fn xor_address(&self, typ: u16) -> Result<Option<SocketAddr>, ParseError> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) => decode_xor_address(v, &self.transaction_id())
                .map(Some)
                .ok_or(ParseError::BadAttribute {
                    typ,
                    why: "not a valid XOR address",
                }),
        }
    }

    /// Every XOR address attribute of `typ` (CreatePermission may carry several).
    pub fn xor_addresses(&self, typ: u16) -> Result<Vec<SocketAddr>, ParseError> {
        let txid = self.transaction_id();
        self.attrs()
            .filter(|a| a.typ == typ)
            .map(|a| {
                decode_xor_address(a.value, &txid).ok_or(ParseError::BadAttribute {
                    typ,
                    why: "not a valid XOR address",
                })
            })
            .collect()
    }

    pub fn u32_attr(&self, typ: u16) -> Result<Option<u32>, ParseError> {
        match self.get(typ) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))),
            Some(_) => Err(ParseError::BadAttribute {
                typ,
                why: "must be 4 bytes",
            }),
        }
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 over the message up to the attribute, with the
    /// length field covering it) against `key`, in constant time.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else {
            return false;
        };
        let adjusted = (at + INTEGRITY_ATTR_LEN - HEADER_LEN) as u16;
        mac.update(&self.buf[..2]);
        mac.update(&adjusted.to_be_bytes());
        mac.update(&self.buf[4..at]);
        mac.verify_slice(&self.buf[at + 4..at + INTEGRITY_ATTR_LEN])
            .is_ok()
    }
}

pub struct AttrIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Attr<'a>;

    fn next(&mut self) -> Option<Attr<'a>> {
        // Bounds were validated by `Message::parse`; stay defensive anyway.
        let b = self.buf;
        let p = self.pos;
        if p + 4 > b.len() {
            return None;
        }
        let typ = u16::from_be_bytes([b[p], b[p + 1]]);
        let len = usize::from(u16::from_be_bytes([b[p + 2], b[p + 3]]));
        let value = b.get(p + 4..p + 4 + len)?;
        self.pos = p + 4 + len.div_ceil(4) * 4;
        Some(Attr { typ, value })
    }
}

/// Builds a STUN message into a reusable buffer.
pub struct Builder<'b> {
    buf: &'b mut Vec<u8>,
    txid: [u8; 12],
}

impl<'b> Builder<'b> {
    /// Starts a message in `buf` (cleared first).
    pub fn new(buf: &'b mut Vec<u8>, method: u16, class: Class, txid: [u8; 12]) -> Builder<'b> {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&txid);
        Builder { buf, txid }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self
    }

    pub fn u32(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = [0u8; 20];
        let n = encode_xor_address(addr, &self.txid, &mut v);
        self.attr(typ, &v[..n])
    }

    /// ERROR-CODE with the class/number split and a reason phrase.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        // The reason phrase is at most 127 characters (RFC 8489 §14.8).
        let mut end = reason.len().min(127);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        v.extend_from_slice(&reason.as_bytes()[..end]);
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY computed with `key`.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let at = self.buf.len();
        let len = (at + INTEGRITY_ATTR_LEN - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut out = [0u8; 20];
        if let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) {
            mac.update(&self.buf[..at]);
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        self.attr(attr::MESSAGE_INTEGRITY, &out)
    }

    /// Appends FINGERPRINT and finishes the message.
    pub fn fingerprint(&mut self) {
        let at = self.buf.len();
        let len = (at + 8 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&self.buf[..at]) ^ FINGERPRINT_XOR;
        self.attr(attr::FINGERPRINT, &crc.to_be_bytes());
    }

    /// Finishes without FINGERPRINT.
    pub fn finish(&mut self) {
        self.set_len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_encoding_round_trips() {
        assert_eq!(message_type(method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(method::DATA, Class::Indication), 0x0017);
        for m in [1u16, 3, 4, 6, 7, 8, 9, 10, 11, 12, 0xfff] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(split_type(message_type(m, c)), (m, c));
            }
        }
    }

    #[test]
    fn builds_and_parses_with_integrity_and_fingerprint() {
        let mut buf = Vec::new();
        let txid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
        Builder::new(&mut buf, method::ALLOCATE, Class::Success, txid)
            .xor_address(attr::XOR_RELAYED_ADDRESS, peer)
            .u32(attr::LIFETIME, 600)
            .integrity(b"key")
            .fingerprint();
        let m = Message::parse(&buf).expect("parses");
        assert_eq!(m.method, method::ALLOCATE);
        assert_eq!(m.class, Class::Success);
        assert_eq!(m.transaction_id(), txid);
        assert_eq!(
            m.xor_address(attr::XOR_RELAYED_ADDRESS).expect("valid"),
            Some(peer)
        );
        assert_eq!(m.u32_attr(attr::LIFETIME).expect("valid"), Some(600));
        assert!(m.check_integrity(b"key"));
        assert!(!m.check_integrity(b"other"));
    }

    /// RFC 5769 §2.1: a sample request with long-term-style integrity (short-term key).
    #[test]
    fn rfc5769_sample_request() {
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let m = Message::parse(&bytes).expect("the RFC sample parses");
        assert_eq!(m.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
        assert!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }

    #[test]
    fn rejects_garbage_precisely() {
        assert_eq!(
            Message::parse(&[0; 5]).expect_err("short"),
            ParseError::TooShort { len: 5 }
        );
        let mut buf = Vec::new();
        Builder::new(&mut buf, method::BINDING, Class::Request, [1; 12]).finish();
        let mut bad = buf.clone();
        bad[4] = 0;
        assert!(matches!(
            Message::parse(&bad),
            Err(ParseError::BadCookie { .. })
        ));
        let mut bad = buf.clone();
        bad.extend_from_slice(&[0, 1, 0, 0]);
        assert!(matches!(
            Message::parse(&bad),
            Err(ParseError::LengthMismatch { .. })
        ));
        let mut bad = buf.clone();
        bad[3] = 4;
        bad.extend_from_slice(&[0, 6, 0, 9]);
        assert!(matches!(
            Message::parse(&bad),
            Err(ParseError::AttributeOverrun { .. })
        ));
        let mut fp = Vec::new();
        Builder::new(&mut fp, method::BINDING, Class::Request, [1; 12]).fingerprint();
        let last = fp.len() - 1;
        fp[last] ^= 1;
        assert_eq!(
            Message::parse(&fp).expect_err("bad crc"),
            ParseError::BadFingerprint
        );
    }

    #[test]
    fn attributes_after_integrity_are_refused() {
        let mut buf = Vec::new();
        Builder::new(&mut buf, method::BINDING, Class::Request, [1; 12])
            .integrity(b"k")
            .attr(attr::SOFTWARE, b"x")
            .finish();
        assert!(matches!(
            Message::parse(&buf),
            Err(ParseError::AfterIntegrity { .. })
        ));
    }
}
