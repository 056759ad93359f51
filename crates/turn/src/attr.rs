//! STUN/TURN attribute types and the XOR address encoding (RFC 8489 §14.2, RFC 8656 §18).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::message::MAGIC_COOKIE;

pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000a;
pub const CHANNEL_NUMBER: u16 = 0x000c;
pub const LIFETIME: u16 = 0x000d;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001a;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// ICE attributes a Binding request from a WebRTC agent carries.
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const CONNECTION_ID: u16 = 0x002a;
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const SOFTWARE: u16 = 0x8022;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802a;

/// Comprehension-required attributes this server understands.
pub fn is_known(t: u16) -> bool {
    matches!(
        t,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
            | PRIORITY
            | USE_CANDIDATE
            | CONNECTION_ID
    )
}

pub const FAMILY_V4: u8 = 0x01;
pub const FAMILY_V6: u8 = 0x02;

/// Decodes an XOR-*-ADDRESS value; `None` if malformed.
pub fn decode_xor_address(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match v[1] {
        FAMILY_V4 if v.len() == 8 => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        FAMILY_V6 if v.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(txid);
            let mut a = [0u8; 16];
            for i in 0..16 {
                a[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Encodes `addr` as an XOR-*-ADDRESS value into `out`; returns the length (8 or 20).
pub fn encode_xor_address(addr: SocketAddr, txid: &[u8; 12], out: &mut [u8; 20]) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_V4;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ cookie[i];
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_V6;
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(txid);
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ key[i];
            }
            20
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_addresses_round_trip_v4_and_v6() {
        let txid = [0xab; 12];
        for a in [
            "192.0.2.1:32853",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ] {
            let addr: SocketAddr = a.parse().expect("addr");
            let mut out = [0u8; 20];
            let n = encode_xor_address(addr, &txid, &mut out);
            assert_eq!(decode_xor_address(&out[..n], &txid), Some(addr));
        }
        assert_eq!(decode_xor_address(&[0, 1, 0, 0], &txid), None);
        assert_eq!(decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &txid), None);
    }

    /// RFC 5769 §2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853 in the sample response.
    #[test]
    fn rfc5769_xor_mapped_address() {
        let txid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let v = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(
            decode_xor_address(&v, &txid),
            Some("192.0.2.1:32853".parse().expect("addr"))
        );
    }
}
