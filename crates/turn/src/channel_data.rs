//! ChannelData frames (RFC 8656 §12.4): a 2-byte channel number, a 2-byte length and the
//! application data; over TCP and TLS padded to a multiple of 4.

use crate::error::ParseError;

pub const MIN_CHANNEL: u16 = 0x4000;
/// RFC 8656 narrows channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's own 4.6 tools)
/// still use up to 0x7FFF, which stays accepted.
pub const MAX_CHANNEL: u16 = 0x7fff;

/// Whether `buf` starts like ChannelData (first two bits 01).
pub fn looks_like_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xc0 == 0x40)
}

/// Parses one ChannelData frame; returns (channel, data).
pub fn parse(buf: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    if buf.len() < 4 {
        return Err(ParseError::ChannelTooShort { len: buf.len() });
    }
    let channel = u16::from_be_bytes([buf[0], buf[1]]);
    if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) {
        return Err(ParseError::BadChannel { channel });
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if buf.len() - 4 < len {
        return Err(ParseError::ChannelLength {
            header: len,
            actual: buf.len() - 4,
        });
    }
    Ok((channel, &buf[4..4 + len]))
}

/// Writes a ChannelData header and `data` into `out` (cleared first), padded to 4 bytes when
/// `pad` (stream transports).
pub fn encode(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    out.clear();
    append(out, channel, data, pad);
}

/// Like [`encode`], appending to `out`.
pub fn append(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        let p = (4 - data.len() % 4) % 4;
        out.extend_from_slice(&[0u8; 3][..p]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut out = Vec::new();
        encode(&mut out, 0x4001, b"hello", true);
        assert_eq!(out.len(), 12);
        assert_eq!(parse(&out), Ok((0x4001, &b"hello"[..])));
        assert!(looks_like_channel_data(&out));
        assert_eq!(parse(&[0x40]), Err(ParseError::ChannelTooShort { len: 1 }));
        assert_eq!(
            parse(&[0x80, 0, 0, 0]),
            Err(ParseError::BadChannel { channel: 0x8000 })
        );
        assert_eq!(
            parse(&[0x40, 0, 0, 9, 1]),
            Err(ParseError::ChannelLength {
                header: 9,
                actual: 1
            })
        );
    }
}
