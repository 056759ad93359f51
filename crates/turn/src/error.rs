//! Why a datagram or stream chunk is not a valid STUN message or ChannelData frame. Every
//! variant says what was wrong, so a log line explains the drop.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{len} bytes is shorter than a STUN header (20 bytes)")]
    TooShort { len: usize },
    #[error("the first two bits are not zero: not a STUN message")]
    NotStun,
    #[error("magic cookie is {cookie:#010x}, not 0x2112a442")]
    BadCookie { cookie: u32 },
    #[error("message length {len} is not a multiple of 4")]
    UnalignedLength { len: usize },
    #[error("header says {header} bytes of attributes, the packet has {actual}")]
    LengthMismatch { header: usize, actual: usize },
    #[error("attribute header truncated at offset {at}")]
    TruncatedAttribute { at: usize },
    #[error("attribute {typ:#06x} of {len} bytes runs past the end of the message")]
    AttributeOverrun { typ: u16, len: usize },
    #[error("attribute {typ:#06x} after MESSAGE-INTEGRITY (only FINGERPRINT may follow)")]
    AfterIntegrity { typ: u16 },
    #[error("attribute after FINGERPRINT (it must be last)")]
    AfterFingerprint,
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
    #[error("attribute {typ:#06x}: {why}")]
    BadAttribute { typ: u16, why: &'static str },
    #[error("ChannelData of {len} bytes is shorter than its 4-byte header")]
    ChannelTooShort { len: usize },
    #[error("channel number {channel:#06x} is outside 0x4000-0x7fff")]
    BadChannel { channel: u16 },
    #[error("ChannelData says {header} bytes, {actual} arrived")]
    ChannelLength { header: usize, actual: usize },
}
