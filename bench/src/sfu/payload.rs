//! The synthetic media the SFU load generator sends — VP8-shaped video frames (a valid VP8
//! payload descriptor and frame tag, keyframes with the start code) and Opus-sized audio
//! packets, each carrying a sequence number and its send time — and the parser of both on the
//! subscriber side.

use std::sync::OnceLock;
use std::time::Instant;

/// Marks the first bytes after the VP8 frame header / the Opus TOC byte.
const VIDEO_MAGIC: [u8; 4] = *b"HPBV";
const AUDIO_MAGIC: [u8; 4] = *b"HPBA";

/// Media bytes per video RTP packet (plus the 4-byte descriptor): well under any MTU, so an
/// SFU that repacketizes needs no more packets than we sent.
pub const VIDEO_CHUNK: usize = 1100;
/// Opus at ~32 kbit/s, 20 ms frames.
pub const AUDIO_SIZE: usize = 100;

/// The first-partition size announced in the VP8 frame tag.
const FIRST_PARTITION: u32 = 100;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the first call: the clock publishers stamp and subscribers read (one
/// process, so one-way latency is exact).
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The time `at` on the [`now_us`] clock.
pub fn at_us(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

/// The RTP payloads of video frame `n` (`size` media bytes, at least one packet), with VP8
/// picture id `picture_id`.
pub fn video_frame(
    n: u32,
    keyframe: bool,
    size: usize,
    sent_us: u64,
    picture_id: u16,
) -> Vec<Vec<u8>> {
    let size = size.max(64);
    let mut media = Vec::with_capacity(size);
    // Frame tag (RFC 6386 §9.1): bit 0 = inter frame, version 0, show_frame, partition size.
    let tag = (FIRST_PARTITION << 5) | (1 << 4) | u32::from(!keyframe);
    media.extend_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        // Start code and 640x360, no scaling.
        media.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    }
    media.extend_from_slice(&VIDEO_MAGIC);
    media.extend_from_slice(&n.to_be_bytes());
    media.extend_from_slice(&sent_us.to_be_bytes());
    media.resize(size, 0x5a);
    let pid = picture_id & 0x7fff;
    media
        .chunks(VIDEO_CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            // X, S on the first packet, PID 0; I; 15-bit picture id.
            let s = if i == 0 { 0x10 } else { 0 };
            let mut p = Vec::with_capacity(4 + chunk.len());
            p.extend_from_slice(&[0x80 | s, 0x80, 0x80 | (pid >> 8) as u8, pid as u8]);
            p.extend_from_slice(chunk);
            p
        })
        .collect()
}

/// The RTP payload of audio packet `n`.
pub fn audio_packet(n: u32, sent_us: u64) -> Vec<u8> {
    // TOC: SILK wideband 20 ms, mono, one frame.
    let mut p = vec![0x48];
    p.extend_from_slice(&AUDIO_MAGIC);
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&sent_us.to_be_bytes());
    p.resize(AUDIO_SIZE, 0x33);
    p
}

/// `(n, sent_us)` of an audio payload made by [`audio_packet`].
pub fn parse_audio(p: &[u8]) -> Option<(u32, u64)> {
    let rest = p.get(1..)?.strip_prefix(&AUDIO_MAGIC)?;
    stamp(rest)
}

/// What one received VP8 RTP payload says.
#[derive(Debug, PartialEq, Eq)]
pub enum Vp8 {
    /// The first packet of frame `n` sent at `sent_us`.
    Start { n: u32, sent_us: u64 },
    /// A later packet of a frame.
    Continuation,
    /// Not something we sent (no start marker, or a truncated descriptor).
    Foreign,
}

/// Parses a VP8 payload descriptor (RFC 7741 §4.2) and, on a frame's first packet, our stamp.
pub fn parse_vp8(p: &[u8]) -> Vp8 {
    let Some(&b0) = p.first() else {
        return Vp8::Foreign;
    };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else {
            return Vp8::Foreign;
        };
        i = 2;
        if x & 0x80 != 0 {
            match p.get(i) {
                Some(m) if m & 0x80 != 0 => i += 2,
                Some(_) => i += 1,
                None => return Vp8::Foreign,
            }
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    if !start {
        return Vp8::Continuation;
    }
    let Some(media) = p.get(i..) else {
        return Vp8::Foreign;
    };
    let Some(&tag) = media.first() else {
        return Vp8::Foreign;
    };
    let header = if tag & 1 == 0 { 10 } else { 3 };
    match media
        .get(header..)
        .and_then(|r| r.strip_prefix(&VIDEO_MAGIC))
        .and_then(stamp)
    {
        Some((n, sent_us)) => Vp8::Start { n, sent_us },
        None => Vp8::Foreign,
    }
}

fn stamp(rest: &[u8]) -> Option<(u32, u64)> {
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let t = u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?);
    Some((n, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_frames_round_trip() {
        for keyframe in [true, false] {
            let packets = video_frame(7, keyframe, 5000, 1234, 300);
            assert_eq!(packets.len(), 5);
            assert!(packets.iter().all(|p| p.len() <= VIDEO_CHUNK + 4));
            assert_eq!(
                parse_vp8(&packets[0]),
                Vp8::Start {
                    n: 7,
                    sent_us: 1234
                }
            );
            assert_eq!(parse_vp8(&packets[1]), Vp8::Continuation);
            // A keyframe as Janus and str0m detect it: S=1, PID 0, tag bit 0 clear, start code.
            let media = &packets[0][4..];
            assert_eq!(media[0] & 1 == 0, keyframe);
            if keyframe {
                assert_eq!(&media[3..6], &[0x9d, 0x01, 0x2a]);
            }
        }
    }

    #[test]
    fn a_minimal_descriptor_parses_too() {
        let mut p = video_frame(3, false, 200, 99, 1).remove(0);
        // Rewrite to a 1-byte descriptor (S=1, no extensions), as some SFUs send.
        p.drain(..4);
        p.insert(0, 0x10);
        assert_eq!(parse_vp8(&p), Vp8::Start { n: 3, sent_us: 99 });
    }

    #[test]
    fn audio_round_trips() {
        let p = audio_packet(42, 777);
        assert_eq!(p.len(), AUDIO_SIZE);
        assert_eq!(parse_audio(&p), Some((42, 777)));
        assert_eq!(parse_audio(&[0x48, 1, 2]), None);
    }
}
